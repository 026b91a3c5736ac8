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
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from torchnce._common.lookup import lookup, route
from torchnce._common.types import LossKind
from torchnce._sampled.logits import compose_logits, linear_logits, work_dtype

CHUNK_ELEMENTS = 1 << 21  # default logits per chunk: 8 MiB in float32, L3-sized
LOG2E, LN2 = 1.4426950408889634, 0.6931471805599453
_PRODUCT_LEVELS = 4  # softplus sums take one log1p per 2⁴ classes


def default_chunk_size(batch: int) -> int:
    """Classes per chunk so that a chunk holds about ``CHUNK_ELEMENTS`` logits."""
    return max(1, CHUNK_ELEMENTS // max(batch, 1))


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
    scale: float = 1.0,
) -> torch.Tensor:
    """The chunk's logits ``x Wᵀ + b·scale`` in ``buffer`` (``x`` is already scaled)."""
    rows = weight[start:stop].to(x.dtype)
    bias_rows = None if bias is None else bias[start:stop].to(x.dtype)
    if bias_rows is not None and scale != 1.0:
        bias_rows = bias_rows * scale
    out = buffer[: x.shape[0] * (stop - start)].view(x.shape[0], stop - start)
    return linear_logits(x, rows, bias_rows, out=out)


def _softplus_sum(bits: torch.Tensor) -> torch.Tensor:
    r"""``Σ_j softplus(ℓ_j)`` per row from base-2 logits ``y = ℓ·log₂e`` ``[B, n]``.

    .. math::

        \sum_j \operatorname{softplus}(\ell_j) = \ln 2 \sum_j \max(y_j, 0)
            + \log\Bigl(\prod_j (1 + u_j)\Bigr), \qquad u_j = 2^{-|y_j|} = e^{-|\ell_j|}

    with one ``log1p`` per group of 16 classes instead of one per class: the product minus one,
    ``q``, is merged pairwise as ``q_a + q_b + q_a q_b`` (all terms positive, so tiny ``u`` are
    kept exactly where ``1 + u`` would round them away), and ``exp2`` is several times cheaper
    than ``exp`` on CPU. Overwrites ``bits``.
    """
    width = bits.shape[1]
    total = torch.relu(bits).sum(dim=1).mul_(LN2)
    q = bits.abs_().neg_().exp2_()
    for _ in range(_PRODUCT_LEVELS):
        half = width // 2
        if half == 0:
            break
        low, high = q[:, :half], q[:, half : 2 * half]
        low.addcmul_(low, high).add_(high)
        if width % 2:  # an odd column joins column 0
            first, last = q[:, :1], q[:, width - 1 : width]
            first.addcmul_(first, last).add_(last)
        width = half
    return total.add_(q[:, :width].log1p_().sum(dim=1))


