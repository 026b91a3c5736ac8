"""Candidate samplers as PyTorch modules: one abstract base, final concrete classes.

Each class holds its configuration (and table or learned state as buffers, so ``.to(device)``
moves it); ``sample`` validates and then calls the same core as the TensorFlow-named
functions of ``torchnce._sampler_ops``.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Sequence
from typing import final

import torch

from torchnce._checks import check_bool, check_int
from torchnce._sampler_dists import (
    log_uniform_probability,
    log_uniform_values,
    uniform_probability,
    uniform_values,
)
from torchnce._sampler_tables import (
    alias_draw,
    alias_table,
    read_vocab_weights,
    unigram_weights,
    weight_bins,
)
from torchnce._sampling import (
    check_ids,
    check_num_sampled,
    check_range_max,
    check_true_classes,
    resolve_generator,
    sample_values,
    true_divide_,
    unique_block,
)
from torchnce._types import SampledValues


class CandidateSampler(torch.nn.Module, abc.ABC):
    """A distribution over class ids ``[0, range_max)`` that draws negatives for sampled losses.

    ``sample`` returns TensorFlow's ``(sampled_candidates, true_expected_count,
    sampled_expected_count)``: ``S`` ids shared by the whole batch and the expected number of
    times each true and each sampled class appears in the sample,

    .. math::
        Q(k) = \\begin{cases} P(k)·S & \\text{no rejection (always when not unique)} \\\\
        1 - (1 - P(k))^{\\text{num\\_tries}} & \\text{otherwise} \\end{cases}

    in float32, where ``num_tries`` counts every draw of TensorFlow's rejection loop.
    Calling the module is the same as calling ``sample``.
    """

    range_max: int | None

    def sample(
        self,
        true_classes: torch.Tensor,
        num_sampled: int,
        *,
        unique: bool = True,
        generator: torch.Generator | None = None,
    ) -> SampledValues:
        """Draw ``num_sampled`` candidates for a batch of true classes.

        Args:
            true_classes: int ``[B, T]`` target classes (only feed ``true_expected_count``).
            num_sampled: ``S``, the number of candidates.
            unique: draw without replacement (TensorFlow's rejection loop) if True.
            generator: the random generator; None uses torch's default one for the device.

        Returns:
            ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``,
            float32 ``[B, T]`` and ``[S]`` expected counts.

        Raises:
            TypeError: non-integer ``true_classes``.
            ValueError: bad shapes, ``unique`` with ``num_sampled > range_max`` ("Sampler's
                range is too small"), ids outside ``[0, range_max)`` ("out of range").
        """
        num_sampled = check_num_sampled(num_sampled)
        unique = check_bool("unique", unique)
        limit = self.range_max if self.range_max is not None else num_sampled
        tc = check_true_classes(true_classes, None, num_sampled, unique, limit)
        return self._sample(tc, num_sampled, unique, resolve_generator(None, generator, tc.device))

    def forward(
        self,
        true_classes: torch.Tensor,
        num_sampled: int,
        *,
        unique: bool = True,
        generator: torch.Generator | None = None,
    ) -> SampledValues:
        """Same as ``sample``."""
        return self.sample(true_classes, num_sampled, unique=unique, generator=generator)

    @abc.abstractmethod
    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """TensorFlow's float32 ``P(id)`` of one draw, same shape as ``ids``."""

    def log_probability(self, ids: torch.Tensor) -> torch.Tensor:
        """``log P(id)`` in float32 (``-inf`` for ids that are never drawn)."""
        return torch.log(self.probability(ids))

    @abc.abstractmethod
    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: torch.Generator | None
    ) -> SampledValues:
        """Draw from validated arguments; shared with the TensorFlow-named functions."""

    def extra_repr(self) -> str:
        return f"range_max={self.range_max}"


@final
class UniformSampler(CandidateSampler):
    """Every class equally likely: ``P(k) = fl32(1 / range_max)``.

    Args:
        range_max: ``C``, the number of classes (up to 2⁶³; 2³² + 1 works).

    Example:
        >>> import torch, torchnce
        >>> sampler = torchnce.UniformSampler(4)
        >>> sampler.probability(torch.tensor([0, 3]))
        tensor([0.2500, 0.2500])
        >>> out = sampler.sample(torch.tensor([[1]]), 4, generator=torch.Generator().manual_seed(0))
        >>> sorted(out.sampled_candidates.tolist())
        [0, 1, 2, 3]
    """

    def __init__(self, range_max: int) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return uniform_probability(check_ids(ids, self.range_max), self.range_max)

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: torch.Generator | None
    ) -> SampledValues:
        return uniform_values(tc, num_sampled, unique, self.range_max, gen)


