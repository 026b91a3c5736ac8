"""Contrastive losses whose in-batch negatives are the global batch: every rank's keys.

Each rank keeps its own rows (queries, positives) and receives every other rank's keys, ids
and log-Q by one ``all_to_all_single`` each (an all-gather that gloo and NCCL both run); the
backward of a gathered tensor sends each rank the gradient of its rows from every rank and
sums them, so the gradient of a rank's key is the sum over all ranks' losses: exactly the
single-process gradient on the concatenated batch (the pitfall of gathering without a
differentiable backward, or of an all-gather whose backward keeps only the local gradient or
averages it, is that every key's gradient misses the other ranks' share).
"""

from __future__ import annotations

import math
from typing import Any, final

import torch

from torchnce._common.checks import check_bool
from torchnce._common.types import Reduction
from torchnce._contrastive.core import (
    check_ids,
    check_keys,
    check_log_q,
    check_query,
    check_reduction,
    check_temperature,
    columns,
    embed,
    id_mask,
    in_batch_mask,
    in_batch_rows,
    mixed_rows,
)
from torchnce._contrastive.options import (
    check_min_probability,
    check_num_hard_negatives,
    check_sample_weight,
    check_score_mask,
    removed,
    weigh,
)
from torchnce.distributed._comm import Communicator, Timeout, exchange


