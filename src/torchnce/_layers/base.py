"""The shared base of the output-layer modules: configuration, parameters, sampler, plumbing.

A module owns the output embeddings (one table or ``num_shards`` shards laid out by the
partition strategy), the biases and a candidate sampler. ``forward`` holds no maths: it checks
the call against the configuration (one range check of the ids), samples, builds the validated
call from those parts and hands it to the core (``_sampled.fused``, ``_exact.evaluation``); the
concrete classes of ``modules`` only name their loss's ``LossSpec``.
The class-sharded layers of ``torchnce.distributed`` reuse the checks defined here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple, cast

import torch
from torch import nn

from torchnce._common.checks import (
    as_int_tensor,
    check_all_in_range,
    check_bool,
    check_choice,
    check_int,
    range_too_small,
)
from torchnce._common.labels import TrueLabels
from torchnce._common.lookup import shard_sizes
from torchnce._common.types import (
    MODES,
    REDUCTIONS,
    STRATEGIES,
    Mode,
    PartitionStrategy,
    Reduction,
    SampledValues,
    apply_reduction,
)
from torchnce._exact.chunked import Layout
from torchnce._exact.evaluation import exact_loss, full_logits, top_k
from torchnce._layers.update import RowUpdate, bound_update, checked_update
from torchnce._sampled.fused import fused_sampled_loss
from torchnce._sampled.problem import (
    Classes,
    Problem,
    check_inputs,
    check_sampled_values,
    logged_counts,
    make_classes,
)
from torchnce._sampled.spec import LossSpec
from torchnce._sampling.fixed import FixedUnigramSampler
from torchnce._sampling.learned import LearnedUnigramSampler
from torchnce._sampling.per_example import sampler_rows
from torchnce._sampling.samplers import (
    AllCandidateSampler,
    CandidateSampler,
    LogUniformSampler,
    UniformSampler,
)

# torchnce's own (final) samplers: their draws hold valid ids and counts by construction.
TRUSTED_SAMPLERS = (UniformSampler, LogUniformSampler, AllCandidateSampler, FixedUnigramSampler,
                    LearnedUnigramSampler)


class Settings(NamedTuple):
    """The validated configuration every output layer shares (sharded ones included)."""

    num_classes: int
    embedding_dim: int
    num_sampled: int
    num_true: int
    remove_accidental_hits: bool
    partition_strategy: PartitionStrategy
    sparse_grad: bool
    reduction: Reduction


def check_settings(
    spec: LossSpec, num_classes: Any, embedding_dim: Any, num_sampled: Any, num_true: Any,
    remove_accidental_hits: Any, partition_strategy: Any, sparse_grad: Any, reduction: Any,
) -> Settings:
    """Validate the shared configuration; ``remove_accidental_hits=None`` takes ``spec``'s."""
    if remove_accidental_hits is None:
        remove_accidental_hits = spec.remove_accidental_hits
    return Settings(
        check_int("num_classes", num_classes, minimum=1),
        check_int("embedding_dim", embedding_dim, minimum=1),
        check_int("num_sampled", num_sampled, minimum=1),
        check_int("num_true", num_true, minimum=1),
        check_bool("remove_accidental_hits", remove_accidental_hits),
        cast(PartitionStrategy, check_choice("partition_strategy", partition_strategy,
                                             STRATEGIES)),
        check_bool("sparse_grad", sparse_grad),
        cast(Reduction, check_choice("reduction", reduction, REDUCTIONS)),
    )


def settings_of(layer: Any) -> Settings:
    """A layer's current settings, read from its attributes of the same names."""
    return Settings(*(getattr(layer, name) for name in Settings._fields))


def check_sampler(sampler: Any, num_classes: int, num_sampled: int) -> CandidateSampler:
    """The layer's sampler (``LogUniformSampler(C)`` for None), able to draw ``S`` unique
    candidates among the C classes."""
    if sampler is not None and not isinstance(sampler, CandidateSampler):
        raise TypeError(f"sampler must be a torchnce.CandidateSampler or None, got "
                        f"{type(sampler).__name__}")
    if sampler is not None and sampler.range_max not in (None, num_classes):
        raise ValueError(f"sampler must have range_max = num_classes={num_classes}, got "
                         f"range_max={sampler.range_max}")
    if num_sampled > num_classes:
        bound = "the default unique sampler" if sampler is None else "unique draws"
        raise range_too_small(num_sampled, f"num_classes={num_classes} for {bound}")
    return LogUniformSampler(num_classes) if sampler is None else sampler


