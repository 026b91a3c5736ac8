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


def check_query(query: Any, *, heads: bool = False, name: str = "query") -> torch.Tensor:
    """The ``[B, D]`` floating query matrix, with at least one row; ``heads=True`` also takes
    multi-vector queries ``[B, H, D]`` (at least one head). ``name``: the argument's name."""
    q = as_float_tensor(name, query)
    if heads and q.dim() == 3 and q.shape[0] and q.shape[1]:
        return q
    if q.dim() != 2 or q.shape[0] == 0:
        form = "[B, D] matrix or [B, H, D] tensor" if heads else "[B, D] matrix"
        raise ValueError(f"{name} must be a non-empty {form}, got shape {tuple(q.shape)}")
    return q


def check_keys(
    name: str, keys: Any, query: torch.Tensor, letters: str, shape: Sequence[int],
    like: str = "query",
) -> torch.Tensor:
    """Keys of ``query``'s dtype and device whose shape matches ``shape`` (-1: any size);
    ``like`` names the argument they must match."""
    k = as_float_tensor(name, keys, device=query.device)
    like = like + ("'" if like.endswith("s") else "'s")
    if k.dtype != query.dtype:
        raise TypeError(f"{name} must have {like} dtype {query.dtype}, got {k.dtype}")
    if k.device != query.device:
        raise ValueError(f"{name} must be on {like} device {query.device}, got {k.device}")
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
    name: str,
    log_q: Any,
    letters: str,
    shape: Sequence[int],
    like: torch.Tensor,
    min_probability: float | None = None,
) -> torch.Tensor:
    """Log-probabilities of ``shape`` in ``like``'s dtype: finite and <= 0 (read on the host
    for eager CPU tensors, else a device-side assertion).

    With ``min_probability`` the probabilities are clipped into ``[min_probability, 1]``
    instead (TFRS' clip into ``[1e-6, 1]``): ``-inf`` (q = 0) and values > 0 are accepted and
    clamped, only NaN is refused.
    """
    t = as_float_tensor(name, log_q, device=like.device)
    _check_shape(name, t, letters, shape)
    t = t.to(device=like.device, dtype=like.dtype)
    if min_probability is None:
        bad = ~(t <= 0) | torch.isneginf(t)  # NaN, > 0 (q > 1) or -inf (q = 0)
        expected = f"{name} must hold log-probabilities, finite and <= 0 (probabilities in (0, 1])"
        fix = "; pass log(q) for probabilities q in (0, 1], or set min_probability to clip"
    else:
        bad = torch.isnan(t)
        expected = f"{name} must hold log-probabilities (NaN is not one)"
        fix = ""
    if t.numel():
        if not reads_on_host(t):  # a device-side assertion: no read (see _common.checks)
            torch._assert_async(torch.logical_not(bad.any()), expected)
        elif bool(bad.any()):
            raise ValueError(f"{expected}, got {t[bad][0].item()}{fix}")
    if min_probability is None:
        return t
    return t.clamp(math.log(min_probability), 0.0)


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
    """``[B, M]`` similarities with shared keys ``[M, D]`` or per-example keys ``[B, M, D]``;
    a multi-vector query ``[B, H, D]`` scores each key by its best head (max-sim)."""
    if query.dim() == 3:
        form = "bhd,md->bhm" if keys.dim() == 2 else "bhd,bmd->bhm"
        return torch.einsum(form, query, keys).amax(1)
    if keys.dim() == 2:
        return query @ keys.T
    return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)


