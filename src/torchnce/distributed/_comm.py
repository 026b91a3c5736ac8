"""The transports of the sharded layer: ``all_to_all_single`` and a summing ``all_reduce``,
with autograd and a byte count.

Every exchange of a sharded step (ids, rows, partial results) is one ``all_to_all_single`` of
rows with per-peer split sizes, whose backward is the same collective with the splits swapped,
so gradients flow back to whichever rank sent a row. The padded exchange also sums masked
candidate rows over the ranks with ``all_reduce``, whose backward is the same sum of the
gradients. A failed or timed-out collective becomes a :class:`CollectiveError` naming the
rank, the operation and the timeout, instead of a bare backend error (or, with a hung peer, a
wait that only the process group timeout ends).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

Timeout = float | datetime.timedelta


class CollectiveError(RuntimeError):
    """A collective of the sharded layer failed: a peer died, hung or ran another step.

    Every rank must run the same forward and backward calls; the message names the collective
    and the ranks involved.

    Examples:
        >>> from torchnce.distributed import CollectiveError
        >>> try:
        ...     layer(inputs, labels)  # a peer rank has died  # doctest: +SKIP
        ... except CollectiveError as error:
        ...     print(error)  # doctest: +SKIP
        >>> issubclass(CollectiveError, RuntimeError)
        True
    """


def _as_timedelta(timeout: Timeout | None) -> datetime.timedelta | None:
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, a timedelta or None, got "
                        f"{type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return datetime.timedelta(seconds=float(timeout))


class Communicator:
    """A process group as the sharded layer uses it: rank, size, backend, timeout, traffic.

    Attributes:
        group: the process group (``None`` is the default group).
        rank: this process's rank in ``group``.
        world_size: P, the number of ranks of ``group``.
        timeout: after how long a collective fails, in words for error messages.
        bytes_sent: bytes this rank has sent to other ranks so far (its own chunk excluded;
            an ``all_reduce`` of ``n`` bytes counts ``2·(P−1)/P·n``, what a ring sends).
    """

    def __init__(self, group: Any = None, timeout: Timeout | None = None) -> None:
        delta = _as_timedelta(timeout)
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "torchnce.distributed needs an initialised process group, got none; call "
                "torch.distributed.init_process_group(...) first"
            )
        if delta is not None:  # a group of the same ranks with its own timeout
            ranks = dist.get_process_group_ranks(group or dist.group.WORLD)
            group = dist.new_group(ranks, timeout=delta)
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.timeout = "the process group's" if delta is None else f"{delta.total_seconds():g} s"
        self.bytes_sent = 0

    def all_to_all(
        self, rows: torch.Tensor, send: Sequence[int], recv: Sequence[int], *, what: str
    ) -> torch.Tensor:
        """Send ``send[p]`` leading rows of ``rows`` (in rank order) to rank ``p``; return the
        ``recv[q]`` rows received from each rank ``q``, concatenated in rank order. No autograd
        (see :func:`exchange`)."""
        rows = rows.contiguous()
        out = rows.new_empty((sum(recv), *rows.shape[1:]))
        row_bytes = math.prod(rows.shape[1:]) * rows.element_size()
        self.bytes_sent += row_bytes * (sum(send) - send[self.rank])
        try:
            dist.all_to_all_single(out, rows, list(recv), list(send), group=self.group)
        except (RuntimeError, dist.DistBackendError) as err:
            raise self._failed("all_to_all_single", what, err) from err
        return out

    def all_reduce(self, rows: torch.Tensor, *, what: str) -> torch.Tensor:
        """The sum of every rank's ``rows`` (the same shape on every rank), on every rank. No
        autograd (see :func:`reduce_sum`)."""
        out = rows.contiguous().clone()
        share = 2 * (self.world_size - 1) / self.world_size
        self.bytes_sent += round(share * out.numel() * out.element_size())
        try:
            dist.all_reduce(out, group=self.group)
        except (RuntimeError, dist.DistBackendError) as err:
            raise self._failed("all_reduce", what, err) from err
        return out

    def _failed(self, collective: str, what: str, err: BaseException) -> CollectiveError:
        return CollectiveError(
            f"{collective} of {what} failed on rank {self.rank} of {self.world_size} "
            f"({self.backend}, timeout {self.timeout}): a peer rank died, hung past "
            f"the timeout or ran a different step; see the other ranks' logs ({err})"
        )

    def all_gather_counts(self, counts: Sequence[int]) -> list[list[int]]:
        """Every rank's ``counts`` (a list of the same length on every rank), row ``q`` being
        rank ``q``'s: one small all-to-all."""
        mine = torch.tensor(list(counts), dtype=torch.int64, device=self.device)
        peers = self.all_to_all(mine.repeat(self.world_size, 1), [1] * self.world_size,
                                [1] * self.world_size, what="split sizes")
        return [[int(v) for v in row] for row in peers.tolist()]

    @property
    def device(self) -> torch.device:
        """Where the backend takes tensors: the current CUDA device for NCCL, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


class _Exchange(torch.autograd.Function):
    """``all_to_all_single`` of rows; the gradient goes back by the reverse exchange."""

    @staticmethod
    def forward(
        ctx: Any, rows: torch.Tensor, comm: Communicator, send: list[int], recv: list[int],
        what: str,
    ) -> torch.Tensor:
        ctx.comm, ctx.send, ctx.recv, ctx.what = comm, send, recv, what
        return comm.all_to_all(rows, send, recv, what=what)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        back = ctx.comm.all_to_all(grad, ctx.recv, ctx.send, what=f"gradients of {ctx.what}")
        return back, None, None, None, None


def exchange(
    comm: Communicator, rows: torch.Tensor, send: list[int], recv: list[int], what: str
) -> torch.Tensor:
    """Differentiable :meth:`Communicator.all_to_all`: every rank must also run the backward."""
    out: torch.Tensor = _Exchange.apply(rows, comm, send, recv, what)  # type: ignore[no-untyped-call]
    return out


class _ReduceSum(torch.autograd.Function):
    """``all_reduce`` (sum) of rows; every rank's loss uses the sum, so the gradient of each
    rank's addend is the sum of the ranks' gradients: the same collective."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, comm: Communicator, what: str) -> torch.Tensor:
        ctx.comm, ctx.what = comm, what
        return comm.all_reduce(rows, what=what)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return ctx.comm.all_reduce(grad, what=f"gradients of {ctx.what}"), None, None


def reduce_sum(comm: Communicator, rows: torch.Tensor, what: str) -> torch.Tensor:
    """Differentiable :meth:`Communicator.all_reduce`: every rank must also run the backward."""
    out: torch.Tensor = _ReduceSum.apply(rows, comm, what)  # type: ignore[no-untyped-call]
    return out