@final
class LogUniformSampler(CandidateSampler):
    """Zipfian classes: ``P(k) = log((k + 2) / (k + 1)) / log(range_max + 1)``.

    Computed in double and rounded to float32, as TensorFlow does. Suits classes sorted by
    decreasing frequency; the default sampler of ``nce_loss`` and ``sampled_softmax_loss``.

    Args:
        range_max: ``C``, the number of classes.

    Example:
        >>> import torch, torchnce
        >>> sampler = torchnce.LogUniformSampler(3)
        >>> sampler.probability(torch.tensor([0, 1, 2]))  # log(2)/log(4), log(1.5)/log(4), ...
        tensor([0.5000, 0.2925, 0.2075])
    """

    def __init__(self, range_max: int) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return log_uniform_probability(check_ids(ids, self.range_max), self.range_max)

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: torch.Generator | None
    ) -> SampledValues:
        return log_uniform_values(tc, num_sampled, unique, self.range_max, gen)


@final
class FixedUnigramSampler(CandidateSampler):
    """Classes drawn with fixed weights ``u**distortion`` (word2vec's unigram^0.75 table).

    .. math::
        w_k = \\operatorname{powf}(u_k, \\text{distortion}), \\qquad
        P(k) = w_k / \\textstyle\\sum_j w_j

    in float32 with TensorFlow's float32 running total. The weights ``u`` come from
    ``unigrams`` or from ``vocab_file`` (the last comma-separated field of each non-empty
    line). Ids ``[0, num_reserved_ids)`` get weight 0. With ``num_shards > 1`` the sampler
    keeps the ids ``≡ shard (mod num_shards)`` and works in shard-local indices
    ``[0, range_max)``. Draws use a Walker alias table built once (O(1) per draw).

    Args:
        range_max: ``C``, the number of weights in this shard (reserved ids included).
        vocab_file: a file of ``...,count`` lines (not with ``unigrams``).
        distortion: the exponent applied to every weight (rounded to float32 first).
        num_reserved_ids: leading ids with weight 0 (e.g. padding, unknown).
        num_shards: the number of shards the vocabulary is split into.
        shard: which shard this sampler draws for.
        unigrams: the weights (not with ``vocab_file``).

    Raises:
        ValueError: both or neither of ``vocab_file`` and ``unigrams``, an unreadable file
            or line ("Wrong vocabulary format at line"), negative or non-finite weights,
            a bad shard, or ``range_max`` different from the number of weights ("range is
            ... must be equal to weights size ...").

    Note:
        Like TensorFlow, with shards the unigrams start at word id = the number of reserved
        ids *in this shard* (not ``num_reserved_ids``; TensorFlow's quirk, tf-semantics.md
        §6.8). Unlike TensorFlow, negative weights and an all-zero shard are errors (TensorFlow
        returns negative or NaN counts), and ``unique=True`` with more samples than non-zero
        weights is an error (TensorFlow loops forever). The table is rebuilt from the
        constructor arguments, so it is not part of ``state_dict``.

    Example:
        >>> import torch, torchnce
        >>> sampler = torchnce.FixedUnigramSampler(4, unigrams=[1.0, 2.0, 3.0, 4.0])
        >>> sampler.probability(torch.arange(4))
        tensor([0.1000, 0.2000, 0.3000, 0.4000])
    """

    threshold: torch.Tensor
    alias: torch.Tensor
    probs: torch.Tensor

    def __init__(
        self,
        range_max: int,
        vocab_file: str | os.PathLike[str] = "",
        distortion: float = 1.0,
        num_reserved_ids: int = 0,
        num_shards: int = 1,
        shard: int = 0,
        unigrams: torch.Tensor | Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max, unigram=True)
        weights = _fixed_weights(
            vocab_file, distortion, num_reserved_ids, num_shards, shard, unigrams
        )
        w, total = weights
        if w.numel() != self.range_max:
            raise ValueError(
                f"range_max must equal the number of weights in this shard ({w.numel()}),"
                f" got {self.range_max} (range is {self.range_max} must be equal to weights"
                f" size {w.numel()})"
            )
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"unigrams must have a positive, finite total weight, got {total}")
        threshold, alias = alias_table(w)
        self.register_buffer("probs", true_divide_(w.clone(), total), persistent=False)
        self.register_buffer("threshold", threshold, persistent=False)
        self.register_buffer("alias", alias, persistent=False)
        self._positive = int((w > 0).sum())
        self._bins = weight_bins(w)
        self._blocks: dict[int, int] = {}
        self._config = (distortion, num_reserved_ids, num_shards, shard)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return self.probs[check_ids(ids, self.range_max).to(self.probs.device)]

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: torch.Generator | None
    ) -> SampledValues:
        if unique and num_sampled > self._positive:
            raise ValueError(
                f"num_sampled must be <= the number of classes with a non-zero weight"
                f" ({self._positive}) when unique=True, got {num_sampled} (Sampler's range is"
                " too small.)"
            )
        _same_device("true_classes", tc, self.probs)
        return sample_values(
            tc,
            num_sampled,
            unique,
            alias_draw(self.threshold, self.alias, gen),
            lambda ids: self.probs[ids],
            lambda: self._block(num_sampled),
        )

    def _block(self, num_sampled: int) -> int:
        if num_sampled not in self._blocks:
            self._blocks[num_sampled] = unique_block(*self._bins, num_sampled)
        return self._blocks[num_sampled]

    def extra_repr(self) -> str:
        distortion, reserved, shards, shard = self._config
        return (
            f"range_max={self.range_max}, distortion={distortion}, num_reserved_ids={reserved},"
            f" num_shards={shards}, shard={shard}"
        )


