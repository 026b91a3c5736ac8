"""Shared result types of the candidate-sampling pipeline."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SampledValues(NamedTuple):
    """What a candidate sampler returns, in TensorFlow's order.

    Attributes:
        sampled_candidates: int64 ``[S]``, the sampled class ids (shared by the whole batch).
        true_expected_count: float32 ``[B, T]``, expected count of each true class in the sample.
        sampled_expected_count: float32 ``[S]``, expected count of each sampled class.
    """

    sampled_candidates: torch.Tensor
    true_expected_count: torch.Tensor
    sampled_expected_count: torch.Tensor
