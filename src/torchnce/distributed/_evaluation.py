"""Exact evaluation over sharded classes: every owner scores every row against its shard.

Every class takes part, so here the data travels to the rows: the batch is all-gathered
(``(P−1)·b·(D + T)`` values sent per rank), each rank reduces the logits of its shard chunk by
chunk (``torchnce._exact.chunked``: bounded memory) to partial results for every row, and the
partials travel back to the rows' ranks to be merged: sums for the sigmoid loss, a
log-sum-exp for the softmax partition, a top-k of the P candidate lists for ``top_k``. The
losses are differentiable (the exchanges are autograd functions and the shard's part is the
core's chunked node), so they also train an exact, vocabulary-parallel full softmax.
"""

from __future__ import annotations

from typing import cast

import torch

from torchnce._common.lookup import route
from torchnce._common.types import LossKind, PartitionStrategy
from torchnce._exact.chunked import Layout, chunked_loss, chunked_top_k
from torchnce._sampled.logits import linear_logits, work_dtype
from torchnce.distributed._checkpoint import shard_ids
from torchnce.distributed._comm import Communicator, exchange


def gather_batch(
    comm: Communicator, rows: torch.Tensor, sizes: list[int], *, grad: bool = False
) -> torch.Tensor:
    """Every rank's ``rows`` (rank ``q`` has ``sizes[q]``), concatenated in rank order; with
    ``grad`` the gradients of the copies return to their rank and add up."""
    mine = rows.repeat(comm.world_size, *([1] * (rows.dim() - 1)))
    send = [rows.shape[0]] * comm.world_size
    if grad:
        return exchange(comm, mine, send, sizes, "batch")
    return comm.all_to_all(mine, send, sizes, what="batch")


def batch_sizes(comm: Communicator, batch: int) -> list[int]:
    """The batch size of every rank."""
    return [row[0] for row in comm.all_gather_counts([batch] * comm.world_size)]


def _return_rows(
    comm: Communicator, partial: torch.Tensor, sizes: list[int], *, grad: bool = False
) -> torch.Tensor:
    """Send each rank its rows of ``partial`` ``[B, ...]``; ``[P, b_r, ...]`` comes back."""
    mine, world = sizes[comm.rank], comm.world_size
    if grad:
        back = exchange(comm, partial, sizes, [mine] * world, "partial results")
    else:
        back = comm.all_to_all(partial, sizes, [mine] * world, what="partial results")
    return back.view(world, mine, *partial.shape[1:])


def _partition(kind: LossKind, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               strategy: str, chunk_size: int) -> torch.Tensor:
    """Per row, ``Σ softplus(ℓ)`` ("sigmoid") or ``log Σ exp(ℓ)`` ("softmax") over the shard, with
    the core's chunked node (memory ``B·chunk``): its loss against the shard's row 0, plus
    that logit."""
    first = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
    layout = Layout((int(weight.shape[0]),), strategy)
    loss = chunked_loss(kind, x, first, [weight], None if bias is None else [bias], layout,
                        chunk_size)
    return loss + linear_logits(x, weight[:1].to(x.dtype),
                                None if bias is None else bias[:1].to(x.dtype)).squeeze(1)


def _true_part(comm: Communicator, x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None, num_classes: int, strategy: str) -> torch.Tensor:
    """Per row, ``(1/T) Σ_t ℓ_{y_t}`` over the labels this rank owns."""
    owner, row = route(labels, num_classes, comm.world_size, strategy)
    mine = owner == comm.rank
    local = torch.where(mine, row, 0)
    logits = (weight[local].to(x.dtype) * x.unsqueeze(1)).sum(dim=2)
    if bias is not None:
        logits = logits + bias[local].to(x.dtype)
    return torch.where(mine, logits, 0.0).sum(dim=1) / labels.shape[1]


def sharded_eval_loss(
    kind: LossKind, comm: Communicator, weight: torch.Tensor, bias: torch.Tensor | None,
    inputs: torch.Tensor, labels: torch.Tensor, num_classes: int, strategy: str,
    chunk_size: int,
) -> tuple[torch.Tensor, int]:
    """``([b_r] full loss partition − mean_t ℓ_{y_t} of this rank's rows, global batch)``,
    differentiable: every rank must then run the backward too."""
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (inputs, weight, bias))
    sizes = batch_sizes(comm, inputs.shape[0])
    x = gather_batch(comm, inputs, sizes, grad=grad)
    y = gather_batch(comm, labels, sizes)
    work = x.to(work_dtype(x.dtype))
    partial = torch.stack([
        _partition(kind, work, weight, bias, strategy, chunk_size),
        _true_part(comm, work, y, weight, bias, num_classes, strategy),
    ], dim=1)
    merged = _return_rows(comm, partial, sizes, grad=grad)
    partition = merged[:, :, 0].sum(0) if kind == "sigmoid" else merged[:, :, 0].logsumexp(0)
    return (partition - merged[:, :, 1].sum(0)).to(inputs.dtype), sum(sizes)


@torch.no_grad()
def sharded_top_k(
    comm: Communicator, weight: torch.Tensor, bias: torch.Tensor | None, inputs: torch.Tensor,
    k: int, num_classes: int, strategy: str, chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, ids)`` ``[b_r, k]`` of this rank's rows over all classes, best first."""
    sizes = batch_sizes(comm, inputs.shape[0])
    x = gather_batch(comm, inputs, sizes)
    local_k = min(k, int(weight.shape[0]))
    layout = Layout((int(weight.shape[0]),), strategy)
    biases = None if bias is None else [bias]
    scores, rows = chunked_top_k(x, [weight], biases, layout, local_k, chunk_size)
    owned = shard_ids(num_classes, comm.rank, comm.world_size, cast(PartitionStrategy, strategy))
    ids = owned.to(rows.device)[rows]
    pad = k - local_k
    scores = torch.nn.functional.pad(scores, (0, pad), value=-torch.inf)
    ids = torch.nn.functional.pad(ids, (0, pad), value=-1)
    all_scores = _return_rows(comm, scores, sizes).permute(1, 0, 2).reshape(sizes[comm.rank], -1)
    all_ids = _return_rows(comm, ids, sizes).permute(1, 0, 2).reshape(sizes[comm.rank], -1)
    best, at = all_scores.topk(k, dim=1)
    return best, all_ids.gather(1, at)
