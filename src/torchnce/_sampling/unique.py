"""Sampling without replacement: TensorFlow's rejection loop as one fixed-shape block.

The loop is described in docs/tf-semantics.md §6.3.

TensorFlow draws one id at a time until ``S`` distinct ids have been seen, keeps them in
first-seen order and counts every draw in ``num_tries``. Here one block of ``N`` independent
draws is taken at once: the first ``S`` distinct values of the stream, in first-seen order, and
the position of the last of them + 1 (``num_tries``) are the loop's result whatever ``N`` is,
provided the block holds ``S`` distinct ids, so the distribution is exactly the loop's.

``N`` comes from the distribution (``unique_plan``): the smallest block for which a bound on
``P(fewer than S distinct ids in N draws)`` is below ``2⁻⁶⁴`` (the smaller of a union bound and
a Chernoff bound, see ``unique_plan``). The block's computation has a fixed shape and reads
nothing on the host, so a training step never waits for the device and compiles to one graph.
In the case the bound makes astronomically rare (probability ``≤ 2⁻⁶⁴`` per call, or per row for
per-example draws), an eager CPU call, which reads its own memory without stalling anything,
continues the stream with more draws (still exactly the loop); on an accelerator or under
``torch.compile`` a device-side assertion (``torch._assert_async``) raises a ``RuntimeError``
instead. Where no block of at most ``2²²`` draws reaches the bound (``S`` close to the number of
drawable ids), the loop runs block after block, reading the count of distinct ids each time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from torchnce._common.checks import reads_on_host

Draw = Callable[[int], torch.Tensor]

LOG_FAILURE = 64 * math.log(2)  # -log of the accepted P(a block is short), per call or row
MAX_BLOCK = 1 << 22  # largest fixed block of draws
_MAX_TRIES = 2**31 - 1  # draws after which the loop gives up (too few drawable ids)
_MAX_LOOP_BLOCK = 1 << 22  # largest block of the loop


class UniquePlan(NamedTuple):
    """How to draw without replacement over ``[0, range_max)``.

    Attributes:
        block: the fixed number of draws ``N`` (``P(short) ≤ 2⁻⁶⁴``), or None where no
            block of at most ``2²²`` draws reaches that bound.
        range_max: the number of ids.
    """

    block: int | None
    range_max: int


def first_distinct(x: torch.Tensor, num_sampled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``[R, N]`` block: each row's first ``S`` distinct ids in first-seen order
    (``[R, S]``, padded with 0 where a row has fewer) and its count of distinct ids up to and
    including position ``n`` (``[R, N]``, int64). Fixed shapes: a stable sort, no read."""
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    head = torch.cat((torch.ones_like(sorted_x[:, :1], dtype=torch.bool),
                      sorted_x[:, 1:] != sorted_x[:, :-1]), dim=1)
    first = torch.zeros_like(head).scatter_(1, order, head)
    seen = first.cumsum(dim=1)
    slot = torch.where(first & (seen <= num_sampled), seen - 1, num_sampled)
    out = x.new_zeros(x.shape[0], num_sampled + 1).scatter_(1, slot, x)
    return out[:, :num_sampled], seen


def block_tries(seen: torch.Tensor, num_sampled: int) -> torch.Tensor:
    """Each row's ``num_tries``: the position of its S-th distinct id + 1 (``[R]``, int64)."""
    return (seen < num_sampled).sum(dim=1) + 1


def check_block(short: torch.Tensor, where: str) -> bool:
    """Whether the caller must continue a short block on the host (eager CPU); elsewhere a
    device-side assertion that no row is short (probability ``≤ 2⁻⁶⁴`` per row)."""
    if reads_on_host(short):
        return bool(short.any())
    torch._assert_async(torch.logical_not(short.any()),
                        f"unique sampling: a block of draws held fewer than num_sampled distinct"
                        f" ids ({where}; probability below 2^-64); retry the step")
    return False


