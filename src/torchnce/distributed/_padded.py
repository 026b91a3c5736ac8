"""The padded exchange of a sampled step: fixed-size blocks, so the host reads no device value.

Every split size follows from numbers the host already has: the batch capacity ``m`` (the
most rows a rank's batch may hold, the same on every rank), ``T``, ``S`` and ``P``. A step is
two ``all_to_all`` exchanges and one ``all_reduce`` forward, one of each backward:

1. requests: every rank sends every peer the same block of ``2 + m·T`` integers: the
   candidates' checksum, its batch size ``b_r`` and its label ids, padded with −1 past
   ``b_r·T``; every rank then checks all checksums and sizes (on CPU by reading them, raising
   ``ValueError`` on every rank at once; elsewhere as device-side assertions);
2. label rows: owner ``p`` answers every block slot by slot, the row of each label it owns
   and zeros elsewhere, so that rank ``q`` receives ``P`` blocks of ``m·T`` rows and keeps,
   for each of its labels, the owner's (an ``index_select``: fixed shapes, no mask read);
3. candidate rows: each rank writes the rows of the candidates it owns into a zero
   ``[S, D (+1)]`` buffer and an ``all_reduce`` sums the buffers (every row has one non-zero
   addend, so the sum is exact);
4. backward: label-row gradients return to their owners by the reverse ``all_to_all`` (the
   padding slots carry zeros) and candidate-row gradients are summed over the ranks; one
   ``index_add`` lands both in the shard.

The price is bytes: every label row is answered by every rank (``(P−1)·m·T`` rows sent per
rank and direction instead of ``(P−1)/P·b·T``) and the candidates are summed rather than
gathered (``2·(P−1)/P·S`` rows instead of ``(P−1)/P·S``). Figures in docs/distributed.md.
"""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import reads_on_host
from torchnce._common.lookup import route
from torchnce.distributed._comm import Communicator, exchange, reduce_sum
from torchnce.distributed._rows import SAME_CANDIDATES, digest, payload


def too_large(capacity: int, batch: int | None = None, rank: int = 0) -> str:
    """The error for a batch beyond the padded exchange's capacity (without the batch on the
    device, where it is not read)."""
    got = "" if batch is None else f", got {batch} on rank {rank}"
    return (f"inputs must have at most {capacity} rows (max_batch_size) on every rank with "
            f'exchange="padded"{got}; pass a larger max_batch_size or exchange="variable"')


def _request(labels: torch.Tensor, sampled: torch.Tensor, slots: int) -> torch.Tensor:
    """``[2 + slots]`` int64: the candidates' checksum, the batch size, the label ids padded
    with −1 (cut at ``slots`` when the batch is too large, which every rank then reports)."""
    ids = labels.reshape(-1)[:slots]
    size = torch.full((1,), labels.shape[0], dtype=torch.int64, device=ids.device)
    padded = torch.nn.functional.pad(ids, (0, slots - ids.numel()), value=-1)
    return torch.cat([digest(sampled).view(1).to(ids.device), size, padded])


def _check_blocks(blocks: torch.Tensor, capacity: int) -> None:
    """Every rank sent the same checksum and a batch of at most ``capacity`` rows."""
    digests, batches = blocks[:, 0], blocks[:, 1]
    if not reads_on_host(blocks):
        torch._assert_async((digests == digests[0]).all(), SAME_CANDIDATES)
        torch._assert_async(batches.max() <= capacity, too_large(capacity))
        return
    heads = blocks[:, :2].tolist()  # CPU only: a read that stalls nothing
    if len({d for d, _ in heads}) > 1:  # every rank reads the same blocks: all raise
        raise ValueError(SAME_CANDIDATES)
    for q, (_, batch) in enumerate(heads):
        if batch > capacity:
            raise ValueError(too_large(capacity, batch, q))


def _owned_rows(
    weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor, rank: int, world: int,
    num_classes: int, strategy: str, update: Any = None,
) -> torch.Tensor:
    """``[n, D (+1)]``: the rows of the ids this rank owns, zeros for the others and for −1."""
    owner, row = route(ids.clamp(min=0), num_classes, world, strategy)
    mine = (ids >= 0) & (owner == rank)
    rows = payload(weight, bias, torch.where(mine, row, 0), sparse_grad=False, update=update)
    return torch.where(mine.unsqueeze(1), rows, 0.0)


def padded_rows(
    comm: Communicator,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    sampled: torch.Tensor,
    num_classes: int,
    strategy: str,
    capacity: int,
    update: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([b·T + S, D (+1)] rows of the labels (row-major) then the candidates, the global
    batch size as a 0-d int64 tensor)``, for labels ``[b, T]`` with ``b <= capacity``.

    Differentiable: the backward sends each row's gradient to its owner's shard.
    """
    world, rank, device = comm.world_size, comm.rank, weight.device
    slots = capacity * labels.shape[1]
    request = _request(labels.to(device), sampled.to(device), slots)
    blocks = comm.all_to_all(request.expand(world, -1), [1] * world, [1] * world,
                             what="label ids")
    _check_blocks(blocks, capacity)
    if labels.shape[0] > capacity:  # off CPU: the peers' assertions fail, this rank says why
        raise ValueError(too_large(capacity, labels.shape[0], rank))
    asked = torch.cat([blocks[:, 2:].reshape(-1), sampled.to(device)])  # one gather, one grad
    rows = _owned_rows(weight, bias, asked, rank, world, num_classes, strategy, update)
    answers, owned = rows[: world * slots], rows[world * slots :]
    got = exchange(comm, answers, [slots] * world, [slots] * world, "label rows")
    ids = labels.reshape(-1).to(device)
    owner, _ = route(ids, num_classes, world, strategy)
    true_rows = got.index_select(0, owner * slots + torch.arange(ids.numel(), device=device))
    sampled_rows = reduce_sum(comm, owned, "candidate rows")
    return torch.cat([true_rows, sampled_rows]), blocks[:, 1].sum()
