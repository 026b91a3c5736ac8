"""TensorFlow's candidate-sampler functions (``tf.random.*_candidate_sampler``).

Names, argument names, order and defaults are TensorFlow's; ``generator`` (and ``sampler``
for the learned unigram) are keyword-only extras. Each function validates its arguments, then
calls the same core as the sampler classes. Common behaviour:

* ``seed`` (an int) makes the draw a fixed function of the seed: unlike TensorFlow's eager op,
  a seeded call does not advance a stream, so the same seed gives the same candidates every
  call. TensorFlow's own random numbers are not reproduced, only their distribution.
* ``generator`` draws from a ``torch.Generator`` on the device of ``true_classes``
  (not together with ``seed``); with neither, torch's default generator is used.
* Candidates are drawn on the device of ``true_classes`` (int32 or int64).
* ``name`` is accepted and ignored.
* Checking that the true classes lie in ``[0, range_max)`` reads them (one device sync).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence

import torch

from torchnce._checks import check_bool, check_int
from torchnce._sampler_dists import log_uniform_values, uniform_values
from torchnce._sampler_learned import LearnedUnigramSampler
from torchnce._samplers import FixedUnigramSampler, all_values
from torchnce._sampling import (
    check_num_sampled,
    check_range_max,
    check_true_classes,
    resolve_generator,
)
from torchnce._types import SampledValues

_LEARNED_SAMPLERS: dict[tuple[object, ...], LearnedUnigramSampler] = {}
_FIXED_SAMPLERS: collections.OrderedDict[tuple[object, ...], FixedUnigramSampler] = (
    collections.OrderedDict()
)
_FIXED_CACHE_SIZE = 8


def uniform_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    """Sample classes uniformly from ``[0, range_max)``.

    .. math::
        P(k) = 1 / \\text{range\\_max}, \\qquad
        Q = P·S \\text{ or } 1 - (1 - P)^{\\text{num\\_tries}}

    ``P`` is ``fl32(1 / range_max)``; ``Q`` (the expected counts) is ``P·S`` when the draw
    needed no rejection (always with ``unique=False``), else ``-expm1(num_tries·log1p(-P))``,
    in float32. ``range_max`` may exceed 2³² (ids are int64).

    Args:
        true_classes: int ``[B, T]`` target classes; they only feed ``true_expected_count``
            and are not excluded from the sample.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes.
        seed: if given, the draw is a fixed function of it.
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``, float32
        ``[B, T]`` and ``[S]`` expected counts.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: bad shapes or counts, ``unique`` with ``num_sampled > range_max``
            ("Sampler's range is too small"), ids outside ``[0, range_max)`` ("out of range"),
            ``seed`` together with ``generator``.

    Example:
        >>> import torch, torchnce
        >>> out = torchnce.uniform_candidate_sampler(torch.tensor([[1, 2]]), 2, 3, False, 4, seed=0)
        >>> out.true_expected_count  # 3 · 1/4
        tensor([[0.7500, 0.7500]])
    """
    del name
    num_true, num_sampled, unique, range_max = _check(num_true, num_sampled, unique, range_max)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    return uniform_values(tc, num_sampled, unique, range_max, gen)


def log_uniform_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    """Sample classes from a log-uniform (Zipfian) distribution over ``[0, range_max)``.

    .. math::
        P(k) = \\frac{\\log(k + 2) - \\log(k + 1)}{\\log(\\text{range\\_max} + 1)}

    computed as TensorFlow does, ``fl32(log((k + 2) / (k + 1)) / log1p(range_max))`` in double.
    This suits classes sorted by decreasing frequency; it is the default sampler of the losses.
    Expected counts as in ``uniform_candidate_sampler``.

    Args:
        true_classes: int ``[B, T]`` target classes; they only feed ``true_expected_count``
            and are not excluded from the sample.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes.
        seed: if given, the draw is a fixed function of it.
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``, float32
        ``[B, T]`` and ``[S]`` expected counts.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: as ``uniform_candidate_sampler``.

    Example:
        >>> import torch, torchnce
        >>> out = torchnce.log_uniform_candidate_sampler(
        ...     torch.tensor([[0], [3]]), 1, 4, False, 10, seed=1)
        >>> out.true_expected_count  # 4 · log(2)/log(11) and 4 · log(5/4)/log(11)
        tensor([[1.1563],
                [0.3722]])
    """
    del name
    num_true, num_sampled, unique, range_max = _check(num_true, num_sampled, unique, range_max)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    return log_uniform_values(tc, num_sampled, unique, range_max, gen)


def learned_unigram_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
    sampler: LearnedUnigramSampler | None = None,
) -> SampledValues:
    """Sample classes in proportion to how often they were seen as true classes.

    .. math::
        P(k) = \\operatorname{fl32}(w_k) / \\operatorname{fl32}(W), \\qquad
        w_k = 1 + \\#\\{\\text{earlier true classes equal to } k\\}

    The draw and the expected counts use the weights before this call; this batch's true
    classes are added after. See ``LearnedUnigramSampler``.

    Args:
        true_classes: int ``[B, T]`` target classes (added to the counts after the draw).
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes; less than 2147483647.
        seed: if given, the draw is a fixed function of it (and of the counts).
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).
        sampler: the ``LearnedUnigramSampler`` whose counts to use and update (keyword-only);
            by default, the process-wide one for these arguments (see the note).

    Returns:
        ``SampledValues`` as ``uniform_candidate_sampler``.

    Raises:
        TypeError: non-integer ``true_classes``, ``sampler`` of another type.
        ValueError: as ``uniform_candidate_sampler``; ``range_max >= 2147483647``
            ("range_max must be less than 2147483647"); ``sampler`` with another range.

    Note:
        A function cannot learn, so the counts live in a sampler object. With ``sampler=``
        they are that object's (checkpoint it with ``state_dict``). Without it, the function
        uses a process-wide sampler per ``(num_true, num_sampled, unique, range_max, seed,
        device)``, the attributes TensorFlow's eager kernel cache is keyed by: repeated
        identical calls keep learning, as in TensorFlow, and the counts are lost when the
        process ends. A call rejected by validation leaves the counts unchanged.

    Example:
        >>> import torch, torchnce
        >>> sampler = torchnce.LearnedUnigramSampler(5)
        >>> for _ in range(2):
        ...     out = torchnce.learned_unigram_candidate_sampler(
        ...         torch.tensor([[4]]), 1, 2, False, 5, sampler=sampler)
        >>> out.true_expected_count  # second call: 2 · 2/6, counts [1, 1, 1, 1, 2]
        tensor([[0.6667]])
    """
    del name
    num_true, num_sampled, unique, range_max = _check(
        num_true, num_sampled, unique, range_max, unigram=True
    )
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    if sampler is None:
        key = (num_true, num_sampled, unique, range_max, seed, tc.device)
        if key not in _LEARNED_SAMPLERS:
            _LEARNED_SAMPLERS[key] = LearnedUnigramSampler(range_max).to(tc.device)
        sampler = _LEARNED_SAMPLERS[key]
    elif not isinstance(sampler, LearnedUnigramSampler):
        raise TypeError(f"sampler must be a LearnedUnigramSampler, got {type(sampler).__name__}")
    elif sampler.range_max != range_max:
        raise ValueError(f"sampler must have range_max={range_max}, got {sampler.range_max}")
    return sampler._sample(tc, num_sampled, unique, gen)


def fixed_unigram_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    vocab_file: str | os.PathLike[str] = "",
    distortion: float = 1.0,
    num_reserved_ids: int = 0,
    num_shards: int = 1,
    shard: int = 0,
    unigrams: torch.Tensor | Sequence[float] = (),
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    """Sample classes with fixed weights ``powf(u, distortion)`` from a list or a vocab file.

    .. math::
        P(k) = w_k / \\textstyle\\sum_j w_j, \\qquad w_k = u_k^{\\text{distortion}}

    in float32 with TensorFlow's float32 running total; reserved ids have weight 0; with
    shards the ids are shard-local. See ``FixedUnigramSampler`` for the rules.

    Args:
        true_classes: int ``[B, T]`` target classes (shard-local ids).
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of weights in this shard.
        vocab_file: a file of ``...,count`` lines (not with ``unigrams``).
        distortion: the exponent applied to every weight (0.75 in word2vec).
        num_reserved_ids: leading ids with weight 0.
        num_shards: the number of shards.
        shard: which shard to draw for.
        unigrams: the weights (not with ``vocab_file``).
        seed: if given, the draw is a fixed function of it.
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues`` as ``uniform_candidate_sampler``.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: as ``uniform_candidate_sampler`` and ``FixedUnigramSampler``.

    Note:
        The alias table is built once per distinct configuration and device and kept in a
        small cache (the last 8), like TensorFlow's kernel cache; a vocab file is re-read
        when its modification time changes. Looking up ``unigrams`` in the cache costs
        O(C) per call: for speed, build a ``FixedUnigramSampler`` once and call ``sample``.

    Example:
        >>> import torch, torchnce
        >>> out = torchnce.fixed_unigram_candidate_sampler(
        ...     torch.tensor([[0, 2]]), 2, 4, False, 3, unigrams=[1.0, 2.0, 5.0], seed=0)
        >>> out.true_expected_count  # 4 · [1, 5] / 8
        tensor([[0.5000, 2.5000]])
    """
    del name
    num_true, num_sampled, unique, range_max = _check(
        num_true, num_sampled, unique, range_max, unigram=True
    )
    config = (vocab_file, distortion, num_reserved_ids, num_shards, shard, unigrams)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    sampler = _fixed_sampler(range_max, config, tc.device)
    return sampler._sample(tc, num_sampled, unique, gen)


def all_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    """Return all classes ``0..num_sampled-1``, with every expected count 1 (for tests).

    Args:
        true_classes: int ``[B, T]`` target classes, in ``[0, num_sampled)``.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes (the range).
        unique: ignored (checked to be a bool).
        seed: ignored (no randomness).
        name: ignored.
        generator: ignored (not together with ``seed``).

    Returns:
        ``SampledValues``: ``arange(S)``, ones ``[B, T]``, ones ``[S]``.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: bad shapes; true classes outside ``[0, num_sampled)`` ("out of range").

    Example:
        >>> import torch, torchnce
        >>> torchnce.all_candidate_sampler(torch.tensor([[1], [0]]), 1, 3, True).sampled_candidates
        tensor([0, 1, 2])
    """
    del name
    num_true, num_sampled, unique, _ = _check(num_true, num_sampled, unique, 1)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, num_sampled)
    resolve_generator(seed, generator, tc.device)
    return all_values(tc, num_sampled)


def _check(
    num_true: object, num_sampled: object, unique: object, range_max: object, *, unigram: bool = False
) -> tuple[int, int, bool, int]:
    """Validate the scalar arguments every sampler function shares."""
    return (
        check_int("num_true", num_true, minimum=1),
        check_num_sampled(num_sampled),
        check_bool("unique", unique),
        check_range_max(range_max, unigram=unigram),
    )


def _fixed_sampler(
    range_max: int, config: tuple[object, ...], device: torch.device
) -> FixedUnigramSampler:
    """The cached ``FixedUnigramSampler`` for a configuration (built on first use)."""
    vocab_file, distortion, reserved, shards, shard, unigrams = config
    if isinstance(vocab_file, (str, os.PathLike)) and os.fspath(vocab_file):
        try:
            stamp: object = os.stat(vocab_file).st_mtime_ns
        except OSError:
            stamp = None
    else:
        stamp = None
    if isinstance(unigrams, torch.Tensor):
        unigrams = unigrams.detach().double().cpu().reshape(-1).tolist()
    weights = tuple(float(u) for u in unigrams)  # type: ignore[attr-defined]
    key = (range_max, vocab_file, stamp, distortion, reserved, shards, shard, weights, device)
    sampler = _FIXED_SAMPLERS.pop(key, None)
    if sampler is None:
        sampler = FixedUnigramSampler(
            range_max, vocab_file, distortion, reserved, shards, shard, weights  # type: ignore[arg-type]
        ).to(device)
    _FIXED_SAMPLERS[key] = sampler
    while len(_FIXED_SAMPLERS) > _FIXED_CACHE_SIZE:
        _FIXED_SAMPLERS.popitem(last=False)
    return sampler
