"""Reductions of the full logits ``x Wᵀ + b`` over all classes, one chunk of classes at a time.

The evaluation losses and ``top_k`` walk the rows of every shard in chunks of ``chunk_size``
classes. Each chunk's ``[B, chunk]`` logits go into one reused buffer, so the memory beyond
the parameters is ``B·chunk`` elements whatever C is. The sigmoid loss adds its per-chunk sums
of softplus; the softmax loss merges per-chunk log-sum-exps; ``top_k`` merges running top-k
lists. The backward recomputes each chunk's logits instead of keeping them, so it is bounded
the same way (plus the dense parameter gradients themselves).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.autograd.function import once_differentiable

from torchnce._logits import linear_logits
from torchnce._lookup import lookup, route

Kind = Literal["nce", "softmax"]
_LOW_PRECISION = (torch.float16, torch.bfloat16)
CHUNK_ELEMENTS = 1 << 22  # default logits per chunk: 16 MiB in float32


def default_chunk_size(batch: int) -> int:
    """Classes per chunk so that a chunk holds about ``CHUNK_ELEMENTS`` logits."""
    return max(1, CHUNK_ELEMENTS // max(batch, 1))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the chunks are computed in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


@dataclass(frozen=True)
class Layout:
    """Where the global class ids live: shard sizes and the partition strategy."""

    sizes: tuple[int, ...]
    strategy: str

    @classmethod
    def of(cls, shards: Sequence[torch.Tensor], strategy: str) -> Layout:
        return cls(tuple(int(s.shape[0]) for s in shards), strategy)

    @property
    def num_classes(self) -> int:
        return sum(self.sizes)

    def global_ids(self, shard: int, rows: torch.Tensor) -> torch.Tensor:
        """Global class ids of the given rows of ``shard`` (TensorFlow's "mod"/"div" maps)."""
        if len(self.sizes) == 1:
            return rows
        if self.strategy == "mod":
            return rows * len(self.sizes) + shard
        return rows + sum(self.sizes[:shard])

    def positions(self, device: torch.device) -> torch.Tensor:
        """For each global id, its column in the shard-by-shard concatenation of the logits."""
        offsets = torch.tensor([0, *self.sizes[:-1]], device=device).cumsum(0)
        ids = torch.arange(self.num_classes, device=device)
        shard, row = route(ids, self.num_classes, len(self.sizes), self.strategy)
        return offsets[shard] + row


def chunks(shards: Sequence[torch.Tensor], chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """``(shard, start, stop)`` for every chunk of at most ``chunk_size`` rows."""
    for p, shard in enumerate(shards):
        size = int(shard.shape[0])
        for start in range(0, size, chunk_size):
            yield p, start, min(start + chunk_size, size)


def align_biases(
    biases: list[torch.Tensor], layout: Layout, device: torch.device
) -> list[torch.Tensor]:
    """The biases split like the weights (a lookup when their shard counts differ)."""
    if len(biases) == len(layout.sizes):
        return biases
    ids = [layout.global_ids(p, torch.arange(n, device=device)) for p, n in enumerate(layout.sizes)]
    return [lookup(biases, i, layout.num_classes, layout.strategy) for i in ids]


def _chunk_logits(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    start: int,
    stop: int,
    buffer: torch.Tensor,
) -> torch.Tensor:
    rows = weight[start:stop].to(x.dtype)
    bias_rows = None if bias is None else bias[start:stop].to(x.dtype)
    out = buffer[: x.shape[0] * (stop - start)].view(x.shape[0], stop - start)
    return linear_logits(x, rows, bias_rows, out=out)


def _reduce_chunk(kind: Kind, total: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Fold one chunk into the running per-row total (overwrites ``logits``)."""
    if kind == "nce":  # softplus(ℓ) = logaddexp(ℓ, 0), exact for every ℓ
        zero = logits.new_zeros(())
        return total.add_(torch.logaddexp(logits, zero, out=logits).sum(dim=1))
    return torch.logaddexp(total, torch.logsumexp(logits, dim=1))


def _chunk_grad(kind: Kind, logits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``dL/dℓ`` of one chunk: ``σ(ℓ)`` or ``softmax(ℓ) = exp(ℓ − lse)`` (overwrites ``logits``)."""
    if kind == "nce":
        return logits.sigmoid_()
    return logits.sub_(total.unsqueeze(1)).exp_()


class _ChunkedPartition(torch.autograd.Function):
    """Per row, ``Σ_c softplus(ℓ_c)`` ("nce") or ``log Σ_c exp(ℓ_c)`` ("softmax") over all C."""

    @staticmethod
    def forward(
        ctx: Any, kind: Kind, chunk_size: int, inputs: torch.Tensor, num_shards: int,
        *tables: torch.Tensor,
    ) -> torch.Tensor:
        weights, biases = tables[:num_shards], tables[num_shards:]
        x = inputs.to(work_dtype(inputs.dtype))
        buffer = x.new_empty(x.shape[0] * chunk_size)
        total = x.new_full((x.shape[0],), 0.0 if kind == "nce" else -torch.inf)
        for p, start, stop in chunks(weights, chunk_size):
            bias = biases[p] if biases else None
            logits = _chunk_logits(x, weights[p], bias, start, stop, buffer)
            total = _reduce_chunk(kind, total, logits)
        ctx.save_for_backward(inputs, total, *tables)
        ctx.kind, ctx.chunk_size, ctx.num_shards = kind, chunk_size, num_shards
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, total, *tables = ctx.saved_tensors
        weights, biases = tables[: ctx.num_shards], tables[ctx.num_shards :]
        x = inputs.to(total.dtype)
        scale = grad.to(total.dtype).unsqueeze(1)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[2] else None
        needs = ctx.needs_input_grad[4:]
        grads = [torch.zeros_like(t) if need else None for t, need in zip(tables, needs)]
        w_grads, b_grads = grads[: ctx.num_shards], grads[ctx.num_shards :]
        buffer = x.new_empty(x.shape[0] * ctx.chunk_size)
        for p, start, stop in chunks(weights, ctx.chunk_size):
            bias = biases[p] if biases else None
            logits = _chunk_logits(x, weights[p], bias, start, stop, buffer)
            g = _chunk_grad(ctx.kind, logits, total).mul_(scale)
            if grad_x is not None:
                grad_x.addmm_(g, weights[p][start:stop].to(x.dtype))
            if w_grads[p] is not None:
                w_grads[p][start:stop] = g.t() @ x
            if b_grads and b_grads[p] is not None:
                b_grads[p][start:stop] = g.sum(dim=0)
        grad_inputs = None if grad_x is None else grad_x.to(inputs.dtype)
        return (None, None, grad_inputs, None, *grads)


def chunked_partition(
    kind: Kind,
    inputs: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor] | None,
    chunk_size: int,
) -> torch.Tensor:
    """``[B]`` sum of softplus ("nce") or log-sum-exp ("softmax") of all logits, in the work
    dtype; ``biases`` must be split like ``weights``."""
    tables = [*weights, *(biases or [])]
    out: torch.Tensor = _ChunkedPartition.apply(  # type: ignore[no-untyped-call]
        kind, chunk_size, inputs, len(weights), *tables
    )
    return out


@torch.no_grad()
def chunked_top_k(
    inputs: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor] | None,
    layout: Layout,
    k: int,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row and their global class ids, best first."""
    x = inputs.to(work_dtype(inputs.dtype))
    buffer = x.new_empty(x.shape[0] * chunk_size)
    values = x.new_empty(x.shape[0], 0)
    ids = torch.empty(x.shape[0], 0, dtype=torch.int64, device=x.device)
    for p, start, stop in chunks(weights, chunk_size):
        bias = biases[p] if biases else None
        logits = _chunk_logits(x, weights[p], bias, start, stop, buffer)
        chunk_values, rows = logits.topk(min(k, stop - start), dim=1)
        values = torch.cat([values, chunk_values], dim=1)
        ids = torch.cat([ids, layout.global_ids(p, rows + start)], dim=1)
        values, best = values.topk(min(k, values.shape[1]), dim=1)
        ids = ids.gather(1, best)
    return values.to(inputs.dtype), ids
