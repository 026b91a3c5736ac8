"""The shared base of the class-sharded output layers (``_modules`` names the two losses).

Each rank's module owns one shard of ``weight``/``bias`` (the rows :func:`shard_ids` assigns
to it) and a replica of the sampler; ``forward`` validates, draws the shared candidates, and
calls the sharded core of ``_sampled`` or ``_evaluation``. It also picks the exchange of a
training step (padded or variable) and holds the padded one's batch capacity.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn

from torchnce._common.checks import check_all_in_range, check_bool, check_choice, check_int
from torchnce._common.types import Mode, PartitionStrategy, Reduction, apply_reduction
from torchnce._exact.chunked import default_chunk_size
from torchnce._layers.base import (
    Settings,
    check_call,
    check_mode,
    check_sampler,
    check_settings,
    layer_classes,
    settings_of,
)
from torchnce._layers.update import RowUpdate, bound_update, checked_update
from torchnce._sampled.problem import Classes, check_inputs
from torchnce._sampled.spec import LossSpec
from torchnce._sampling.samplers import CandidateSampler
from torchnce.distributed._checkpoint import shard_ids
from torchnce.distributed._comm import Communicator, Timeout
from torchnce.distributed._evaluation import batch_sizes, sharded_eval_loss, sharded_top_k
from torchnce.distributed._sampled import sharded_sampled_loss

Exchange = Literal["padded", "variable"]
EXCHANGES = ("padded", "variable")


def check_exchange(
    exchange: Any, sparse_grad: bool, max_batch_size: Any
) -> tuple[Exchange, int | None]:
    """``(exchange, max_batch_size)`` checked together; None picks ``"padded"``, or
    ``"variable"`` with ``sparse_grad`` (whose gradient must hold only the rows looked up)."""
    if exchange is None:
        exchange = "variable" if sparse_grad else "padded"
    choice = cast(Exchange, check_choice("exchange", exchange, EXCHANGES))
    if choice == "padded" and sparse_grad:
        raise ValueError('exchange must be "variable" with sparse_grad=True, got "padded"; the '
                         "padded exchange's sparse gradient would hold a zero row per padding "
                         "slot, which SparseAdam takes as a visit")
    if max_batch_size is None:
        return choice, None
    if choice == "variable":
        raise ValueError(f'max_batch_size must be None with exchange="variable" (the default '
                         f"with sparse_grad=True), got {max_batch_size!r}")
    return choice, check_int("max_batch_size", max_batch_size, minimum=1)


class ShardedOutputLayer(nn.Module):
    """The shared base of the sharded losses: configuration, shard, sampler, process group.

    A concrete class names its loss in ``spec`` and documents the arguments; ``forward``
    validates, draws the shared candidates and calls the sharded core.

    Examples:
        >>> from torchnce.distributed import ShardedNCELoss, ShardedOutputLayer
        >>> issubclass(ShardedNCELoss, ShardedOutputLayer), ShardedNCELoss.spec.name
        (True, 'nce_loss')
    """

    spec: ClassVar[LossSpec]

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        num_sampled: int,
        *,
        num_true: int = 1,
        sampler: CandidateSampler | None = None,
        remove_accidental_hits: bool | None = None,
        bias: bool = True,
        partition_strategy: PartitionStrategy = "mod",
        sparse_grad: bool = False,
        reduction: Reduction = "mean",
        seed: int = 0,
        group: Any = None,
        timeout: Timeout | None = None,
        exchange: Exchange | None = None,
        max_batch_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        update: RowUpdate | None = None,
    ) -> None:
        super().__init__()
        (self.num_classes, self.embedding_dim, self.num_sampled, self.num_true,
         self.remove_accidental_hits, self.partition_strategy, self.sparse_grad,
         self.reduction) = check_settings(
            self.spec, num_classes, embedding_dim, num_sampled, num_true,
            remove_accidental_hits, partition_strategy, sparse_grad, reduction)
        self.seed = check_int("seed", seed)
        update = checked_update(update, sparse_grad=self.sparse_grad)  # before the group
        _, self.max_batch_size = check_exchange(exchange, self.sparse_grad, max_batch_size)
        self.exchange: Exchange | None = exchange  # None: picked at each call, by sparse_grad
        self._agreed_batch: int | None = None
        self.sampler = check_sampler(sampler, self.num_classes, self.num_sampled)
        if device is not None:  # a given sampler moves with the parameters, as .to() would
            self.sampler.to(device)
        self.comm = Communicator(group, timeout)
        ids = shard_ids(self.num_classes, self.comm.rank, self.comm.world_size,
                        self.partition_strategy)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(ids.numel(), self.embedding_dim, **factory))
        self.bias: nn.Parameter | None = None
        if check_bool("bias", bias):
            self.bias = nn.Parameter(torch.empty(ids.numel(), **factory))
        self._generator: torch.Generator | None = None
        self.reset_parameters()
        self.update = update
        self._check_update()

    def _check_update(self) -> RowUpdate | None:
        """The shard's row update, checked against the settings and bound to the shard."""
        return bound_update(self.update, self.sparse_grad, [self.weight],
                            None if self.bias is None else [self.bias])

    @property
    def settings(self) -> Settings:
        """The configuration as the checks take it (read at every call)."""
        return settings_of(self)

    @property
    def rank(self) -> int:
        """This process's rank in the group."""
        return self.comm.rank

    @property
    def world_size(self) -> int:
        """P, the number of shards."""
        return self.comm.world_size

    @property
    def bytes_sent(self) -> int:
        """Bytes this rank has sent to other ranks so far (forward and backward)."""
        return self.comm.bytes_sent

    def shard_ids(self) -> torch.Tensor:
        """The global class ids of this rank's rows, in row order."""
        return shard_ids(self.num_classes, self.rank, self.world_size, self.partition_strategy)

    def reset_parameters(self) -> None:
        """As :meth:`torchnce.NCELoss.reset_parameters`, from this process's random stream."""
        std = 1.0 / math.sqrt(self.embedding_dim)
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        sampled_values: Any = None,
        mode: Mode | None = None,
    ) -> torch.Tensor:
        """This rank's share of the sampled loss (training) or the exact full loss (eval).

        Every rank of the group must call it (and ``backward``) in the same order.

        Args:
            inputs: ``[b_r, D]`` floating, this rank's batch.
            labels: integer ``[b_r, T]`` (or ``[b_r]`` when ``num_true`` is 1).
            sampled_values: ``(sampled_candidates [S], true_expected_count [b_r, T],
                sampled_expected_count [S])``, the candidates the same on every rank; None
                draws from ``sampler`` with the shared seeded generator.
            mode: ``"sampled"`` or ``"full"``; None follows ``self.training``.

        Returns:
            ``[b_r]`` for ``reduction="none"``; else this rank's part of the sum (``"sum"``)
            or of the mean over the global batch (``"mean"``): summed over the ranks, it is
            the single-process loss of the concatenated batch.

        Raises:
            TypeError, ValueError: as :class:`torchnce.NCELoss`; and, with the padded
                exchange, on every rank: a batch beyond ``max_batch_size`` on some rank, or
                ``sampled_values`` that differ between the ranks (device-side assertions off
                CPU, ``RuntimeError`` when the device reaches them).
            CollectiveError: a peer rank died, hung past the timeout or ran another step.
        """
        mode = check_mode(mode, self.training)
        inputs, labels = check_call(inputs, labels, self.settings, self.weight.device)
        total: int | torch.Tensor
        if mode == "full":
            check_all_in_range((("labels", labels),), self.num_classes)
            chunk = default_chunk_size(inputs.shape[0] * self.world_size)
            loss, total = sharded_eval_loss(self.spec.kind, self.comm, self.weight, self.bias,
                                            inputs, labels, self.num_classes,
                                            self.partition_strategy, chunk)
        else:
            update = self._check_update()
            classes = self._classes(inputs, labels, sampled_values)
            loss, total = sharded_sampled_loss(
                self.spec.kind, self.comm, self.weight, self.bias, inputs, classes,
                self.num_classes, self.partition_strategy, sparse_grad=self.sparse_grad,
                capacity=self._capacity(inputs.shape[0]), update=update)
        if self.reduction == "mean":
            return loss.sum() / total  # the mean over the global batch
        return apply_reduction(loss, self.reduction)

    def top_k(
        self, inputs: torch.Tensor, k: int, *, chunk_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)`` ``[b_r, k]`` of the ``k`` best classes of this rank's rows over
        all C classes (as :func:`torchnce.top_k`); every rank must call it."""
        inputs = self._check_inputs(inputs)
        k = check_int("k", k, minimum=1)
        if k > self.num_classes:
            raise ValueError(f"k must be in [1, num_classes={self.num_classes}], got {k}")
        chunk = (default_chunk_size(inputs.shape[0] * self.world_size) if chunk_size is None
                 else check_int("chunk_size", chunk_size, minimum=1))
        return sharded_top_k(self.comm, self.weight, self.bias, inputs, k, self.num_classes,
                             self.partition_strategy, chunk)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"num_sampled={self.num_sampled}, num_true={self.num_true}, "
            f"remove_accidental_hits={self.remove_accidental_hits}, "
            f"bias={self.bias is not None}, partition_strategy={self.partition_strategy!r}, "
            f"rank={self.rank}, world_size={self.world_size}, sparse_grad={self.sparse_grad}, "
            f"reduction={self.reduction!r}, seed={self.seed}, exchange={self.exchange!r}, "
            f"max_batch_size={self.max_batch_size}"
        )

    def _capacity(self, batch: int) -> int | None:
        """The padded exchange's batch capacity, None for the variable exchange: the
        ``max_batch_size`` setting, else the largest batch of the ranks' first training step
        (agreed by one small exchange read on the host, then kept)."""
        exchange, max_batch_size = check_exchange(self.exchange, self.sparse_grad,
                                                  self.max_batch_size)
        if exchange == "variable":
            return None
        if max_batch_size is not None:
            return max_batch_size
        if self._agreed_batch is None:
            self._agreed_batch = max(batch_sizes(self.comm, batch))
        return self._agreed_batch

    def _classes(
        self, inputs: torch.Tensor, labels: torch.Tensor, sampled_values: Any
    ) -> Classes:
        """Validated shared candidates: given, or drawn with the seeded generator."""
        stale = self._generator is None or self._generator.device != inputs.device
        if sampled_values is None and stale:
            self._generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        classes = layer_classes(self.sampler, labels, sampled_values, self.settings,
                                generator=self._generator, log_counts=self.spec.subtract_log_q)
        if classes.per_example:
            raise ValueError(f"sampled_values must hold 1-D [num_sampled] candidates shared by "
                             f"the ranks, got shape {tuple(classes.sampled.shape)}")
        return classes

    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        return check_inputs(inputs, self.embedding_dim)