def draw_unique(
    draw: Draw, num_sampled: int, plan: UniquePlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """TensorFlow's rejection loop: the first ``num_sampled`` distinct draws and ``num_tries``
    (an int64 scalar tensor)."""
    if plan.block is None:
        cands, tries = _loop(draw, num_sampled, draw(num_sampled))
        return cands, torch.tensor(tries, device=cands.device)
    x = draw(plan.block)
    cands, seen = first_distinct(x.view(1, -1), num_sampled)
    if check_block(seen[:, -1] < num_sampled, f"{plan.block} draws"):
        cands_, tries = _loop(draw, num_sampled, x)
        return cands_, torch.tensor(tries, device=x.device)
    return cands[0], block_tries(seen, num_sampled)[0]


def first_occurrences(x: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the first occurrence of each distinct value of ``x``."""
    sorted_x, order = torch.sort(x, stable=True)
    head = torch.ones_like(sorted_x, dtype=torch.bool)
    torch.ne(sorted_x[1:], sorted_x[:-1], out=head[1:])
    return torch.sort(torch.masked_select(order, head)).values


def _loop(draw: Draw, num_sampled: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The stream continued after the block ``x`` until ``S`` distinct ids (reads the device)."""
    first = first_occurrences(x)
    if first.numel() >= num_sampled:
        pos = first[:num_sampled]
        return x.index_select(0, pos), int(pos[-1]) + 1
    found, tries, block = x.index_select(0, first), x.numel(), max(x.numel(), 16)
    while True:
        if tries + block >= _MAX_TRIES:
            raise too_many_tries()
        y = draw(block)
        first = first_occurrences(y)
        first = first[~torch.isin(y.index_select(0, first), found)]
        need = num_sampled - found.numel()
        if first.numel() >= need:
            pos = first[:need]
            return torch.cat((found, y.index_select(0, pos))), tries + int(pos[-1]) + 1
        found, tries = torch.cat((found, y.index_select(0, first))), tries + block
        block = min(2 * block, _MAX_LOOP_BLOCK)


def too_many_tries() -> RuntimeError:
    """The error of a rejection loop that gave up (too few drawable ids for ``S``)."""
    return RuntimeError(f"unique sampling needed more than {_MAX_TRIES} draws")


def unique_plan(
    p: Sequence[float], count: Sequence[float], num_sampled: int, range_max: int
) -> UniquePlan:
    r"""Plan unique sampling from the distribution, summarised as bins of ``count[j]`` ids of
    probability ``p[j]`` (ids of probability 0 left out). Python floats, so that planning
    reads no tensor (a learned sampler plans again as it learns).

    With ``D_N`` the number of distinct ids in ``N`` draws, ``P(D_N < S)`` is bounded by

    * the union bound over the sets of ``S − 1`` ids that could hold all draws:
      ``P ≤ binom(K, S − 1)·m^N``, with ``K`` the drawable ids and ``m`` the mass of the
      ``S − 1`` likeliest (taken 5 % higher, since bins may be estimates);
    * Chernoff's lower tail (the indicators "id ``k`` drawn" are negatively associated):
      ``P ≤ exp(−(μ − S + 1)² / 2μ)`` with ``μ = E[D_N] = Σ count·(1 − (1 − p)^N)``.

    The block is the smallest ``N`` (1.1× for the Chernoff one) with either bound
    ``≤ 2⁻⁶⁴``, if that is at most ``2²²``. Deterministic, so seeded draws stay reproducible.
    """
    bins = [(pj, cj) for pj, cj in zip(p, count, strict=True) if pj > 0 and cj > 0]
    block = min(_union_block(bins, num_sampled), _chernoff_block(bins, num_sampled),
                MAX_BLOCK + 1)
    return UniquePlan(max(int(block), num_sampled) if block <= MAX_BLOCK else None, range_max)


def _union_block(bins: list[tuple[float, float]], num_sampled: int) -> float:
    """The smallest ``N`` with ``binom(K, S − 1)·m^N ≤ 2⁻⁶⁴`` (inf if none)."""
    if num_sampled <= 1:
        return num_sampled
    s = num_sampled - 1
    top, left = 0.0, float(s)
    for pj, cj in sorted(bins, reverse=True):
        taken = min(cj, left)
        top, left = top + pj * taken, left - taken
    top = min(1.05 * top, 1.0)
    k = sum(cj for _, cj in bins)
    if top >= 1.0 or k < num_sampled:
        return math.inf
    log_binom = math.lgamma(k + 1) - math.lgamma(s + 1) - math.lgamma(k - s + 1)
    return math.ceil((LOG_FAILURE + log_binom) / -math.log(top))


def _chernoff_block(bins: list[tuple[float, float]], num_sampled: int) -> float:
    """The smallest ``N`` (×1.1) with ``exp(−(μ − S + 1)² / 2μ) ≤ 2⁻⁶⁴`` (inf if none)."""
    log_miss = [(math.log1p(-pj) if pj < 1 else -math.inf, cj) for pj, cj in bins]
    s, big_l = num_sampled - 1, LOG_FAILURE
    target = s + big_l + math.sqrt(big_l * big_l + 2 * big_l * s)  # μ solving the bound

    def distinct(n: float) -> float:
        return sum(cj * -math.expm1(n * lm) for lm, cj in log_miss)

    if distinct(float(MAX_BLOCK)) < target:
        return math.inf
    lo, hi = 0.0, float(num_sampled)
    while distinct(hi) < target:
        lo, hi = hi, hi * 2
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if distinct(mid) < target else (lo, mid)
    return math.ceil(1.1 * hi)