@final
class AllCandidateSampler(CandidateSampler):
    """Not random: the candidates are all classes ``0..S-1`` and every expected count is 1.

    The range is ``num_sampled`` itself, so the true classes must lie in ``[0, S)``. Meant for
    tests (the loss then equals the full softmax / full logistic loss, with log Q = 0).

    Example:
        >>> import torch, torchnce
        >>> torchnce.AllCandidateSampler().sample(torch.tensor([[1, 2]]), 3)
        SampledValues(sampled_candidates=tensor([0, 1, 2]), true_expected_count=tensor([[1., 1.]]), sampled_expected_count=tensor([1., 1., 1.]))
    """  # noqa: E501

    def __init__(self) -> None:
        super().__init__()
        self.range_max = None

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "AllCandidateSampler has no sampling distribution: it returns every class once"
        )

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: torch.Generator | None
    ) -> SampledValues:
        return all_values(tc, num_sampled)


def all_values(tc: torch.Tensor, num_sampled: int) -> SampledValues:
    """Candidates ``0..S-1`` and expected counts of 1 (tf-semantics.md §6.9)."""
    return SampledValues(
        torch.arange(num_sampled, device=tc.device),
        torch.ones(tc.shape, dtype=torch.float32, device=tc.device),
        torch.ones(num_sampled, dtype=torch.float32, device=tc.device),
    )


def _fixed_weights(
    vocab_file: str | os.PathLike[str],
    distortion: float,
    num_reserved_ids: int,
    num_shards: int,
    shard: int,
    unigrams: torch.Tensor | Sequence[float],
) -> tuple[torch.Tensor, float]:
    """Validate the fixed-unigram configuration and build its weights (tf-semantics.md §6.8)."""
    if isinstance(distortion, bool) or not isinstance(distortion, (int, float)):
        raise TypeError(f"distortion must be a float, got {type(distortion).__name__}")
    if not math.isfinite(distortion):
        raise ValueError(f"distortion must be finite, got {distortion}")
    num_reserved_ids = check_int("num_reserved_ids", num_reserved_ids, minimum=0)
    num_shards = check_int("num_shards", num_shards, minimum=1)
    shard = check_int("shard", shard, minimum=0)
    if shard >= num_shards:
        raise ValueError(f"shard must be in [0, num_shards={num_shards}), got {shard}")
    has_file = bool(os.fspath(vocab_file))
    has_unigrams = torch.as_tensor(unigrams, dtype=torch.float64).numel() > 0
    if has_file and has_unigrams:
        raise ValueError(
            "vocab_file and unigrams must not both be given, got both"
            " (Must only provide one of vocab_file and unigrams.)"
        )
    if not has_file and not has_unigrams:
        raise ValueError(
            "vocab_file or unigrams must be given, got neither"
            " (Must provide either vocab_file or unigrams.)"
        )
    values = read_vocab_weights(vocab_file) if has_file else unigrams
    w, total = unigram_weights(values, float(distortion), num_reserved_ids, num_shards, shard)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(
            f"distortion must keep every weight powf(u, distortion) finite, got {distortion}"
            " with a zero weight; use distortion >= 0"
        )
    return w, total


def _same_device(name: str, tensor: torch.Tensor, table: torch.Tensor) -> None:
    """Raise unless ``tensor`` is on the device of the sampler's ``table``."""
    if tensor.device != table.device:
        raise ValueError(
            f"{name} must be on the sampler's device ({table.device}), got {tensor.device};"
            " move the sampler with .to(device)"
        )
