"""Closed-form distributions: uniform and log-uniform (Zipfian) over ``[0, range_max)``.

Draws are O(1) per id with no table, so their cost does not depend on ``range_max``.
Probabilities follow TensorFlow exactly (tf-semantics.md §6.5–§6.6).
"""

from __future__ import annotations

import functools
import math

import torch

from torchnce._sampling import (
    Draw,
    sample_values,
    true_divide_,
    uniform_ints,
    unique_block,
)
from torchnce._types import SampledValues


def uniform_draw(range_max: int, generator: torch.Generator | None, device: torch.device) -> Draw:
    """``n ↦`` ``n`` ids uniform on ``[0, range_max)``."""
    return lambda n: uniform_ints(n, range_max, generator, device)


def uniform_probability(ids: torch.Tensor, range_max: int) -> torch.Tensor:
    """``P(k) = fl32(1 / range_max)`` (the division in double)."""
    return torch.full(ids.shape, 1.0 / range_max, dtype=torch.float32, device=ids.device)


@functools.lru_cache(maxsize=256)
def uniform_block(range_max: int, num_sampled: int) -> int:
    """Block size for unique uniform sampling (see ``unique_block``)."""
    p = torch.tensor([1.0 / range_max], dtype=torch.float64)
    return unique_block(p, torch.tensor([float(range_max)], dtype=torch.float64), num_sampled)


def log_uniform_draw(
    range_max: int, generator: torch.Generator | None, device: torch.device
) -> Draw:
    """``n ↦`` ``n`` log-uniform ids: ``⌊exp(u·log1p(range_max))⌋ − 1 mod range_max``."""
    log_range = math.log1p(range_max)

    def draw(n: int) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64, generator=generator, device=device)
        # exp(x) >= 1, so exp(x) - 1 is exact and floor(exp(x) - 1) == floor(exp(x)) - 1.
        return u.mul_(log_range).exp_().sub_(1.0).to(torch.int64).remainder_(range_max)

    return draw


def log_uniform_probability(ids: torch.Tensor, range_max: int) -> torch.Tensor:
    """``P(k) = fl32(log((k + 2) / (k + 1)) / log1p(range_max))``, all in double."""
    k = ids.double()
    return true_divide_(torch.div(k + 2.0, k + 1.0).log_(), math.log1p(range_max)).float()


@functools.lru_cache(maxsize=256)
def log_uniform_block(range_max: int, num_sampled: int) -> int:
    """Block size for unique log-uniform sampling, from ~700 bins of nearly equal P."""
    edges = sorted({min(range_max, round(1.02**j)) for j in range(2000)} | {0, range_max})
    edges = [e for e in edges if e <= range_max]
    lo = torch.tensor(edges[:-1], dtype=torch.float64)
    hi = torch.tensor(edges[1:], dtype=torch.float64)
    count = hi - lo
    mass = torch.log((hi + 1) / (lo + 1)) / math.log1p(range_max)
    return unique_block(mass / count, count, num_sampled)


def uniform_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    range_max: int,
    generator: torch.Generator | None,
) -> SampledValues:
    """The uniform sampler's draw and expected counts (validated arguments)."""
    return sample_values(
        true_classes,
        num_sampled,
        unique,
        uniform_draw(range_max, generator, true_classes.device),
        lambda ids: uniform_probability(ids, range_max),
        lambda: uniform_block(range_max, num_sampled),
    )


def log_uniform_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    range_max: int,
    generator: torch.Generator | None,
) -> SampledValues:
    """The log-uniform sampler's draw and expected counts (validated arguments)."""
    return sample_values(
        true_classes,
        num_sampled,
        unique,
        log_uniform_draw(range_max, generator, true_classes.device),
        lambda ids: log_uniform_probability(ids, range_max),
        lambda: log_uniform_block(range_max, num_sampled),
    )
