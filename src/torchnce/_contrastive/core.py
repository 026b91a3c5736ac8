"""The core of the contrastive losses: argument checks, candidate blocks, corrections, the loss.

``info_nce_loss`` and ``mixed_negatives_loss`` lay out, for every query, a row of candidate
similarities ``[B, N]`` together with the column of its positive, a log-Q correction and a
duplicate mask. ``softmax_loss`` is the one place where temperature, correction and mask meet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

from torchnce._common.checks import as_float_tensor, as_int_tensor, check_choice, reads_on_host
from torchnce._common.types import REDUCTIONS, Reduction

TEMPERATURE_RANGE = (0.01, 100.0)  # a tensor temperature is clamped into it (CLIP's bound)


def _form(letters: str, shape: Sequence[int]) -> str:
    """``"[B, M, D] = [4, M, 8]"``: the expected shape, -1 standing for any size."""
    sizes = [letter if size < 0 else str(size) for letter, size in zip(letters, shape, strict=True)]
    return f"[{', '.join(letters)}] = [{', '.join(sizes)}]"


def _check_shape(name: str, tensor: torch.Tensor, letters: str, shape: Sequence[int]) -> None:
    if tensor.dim() != len(shape) or any(
        want not in (-1, got) for want, got in zip(shape, tensor.shape, strict=True)
    ):
        raise ValueError(f"{name} must be {_form(letters, shape)}, got shape {tuple(tensor.shape)}")


def check_query(query: Any) -> torch.Tensor:
    """The ``[B, D]`` floating query matrix, with at least one row."""
    q = as_float_tensor("query", query)
    if q.dim() != 2 or q.shape[0] == 0:
        raise ValueError(f"query must be a non-empty [B, D] matrix, got shape {tuple(q.shape)}")
    return q


def check_keys(
    name: str, keys: Any, query: torch.Tensor, letters: str, shape: Sequence[int]
) -> torch.Tensor:
    """Keys of ``query``'s dtype and device whose shape matches ``shape`` (-1: any size)."""
    k = as_float_tensor(name, keys, device=query.device)
    if k.dtype != query.dtype:
        raise TypeError(f"{name} must have query's dtype {query.dtype}, got {k.dtype}")
    if k.device != query.device:
        raise ValueError(f"{name} must be on query's device {query.device}, got {k.device}")
    _check_shape(name, k, letters, shape)
    return k


def check_ids(
    name: str, ids: Any, letters: str, shape: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Integer item ids of exactly ``shape``, as int64 on ``device``."""
    t = as_int_tensor(name, ids, device=device)
    _check_shape(name, t, letters, shape)
    return t.to(device)


def check_log_q(
    name: str, log_q: Any, letters: str, shape: Sequence[int], like: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities of ``shape`` in ``like``'s dtype: finite and <= 0 (read on the host
    for eager CPU tensors, else a device-side assertion)."""
    t = as_float_tensor(name, log_q, device=like.device)
    _check_shape(name, t, letters, shape)
    t = t.to(device=like.device, dtype=like.dtype)
    bad = ~(t <= 0) | torch.isneginf(t)  # NaN, > 0 (q > 1) or -inf (q = 0)
    expected = f"{name} must hold log-probabilities, finite and <= 0 (probabilities in (0, 1])"
    if not t.numel():
        return t
    if not reads_on_host(t):  # a device-side assertion: no read (see _common.checks)
        torch._assert_async(torch.logical_not(bad.any()), expected)
    elif bool(bad.any()):
        raise ValueError(f"{expected}, got {t[bad][0].item()}; pass log(q) for probabilities q"
                         " in (0, 1]")
    return t


def check_temperature(temperature: Any) -> float | torch.Tensor:
    """A finite float > 0, or a one-element floating tensor (clamped later, not read here)."""
    if isinstance(temperature, torch.Tensor):
        if not temperature.is_floating_point():
            raise TypeError(
                f"temperature must be a float or a floating tensor, got {temperature.dtype}"
            )
        if temperature.numel() != 1:
            raise ValueError(
                "temperature must be a float or a one-element tensor,"
                f" got shape {tuple(temperature.shape)}"
            )
        return temperature.reshape(())
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(
            f"temperature must be a float or a floating tensor, got {type(temperature).__name__}"
        )
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}")
    return float(temperature)


def check_reduction(reduction: Any) -> Reduction:
    return cast(Reduction, check_choice("reduction", reduction, REDUCTIONS))


def embed(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Unit rows for cosine similarity, or ``x`` itself for the dot product.

    Float16/bfloat16 rows are normalised in float32 and cast back: ``F.normalize``'s
    ``eps = 1e-12`` is 0 in float16, so an all-zero row would become 0/0 = NaN.
    """
    if not normalize:
        return x
    if x.dtype in (torch.float16, torch.bfloat16):
        return F.normalize(x.float(), dim=-1).to(x.dtype)
    return F.normalize(x, dim=-1)


def pair_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` similarities with shared keys ``[M, D]`` or per-example keys ``[B, M, D]``."""
    if keys.dim() == 2:
        return query @ keys.T
    return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)


def in_batch_mask(
    query_ids: torch.Tensor | None, key_ids: torch.Tensor | None
) -> torch.Tensor | None:
    """``[B, B]``: True off the diagonal where rows i and j share a query id or a key id.

    Row j's pair is a known positive, so its key is a false negative for row i when either its
    query or its key is row i's; the rule is symmetric, so the mask serves both directions.
    """
    same = [ids.unsqueeze(1) == ids.unsqueeze(0) for ids in (query_ids, key_ids) if ids is not None]
    if not same:
        return None
    mask = same[0] if len(same) == 1 else same[0] | same[1]
    return mask.fill_diagonal_(False)


def id_mask(key_ids: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """``[B, M]``: True where a candidate (ids ``[M]`` or ``[B, M]``) equals the row's key."""
    return candidate_ids == key_ids.unsqueeze(1)


def columns(blocks: Sequence[tuple[torch.Tensor | None, int]], rows: int) -> torch.Tensor | None:
    """Concatenate column blocks ``(values [w] or [rows, w], w)``; None blocks become zeros."""
    present = [block for block, _ in blocks if block is not None]
    if not present:
        return None
    zero = present[0].new_zeros(())
    return torch.cat([(zero if b is None else b).expand(rows, w) for b, w in blocks], dim=1)


def softmax_loss(
    scores: torch.Tensor,
    target: torch.Tensor,
    temperature: float | torch.Tensor,
    log_q: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Per-row ``-log softmax(scores / τ - log_q)[target]`` with masked entries removed.

    A masked entry is set to the dtype's most negative finite value *after* the division and
    the correction, and ``masked_fill`` passes it no gradient: no ``inf`` enters the sum and no
    NaN reaches any gradient, the temperature's included.
    """
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(scores).clamp(*TEMPERATURE_RANGE)
    logits = scores / temperature
    if log_q is not None:
        logits = logits - log_q
    if mask is not None:
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, target, reduction="none")
