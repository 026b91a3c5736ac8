"""The retrieval options that TFRS' ``Retrieval`` task has: their checks and their effect.

``num_hard_negatives`` (TFRS ``num_hard_negatives``), ``sample_weight`` (TFRS
``sample_weight``), ``min_probability`` (TFRS clips ``candidate_sampling_probability`` into
``[1e-6, 1]``) and ``score_mask`` (TFRS ``score_mask``, True where a candidate takes part).
Each check runs once at the public boundary; the effects live in :mod:`.core`
(``softmax_loss``) and here (``weigh``, ``removed``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchnce._common.checks import as_float_tensor, check_int, reads_on_host
from torchnce._common.types import Reduction, apply_reduction


def check_num_hard_negatives(value: Any, available: int) -> int | None:
    """None, or an int in ``[1, available]`` (the number of negatives of each row)."""
    if value is None:
        return None
    k = check_int("num_hard_negatives", value)
    if not 1 <= k <= available:
        raise ValueError(
            f"num_hard_negatives must be in [1, {available}] (the negatives of each row), got {k}"
        )
    return k


def check_min_probability(value: Any) -> float | None:
    """None, or a float in ``(0, 1]``: the probability below which log-Q inputs are clipped."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"min_probability must be a float or None, got {type(value).__name__}")
    if not 0 < value <= 1:
        raise ValueError(f"min_probability must be in (0, 1], got {value!r}; TFRS uses 1e-6")
    return float(value)


def check_sample_weight(value: Any, batch: int, like: torch.Tensor) -> torch.Tensor | None:
    """None, or ``[B]`` finite weights >= 0 in ``like``'s dtype (the value check reads them on
    the host for eager CPU tensors, else a device-side assertion)."""
    if value is None:
        return None
    w = as_float_tensor("sample_weight", value, device=like.device)
    if w.shape != (batch,):
        raise ValueError(f"sample_weight must be [B] = [{batch}], got shape {tuple(w.shape)}")
    w = w.to(device=like.device, dtype=like.dtype)
    bad = ~((w >= 0) & (w < math.inf))
    expected = "sample_weight must hold finite weights >= 0"
    if not reads_on_host(w):
        torch._assert_async(torch.logical_not(bad.any()), expected)
    elif bool(bad.any()):
        raise ValueError(f"{expected}, got {w[bad][0].item()}")
    return w


def check_score_mask(value: Any, shape: tuple[int, int], form: str,
                     device: torch.device) -> torch.Tensor | None:
    """None, or a bool mask of exactly ``shape`` (``form`` names it, e.g. ``"[B, B]"``)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"score_mask must be a bool tensor, got {type(value).__name__}")
    if value.dtype != torch.bool:
        raise TypeError(f"score_mask must be a bool tensor, got {value.dtype}; use mask.bool()")
    if tuple(value.shape) != shape:
        sizes = ", ".join(map(str, shape))
        raise ValueError(f"score_mask must be {form} = [{sizes}], got shape {tuple(value.shape)}")
    return value.to(device)


def removed(
    mask: torch.Tensor | None, score_mask: torch.Tensor | None, offset: int | None
) -> torch.Tensor | None:
    """The entries a row drops: ``mask`` (True = drop) or ``score_mask`` False (True = keep);
    with ``offset`` the positive's column ``offset + i`` of row ``i`` is always kept."""
    if score_mask is None:
        return mask
    drop = ~score_mask
    if offset is not None:
        rows = torch.arange(drop.shape[0], device=drop.device)
        drop = drop.index_put((rows, rows + offset), torch.zeros((), dtype=torch.bool,
                                                                  device=drop.device))
    return drop if mask is None else drop | mask


def weigh(loss: torch.Tensor, weight: torch.Tensor | None, reduction: Reduction,
          batch: int | None = None) -> torch.Tensor:
    """``w_i L_i`` reduced: ``"sum"`` adds them (TFRS' default), ``"mean"`` divides the sum by
    ``batch`` (default the number of rows; Keras' sum over batch size, not by ``Σ w``)."""
    if weight is not None:
        loss = loss * weight
    if reduction == "mean" and batch is not None:
        return loss.sum() / batch
    return apply_reduction(loss, reduction)
