"""Validation of a sampled-loss call: turns the TensorFlow-style arguments into a ``Problem``.

Every public sampled-loss function funnels its arguments through :func:`prepare`, so each
check and each error message exists once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from torchnce._common.checks import (
    as_float_tensor,
    as_int_tensor,
    check_bool,
    check_choice,
    check_ids_in_range,
    check_int,
)
from torchnce._common.labels import hit_labels, true_labels
from torchnce._common.lookup import STRATEGIES, as_shards, check_layout
from torchnce._sampled.hits import hit_mask
from torchnce._sampling.closed_form import log_uniform_values
from torchnce._sampling.draw import resolve_generator
from torchnce._sampling.per_example import log_uniform_rows


@dataclass(frozen=True)
class Problem:
    """A validated sampled-loss call.

    Attributes:
        inputs: ``[B, D]`` floating, the compute dtype F.
        weights: shards of the ``[C, D]`` output embeddings.
        biases: shards of the ``[C]`` biases, or None for no bias.
        labels: int64 ``[B, T]``.
        sampled: int64 ``[S]``, the candidates shared by the batch, or ``[B, S]``, each row's
            own candidates (per-example negatives).
        true_count: F, broadcastable to ``[B, T]``, detached.
        sampled_count: F, broadcastable to the shape of ``sampled``, detached.
        hits: bool ``[B, S]`` accidental hits to remove, or None.
        partition_strategy: "mod" or "div".
        sparse_grad: whether weight and bias gradients are sparse.
        label_mask: bool ``[B, T]``, True for a real label (padded slots of ``labels`` hold
            0); None when every slot is real.
    """

    inputs: torch.Tensor
    weights: list[torch.Tensor]
    biases: list[torch.Tensor] | None
    labels: torch.Tensor
    sampled: torch.Tensor
    true_count: torch.Tensor
    sampled_count: torch.Tensor
    hits: torch.Tensor | None
    partition_strategy: str
    sparse_grad: bool
    label_mask: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return sum(int(w.shape[0]) for w in self.weights)

    @property
    def per_example(self) -> bool:
        """Whether every row has its own candidates (``sampled`` is ``[B, S]``)."""
        return self.sampled.dim() == 2


def _check_inputs(inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        got = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise TypeError(f"inputs must be a floating tensor [batch_size, dim], got {got}")
    if inputs.dim() != 2:
        raise ValueError(f"inputs must be 2-D [batch_size, dim], got shape {tuple(inputs.shape)}")
    return inputs


def _check_table(
    name: str, table: Any, num_classes: int, strategy: str, inputs: torch.Tensor
) -> list[torch.Tensor]:
    shards = as_shards(name, table, matrix=name == "weights")
    if name == "biases" and shards[0].dim() != 1:
        raise ValueError(f"biases must be 1-D [num_classes], got shape {tuple(shards[0].shape)}")
    if not shards[0].is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {shards[0].dtype}")
    if shards[0].device != inputs.device:
        raise ValueError(f"{name} must be on the device of inputs ({inputs.device}), "
                         f"got {shards[0].device}")
    rows = check_layout(name, shards, strategy)
    if rows != num_classes:
        raise ValueError(f"{name} must have num_classes={num_classes} rows in all, got {rows}")
    return shards


def _check_sampled_values(
    values: Any, num_classes: int, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # A tuple or list first: the Sequence ABC check costs microseconds on every call.
    sequence = isinstance(values, (tuple, list)) or (
        isinstance(values, Sequence) and not isinstance(values, str))
    if not sequence or len(values) != 3:
        raise ValueError(
            "sampled_values must be a 3-tuple (sampled_candidates, true_expected_count, "
            f"sampled_expected_count), got {type(values).__name__}"
        )
    device = labels.device
    sampled = as_int_tensor("sampled_values", values[0], device=device).detach().to(device)
    _check_candidates_shape(sampled, labels.shape[0])
    check_ids_in_range("sampled_values", sampled, num_classes)
    true_count = as_float_tensor("sampled_values", values[1], device=device)
    sampled_count = as_float_tensor("sampled_values", values[2], device=device)
    for what, count, shape in (("true_expected_count", true_count, labels.shape),
                               ("sampled_expected_count", sampled_count, sampled.shape)):
        if not _broadcastable(count, shape):
            raise ValueError(f"sampled_values must hold a {what} broadcastable to "
                             f"{list(shape)}, got shape {tuple(count.shape)}")
    return sampled, true_count, sampled_count


def _check_candidates_shape(sampled: torch.Tensor, batch: int) -> None:
    if sampled.dim() not in (1, 2):
        raise ValueError(f"sampled_values must hold 1-D [num_sampled] (shared) or 2-D "
                         f"[batch_size, num_sampled] (per-example) sampled_candidates, got "
                         f"shape {tuple(sampled.shape)}")
    if sampled.dim() == 2 and sampled.shape[0] != batch:
        raise ValueError(f"sampled_values must hold per-example sampled_candidates "
                         f"[batch_size={batch}, num_sampled], got shape {tuple(sampled.shape)}")


def _broadcastable(count: torch.Tensor, shape: torch.Size) -> bool:
    if count.dim() > len(shape):
        return False
    return all(c in (1, s) for c, s in zip(reversed(count.shape), reversed(shape), strict=False))


def _default_sample(
    labels: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    per_example: bool,
    seed: int | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The log-uniform unique sample, for the batch or for every row (validated labels)."""
    if num_sampled > num_classes:
        raise ValueError(
            f"num_sampled must be <= num_classes={num_classes} for the default unique "
            f"sampler, got {num_sampled} (Sampler's range is too small)"
        )
    # The labels are validated: call the samplers' cores, not their public functions.
    gen = resolve_generator(seed, generator, labels.device)
    if per_example:
        return log_uniform_rows(labels, num_sampled, num_classes, gen)
    return log_uniform_values(labels, num_sampled, True, num_classes, gen)


