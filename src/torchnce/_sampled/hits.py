"""Accidental hits: sampled candidates that equal one of an example's true classes."""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import as_int_tensor, check_int

FLT_MAX = float(torch.finfo(torch.float32).max)


def last_positions(labels: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """For each label, the last position of the same value in ``sampled``, or -1.

    ``sampled`` is ``[S]`` (shared by all labels) or ``[B, S]`` (row ``b`` searched for the
    labels ``[B, T]`` of row ``b``). A stable sort keeps equal candidates in position order, so
    the rightmost match of a label in the sorted candidates is its last occurrence.
    """
    if sampled.shape[-1] == 0:
        return torch.full_like(labels, -1)
    values, order = torch.sort(sampled, dim=-1, stable=True)
    at = (torch.searchsorted(values, labels.contiguous(), right=True) - 1).clamp_min(0)
    if sampled.dim() == 1:
        found, pos = values[at] == labels, order[at]
    else:
        found, pos = values.gather(1, at) == labels, order.gather(1, at)
    return torch.where(found, pos, -1)


def hit_mask(labels: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, S]``: True where sampled position j is the last occurrence of a row's label.

    ``labels`` is ``[B, T]`` int64 and ``sampled`` is ``[S]`` int64, or ``[B, S]`` for
    per-example candidates (each row's labels against its own candidates). Computed without
    reading values on the host (no device synchronisation).
    """
    batch, width = labels.shape[0], sampled.shape[-1]
    pos = last_positions(labels, sampled)
    mask = torch.zeros(batch, width + 1, dtype=torch.bool, device=labels.device)
    mask.scatter_(1, torch.where(pos >= 0, pos, width), True)
    return mask[:, :width]


def compute_accidental_hits(
    true_classes: Any,
    sampled_candidates: Any,
    num_true: int,
    seed: int | None = None,
    name: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Find the sampled candidates that equal a true class, as ``tf.nn.compute_accidental_hits``.

    For every example ``i`` and true class ``t = true_classes[i, j]`` (row-major order) that
    occurs in ``sampled_candidates``, emit one triple ``(i, k, -FLT_MAX)`` where ``k`` is the
    **last** position of ``t`` among the candidates. Adding the weight to ``logits[i, k]``
    removes the hit from a sampled loss.

    Args:
        true_classes: integer ``[B, T]``.
        sampled_candidates: integer ``[S]``.
        num_true: T, the number of true classes per example.
        seed: accepted for TensorFlow compatibility and unused (as in TensorFlow).
        name: accepted for TensorFlow compatibility and ignored.

    Returns:
        ``(indices, ids, weights)``: int32 ``[H]`` example indices, int64 ``[H]`` positions in
        ``sampled_candidates`` and float32 ``[H]``, all equal to ``-FLT_MAX``. A row holding the
        same label twice gives the triple twice.

    Raises:
        TypeError: non-integer classes.
        ValueError: ``true_classes`` not ``[B, num_true]`` or ``sampled_candidates`` not 1-D.

    Examples:
        >>> import torch, torchnce
        >>> idx, ids, w = torchnce.compute_accidental_hits(
        ...     torch.tensor([[1, 2], [0, 4], [3, 3]]), torch.tensor([3, 1, 3, 0]), num_true=2)
        >>> idx.tolist(), ids.tolist(), w.unique().tolist()
        ([0, 1, 2, 2], [1, 3, 2, 2], [-3.4028234663852886e+38])
    """
    del seed, name
    num_true = check_int("num_true", num_true, minimum=1)
    labels = as_int_tensor("true_classes", true_classes)
    sampled = as_int_tensor("sampled_candidates", sampled_candidates, device=labels.device)
    if labels.dim() != 2 or labels.shape[1] != num_true:
        raise ValueError(
            f"true_classes must be a [batch_size, num_true={num_true}] matrix, "
            f"got shape {tuple(labels.shape)}"
        )
    if sampled.dim() != 1:
        raise ValueError(
            f"sampled_candidates must be a vector, got shape {tuple(sampled.shape)}"
        )
    pos = last_positions(labels.reshape(-1), sampled.to(labels.device))
    flat = torch.nonzero(pos >= 0).squeeze(1)
    indices = torch.div(flat, num_true, rounding_mode="floor").to(torch.int32)
    weights = torch.full((flat.numel(),), -FLT_MAX, dtype=torch.float32, device=labels.device)
    return indices, pos[flat], weights
