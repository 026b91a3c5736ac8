"""Closed-form distributions: uniform and log-uniform (Zipfian) over ``[0, range_max)``.

Draws are O(1) per id with no table, so their cost does not depend on ``range_max``.
Probabilities follow TensorFlow exactly (docs/tf-semantics.md §6.5–§6.6).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch._subclasses.fake_tensor import is_fake

from torchnce._common.compile import constant_under_compile
from torchnce._common.types import SampledValues
from torchnce._native import samplers as native
from torchnce._sampling import fast
from torchnce._sampling.draw import (
    Rng,
    call_stream,
    f32,
    gather,
    sample_values,
    true_divide_,
    uniform_doubles,
    uniform_ints,
)
from torchnce._sampling.unique import Draw, UniquePlan, unique_plan

_TABLE_LIMIT = 1 << 21


def uniform_draw(range_max: int, generator: Rng | None, device: torch.device) -> Draw:
    """``n ↦`` ``n`` ids uniform on ``[0, range_max)``."""
    return lambda n: uniform_ints(n, range_max, generator, device)


def uniform_probability(ids: torch.Tensor, range_max: int) -> torch.Tensor:
    """``P(k) = fl32(1 / range_max)`` (the division in double)."""
    return torch.full(ids.shape, 1.0 / range_max, dtype=torch.float32, device=ids.device)


def uniform_p(range_max: int) -> float:
    """``fl32(1 / range_max)`` as a Python float."""
    return f32(1.0 / range_max)


@constant_under_compile
def uniform_plan(range_max: int, num_sampled: int) -> UniquePlan:
    """The unique-sampling plan of the uniform distribution (see ``unique_plan``); under
    ``torch.compile`` a constant computed at trace time."""
    return _uniform_plan(range_max, num_sampled)


@functools.lru_cache(maxsize=256)
def _uniform_plan(range_max: int, num_sampled: int) -> UniquePlan:
    return unique_plan([1.0 / range_max], [float(range_max)], num_sampled, range_max)


def log_uniform_draw(
    range_max: int, generator: Rng | None, device: torch.device
) -> Draw:
    """``n ↦`` ``n`` log-uniform ids ``⌊exp(u·log1p(range_max))⌋ − 1`` for uniform ``u``.

    The result can reach ``range_max`` only by rounding (probability < 2⁻⁵⁰); TensorFlow then
    takes it modulo ``range_max`` (giving 0), torchnce clamps it (giving ``range_max − 1``).
    """
    log_range = math.log1p(range_max)

    def draw(n: int) -> torch.Tensor:
        u = uniform_doubles(n, generator, device)
        # ⌊expm1(x)⌋ = ⌊exp(x)⌋ − 1 but for rounding at integers (probability ~2⁻⁵²); expm1
        # also avoids exp's kernel, which goes parallel at ~500 elements and then stalls
        # for milliseconds on a busy CPU.
        return torch.expm1(u.mul_(log_range)).to(torch.int64).clamp_(max=range_max - 1)

    return draw


def log_uniform_probability(ids: torch.Tensor, range_max: int) -> torch.Tensor:
    """``P(k) = fl32(log((k + 2) / (k + 1)) / log1p(range_max))``, all in double.

    Read from a cached table when ``range_max <= 2²¹`` (at most 8 MiB, last four ranges),
    except under ``torch.compile`` (the table would be rebuilt in every graph call) and for
    FakeTensors (a cached fake table would outlive its FakeTensorMode).
    """
    if range_max <= _TABLE_LIMIT and not torch.compiler.is_compiling() and not is_fake(ids):
        return gather(_log_uniform_table(range_max, ids.device), ids)
    return _log_uniform_formula(ids, range_max)


def _log_uniform_formula(ids: torch.Tensor, range_max: int) -> torch.Tensor:
    # log(r) as log1p(r - 1): r = fl((k + 2) / (k + 1)) is in (1, 2], so r - 1 is exact, and
    # log1p does not take torch's parallel path that stalls on a busy CPU (see the draw).
    k = ids.double()
    ratio = torch.div(k + 2.0, k + 1.0).sub_(1.0)
    return true_divide_(torch.log1p(ratio), math.log1p(range_max)).float()


@functools.lru_cache(maxsize=4)
def _log_uniform_table(range_max: int, device: torch.device) -> torch.Tensor:
    return _log_uniform_formula(torch.arange(range_max, device=device), range_max)


@constant_under_compile
def log_uniform_plan(range_max: int, num_sampled: int) -> UniquePlan:
    """The unique-sampling plan of the log-uniform law, from ~700 bins of nearly equal P;
    under ``torch.compile`` a constant computed at trace time."""
    return _log_uniform_plan(range_max, num_sampled)


@functools.lru_cache(maxsize=256)
def _log_uniform_plan(range_max: int, num_sampled: int) -> UniquePlan:
    # Python floats, no tensor: planning inside a FakeTensorMode reads no fake value.
    edges = sorted({min(range_max, round(1.02**j)) for j in range(2000)} | {0, range_max})
    edges = [e for e in edges if e <= range_max]
    log_range = math.log1p(range_max)
    count = [float(hi - lo) for lo, hi in itertools.pairwise(edges)]
    mass = [math.log((hi + 1) / (lo + 1)) / log_range
            for lo, hi in itertools.pairwise(edges)]
    p = [m / c for m, c in zip(mass, count, strict=True)]
    return unique_plan(p, count, num_sampled, range_max)


def uniform_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    range_max: int,
    generator: Rng | None,
) -> SampledValues:
    """The uniform sampler's draw and expected counts (validated arguments)."""
    if fast.runs(true_classes) and range_max < native.RANGE_LIMIT:
        return fast.checked(native.uniform(true_classes, num_sampled, unique, range_max,
                                          generator))
    generator = call_stream(generator, true_classes.device)
    return sample_values(
        true_classes,
        num_sampled,
        unique,
        uniform_draw(range_max, generator, true_classes.device),
        uniform_p(range_max),
        lambda: uniform_plan(range_max, num_sampled),
    )


def log_uniform_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    range_max: int,
    generator: Rng | None,
) -> SampledValues:
    """The log-uniform sampler's draw and expected counts (validated arguments)."""
    if fast.runs(true_classes) and range_max < native.RANGE_LIMIT:
        return fast.checked(native.log_uniform(true_classes, num_sampled, unique, range_max,
                                              math.log1p(range_max), generator))
    generator = call_stream(generator, true_classes.device)
    return sample_values(
        true_classes,
        num_sampled,
        unique,
        log_uniform_draw(range_max, generator, true_classes.device),
        lambda ids: log_uniform_probability(ids, range_max),
        lambda: log_uniform_plan(range_max, num_sampled),
    )