def prepare(
    weights: Any,
    biases: Any,
    labels: Any,
    inputs: Any,
    num_sampled: Any,
    num_classes: Any,
    num_true: Any,
    sampled_values: Any,
    remove_accidental_hits: bool,
    partition_strategy: Any,
    *,
    seed: int | None,
    generator: torch.Generator | None,
    sparse_grad: bool,
    per_example_negatives: Any = False,
    label_mask: Any = None,
    padding_id: Any = None,
) -> Problem:
    """Validate a sampled-loss call, draw the default sample if needed, and find the hits.

    Reads label and candidate values once to range-check them (one device synchronisation).
    """
    num_sampled = check_int("num_sampled", num_sampled, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    num_true = check_int("num_true", num_true, minimum=1)
    strategy = check_choice("partition_strategy", partition_strategy, STRATEGIES)
    per_example = check_bool("per_example_negatives", per_example_negatives)
    inputs = _check_inputs(inputs)
    w = _check_table("weights", weights, num_classes, strategy, inputs)
    if w[0].shape[1] != inputs.shape[1]:
        raise ValueError(f"inputs must have dim = the weights' row width {w[0].shape[1]}, "
                         f"got shape {tuple(inputs.shape)}")
    b = None if biases is None else _check_table("biases", biases, num_classes, strategy, inputs)
    true = true_labels(labels, num_true, inputs, num_classes, label_mask=label_mask,
                       padding_id=padding_id)
    labels = true.ids
    if sampled_values is None:
        sampled, true_count, sampled_count = _default_sample(
            labels, num_sampled, num_classes, per_example, seed, generator)
    else:
        sampled, true_count, sampled_count = _check_sampled_values(
            sampled_values, num_classes, labels)
    hits = None
    if remove_accidental_hits:
        if sampled.shape[-1] != num_sampled:
            raise ValueError(
                f"sampled_values must hold num_sampled={num_sampled} candidates when "
                f"remove_accidental_hits=True, got {sampled.shape[-1]}")
        hits = hit_mask(hit_labels(true), sampled)
    return Problem(inputs, w, b, labels, sampled, true_count.detach().to(inputs.dtype),
                   sampled_count.detach().to(inputs.dtype), hits, strategy, bool(sparse_grad),
                   true.mask)


def problem_rows(problem: Problem, part: slice) -> Problem:
    """Rows ``part`` of a validated per-example problem.

    No checks: the values were checked once for all rows, and a slice holds only checked
    values (what lets a caller validate a whole epoch's chunk once, not every batch).
    Expected counts that broadcast over the rows stay whole.
    """

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t if t.dim() < 2 or t.shape[0] == 1 else t[part]

    return replace(problem, inputs=problem.inputs[part], labels=problem.labels[part],
                   sampled=problem.sampled[part], true_count=rows(problem.true_count),
                   sampled_count=rows(problem.sampled_count),
                   hits=None if problem.hits is None else problem.hits[part],
                   label_mask=None if problem.label_mask is None else problem.label_mask[part])