def check_mode(mode: Any, training: bool) -> Mode:
    """``mode``, or the one ``training`` implies when None."""
    if mode is None:
        return "sampled" if training else "full"
    return cast(Mode, check_choice("mode", mode, MODES))


def check_call(inputs: Any, labels: Any, settings: Settings, device: torch.device) -> tuple[
        torch.Tensor, torch.Tensor]:
    """``(inputs, labels [B, T])`` checked against the configuration and the parameters'
    ``device``; reads nothing (the ids' range is checked with the candidates')."""
    inputs = check_inputs(inputs, settings.embedding_dim)
    if inputs.device != device:
        raise ValueError(f"inputs must be on the device of the layer's parameters ({device}), "
                         f"got {inputs.device}; move the layer with .to(device)")
    ids = as_int_tensor("labels", labels, device=inputs.device)
    if ids.dim() == 1 and settings.num_true == 1:
        ids = ids.unsqueeze(1)
    if ids.shape != (inputs.shape[0], settings.num_true):
        raise ValueError(f"labels must have shape [batch_size={inputs.shape[0]}, "
                         f"num_true={settings.num_true}], got {tuple(ids.shape)}")
    return inputs, ids.to(inputs.device)


def layer_classes(
    sampler: CandidateSampler, labels: torch.Tensor, sampled_values: Any, settings: Settings,
    *, per_example: bool = False, generator: torch.Generator | None = None,
    log_counts: bool = True,
) -> Classes:
    """The call's classes: the given ``sampled_values`` (checked with the labels in one read
    of the device), or the sampler's draw for the checked labels. A draw of torchnce's own
    samplers is trusted; that of any other ``CandidateSampler`` is checked as given
    ``sampled_values`` are (one more read). With ``log_counts`` (a loss that subtracts log Q)
    the checked expected counts must be finite and > 0."""
    num_classes, num_sampled = settings.num_classes, settings.num_sampled
    if sampled_values is not None:
        values = check_sampled_values(sampled_values, labels)
        check_all_in_range((("labels", labels), ("sampled_values", values[0])), num_classes,
                           logged_counts(values, None) if log_counts else ())
    else:
        check_sampler(sampler, num_classes, num_sampled)  # settings may have changed since
        name, upper = "labels", num_classes
        if isinstance(sampler, AllCandidateSampler):
            name, upper = "labels (the AllCandidateSampler's range is num_sampled)", min(
                num_classes, num_sampled)
        check_all_in_range(((name, labels),), upper)
        trusted = type(sampler) in TRUSTED_SAMPLERS
        values = draw(sampler, labels, num_sampled, per_example, generator, trusted=trusted)
        if not trusted:
            values = check_sampled_values(values, labels)
            check_all_in_range((("sampler's sampled_candidates", values[0]),), num_classes,
                               logged_counts(values, None) if log_counts else ())
    return make_classes(TrueLabels(labels, None), values, num_sampled,
                        settings.remove_accidental_hits)


def draw(
    sampler: CandidateSampler, labels: torch.Tensor, num_sampled: int, per_example: bool,
    generator: torch.Generator | None, *, trusted: bool,
) -> SampledValues:
    """The sampler's unique candidates for validated labels: shared by the batch, or drawn for
    every row. A ``trusted`` sampler's core is called directly (it reads nothing); any other
    sampler through its public ``sample``."""
    if per_example:
        return sampler_rows(sampler, labels, num_sampled, trusted=trusted)
    if trusted:
        return sampler._sample(labels, num_sampled, True, generator)
    return sampler.sample(labels, num_sampled, generator=generator)


def _table(
    sizes: list[int], trailing: tuple[int, ...], factory: dict[str, Any]
) -> nn.Parameter | nn.ParameterList:
    """One parameter, or a ``ParameterList`` of shards."""
    params = [nn.Parameter(torch.empty((n, *trailing), **factory)) for n in sizes]
    return params[0] if len(params) == 1 else nn.ParameterList(params)


def _shards(param: nn.Parameter | nn.ParameterList | None) -> list[torch.Tensor] | None:
    """The form the core takes: a list of shards (one for a single table)."""
    if param is None:
        return None
    return [param] if isinstance(param, torch.Tensor) else list(param)