@final
class GatheredNegatives:
    r"""``info_nce_loss`` and ``mixed_negatives_loss`` over the global batch of all ranks.

    With ``P`` ranks of ``B`` rows each, rank ``r``'s rows are rows ``rB .. rB + B - 1`` of
    the global batch of ``PB`` rows; every rank's keys (and sampled keys, ids, log-Q) are
    gathered, so each row's negatives are the ``PB - 1`` other keys of the global batch.
    Each rank returns its share of the single-process loss on the concatenated batch:

    .. math::
        \text{loss}_r = \frac{1}{PB} \sum_{i \in \text{rank } r} w_i L_i \;\; (\text{"mean"}),
        \qquad \sum_r \text{loss}_r = \text{the single-process loss}

    and the gradients of every rank's inputs are those of :math:`\sum_r \text{loss}_r`, i.e.
    the single-process gradients (each gathered tensor's backward sums the gradients that
    every rank's loss sends it). ``"none"`` gives the rank's ``[B]`` rows.

    Traffic per step and rank, element size ``e`` bytes: ``(P − 1)·8·c`` for the agreement
    on shapes (``c`` = 8 counts), then ``(P − 1)·B·D·e`` for the keys forward and the same
    backward, ``(P − 1)·B·H·D·e`` each way for the queries with ``symmetric=True`` (``H = 1``
    for ``[B, D]`` queries), ``(P − 1)·B·8`` per id tensor and ``(P − 1)·B·e`` for
    ``log_q`` (``batch_log_q``); ``mixed_negatives_loss`` adds ``(P − 1)·M·D·e`` each way
    for the sampled keys and ``(P − 1)·M·(8 + e)`` for their ids and log-Q.
    :attr:`bytes_sent` counts them.

    Args:
        group: the process group (None: the default group).
        timeout: seconds (or a timedelta) after which a collective fails with
            :class:`CollectiveError`; None keeps the group's timeout.

    Raises:
        RuntimeError: no initialised process group.
        TypeError / ValueError: a bad ``timeout``.

    Note:
        Every rank must make the same calls, with the same options and the same batch size
        (checked: a mismatch raises the same ``ValueError`` on every rank), and run the
        backward. ``DistributedDataParallel`` averages the ranks' parameter gradients, so
        there multiply the loss by ``world_size`` to get the single-process gradient of the
        global batch. A peer that dies or hangs makes the others raise
        :class:`CollectiveError`, never wait forever. The agreement on shapes reads its 8
        counts per rank on the host: one synchronisation per call (on NCCL, a wait for the
        stream); everything else stays on the device.

    Examples:
        >>> import torch
        >>> from torchnce.distributed import GatheredNegatives
        >>> gathered = GatheredNegatives(timeout=60.0)  # doctest: +SKIP
        >>> loss = gathered.info_nce_loss(query, key, temperature=0.05)  # doctest: +SKIP
        >>> (loss * gathered.world_size).backward()  # under DDP  # doctest: +SKIP
        >>> GatheredNegatives.__name__
        'GatheredNegatives'
    """

    def __init__(self, group: Any = None, *, timeout: Timeout | None = None) -> None:
        self.comm = Communicator(group, timeout)

    @property
    def rank(self) -> int:
        """This process's rank in the group."""
        return self.comm.rank

    @property
    def world_size(self) -> int:
        """``P``, the number of ranks."""
        return self.comm.world_size

    @property
    def bytes_sent(self) -> int:
        """Bytes this rank has sent to the others so far (its own chunk excluded)."""
        return self.comm.bytes_sent

    def info_nce_loss(
        self,
        query: torch.Tensor,
        positive_key: torch.Tensor,
        *,
        temperature: float | torch.Tensor = 0.1,
        symmetric: bool = False,
        normalize: bool = True,
        reduction: Reduction = "mean",
        query_ids: Any = None,
        key_ids: Any = None,
        log_q: Any = None,
        num_hard_negatives: int | None = None,
        sample_weight: Any = None,
        min_probability: float | None = None,
        score_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`torchnce.info_nce_loss` with in-batch negatives from every rank.

        The arguments are those of the single-process function (in-batch form) for this
        rank's ``B`` rows; ``score_mask`` is ``[B, PB]`` (the global batch's keys, in rank
        order), ``num_hard_negatives`` at most ``PB - 1``.

        Returns:
            This rank's share of the global loss (see the class), or its ``[B]`` rows.

        Raises:
            TypeError / ValueError: as :func:`torchnce.info_nce_loss`, and a batch size,
                dim, head count or option presence that differs between ranks (on every
                rank, naming the argument). ``score_mask`` with ``symmetric=True``.
            CollectiveError: a peer died, hung past the timeout or ran another step.
        """
        q = check_query(query, heads=True)
        batch, dim = q.shape[0], q.shape[-1]
        k = check_keys("positive_key", positive_key, q, "BD", (batch, dim))
        tau = check_temperature(temperature)
        symmetric = check_bool("symmetric", symmetric)
        normalize = check_bool("normalize", normalize)
        reduction = check_reduction(reduction)
        clip = check_min_probability(min_probability)
        weight = check_sample_weight(sample_weight, batch, q)
        qids = _ids("query_ids", query_ids, batch, q)
        kids = _ids("key_ids", key_ids, batch, q)
        lq = None if log_q is None else check_log_q("log_q", log_q, "B", (batch,), q, clip)
        if symmetric and (lq is not None or score_mask is not None):
            name = "log_q" if lq is not None else "score_mask"
            raise ValueError(f"{name} must be None when symmetric=True, got a tensor")
        heads = q.shape[1] if q.dim() == 3 else 0
        self._agree(batch, dim, heads, 0, qids, kids, lq, symmetric)
        world, offset = self.world_size, self.rank * batch
        hard = check_num_hard_negatives(num_hard_negatives, world * batch - 1)
        shown = check_score_mask(score_mask, (batch, world * batch), "[B, PB]", q.device)
        q, k = embed(q, normalize), embed(k, normalize)
        keys = self._gather(k, "keys")
        all_qids, all_kids, all_lq = (None if t is None else self._gather(t, what)
                                      for t, what in ((qids, "query ids"), (kids, "key ids"),
                                                      (lq, "log_q")))
        mask = in_batch_mask(qids, kids, all_qids, all_kids, offset)
        back = None
        if symmetric:
            back = (self._gather(q, "queries"), mask)
        loss = in_batch_rows(q, keys, offset, tau, all_lq, removed(mask, shown, offset), hard,
                             back)
        return weigh(loss, weight, reduction, world * batch)

    def mixed_negatives_loss(
        self,
        query: torch.Tensor,
        positive_key: torch.Tensor,
        sampled_keys: torch.Tensor,
        *,
        batch_log_q: Any,
        sampled_log_q: Any,
        temperature: float | torch.Tensor = 0.1,
        normalize: bool = True,
        reduction: Reduction = "mean",
        query_ids: Any = None,
        key_ids: Any = None,
        sampled_ids: Any = None,
        num_hard_negatives: int | None = None,
        sample_weight: Any = None,
        min_probability: float | None = None,
        score_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:func:`torchnce.mixed_negatives_loss` with every rank's keys and sampled keys.

        Each rank passes its ``B`` rows and its own ``M`` sampled keys; the loss is that of
        the concatenated batch with the concatenated ``PM`` sampled keys (rank order), so
        ``sampled_log_q`` stays the sampler's per-draw log-probability and the correction
        of the sampled block is ``log (PM q_m)``. ``score_mask`` is ``[B, PB + PM]``.

        Returns:
            This rank's share of the global loss (see the class), or its ``[B]`` rows.

        Raises:
            TypeError / ValueError: as :func:`torchnce.mixed_negatives_loss`, and a batch
                size, number of sampled keys, dim or option presence that differs between
                ranks (on every rank, naming the argument).
            CollectiveError: a peer died, hung past the timeout or ran another step.
        """
        q = check_query(query)
        batch, dim = q.shape
        k = check_keys("positive_key", positive_key, q, "BD", (batch, dim))
        n = check_keys("sampled_keys", sampled_keys, q, "MD", (-1, dim))
        width = n.shape[0]
        clip = check_min_probability(min_probability)
        blq = check_log_q("batch_log_q", batch_log_q, "B", (batch,), q, clip)
        slq = check_log_q("sampled_log_q", sampled_log_q, "M", (width,), q, clip)
        tau = check_temperature(temperature)
        normalize = check_bool("normalize", normalize)
        reduction = check_reduction(reduction)
        weight = check_sample_weight(sample_weight, batch, q)
        qids, kids = _ids("query_ids", query_ids, batch, q), _ids("key_ids", key_ids, batch, q)
        sids = None if sampled_ids is None else check_ids(
            "sampled_ids", sampled_ids, "M", (width,), q.device)
        if sids is not None and kids is None:
            raise ValueError("key_ids must be given with sampled_ids (their ids are compared)")
        self._agree(batch, dim, 0, width, qids, kids, sids, False)
        world, offset = self.world_size, self.rank * batch
        hard = check_num_hard_negatives(num_hard_negatives, world * (batch + width) - 1)
        shown = check_score_mask(score_mask, (batch, world * (batch + width)), "[B, PB + PM]",
                                 q.device)
        q, k, n = embed(q, normalize), embed(k, normalize), embed(n, normalize)
        keys, sampled = self._gather(k, "keys"), self._gather(n, "sampled keys")
        all_blq, all_slq = self._gather(blq, "batch_log_q"), self._gather(slq, "sampled_log_q")
        correction = torch.cat([all_blq, all_slq + math.log(max(world * width, 1))])
        all_qids, all_kids = (None if t is None else self._gather(t, what)
                              for t, what in ((qids, "query ids"), (kids, "key ids")))
        ids = in_batch_mask(qids, kids, all_qids, all_kids, offset)
        hits = None
        if sids is not None and kids is not None:
            hits = id_mask(kids, self._gather(sids, "sampled ids"))
        mask = columns([(ids, world * batch), (hits, world * width)], batch)
        loss = mixed_rows(q, keys, sampled, offset, tau, correction,
                          removed(mask, shown, offset), hard)
        return weigh(loss, weight, reduction, world * batch)

    def _agree(self, batch: int, dim: int, heads: int, width: int, *present: Any) -> None:
        """Check on every rank that all ranks have the same shapes and options: one small
        all-gather of 8 counts; a mismatch raises the same ValueError everywhere."""
        flags = [int(p is not None and p is not False) for p in present]
        counts = [batch, dim, heads, width, *flags, *[0] * (4 - len(flags))]
        every = self.comm.all_gather_counts(counts)
        names = ["query (its batch size B)", "positive_key (its dim D)",
                 "query (its number of heads H)", "sampled_keys (its number of rows M)",
                 "query_ids", "key_ids", "log_q or sampled_ids", "symmetric"]
        for column, name in enumerate(names):
            seen = [row[column] for row in every]
            if len(set(seen)) > 1:
                raise ValueError(f"{name} must be the same on every rank, got {seen} by rank "
                                 "(1: given, 0: not, for options)")

    def _gather(self, rows: torch.Tensor, what: str) -> torch.Tensor:
        """Every rank's ``rows`` (the same shape on every rank), concatenated in rank order;
        differentiable for floating rows (the backward sums every rank's gradient)."""
        world = self.world_size
        copies = rows.repeat(world, *[1] * (rows.dim() - 1))
        split = [rows.shape[0]] * world
        if rows.is_floating_point():
            return exchange(self.comm, copies, split, split, what)
        return self.comm.all_to_all(copies, split, split, what=what)


def _ids(name: str, ids: Any, batch: int, q: torch.Tensor) -> torch.Tensor | None:
    return None if ids is None else check_ids(name, ids, "B", (batch,), q.device)