def _reduce_chunk(kind: LossKind, total: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Fold one chunk of base-2 logits ``y = ℓ·log₂e`` into the running per-row total:
    ``Σ softplus(ℓ)`` ("sigmoid") or ``log₂ Σ 2^y`` ("softmax", in bits; ``lse(ℓ) = ln 2 ·
    log₂ Σ 2^y``). Overwrites ``bits``."""
    if kind == "sigmoid":
        return total.add_(_softplus_sum(bits))
    top = bits.amax(dim=1, keepdim=True)  # in place: faster than torch.logsumexp
    chunk_lse = bits.sub_(top).exp2_().sum(dim=1).log2_().add_(top.squeeze(1))
    return torch.logaddexp2(total, chunk_lse.to(total.dtype))


def _accumulator_dtype(x: torch.Tensor) -> torch.dtype:
    """The per-row running total across chunks: float64 (``[B]`` only, so free) where the
    device has it, so that thousands of chunks add no rounding beyond one chunk's."""
    return x.dtype if x.device.type == "mps" else torch.float64


def _grad_logit_inputs(kind: LossKind, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(inputs, bias scale)`` of the backward's chunk logits: natural for σ, bits for
    softmax."""
    return (x, 1.0) if kind == "sigmoid" else (x * LOG2E, LOG2E)


def _chunk_grad(kind: LossKind, logits: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``dL/dℓ`` of one chunk, overwriting it: ``σ(ℓ)`` ("sigmoid"), or
    ``softmax(ℓ) = 2^{y − lse₂}`` from logits and total in bits ("softmax")."""
    if kind == "sigmoid":
        return logits.sigmoid_()
    return logits.sub_(total.unsqueeze(1)).exp2_()


def _true_logits(
    x: torch.Tensor, labels: torch.Tensor, weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor], layout: Layout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` logits of the true classes and their looked-up rows ``[B·T, D]``."""
    ids, args = labels.reshape(-1), (layout.num_classes, layout.strategy)
    rows = lookup(list(weights), ids, *args).to(x.dtype)
    bias_rows = lookup(list(biases), ids, *args).to(x.dtype) if biases else None
    return compose_logits(x, rows, bias_rows, None, None, labels.shape[1]), rows


def _add_rows(
    grads: Sequence[torch.Tensor | None], layout: Layout, ids: torch.Tensor, values: torch.Tensor
) -> None:
    """``grad[id] += value`` for global ``ids``, into the shard that holds each id."""
    if len(grads) == 1:
        shard, row = torch.zeros_like(ids), ids
    else:
        shard, row = route(ids, layout.num_classes, len(grads), layout.strategy)
    for p, grad in enumerate(grads):
        if grad is not None:
            at = (shard == p).nonzero().squeeze(1)
            grad.index_add_(0, row[at], values[at].to(grad.dtype))


def _true_weights(targets: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` targets of the true logits: ``targets``, or ``1/T`` everywhere."""
    if targets is None:
        return torch.full_like(like, 1.0 / like.shape[1])
    return targets.to(like.dtype)


class _ChunkedLoss(torch.autograd.Function):
    """Per row ``(Σ_t z_t)·partition(ℓ) − Σ_t z_t ℓ_{y_t}`` over all C classes (``z = 1/T``
    unless ``targets`` are given; the factor only for "softmax"), one dense gradient per
    table: the partition is ``Σ_c softplus(ℓ_c)`` ("sigmoid") or ``log Σ_c exp(ℓ_c)``
    ("softmax")."""

    @staticmethod
    def forward(
        ctx: Any, kind: LossKind, chunk_size: int, layout: Layout, labels: torch.Tensor,
        targets: torch.Tensor | None, inputs: torch.Tensor, *tables: torch.Tensor,
    ) -> torch.Tensor:
        weights, biases = tables[: len(layout.sizes)], tables[len(layout.sizes) :]
        x = inputs.to(work_dtype(inputs.dtype))
        x_bits, buffer = x * LOG2E, x.new_empty(x.shape[0] * chunk_size)
        total = torch.full((x.shape[0],), 0.0 if kind == "sigmoid" else -torch.inf,
                           dtype=_accumulator_dtype(x), device=x.device)
        for p, start, stop in chunks(weights, chunk_size):
            bias = biases[p] if biases else None
            bits = _chunk_logits(x_bits, weights[p], bias, start, stop, buffer, LOG2E)
            total = _reduce_chunk(kind, total, bits)
        total = total.to(x.dtype)
        true_logits, rows = _true_logits(x, labels, weights, biases, layout)
        z = _true_weights(targets, true_logits)
        ctx.save_for_backward(inputs, total, labels, rows, z, *tables)
        ctx.kind, ctx.chunk_size, ctx.layout = kind, chunk_size, layout
        ctx.mass = kind == "softmax" and targets is not None  # rows without labels weigh 0
        partition = total if kind == "sigmoid" else total * LN2
        if ctx.mass:
            partition = partition * z.sum(dim=1)
        return partition - (true_logits * z).sum(dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, total, labels, rows, z, *tables = ctx.saved_tensors
        num_shards, (batch, num_true) = len(ctx.layout.sizes), labels.shape
        weights, biases = tables[:num_shards], tables[num_shards:]
        x, scale = inputs.to(total.dtype), grad.to(total.dtype).unsqueeze(1)
        g_true = -scale * z  # dL/dℓ_{y_t} = −z_t on each true logit
        if ctx.mass:
            scale = scale * z.sum(dim=1, keepdim=True)
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[5] else None
        grads = [torch.zeros_like(t) if need else None
                 for t, need in zip(tables, ctx.needs_input_grad[6:], strict=True)]
        w_grads, b_grads = grads[:num_shards], grads[num_shards:]
        buffer = x.new_empty(batch * ctx.chunk_size)
        x_in, bias_scale = _grad_logit_inputs(ctx.kind, x)
        for p, start, stop in chunks(weights, ctx.chunk_size):
            bias = biases[p] if biases else None
            logits = _chunk_logits(x_in, weights[p], bias, start, stop, buffer, bias_scale)
            g = _chunk_grad(ctx.kind, logits, total).mul_(scale)
            if grad_x is not None:
                grad_x.addmm_(g, weights[p][start:stop].to(x.dtype))
            if (grad_w := w_grads[p]) is not None:
                grad_w[start:stop] = g.t() @ x
            if b_grads and (grad_b := b_grads[p]) is not None:
                grad_b[start:stop] = g.sum(dim=0)
        if grad_x is not None:
            true_rows = rows.view(batch, num_true, x.shape[1])
            grad_x.add_((true_rows * g_true.unsqueeze(2)).sum(dim=1))
        ids, per_id = labels.reshape(-1), g_true.reshape(-1)
        _add_rows(w_grads, ctx.layout, ids, x.repeat_interleave(num_true, 0) * per_id[:, None])
        if b_grads:
            _add_rows(b_grads, ctx.layout, ids, per_id)
        grad_inputs = None if grad_x is None else grad_x.to(inputs.dtype)
        return (None, None, None, None, None, grad_inputs, *grads)


def chunked_loss(
    kind: LossKind,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor] | None,
    layout: Layout,
    chunk_size: int,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B]`` full loss ``partition − mean_t ℓ_{y_t}`` in the work dtype; ``biases`` must be
    split like ``weights`` and ``labels`` be validated int64 ``[B, T]``. With ``targets``
    ``[B, T]`` (``1/n_b`` on real labels, 0 on padding) it is
    ``(Σ_t z_t)·partition − Σ_t z_t ℓ_{y_t}`` (the factor for "softmax" only)."""
    out: torch.Tensor = _ChunkedLoss.apply(  # type: ignore[no-untyped-call]
        kind, chunk_size, layout, labels, targets, inputs, *weights, *(biases or [])
    )
    return out


def _merge_top_k(
    values: torch.Tensor, ids: torch.Tensor, logits: torch.Tensor, chunk_ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` of a running top-k and one chunk's logits (with the chunk's class ids)."""
    chunk_values, cols = logits.topk(min(k, logits.shape[1]), dim=1)
    values = torch.cat([values, chunk_values], dim=1)
    ids = torch.cat([ids, chunk_ids[cols]], dim=1)
    values, best = values.topk(min(k, values.shape[1]), dim=1)
    return values, ids.gather(1, best)


@torch.no_grad()
def chunked_top_k(
    inputs: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor] | None,
    layout: Layout,
    k: int,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row and their global class ids, best first.

    Once a row holds ``k`` values, a chunk whose largest logit does not beat the row's k-th
    value cannot change it: only the other rows are merged (one device sync per chunk).
    """
    x = inputs.to(work_dtype(inputs.dtype))
    buffer = x.new_empty(x.shape[0] * chunk_size)
    values = x.new_empty(x.shape[0], 0)
    ids = torch.empty(x.shape[0], 0, dtype=torch.int64, device=x.device)
    for p, start, stop in chunks(weights, chunk_size):
        bias = biases[p] if biases else None
        logits = _chunk_logits(x, weights[p], bias, start, stop, buffer)
        chunk_ids = layout.global_ids(p, torch.arange(start, stop, device=x.device))
        if values.shape[1] < k:
            values, ids = _merge_top_k(values, ids, logits, chunk_ids, k)
            continue
        rows = (logits.amax(dim=1) > values[:, -1]).nonzero().squeeze(1)
        if rows.numel() == x.shape[0]:
            values, ids = _merge_top_k(values, ids, logits, chunk_ids, k)
        elif rows.numel() > 0:
            merged = _merge_top_k(values[rows], ids[rows], logits[rows], chunk_ids, k)
            values.index_copy_(0, rows, merged[0])
            ids.index_copy_(0, rows, merged[1])
    return values.to(inputs.dtype), ids
