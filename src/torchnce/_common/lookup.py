"""Sharded row lookup: ``embedding_lookup`` with TensorFlow's "mod" and "div" strategies."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch

from torchnce._common.checks import (
    as_int_tensor,
    check_bool,
    check_choice,
    check_ids_in_range,
)
from torchnce._common.types import STRATEGIES, PartitionStrategy, Table


def as_shards(name: str, params: Any, *, matrix: bool = False) -> list[torch.Tensor]:
    """Return ``params`` as a validated list of shards (a tensor is one shard).

    As in TensorFlow, only a Python ``list`` is a shard list; a tuple is not. Shards must share
    dtype, device and trailing shape; ``matrix=True`` also requires 2-D shards.
    """
    if params is None:
        raise ValueError(f"{name} must be specified (a tensor or a list of shards), got None")
    shards = list(params) if isinstance(params, list) else [params]
    if not shards:
        raise ValueError(f"{name} must be a tensor or a non-empty list of shards, got []")
    for i, shard in enumerate(shards):
        if not isinstance(shard, torch.Tensor):
            raise TypeError(f"{name} must hold tensors, got {type(shard).__name__} at shard {i}")
        if shard.dim() < 1 or (matrix and shard.dim() != 2):
            rank = "2-D" if matrix else "at least 1-D"
            raise ValueError(f"{name} must be {rank}, got shape {tuple(shard.shape)} at shard {i}")
    first = shards[0]
    for i, shard in enumerate(shards[1:], start=1):
        if shard.dtype != first.dtype:
            raise TypeError(
                f"{name} must have one dtype in every shard, got {first.dtype} and "
                f"{shard.dtype} at shard {i}"
            )
        if shard.shape[1:] != first.shape[1:] or shard.device != first.device:
            raise ValueError(
                f"{name} must have the same trailing shape and device in every shard, got "
                f"{tuple(first.shape)} on {first.device} and {tuple(shard.shape)} on "
                f"{shard.device} at shard {i}"
            )
    return shards


def shard_sizes(num_rows: int, num_shards: int, partition_strategy: str) -> list[int]:
    """Rows held by each shard in TensorFlow's canonical layout of ``num_rows`` rows."""
    if partition_strategy == "mod":
        return [(num_rows - p + num_shards - 1) // num_shards for p in range(num_shards)]
    ipp, extras = divmod(num_rows, num_shards)
    return [ipp + 1 if p < extras else ipp for p in range(num_shards)]


def check_layout(name: str, shards: Sequence[torch.Tensor], partition_strategy: str) -> int:
    """Check that the shards follow the canonical layout; return the total number of rows."""
    num_rows = sum(int(s.shape[0]) for s in shards)
    if len(shards) == 1:
        return num_rows
    if partition_strategy == "div" and num_rows < len(shards):
        raise ValueError(
            f'{name} must have at least one row per shard with partition_strategy="div", got '
            f"{num_rows} rows in {len(shards)} shards"
        )
    expected = shard_sizes(num_rows, len(shards), partition_strategy)
    actual = [int(s.shape[0]) for s in shards]
    if actual != expected:
        raise ValueError(
            f'{name} must be split as partition_strategy="{partition_strategy}" lays out '
            f"{num_rows} rows over {len(shards)} shards ({expected} rows), got {actual}"
        )
    return num_rows


def route(
    ids: torch.Tensor, num_rows: int, num_shards: int, partition_strategy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map global ids to (shard index, row within the shard), TensorFlow's formulas."""
    if partition_strategy == "mod":
        return torch.remainder(ids, num_shards), torch.div(ids, num_shards, rounding_mode="floor")
    ipp, extras = divmod(num_rows, num_shards)
    threshold = extras * (ipp + 1)
    low = ids < threshold
    tail = ids - threshold
    shard = torch.where(low, ids // (ipp + 1), extras + tail // ipp)
    row = torch.where(low, ids % (ipp + 1), tail % ipp)
    return shard, row


def sparse_rows(ids: torch.Tensor, rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A sparse COO gradient of a ``shape`` table holding ``rows`` at the (possibly repeated)
    1-D ``ids``; repeats are summed by whoever consumes it (optimizers, ``coalesce``)."""
    return torch.sparse_coo_tensor(ids.unsqueeze(0), rows, shape, check_invariants=False)


class _SparseGather(torch.autograd.Function):
    """``params[ids]`` whose gradient is a sparse COO tensor touching only the gathered rows."""

    @staticmethod
    def forward(ctx: Any, params: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.params_shape = params.shape
        return params.index_select(0, ids)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        return sparse_rows(ids, grad, ctx.params_shape), None


def gather_rows(params: torch.Tensor, ids: torch.Tensor, *, sparse_grad: bool) -> torch.Tensor:
    """``params[ids]`` for 1-D ``ids``; with ``sparse_grad`` the gradient is sparse."""
    if not (sparse_grad and params.requires_grad and torch.is_grad_enabled()):
        return params.index_select(0, ids)
    if params.dim() == 2:
        return torch.nn.functional.embedding(ids, params, sparse=True)
    out: torch.Tensor = _SparseGather.apply(params, ids)  # type: ignore[no-untyped-call]
    return out


def lookup(
    shards: Sequence[torch.Tensor],
    flat_ids: torch.Tensor,
    num_rows: int,
    partition_strategy: str,
    *,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Rows of the sharded table for 1-D validated ``flat_ids``, in the order of the ids."""
    if len(shards) == 1:
        return gather_rows(shards[0], flat_ids, sparse_grad=sparse_grad)
    shard, row = route(flat_ids, num_rows, len(shards), partition_strategy)
    if sparse_grad:
        return _lookup_split(shards, shard, row)
    # Fixed shapes, no read of the routing: every shard gathers a row for every id (row 0 for
    # the ids it does not own) and a select keeps the owner's; P gathers of B rows each.
    owners = [p for p, part in enumerate(shards) if part.shape[0]]  # an empty one owns no id
    out = shards[owners[0]].index_select(0, torch.where(shard == owners[0], row, 0))
    for p in owners[1:]:
        mine = shard == p
        rows = shards[p].index_select(0, torch.where(mine, row, 0))
        out = torch.where(mine.view(-1, *([1] * (rows.dim() - 1))), rows, out)
    return out


def _lookup_split(shards: Sequence[torch.Tensor], shard: torch.Tensor, row: torch.Tensor
                  ) -> torch.Tensor:
    """The rows with sparse gradients that hold only the rows looked up: the ids split by
    shard, which reads the per-shard counts (one ``tolist``, a device synchronisation)."""
    order = torch.argsort(shard, stable=True)
    counts = torch.bincount(shard, minlength=len(shards)).tolist()
    rows_in_order = torch.split(row[order], counts)
    parts = [gather_rows(s, r, sparse_grad=True)
             for s, r in zip(shards, rows_in_order, strict=True)]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(parts).index_select(0, inverse)


def clip_rows(rows: torch.Tensor, max_norm: float, id_rank: int) -> torch.Tensor:
    """TensorFlow's ``_clip``: ``e·c / max(‖e‖, c)`` over the embedding axes.

    Float16/bfloat16 rows are clipped in float32 (``‖e‖²`` of a float16 row of 300s
    overflows) and cast back. A ``c`` at or beyond the largest finite value of that dtype
    (``inf`` included) exceeds every norm there, so the rows come back unchanged (the formula
    would give ``inf/inf`` = NaN, or torch refuses the clamp).
    """
    work = torch.float32 if rows.dtype in (torch.float16, torch.bfloat16) else rows.dtype
    if max_norm >= torch.finfo(work).max:
        return rows
    x = rows.to(work)
    axes = tuple(range(id_rank, x.dim()))
    l2sum = x.square().sum(dim=axes, keepdim=True) if axes else x.square()
    norm = torch.where(l2sum > 0, l2sum.clamp_min(torch.finfo(work).tiny).sqrt(), 0.0)
    return (x * max_norm / torch.clamp_min(norm, max_norm)).to(rows.dtype)


def check_max_norm(max_norm: Any) -> float | None:
    """``max_norm`` as a float > 0 (``inf`` allowed), or None; bools are refused."""
    if max_norm is None:
        return None
    if isinstance(max_norm, torch.Tensor) and max_norm.numel() == 1 and (
            max_norm.is_floating_point()):
        max_norm = max_norm.item()
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"max_norm must be a positive number or None, got "
                        f"{type(max_norm).__name__} {max_norm!r}")
    value = float(max_norm)
    if not value > 0:
        raise ValueError(f"max_norm must be a positive number or None, got {max_norm}")
    return value


def embedding_lookup(
    params: Table,
    ids: Any,
    partition_strategy: PartitionStrategy = "mod",
    name: str | None = None,
    max_norm: float | None = None,
    *,
    sparse_grad: bool = False,
) -> torch.Tensor:
    r"""Look up rows of a (possibly sharded) table, as ``tf.compat.v1.nn.embedding_lookup``.

    With ``P`` shards and ``N`` rows in all, id ``i`` lives in shard ``p`` at row ``r``:

    .. math::

        \text{mod}: p = i \bmod P,\ r = \lfloor i / P \rfloor \qquad
        \text{div}: t = (N \bmod P)(\lfloor N/P \rfloor + 1),\
        p = \begin{cases} \lfloor i / (\lfloor N/P \rfloor + 1) \rfloor & i < t \\
        N \bmod P + \lfloor (i - t) / \lfloor N/P \rfloor \rfloor & i \ge t \end{cases}

    With ``max_norm`` = c each embedding e becomes :math:`e c / \max(\lVert e\rVert, c)`.

    Args:
        params: a tensor ``[N, ...]`` or a Python list of shards in the canonical layout of
            ``partition_strategy`` (a tuple is not a shard list, as in TensorFlow).
        ids: integer ids of any shape, each in ``[0, N)``.
        partition_strategy: ``"mod"`` or ``"div"``; only matters for more than one shard.
        name: accepted for TensorFlow compatibility and ignored.
        max_norm: if given, clip each embedding to this L2 norm.
        sparse_grad: make the gradient of ``params`` sparse (only the looked-up rows).

    Returns:
        ``ids.shape + params.shape[1:]``.

    Raises:
        TypeError: non-integer ids, shards of different dtypes, a ``max_norm`` that is not a
            number, a ``sparse_grad`` that is not a bool.
        ValueError: ids out of range (one device synchronisation reads them), an empty shard
            list, shards off the canonical layout, an unknown strategy, ``max_norm`` <= 0 or
            NaN.

    Note:
        Unlike TensorFlow, shards whose sizes differ from the canonical layout raise instead of
        mis-addressing rows; float16/bfloat16 rows are clipped in float32; and a ``max_norm``
        beyond the dtype's range (``inf`` included) leaves the rows as they are (TensorFlow
        gives NaN for ``inf``).

    Examples:
        >>> import torch, torchnce
        >>> shards = [torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]])]
        >>> torchnce.embedding_lookup(shards, torch.tensor([2, 1, 0])).flatten().tolist()
        [2.0, 1.0, 0.0]
    """
    del name
    check_choice("partition_strategy", partition_strategy, STRATEGIES)
    shards = as_shards("params", params)
    num_rows = check_layout("params", shards, partition_strategy)
    ids = as_int_tensor("ids", ids, device=shards[0].device)
    clip = check_max_norm(max_norm)
    sparse = check_bool("sparse_grad", sparse_grad)
    check_ids_in_range("ids", ids, num_rows)
    rows = lookup(shards, ids.reshape(-1), num_rows, partition_strategy, sparse_grad=sparse)
    rows = rows.reshape(ids.shape + shards[0].shape[1:])
    return rows if clip is None else clip_rows(rows, clip, ids.dim())
