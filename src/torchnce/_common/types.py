"""Every type alias and shared result type of torchnce, defined once, and the reductions."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

PartitionStrategy = Literal["mod", "div"]
STRATEGIES: tuple[PartitionStrategy, ...] = ("mod", "div")

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[Reduction, ...] = ("none", "mean", "sum")

Mode = Literal["sampled", "full"]
MODES: tuple[Mode, ...] = ("sampled", "full")

LossKind = Literal["sigmoid", "softmax"]
"""The cross entropy a loss takes of its logits: per class (NCE, negative sampling) or over
the row (sampled softmax)."""

Table = torch.Tensor | list[torch.Tensor]
"""An output table as the functional layer takes it: one tensor, or a Python list of shards."""


class SampledValues(NamedTuple):
    """What a candidate sampler returns, in TensorFlow's order.

    Attributes:
        sampled_candidates: int64 ``[S]``, the sampled class ids (shared by the whole batch).
        true_expected_count: float32 ``[B, T]``, expected count of each true class in the sample.
        sampled_expected_count: float32 ``[S]``, expected count of each sampled class.

    Examples:
        >>> import torch, torchnce
        >>> values = torchnce.SampledValues(torch.tensor([2]), torch.ones(1, 1), torch.ones(1))
        >>> values.sampled_candidates.tolist()
        [2]
    """

    sampled_candidates: torch.Tensor
    true_expected_count: torch.Tensor
    sampled_expected_count: torch.Tensor


def apply_reduction(loss: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """``loss`` ``[B]`` as it is (``"none"``), averaged (``"mean"``) or summed (``"sum"``)."""
    if reduction == "none":
        return loss
    return loss.mean() if reduction == "mean" else loss.sum()
