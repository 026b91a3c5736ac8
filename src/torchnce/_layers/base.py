"""The shared base of the output-layer modules: configuration, parameters, sampler, plumbing.

A module owns the output embeddings (one table or ``num_shards`` shards laid out by the
partition strategy), the biases and a candidate sampler. ``forward`` holds no maths: it
validates against the configuration, samples, and calls the functional core that the concrete
classes of ``_modules`` name.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Literal, cast

import torch
from torch import nn

from torchnce._common.checks import (
    as_int_tensor,
    check_bool,
    check_choice,
    check_ids_in_range,
    check_int,
)
from torchnce._common.lookup import STRATEGIES, PartitionStrategy, shard_sizes
from torchnce._common.types import SampledValues
from torchnce._exact.evaluation import full_logits, top_k
from torchnce._sampling.per_example import sampler_rows
from torchnce._sampling.samplers import CandidateSampler, LogUniformSampler

Mode = Literal["sampled", "full"]
Reduction = Literal["none", "mean", "sum"]
_MODES = ("sampled", "full")
_REDUCTIONS = ("none", "mean", "sum")
Table = torch.Tensor | list[torch.Tensor]


def _check_num_shards(num_shards: Any, num_classes: int) -> int:
    shards = check_int("num_shards", num_shards, minimum=1)
    if shards > num_classes:
        raise ValueError(f"num_shards must be in [1, num_classes={num_classes}], got {shards}")
    return shards


def _check_sampler(sampler: Any, num_classes: int, num_sampled: int) -> CandidateSampler:
    if sampler is None:
        if num_sampled > num_classes:
            raise ValueError(
                f"num_sampled must be <= num_classes={num_classes} for the default unique "
                f"sampler, got {num_sampled} (Sampler's range is too small)"
            )
        return LogUniformSampler(num_classes)
    if not isinstance(sampler, CandidateSampler):
        raise TypeError(f"sampler must be a torchnce.CandidateSampler or None, got "
                        f"{type(sampler).__name__}")
    if sampler.range_max is not None and sampler.range_max != num_classes:
        raise ValueError(f"sampler must have range_max = num_classes={num_classes}, got "
                         f"range_max={sampler.range_max}")
    return sampler


def _parameter(shape: tuple[int, ...], factory: dict[str, Any]) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, **factory))


def _table(
    shapes: list[tuple[int, ...]], factory: dict[str, Any]
) -> nn.Parameter | nn.ParameterList:
    """One parameter, or a ``ParameterList`` of shards."""
    if len(shapes) == 1:
        return _parameter(shapes[0], factory)
    return nn.ParameterList([_parameter(shape, factory) for shape in shapes])


def _as_table(param: nn.Parameter | nn.ParameterList | None) -> Table | None:
    """The form the functional layer takes: a tensor, or a Python list of shards."""
    if param is None or isinstance(param, torch.Tensor):
        return param
    return list(param.parameters())


class OutputLayer(nn.Module, abc.ABC):
    """Configuration, parameters and sampler shared by the two output-layer losses."""

    weight: nn.Parameter | nn.ParameterList
    bias: nn.Parameter | nn.ParameterList | None

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
        num_shards: int,
        partition_strategy: PartitionStrategy,
        sparse_grad: bool,
        reduction: Reduction,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        per_example_negatives: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
        self.num_sampled = check_int("num_sampled", num_sampled, minimum=1)
        self.num_true = check_int("num_true", num_true, minimum=1)
        self.num_shards = _check_num_shards(num_shards, self.num_classes)
        self.partition_strategy = cast(PartitionStrategy, check_choice(
            "partition_strategy", partition_strategy, STRATEGIES))
        self.remove_accidental_hits = check_bool("remove_accidental_hits", remove_accidental_hits)
        self.sparse_grad = check_bool("sparse_grad", sparse_grad)
        self.per_example_negatives = check_bool("per_example_negatives", per_example_negatives)
        self.reduction = cast(Reduction, check_choice("reduction", reduction, _REDUCTIONS))
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype or None, got {dtype}")
        self.sampler = _check_sampler(sampler, self.num_classes, self.num_sampled)
        sizes = shard_sizes(self.num_classes, self.num_shards, self.partition_strategy)
        factory = {"device": device, "dtype": dtype}
        self.weight = _table([(n, self.embedding_dim) for n in sizes], factory)
        if check_bool("bias", bias):
            self.bias = _table([(n,) for n in sizes], factory)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TensorFlow word2vec's initialisation: weights from a normal with std ``1/√D``
        truncated at two standard deviations, biases zero."""
        std = 1.0 / math.sqrt(self.embedding_dim)
        for shard in _shards(self.weight):
            nn.init.trunc_normal_(shard, std=std, a=-2 * std, b=2 * std)
        for shard in _shards(self.bias):
            nn.init.zeros_(shard)

    def forward(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        sampled_values: Any = None,
        mode: Mode | None = None,
    ) -> torch.Tensor:
        """The sampled loss in training mode, the exact full loss in eval mode, reduced.

        Args:
            inputs: ``[B, D]`` floating, with ``D = embedding_dim``.
            labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1), ids in ``[0, C)``.
            sampled_values: a ``(sampled_candidates, true_expected_count,
                sampled_expected_count)`` triple to use instead of drawing from ``sampler``
                (2-D candidates ``[B, S]`` are per-example negatives).
            mode: ``"sampled"`` or ``"full"`` to force either loss; None follows
                ``self.training``.

        Returns:
            The loss reduced by ``reduction``: ``[B]`` for "none", a scalar otherwise.

        Raises:
            TypeError, ValueError: inputs or labels that disagree with the configuration, an
                unknown mode; and whatever the functional loss raises. Checking that labels
                are in range reads them (one device synchronisation).
        """
        if mode is None:
            mode = "sampled" if self.training else "full"
        mode = cast(Mode, check_choice("mode", mode, _MODES))
        labels = self._check_call(inputs, labels)
        if mode == "full":
            loss = self._full_loss(inputs, labels)
        else:
            if sampled_values is None:
                sampled_values = self._draw(labels)
            loss = self._sampled_loss(inputs, labels, sampled_values)
        if self.reduction == "none":
            return loss
        return loss.mean() if self.reduction == "mean" else loss.sum()

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` full logits in global class order (see :func:`torchnce.full_logits`)."""
        return full_logits(self._weights(), self._biases(), inputs, self.partition_strategy)

    def top_k(
        self, inputs: torch.Tensor, k: int, *, chunk_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)`` of the ``k`` best classes per row (see :func:`torchnce.top_k`)."""
        return top_k(self._weights(), self._biases(), inputs, k, self.partition_strategy,
                     chunk_size=chunk_size)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
            f"num_sampled={self.num_sampled}, num_true={self.num_true}, "
            f"remove_accidental_hits={self.remove_accidental_hits}, "
            f"bias={self.bias is not None}, num_shards={self.num_shards}, "
            f"partition_strategy={self.partition_strategy!r}, sparse_grad={self.sparse_grad}, "
            f"reduction={self.reduction!r}, per_example_negatives={self.per_example_negatives}"
        )

    def _draw(self, labels: torch.Tensor) -> SampledValues:
        """The sampler's candidates: shared by the batch, or drawn for every row."""
        if self.per_example_negatives:
            return sampler_rows(self.sampler, labels, self.num_sampled)
        return self.sampler.sample(labels, self.num_sampled)

    def _weights(self) -> Table:
        return self.weight if isinstance(self.weight, torch.Tensor) else list(self.weight)

    def _biases(self) -> Table | None:
        return _as_table(self.bias)

    def _check_call(self, inputs: Any, labels: Any) -> torch.Tensor:
        """Check inputs and labels against the configuration; return labels as ``[B, T]``."""
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            got = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise TypeError(f"inputs must be a floating tensor [batch_size, embedding_dim], "
                            f"got {got}")
        if inputs.dim() != 2 or inputs.shape[1] != self.embedding_dim:
            raise ValueError(f"inputs must have shape [batch_size, embedding_dim="
                             f"{self.embedding_dim}], got {tuple(inputs.shape)}")
        ids = as_int_tensor("labels", labels, device=inputs.device)
        if ids.dim() == 1 and self.num_true == 1:
            ids = ids.unsqueeze(1)
        if ids.shape != (inputs.shape[0], self.num_true):
            raise ValueError(f"labels must have shape [batch_size={inputs.shape[0]}, "
                             f"num_true={self.num_true}], got {tuple(ids.shape)}")
        check_ids_in_range("labels", ids, self.num_classes)
        return ids

    @abc.abstractmethod
    def _sampled_loss(
        self, inputs: torch.Tensor, labels: torch.Tensor, sampled_values: Any
    ) -> torch.Tensor:
        """Per-example sampled loss ``[B]``."""

    @abc.abstractmethod
    def _full_loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example exact loss over all classes ``[B]``."""


def _shards(param: nn.Parameter | nn.ParameterList | None) -> list[torch.Tensor]:
    table = _as_table(param)
    if table is None:
        return []
    return table if isinstance(table, list) else [table]