class OutputLayer(nn.Module):
    """Configuration, parameters and sampler shared by the output-layer losses; a concrete
    class names its loss in ``spec`` and documents the arguments."""

    spec: ClassVar[LossSpec]
    weight: nn.Parameter | nn.ParameterList
    bias: nn.Parameter | nn.ParameterList | None
    update: RowUpdate | None

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
        num_shards: int = 1,
        partition_strategy: PartitionStrategy = "mod",
        sparse_grad: bool = False,
        reduction: Reduction = "mean",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        per_example_negatives: bool = False,
        update: RowUpdate | None = None,
    ) -> None:
        super().__init__()
        (self.num_classes, self.embedding_dim, self.num_sampled, self.num_true,
         self.remove_accidental_hits, self.partition_strategy, self.sparse_grad,
         self.reduction) = check_settings(
            self.spec, num_classes, embedding_dim, num_sampled, num_true,
            remove_accidental_hits, partition_strategy, sparse_grad, reduction)
        self.num_shards = check_int("num_shards", num_shards, minimum=1)
        if self.num_shards > self.num_classes:
            raise ValueError(f"num_shards must be in [1, num_classes={self.num_classes}], "
                             f"got {self.num_shards}")
        self.per_example_negatives = check_bool("per_example_negatives", per_example_negatives)
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype or None, got {dtype}")
        self.sampler = check_sampler(sampler, self.num_classes, self.num_sampled)
        if device is not None:  # a given sampler moves with the parameters, as .to() would
            self.sampler.to(device)
        sizes = shard_sizes(self.num_classes, self.num_shards, self.partition_strategy)
        factory = {"device": device, "dtype": dtype}
        self.weight = _table(sizes, (self.embedding_dim,), factory)
        if check_bool("bias", bias):
            self.bias = _table(sizes, (), factory)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        self.update = checked_update(update, sparse_grad=self.sparse_grad)
        self._check_update()

    def _check_update(self) -> RowUpdate | None:
        """The layer's row update, checked against its settings and bound to its tables."""
        return bound_update(self.update, self.sparse_grad, self._weights(), self._biases())

    @property
    def settings(self) -> Settings:
        """The configuration as the checks take it (read at every call, so that a setting
        changed after construction is the one used)."""
        return settings_of(self)

    def reset_parameters(self) -> None:
        """TensorFlow word2vec's initialisation: weights from a normal with std ``1/√D``
        truncated at two standard deviations, biases zero."""
        std = 1.0 / math.sqrt(self.embedding_dim)
        for shard in self._weights():
            nn.init.trunc_normal_(shard, std=std, a=-2 * std, b=2 * std)
        for shard in self._biases() or []:
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
            inputs: ``[B, D]`` floating, with ``D = embedding_dim``, on the parameters' device.
            labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1), ids in ``[0, C)``.
            sampled_values: a ``(sampled_candidates, true_expected_count,
                sampled_expected_count)`` triple to use instead of drawing from ``sampler``
                (2-D candidates ``[B, S]`` are per-example negatives).
            mode: ``"sampled"`` or ``"full"`` to force either loss; None follows
                ``self.training``.

        Returns:
            The loss reduced by ``reduction``: ``[B]`` for "none", a scalar otherwise.

        Raises:
            TypeError, ValueError: inputs, labels or candidates that disagree with the
                configuration, an unknown mode. Checking that the ids are in range reads the
                labels and any given candidates together (on CPU; a device-side assertion, a
                ``RuntimeError``, on other devices and under ``torch.compile``); the
                sampler is only called once the call is known to be valid.
        """
        mode = check_mode(mode, self.training)
        weights = self._weights()
        inputs, ids = check_call(inputs, labels, self.settings, weights[0].device)
        if mode == "full":
            check_all_in_range((("labels", ids),), self.num_classes)
            loss = exact_loss(self.spec.kind, inputs, TrueLabels(ids, None), weights,
                              self._biases(), Layout.of(weights, self.partition_strategy))
        else:
            update = self._check_update()
            classes = layer_classes(self.sampler, ids, sampled_values, self.settings,
                                    per_example=self.per_example_negatives,
                                    log_counts=self.spec.subtract_log_q)
            problem = Problem(inputs, weights, self._biases(), classes, self.partition_strategy,
                              self.sparse_grad)
            if update is not None:  # the node reduces (one autograd node less)
                return fused_sampled_loss(problem, self.spec, update, self.reduction)
            loss = fused_sampled_loss(problem, self.spec)
        return apply_reduction(loss, self.reduction)

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

    def _weights(self) -> list[torch.Tensor]:
        shards = _shards(self.weight)
        assert shards is not None  # a layer always has weights
        return shards

    def _biases(self) -> list[torch.Tensor] | None:
        return _shards(self.bias)
