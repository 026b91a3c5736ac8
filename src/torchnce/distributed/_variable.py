"""The variable-size exchange of a sampled step: only the rows asked for travel, sized on the host.

Three ``all_to_all`` exchanges forward and one backward:

1. split sizes: how many label rows each rank asks of each owner (P² integers), with a
   checksum of the candidates so that ranks that disagree on them fail together;
2. row indices: each rank sends the owner-local rows of its labels to their owners;
3. rows: each owner sends back the requested rows and, to every rank, the rows (and biases) of
   the candidates it owns — an all-gather of the ``S`` sampled rows fused into the same call;
4. backward, the same call reversed: row gradients return to their owners, where
   ``index_add`` (or a sparse gradient) lands them in the shard.

``all_to_all_single`` takes its split sizes on the host, so each step reads the per-owner
counts back (``bincount(...).tolist()``, the exchanged sizes, a mask of the owned candidates):
device synchronisations that the padded exchange (``_padded``) avoids by sending more bytes.
Per rank and step ``2·(P−1)/P·(S + b·T)·(D + 1)`` values, ``(P−1)/P·b·T`` indices and
``(P+1)·(P−1)`` integers of split sizes and checksums (balanced ranks; docs/distributed.md).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from torchnce._common.lookup import route
from torchnce.distributed._comm import Communicator, exchange
from torchnce.distributed._rows import SAME_CANDIDATES, digest, payload


def _counts(owner: torch.Tensor, world: int) -> list[int]:
    return [int(c) for c in torch.bincount(owner, minlength=world).tolist()]


def _positions(order: torch.Tensor, offsets: list[int], sizes: list[int]) -> torch.Tensor:
    """For each item, its row in a buffer where owner ``q``'s items start at ``offsets[q]``;
    ``order`` sorts the items by owner (stably), ``sizes`` counts them per owner."""
    device = order.device
    sorted_pos = torch.cat([torch.arange(o, o + n, device=device)
                            for o, n in zip(offsets, sizes, strict=True)])
    out = torch.empty_like(sorted_pos)
    out[order] = sorted_pos
    return out


def variable_rows(
    comm: Communicator,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    label_ids: torch.Tensor,
    sampled: torch.Tensor,
    num_classes: int,
    strategy: str,
    sparse_grad: bool,
    update: Any = None,
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
    matrix = comm.all_gather_counts([*asked, int(digest(sampled))])  # [q][p]: rows q asks of p
    if len({row[world] for row in matrix}) > 1:  # every rank sees it: all raise, none hangs
        raise ValueError(SAME_CANDIDATES)
    from_peers = [matrix[q][rank] for q in range(world)]
    device = weight.device
    wanted = comm.all_to_all(row_l[order_l].to(device), asked, from_peers, what="row indices")
    own = row_s[owner_s == rank].to(device)
    starts = [0, *itertools.accumulate(from_peers)]
    index = torch.cat([torch.cat([wanted[starts[q]:starts[q + 1]], own]) for q in range(world)])
    send = [n + s_counts[rank] for n in from_peers]
    recv = [asked[q] + s_counts[q] for q in range(world)]
    received = exchange(comm, payload(weight, bias, index, sparse_grad, update), send, recv,
                        "rows")
    offsets = [0, *itertools.accumulate(recv)][:-1]
    true_pos = _positions(order_l.to(device), offsets, asked)
    sampled_pos = _positions(order_s.to(device),
                             [o + a for o, a in zip(offsets, asked, strict=True)], s_counts)
    total_labels = sum(sum(row[:world]) for row in matrix)
    return received.index_select(0, torch.cat([true_pos, sampled_pos])), total_labels
