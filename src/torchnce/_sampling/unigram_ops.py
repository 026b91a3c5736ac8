"""TensorFlow's unigram candidate-sampler functions: learned and fixed unigram.

They follow the conventions of ``torchnce._sampling.ops``; their state (learned counts, fixed
tables) lives in sampler objects, kept in process-wide caches keyed like TensorFlow's eager
kernel cache (bounded: the 8 most recently used configurations each) unless passed explicitly.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from torchnce._common.types import SampledValues
from torchnce._sampling.draw import check_sampler_args, check_true_classes, resolve_generator
from torchnce._sampling.fixed import FixedUnigramSampler, check_distortion
from torchnce._sampling.learned import LearnedUnigramSampler

_LEARNED_SAMPLERS: collections.OrderedDict[tuple[object, ...], LearnedUnigramSampler] = (
    collections.OrderedDict()
)
_FIXED_SAMPLERS: collections.OrderedDict[tuple[object, ...], FixedUnigramSampler] = (
    collections.OrderedDict()
)
_CACHE_SIZE = 8  # configurations kept per cache, the most recently used
S = TypeVar("S", LearnedUnigramSampler, FixedUnigramSampler)


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
    r"""Sample classes in proportion to how often they were seen as true classes.

    .. math::
        P(k) = \operatorname{fl32}(w_k) / \operatorname{fl32}(W), \qquad
        w_k = 1 + \#\{\text{earlier true classes equal to } k\}

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
        process ends. Unlike TensorFlow's cache, only the 8 most recently used
        configurations are kept (``seed=step`` would otherwise keep one O(C) sampler per
        step); an older one starts again from counts of 1. A call rejected by validation
        leaves the counts unchanged.

    Examples:
        >>> import torch, torchnce
        >>> sampler = torchnce.LearnedUnigramSampler(5)
        >>> for _ in range(2):
        ...     out = torchnce.learned_unigram_candidate_sampler(
        ...         torch.tensor([[4]]), 1, 2, False, 5, sampler=sampler)
        >>> out.true_expected_count  # second call: 2 · 2/6, counts [1, 1, 1, 1, 2]
        tensor([[0.6667]])
    """
    del name
    num_true, num_sampled, unique, range_max = check_sampler_args(
        num_true, num_sampled, unique, range_max, unigram=True
    )
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    if sampler is None:
        key = (num_true, num_sampled, unique, range_max, seed, tc.device)
        sampler = _recent(_LEARNED_SAMPLERS, key,
                          lambda: LearnedUnigramSampler(range_max).to(tc.device))
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
    r"""Sample classes with fixed weights ``powf(u, distortion)`` from a list or a vocab file.

    .. math::
        P(k) = w_k / \textstyle\sum_j w_j, \qquad w_k = u_k^{\text{distortion}}

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

    Examples:
        >>> import torch, torchnce
        >>> out = torchnce.fixed_unigram_candidate_sampler(
        ...     torch.tensor([[0, 2]]), 2, 4, False, 3, unigrams=[1.0, 2.0, 5.0], seed=0)
        >>> out.true_expected_count  # 4 · [1, 5] / 8
        tensor([[0.5000, 2.5000]])
    """
    del name
    num_true, num_sampled, unique, range_max = check_sampler_args(
        num_true, num_sampled, unique, range_max, unigram=True
    )
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    sampler = _fixed_sampler(
        range_max, vocab_file, distortion, num_reserved_ids, num_shards, shard, unigrams, tc.device
    )
    return sampler._sample(tc, num_sampled, unique, gen)


def _fixed_sampler(
    range_max: int,
    vocab_file: str | os.PathLike[str],
    distortion: float,
    num_reserved_ids: int,
    num_shards: int,
    shard: int,
    unigrams: torch.Tensor | Sequence[float],
    device: torch.device,
) -> FixedUnigramSampler:
    """The cached ``FixedUnigramSampler`` for a configuration (built on first use)."""
    if not isinstance(vocab_file, (str, os.PathLike)):
        raise TypeError(f"vocab_file must be a path, got {type(vocab_file).__name__}")
    path = os.fspath(vocab_file)
    try:
        stamp = os.stat(path).st_mtime_ns if path else None
    except OSError:
        stamp = None
    if isinstance(unigrams, torch.Tensor):
        unigrams = unigrams.detach().double().cpu().reshape(-1).tolist()
    try:
        weights = tuple(float(u) for u in unigrams)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"unigrams must be a sequence of floats, got {type(unigrams).__name__}"
        ) from err
    config = (path, check_distortion(distortion), num_reserved_ids, num_shards, shard, weights)
    key = (range_max, stamp, device, *config)
    return _recent(_FIXED_SAMPLERS, key, lambda: FixedUnigramSampler(range_max, *config).to(device))


def _recent(cache: collections.OrderedDict[tuple[object, ...], S],
            key: tuple[object, ...], build: Callable[[], S]) -> S:
    """``cache[key]``, built on first use, as the most recent of at most ``_CACHE_SIZE``
    entries (the least recently used one is dropped)."""
    value = cache.pop(key, None)
    if value is None:
        value = build()
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value