def row_scores(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``[B]``: each query with its own key ``[B, D]`` (max-sim over heads for ``[B, H, D]``)."""
    if query.dim() == 3:
        return torch.einsum("bhd,bd->bh", query, keys).amax(1)
    return (query * keys).sum(1)


def in_batch_mask(
    query_ids: torch.Tensor | None,
    key_ids: torch.Tensor | None,
    all_query_ids: torch.Tensor | None = None,
    all_key_ids: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor | None:
    """``[B, N]``: True where row i's candidate j (key j of the ``N`` rows, row i being row
    ``offset + i`` of them) shares row i's query id or key id, except on row i's own column.

    Row j's pair is a known positive, so its key is a false negative for row i when either its
    query or its key is row i's; the rule is symmetric, so the mask serves both directions.
    The ``all_*`` ids default to the rows' own (``N = B``, offset 0).
    """
    pairs = ((query_ids, all_query_ids), (key_ids, all_key_ids))
    same = [mine.unsqueeze(1) == (mine if every is None else every).unsqueeze(0)
            for mine, every in pairs if mine is not None]
    if not same:
        return None
    mask = same[0] if len(same) == 1 else same[0] | same[1]
    rows = torch.arange(mask.shape[0], device=mask.device)
    return mask.index_put((rows, rows + offset), torch.zeros((), dtype=torch.bool,
                                                               device=mask.device))


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
    temperature: float | torch.Tensor | None,
    log_q: torch.Tensor | None,
    mask: torch.Tensor | None,
    num_hard_negatives: int | None = None,
) -> torch.Tensor:
    """Per-row ``-log softmax(scores / τ - log_q)[target]`` with masked entries removed and,
    with ``num_hard_negatives = K``, only the ``K`` largest negative logits kept per row.

    A masked entry is set to the dtype's most negative finite value *after* the division and
    the correction, and ``masked_fill`` passes it no gradient: no ``inf`` enters the sum and no
    NaN reaches any gradient, the temperature's included. The hard negatives are chosen on
    these final logits (after correction and masks, as TFRS' ``HardNegativeMining``).
    ``temperature=None``: ``scores`` are already divided and corrected (see :func:`logits`).
    """
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(scores).clamp(*TEMPERATURE_RANGE)
    logits = scores if temperature is None else scores / temperature
    if log_q is not None:
        logits = logits - log_q
    if mask is not None:
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if num_hard_negatives is not None:
        logits, target = hardest(logits, target, num_hard_negatives)
    return F.cross_entropy(logits, target, reduction="none")


def hardest(
    logits: torch.Tensor, target: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 1 + k]`` logits: each row's positive (column 0) and its ``k`` largest others."""
    column = target.unsqueeze(1)
    positive = logits.gather(1, column)
    others = logits.scatter(1, column, -math.inf)  # the positive is never among the k
    top = others.topk(k, dim=1, sorted=False).values
    return torch.cat([positive, top], dim=1), torch.zeros_like(target)


def logits(
    query: torch.Tensor,
    keys: torch.Tensor,
    temperature: float | torch.Tensor,
    log_q: torch.Tensor | None,
) -> torch.Tensor:
    """``[B, N]`` ``s(q_i, k_j) / τ - log q_j`` with shared keys ``[N, D]``.

    For ``[B, D]`` queries and a float τ this is one ``addmm`` (``-log q`` as its bias, ``1/τ``
    as its scale), so no ``[B, N]`` pass divides or subtracts, forward or backward.
    """
    if isinstance(temperature, torch.Tensor) or query.dim() != 2:
        if isinstance(temperature, torch.Tensor):
            temperature = temperature.to(query).clamp(*TEMPERATURE_RANGE)
        z = pair_scores(query, keys) / temperature
        return z if log_q is None else z - log_q
    scale = 1.0 / temperature
    if log_q is not None:
        return torch.addmm(log_q.neg(), query, keys.T, alpha=scale)
    return (query if scale == 1.0 else query * scale) @ keys.T


def in_batch_rows(
    q: torch.Tensor,
    keys: torch.Tensor,
    offset: int,
    temperature: float | torch.Tensor,
    log_q: torch.Tensor | None,
    mask: torch.Tensor | None,
    num_hard_negatives: int | None,
    back: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Per-row loss of rows ``offset .. offset + B`` of an in-batch problem whose ``N`` keys
    are ``keys`` (the rows' own keys at ``offset``). ``back = (queries, mask)`` adds the
    symmetric key→query direction: the rows' keys against all ``N`` queries, or, with
    ``queries`` None (one process, ``N = B``, no ``log_q``), this call's logits transposed.
    One process: ``N = B``, offset 0; the gathered loss of torchnce.distributed: every rank's
    keys."""
    target = torch.arange(q.shape[0], device=q.device) + offset
    z = logits(q, keys, temperature, log_q)
    loss = softmax_loss(z, target, None, None, mask, num_hard_negatives)
    if back is not None:
        queries, back_mask = back
        own = keys[offset: offset + q.shape[0]]
        zb = z.T if queries is None else logits(queries, own, temperature, None).T
        loss = (loss + softmax_loss(zb, target, None, None, back_mask, num_hard_negatives)) / 2
    return loss


def mixed_rows(
    q: torch.Tensor,
    keys: torch.Tensor,
    sampled: torch.Tensor,
    offset: int,
    temperature: float | torch.Tensor,
    log_q: torch.Tensor,
    mask: torch.Tensor | None,
    num_hard_negatives: int | None,
) -> torch.Tensor:
    """Per-row loss over the ``N`` in-batch keys and the ``M`` sampled ones, ``log_q`` being
    the ``[N + M]`` correction (``log p_j``, then ``log (M q_m)``)."""
    z = logits(q, torch.cat([keys, sampled]), temperature, log_q)
    target = torch.arange(q.shape[0], device=q.device) + offset
    return softmax_loss(z, target, None, None, mask, num_hard_negatives)
