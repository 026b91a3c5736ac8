"""The shared base of the class-sharded output layers (``_modules`` names the two losses).

Each rank's module owns one shard of ``weight``/``bias`` (the rows :func:`shard_ids` assigns
to it) and a replica of the sampler; ``forward`` validates, draws the shared candidates, and
calls the sharded core of ``_sampled`` or ``_evaluation``.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn

from torchnce._common.checks import (
    as_int_tensor,
    check_bool,
    check_choice,
    check_ids_in_range,
    check_int,
)
from torchnce._common.lookup import STRATEGIES, PartitionStrategy
from torchnce._exact.chunked import Kind, default_chunk_size
from torchnce._layers.base import _check_sampler
from torchnce._sampled.problem import _check_sampled_values
from torchnce._sampling.samplers import CandidateSampler
from torchnce.distributed._checkpoint import shard_ids
from torchnce.distributed._comm import Communicator, Timeout
from torchnce.distributed._evaluation import sharded_eval_loss, sharded_top_k
from torchnce.distributed._sampled import sharded_sampled_loss

Mode = Literal["sampled", "full"]
Reduction = Literal["none", "mean", "sum"]


class ShardedOutputLayer(nn.Module, abc.ABC):
    """Configuration, shard, sampler and process group shared by the two sharded losses."""

    _kind: ClassVar[Kind]

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        num_sampled: int,
        *,
        num_true: int,
        sampler: CandidateSampler | None,
        remove_accidental_hits: bool,
        bias: bool,
        partition_strategy: PartitionStrategy,
        sparse_grad: bool,
        reduction: Reduction,
        seed: int,
        group: Any,
        timeout: Timeout | None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.num_sampled = check_int("num_sampled", num_sampled, minimum=1)
        self.num_true = check_int("num_true", num_true, minimum=1)
        self.partition_strategy = cast(PartitionStrategy, check_choice(
            "partition_strategy", partition_strategy, STRATEGIES))
        self.remove_accidental_hits = check_bool("remove_accidental_hits", remove_accidental_hits)
        self.sparse_grad = check_bool("sparse_grad", sparse_grad)
        self.reduction = cast(Reduction, check_choice("reduction", reduction,
                                                      ("none", "mean", "sum")))
        self.seed = check_int("seed", seed)
        self.sampler = _check_sampler(sampler, self.num_classes, self.num_sampled)
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
            TypeError, ValueError: as :class:`torchnce.NCELoss`.
            CollectiveError: a peer rank died, hung past the timeout or ran another step.
        """
        mode = cast(Mode, check_choice("mode", mode or ("sampled" if self.training else "full"),
                                       ("sampled", "full")))
        labels = self._check_call(inputs, labels)
        bias = self.bias
        if mode == "full":
            chunk = default_chunk_size(inputs.shape[0] * self.world_size)
            loss, total = sharded_eval_loss(self._kind, self.comm, self.weight, bias, inputs,
                                            labels, self.num_classes, self.partition_strategy,
                                            chunk)
        else:
            values = self._values(inputs, labels, sampled_values)
            loss, total = sharded_sampled_loss(
                self._kind, self.comm, self.weight, bias, inputs, labels, values,
                self.num_classes, self.partition_strategy,
                remove_accidental_hits=self.remove_accidental_hits, sparse_grad=self.sparse_grad)
        if self.reduction == "none":
            return loss
        return loss.sum() / total if self.reduction == "mean" else loss.sum()

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
            f"reduction={self.reduction!r}, seed={self.seed}"
        )

    def _values(
        self, inputs: torch.Tensor, labels: torch.Tensor, sampled_values: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validated shared candidates: given, or drawn with the seeded generator."""
        if sampled_values is None:
            if self._generator is None or self._generator.device != inputs.device:
                self._generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
            sampled_values = self.sampler.sample(labels, self.num_sampled,
                                                 generator=self._generator)
        sampled, true_count, sampled_count = _check_sampled_values(
            sampled_values, self.num_classes, labels)
        if sampled.dim() != 1:
            raise ValueError(f"sampled_values must hold 1-D [num_sampled] candidates shared by "
                             f"the ranks, got shape {tuple(sampled.shape)}")
        if self.remove_accidental_hits and sampled.shape[0] != self.num_sampled:
            raise ValueError(f"sampled_values must hold num_sampled={self.num_sampled} "
                             f"candidates when remove_accidental_hits=True, got "
                             f"{sampled.shape[0]}")
        return sampled, true_count.detach(), sampled_count.detach()

    def _check_inputs(self, inputs: Any) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            got = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise TypeError(f"inputs must be a floating tensor [batch_size, embedding_dim], "
                            f"got {got}")
        if inputs.dim() != 2 or inputs.shape[1] != self.embedding_dim:
            raise ValueError(f"inputs must have shape [batch_size, embedding_dim="
                             f"{self.embedding_dim}], got {tuple(inputs.shape)}")
        return inputs

    def _check_call(self, inputs: Any, labels: Any) -> torch.Tensor:
        """Check inputs and labels against the configuration; return labels as ``[b_r, T]``."""
        inputs = self._check_inputs(inputs)
        ids = as_int_tensor("labels", labels, device=inputs.device)
        if ids.dim() == 1 and self.num_true == 1:
            ids = ids.unsqueeze(1)
        if ids.shape != (inputs.shape[0], self.num_true):
            raise ValueError(f"labels must have shape [batch_size={inputs.shape[0]}, "
                             f"num_true={self.num_true}], got {tuple(ids.shape)}")
        check_ids_in_range("labels", ids, self.num_classes)
        return ids.to(inputs.device)
