"""One sampled step over class shards: rows travel to the data, the loss is computed locally.

Rank ``r`` holds the rows of its classes and its own batch ``x_r`` ``[b_r, D]`` with labels
``[b_r, T]``; every rank holds the same ``S`` candidates. A step is three ``all_to_all``
exchanges forward and one backward:

1. split sizes: how many label rows each rank asks of each owner (P² integers), with a
   checksum of the candidates so that ranks that disagree on them fail together;
2. row indices: each rank sends the owner-local rows of its labels to their owners;
3. rows: each owner sends back the requested rows and, to every rank, the rows (and biases) of
   the candidates it owns — an all-gather of the ``S`` sampled rows fused into the same call;
4. backward, the same call reversed: row gradients return to their owners, where
   ``index_add`` (or a sparse gradient) lands them in the shard.

Each rank then holds the ``b_r·T + S`` rows its examples need and computes the loss of its
rows with the single-process fused node: the maths is the core's, only the rows' origin
differs. Per rank and step that is ``2·(P−1)/P·(S + b·T)·(D + 1)`` values plus
``(P−1)/P·b·T`` indices and ``(P+1)·(P−1)`` integers of split sizes and checksums (balanced
ranks; see docs/distributed.md).
"""

from __future__ import annotations

import torch

from torchnce._common.lookup import gather_rows, route
from torchnce._common.types import LossKind
from torchnce._sampled.fused import FusedPlan, fused_loss
from torchnce._sampled.logits import log_q
from torchnce._sampled.problem import Classes
from torchnce.distributed._comm import Communicator, exchange


def _counts(owner: torch.Tensor, world: int) -> list[int]:
    return [int(c) for c in torch.bincount(owner, minlength=world).tolist()]


def _digest(sampled: torch.Tensor) -> int:
    """A checksum of the candidates and their order, to catch ranks that disagree."""
    weights = torch.arange(1, 2 * sampled.numel() + 1, 2, device=sampled.device)
    return int(((sampled + 1) * weights).sum()) * 31 + sampled.numel()


def _positions(order: torch.Tensor, offsets: list[int], sizes: list[int]) -> torch.Tensor:
    """For each item, its row in a buffer where owner ``q``'s items start at ``offsets[q]``;
    ``order`` sorts the items by owner (stably), ``sizes`` counts them per owner."""
    device = order.device
    sorted_pos = torch.cat([torch.arange(o, o + n, device=device)
                            for o, n in zip(offsets, sizes, strict=True)])
    out = torch.empty_like(sorted_pos)
    out[order] = sorted_pos
    return out


def _payload(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor, sparse_grad: bool
) -> torch.Tensor:
    """``[n, D (+1)]``: the weight rows, with the bias as a last column when there is one."""
    w = gather_rows(weight, rows, sparse_grad=sparse_grad)
    if bias is None:
        return w
    b = gather_rows(bias, rows, sparse_grad=sparse_grad).to(w.dtype)
    return torch.cat([w, b.unsqueeze(1)], dim=1)


def exchange_rows(
    comm: Communicator,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    label_ids: torch.Tensor,
    sampled: torch.Tensor,
    num_classes: int,
    strategy: str,
    sparse_grad: bool,
) -> tuple[torch.Tensor, int]:
    """``([n_true + S, D (+1)] rows of label_ids then sampled, global number of labels)``.

    Differentiable: the backward sends each row's gradient to its owner's shard.
    """
    world, rank = comm.world_size, comm.rank
    owner_l, row_l = route(label_ids, num_classes, world, strategy)
    owner_s, row_s = route(sampled, num_classes, world, strategy)
    order_l = torch.argsort(owner_l, stable=True)
    order_s = torch.argsort(owner_s, stable=True)
    asked, s_counts = _counts(owner_l, world), _counts(owner_s, world)
    matrix = comm.all_gather_counts([*asked, _digest(sampled)])  # [q][p]: rows q asks of p
    if len({row[world] for row in matrix}) > 1:  # every rank sees it: all raise, none hangs
        raise ValueError("sampled_values must hold the same candidates on every rank, got "
                         "different ones; draw them with a shared seed or broadcast them")
    from_peers = [matrix[q][rank] for q in range(world)]
    device = weight.device
    wanted = comm.all_to_all(row_l[order_l].to(device), asked, from_peers, what="row indices")
    own = row_s[owner_s == rank].to(device)
    starts = [0, *torch.tensor(from_peers).cumsum(0).tolist()]
    index = torch.cat([torch.cat([wanted[starts[q]:starts[q + 1]], own]) for q in range(world)])
    send = [n + s_counts[rank] for n in from_peers]
    recv = [asked[q] + s_counts[q] for q in range(world)]
    payload = _payload(weight, bias, index, sparse_grad)
    received = exchange(comm, payload, send, recv, "rows")
    offsets = [0, *torch.tensor(recv).cumsum(0).tolist()[:-1]]
    true_pos = _positions(order_l.to(device), offsets, asked)
    sampled_pos = _positions(order_s.to(device), [o + a for o, a in zip(offsets, asked,
                                                                          strict=True)],
                             s_counts)
    total_labels = sum(sum(row[:world]) for row in matrix)
    return received.index_select(0, torch.cat([true_pos, sampled_pos])), total_labels


def sharded_sampled_loss(
    kind: LossKind,
    comm: Communicator,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    inputs: torch.Tensor,
    classes: Classes,
    num_classes: int,
    strategy: str,
    *,
    sparse_grad: bool,
) -> tuple[torch.Tensor, int]:
    """``(per-example loss [b_r], global batch size)`` for validated classes: labels int64
    ``[b_r, T]``, shared candidates ``[S]`` (the same on every rank), counts and hits."""
    labels, num_true = classes.labels, classes.num_true
    rows, total_labels = exchange_rows(comm, weight, bias, labels.reshape(-1), classes.sampled,
                                       num_classes, strategy, sparse_grad)
    dim = weight.shape[1]
    w_rows, b_rows = rows[:, :dim], (None if bias is None else rows[:, dim])
    plan = FusedPlan(None, None, log_q(classes, inputs.dtype), classes.hits, None, num_true,
                     None, kind, False)
    return fused_loss(inputs, w_rows, b_rows, plan), total_labels // num_true
