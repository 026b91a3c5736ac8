"""Validation of a sampled-loss call: the TensorFlow-style arguments become a ``Problem``.

A ``Problem`` is the validated call: the inputs, the tables, and the ``Classes`` (labels,
candidates, expected counts, hits). The public functions build it with :func:`prepare`; the
modules build it from the pieces here, from what they already checked (one range check of the
ids per call, over the labels and any given candidates together). The library's own samples are
trusted, never re-checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchnce._common.checks import (
    as_float_tensor,
    as_int_tensor,
    check_all_in_range,
    check_bool,
    check_choice,
    check_int,
    range_too_small,
)
from torchnce._common.labels import TrueLabels, hit_labels, true_labels
from torchnce._common.lookup import as_shards, check_layout
from torchnce._common.types import STRATEGIES, SampledValues
from torchnce._sampled.hits import hit_mask
from torchnce._sampling.closed_form import log_uniform_values
from torchnce._sampling.draw import Rng, resolve_generator
from torchnce._sampling.per_example import log_uniform_rows


@dataclass(frozen=True)
class Classes:
    """The validated classes of a sampled-loss call.

    Attributes:
        labels: int64 ``[B, T]``; padded slots hold 0.
        sampled: int64 ``[S]``, the candidates shared by the batch, or ``[B, S]``, each row's
            own candidates (per-example negatives).
        true_count: floating, broadcastable to ``[B, T]``, detached.
        sampled_count: floating, broadcastable to the shape of ``sampled``, detached.
        hits: bool ``[B, S]`` accidental hits to remove, or None.
        label_mask: bool ``[B, T]``, True for a real label; None when every slot is real.
    """

    labels: torch.Tensor
    sampled: torch.Tensor
    true_count: torch.Tensor
    sampled_count: torch.Tensor
    hits: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None

    @property
    def num_true(self) -> int:
        return int(self.labels.shape[1])

    @property
    def per_example(self) -> bool:
        """Whether every row has its own candidates (``sampled`` is ``[B, S]``)."""
        return self.sampled.dim() == 2

    def rows(self, part: slice) -> Classes:
        """Rows ``part`` of per-example classes, with no checks: a slice of checked values is
        checked (what lets a caller validate a chunk of many batches once). Expected counts
        that broadcast over the rows stay whole."""

        def cut(t: torch.Tensor) -> torch.Tensor:
            return t if t.dim() < 2 or t.shape[0] == 1 else t[part]

        return Classes(self.labels[part], self.sampled[part], cut(self.true_count),
                       cut(self.sampled_count), None if self.hits is None else self.hits[part],
                       None if self.label_mask is None else self.label_mask[part])


@dataclass(frozen=True)
class Problem:
    """A validated sampled-loss call.

    Attributes:
        inputs: ``[B, D]`` floating, the compute dtype F.
        weights: shards of the ``[C, D]`` output embeddings.
        biases: shards of the ``[C]`` biases, or None for no bias.
        classes: the labels, candidates, expected counts and hits.
        partition_strategy: "mod" or "div".
        sparse_grad: whether weight and bias gradients are sparse.
    """

    inputs: torch.Tensor
    weights: list[torch.Tensor]
    biases: list[torch.Tensor] | None
    classes: Classes
    partition_strategy: str = "mod"
    sparse_grad: bool = False

    @property
    def num_classes(self) -> int:
        return sum(int(w.shape[0]) for w in self.weights)


def check_inputs(inputs: Any, dim: int | None = None) -> torch.Tensor:
    """``inputs`` as a floating ``[B, D]`` tensor (``D = dim`` when given, a module's width)."""
    width = "dim" if dim is None else "embedding_dim"
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        got = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise TypeError(f"inputs must be a floating tensor [batch_size, {width}], got {got}")
    if dim is None and inputs.dim() != 2:
        raise ValueError(f"inputs must be 2-D [batch_size, dim], got shape {tuple(inputs.shape)}")
    if dim is not None and (inputs.dim() != 2 or inputs.shape[1] != dim):
        raise ValueError(f"inputs must have shape [batch_size, embedding_dim={dim}], got "
                         f"{tuple(inputs.shape)}")
    return inputs


def check_table(
    name: str, table: Any, num_classes: int, strategy: str, inputs: torch.Tensor
) -> list[torch.Tensor]:
    """The shards of ``weights`` or ``biases``: floating, on the device of ``inputs``, laid out
    by ``strategy``, with ``num_classes`` rows in all."""
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


def check_sampled_values(values: Any, labels: torch.Tensor) -> SampledValues:
    """The ``(candidates, true counts, sampled counts)`` triple for ``[B, T]`` labels, shapes
    checked; the candidates' range is checked by the caller, together with the labels."""
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
    true_count = as_float_tensor("sampled_values", values[1], device=device).detach()
    sampled_count = as_float_tensor("sampled_values", values[2], device=device).detach()
    for what, count, shape in (("true_expected_count", true_count, labels.shape),
                               ("sampled_expected_count", sampled_count, sampled.shape)):
        if not _broadcastable(count, shape):
            raise ValueError(f"sampled_values must hold a {what} broadcastable to "
                             f"{list(shape)}, got shape {tuple(count.shape)}")
    return SampledValues(sampled, true_count.to(device), sampled_count.to(device))


def logged_counts(
    values: SampledValues, label_mask: torch.Tensor | None
) -> list[tuple[str, str, torch.Tensor]]:
    """The given expected counts a loss takes the log of, for :func:`check_all_in_range`'s
    ``positive``: all sampled counts, and the true counts of real labels (a padded slot's
    count is never read)."""
    true_count = values[1] if label_mask is None else torch.where(label_mask, values[1], 1.0)
    return [("sampled_values", "expected counts (true_expected_count)", true_count),
            ("sampled_values", "expected counts (sampled_expected_count)", values[2])]


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


def default_sample(
    labels: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    per_example: bool,
    generator: Rng | None,
) -> SampledValues:
    """The log-uniform unique sample, for the batch or for every row (validated labels)."""
    if num_sampled > num_classes:
        raise range_too_small(num_sampled,
                              f"num_classes={num_classes} for the default unique sampler")
    # The labels are validated: call the samplers' cores, not their public functions.
    if per_example:
        return log_uniform_rows(labels, num_sampled, num_classes, generator)
    return log_uniform_values(labels, num_sampled, True, num_classes, generator)


def make_classes(
    true: TrueLabels, values: SampledValues, num_sampled: int, remove_accidental_hits: bool
) -> Classes:
    """``Classes`` from validated labels and candidates; finds the hits to remove."""
    sampled, true_count, sampled_count = values
    hits = None
    if remove_accidental_hits:
        if sampled.shape[-1] != num_sampled:
            raise ValueError(
                f"sampled_values must hold num_sampled={num_sampled} candidates when "
                f"remove_accidental_hits=True, got {sampled.shape[-1]}")
        hits = hit_mask(hit_labels(true), sampled)
    return Classes(true.ids, sampled, true_count.detach(), sampled_count.detach(), hits,
                   true.mask)


def prepare(
    weights: Any,
    biases: Any,
    labels: Any,
    inputs: Any,
    num_sampled: Any,
    num_classes: Any,
    num_true: Any,
    sampled_values: Any,
    remove_accidental_hits: Any,
    partition_strategy: Any,
    *,
    seed: int | None,
    generator: torch.Generator | None,
    sparse_grad: Any,
    per_example_negatives: Any = False,
    label_mask: Any = None,
    padding_id: Any = None,
    log_counts: bool = True,
) -> Problem:
    """Validate a sampled-loss call, draw the default sample if needed, and find the hits.

    Reads the ids once to range-check the labels and any given candidates together (on CPU;
    elsewhere a device-side assertion, no synchronisation); with ``log_counts`` (a loss that
    subtracts log Q) the same read checks that the given expected counts are finite and > 0.
    """
    num_sampled = check_int("num_sampled", num_sampled, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    num_true = check_int("num_true", num_true, minimum=1)
    strategy = check_choice("partition_strategy", partition_strategy, STRATEGIES)
    remove_hits = check_bool("remove_accidental_hits", remove_accidental_hits, truthy=True)
    sparse = check_bool("sparse_grad", sparse_grad)
    per_example = check_bool("per_example_negatives", per_example_negatives)
    inputs = check_inputs(inputs)
    w = check_table("weights", weights, num_classes, strategy, inputs)
    if w[0].shape[1] != inputs.shape[1]:
        raise ValueError(f"inputs must have dim = the weights' row width {w[0].shape[1]}, "
                         f"got shape {tuple(inputs.shape)}")
    b = None if biases is None else check_table("biases", biases, num_classes, strategy, inputs)
    true = true_labels(labels, num_true, inputs, label_mask=label_mask, padding_id=padding_id)
    gen = resolve_generator(seed, generator, inputs.device)  # checked even when not drawn
    if sampled_values is None:
        check_all_in_range((("labels", true.ids),), num_classes)
        values = default_sample(true.ids, num_sampled, num_classes, per_example, gen)
    else:
        values = check_sampled_values(sampled_values, true.ids)
        counts = logged_counts(values, true.mask) if log_counts else []
        check_all_in_range((("labels", true.ids), ("sampled_values", values[0])), num_classes,
                           counts)
    classes = make_classes(true, values, num_sampled, remove_hits)
    return Problem(inputs, w, b, classes, strategy, sparse)
