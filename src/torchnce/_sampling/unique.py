"""Sampling without replacement: TensorFlow's rejection loop, vectorised.

The loop is described in docs/tf-semantics.md §6.3.

TensorFlow draws one id at a time until ``S`` distinct ids have been seen, keeps them in
first-seen order and counts every draw in ``num_tries``. Here the draws come in blocks of
independent ids; the first ``S`` distinct values of the stream and the position of the last of
them are the loop's result whatever the block sizes, so the distribution is exactly the loop's.
The block is sized from the distribution (``unique_plan``) so that one block almost always
suffices; a short block is followed by more blocks that skip the ids already seen.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import NamedTuple

import torch

Draw = Callable[[int], torch.Tensor]

SCRATCH_LIMIT = 1 << 24  # largest range whose unique draws use a scratch table (64 MiB)
_MAX_BLOCK = 1 << 22  # largest block of draws for the sorting path (32 MiB of int64)
_EMPTY = 2**31 - 1  # an unused position in a scratch table
_SCRATCH = threading.local()


def first_occurrences(x: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the first occurrence of each distinct value of ``x``."""
    sorted_x, order = torch.sort(x, stable=True)
    head = torch.ones_like(sorted_x, dtype=torch.bool)
    torch.ne(sorted_x[1:], sorted_x[:-1], out=head[1:])
    return torch.sort(torch.masked_select(order, head)).values


class UniquePlan(NamedTuple):
    """How to draw without replacement over ``[0, range_max)``.

    Attributes:
        block: the number of draws per block, enough for ``S`` distinct ones almost always.
        quick: draw exactly ``S`` first (when a repeat among them is unlikely).
        range_max: the number of ids.
    """

    block: int
    quick: bool
    range_max: int


def draw_unique(draw: Draw, num_sampled: int, plan: UniquePlan) -> tuple[torch.Tensor, int]:
    """TensorFlow's rejection loop: the first ``num_sampled`` distinct draws and ``num_tries``.

    Draws come in blocks; the first ``S`` distinct values of the stream, in first-seen order,
    and the position of the last of them are the loop's result whatever the block sizes
    (larger blocks waste draws, smaller ones need more rounds). First occurrences are found
    with a per-thread scratch table of ``range_max`` positions (``scatter_reduce`` min, no
    sort), reset after use; above ``2²⁴`` ids, with a stable sort instead.
    """
    if plan.range_max > SCRATCH_LIMIT:
        return _draw_unique_sorting(draw, num_sampled, plan)
    blocks: list[torch.Tensor] = []
    seen: torch.Tensor | None = None
    found: list[torch.Tensor] = []
    have, tries = 0, 0
    size = num_sampled if plan.quick else min(max(plan.block, num_sampled), _MAX_BLOCK)
    try:
        while True:
            if tries + size >= _EMPTY:
                raise RuntimeError(f"unique sampling needed more than {_EMPTY} draws")
            x = draw(size)
            blocks.append(x)
            seen = _scratch(plan.range_max, x.device) if seen is None else seen
            position = torch.arange(tries, tries + size, dtype=torch.int32, device=x.device)
            seen.scatter_reduce_(0, x, position, "amin")
            first = torch.nonzero(seen.index_select(0, x) == position).flatten()
            need = num_sampled - have
            if first.numel() >= need:
                if need == size and not found:
                    return x, size
                found.append(x.index_select(0, first[:need]))
                return torch.cat(found), tries + int(first[need - 1]) + 1
            found.append(x.index_select(0, first))
            have, tries = have + first.numel(), tries + size
            size = _next_block(plan.block, size, first.numel(), num_sampled - have)
    finally:
        if seen is not None:
            for x in blocks:
                seen.index_fill_(0, x, _EMPTY)


def _next_block(planned: int, size: int, fresh: int, need: int) -> int:
    """The next block after one of ``size`` draws gave ``fresh`` new ids and ``need`` remain.

    New ids only get rarer, so 1.5x the rate seen so far is a floor; a function of the draws
    alone, so seeded runs stay reproducible.
    """
    if fresh == 0:
        return min(max(planned, 16 * size), _MAX_BLOCK)
    return min(max(planned, math.ceil(1.5 * need * size / fresh) + 16), _MAX_BLOCK)


def _scratch(range_max: int, device: torch.device) -> torch.Tensor:
    """This thread's int32 table of ``range_max`` entries set to ``_EMPTY`` (last four kept)."""
    tables: dict[tuple[int, torch.device], torch.Tensor] = _SCRATCH.__dict__.setdefault(
        "tables", {}
    )
    key = (range_max, device)
    table = tables.pop(key, None)
    if table is None:
        table = torch.full((range_max,), _EMPTY, dtype=torch.int32, device=device)
    tables[key] = table
    while len(tables) > 4:
        del tables[next(iter(tables))]
    return table


def _draw_unique_sorting(
    draw: Draw, num_sampled: int, plan: UniquePlan
) -> tuple[torch.Tensor, int]:
    """``draw_unique`` with first occurrences found by a stable sort (for huge ranges)."""
    block = min(max(plan.block, num_sampled), max(_MAX_BLOCK, num_sampled))
    x = draw(block)
    first = first_occurrences(x)
    if first.numel() >= num_sampled:
        pos = first[:num_sampled]
        return x.index_select(0, pos), int(pos[-1]) + 1
    found, tries = x.index_select(0, first), x.numel()
    while True:
        x = draw(block)
        first = first_occurrences(x)
        fresh = ~torch.isin(x.index_select(0, first), found)
        first = first[fresh]
        need = num_sampled - found.numel()
        if first.numel() >= need:
            pos = first[:need]
            return torch.cat((found, x.index_select(0, pos))), tries + int(pos[-1]) + 1
        found, tries = torch.cat((found, x.index_select(0, first))), tries + block


def unique_plan(
    p: torch.Tensor, count: torch.Tensor, num_sampled: int, range_max: int
) -> UniquePlan:
    """Plan unique sampling from the distribution, summarised as bins of ``count[j]`` ids of
    probability ``p[j]`` (float64).

    ``E[distinct in N draws] = Σ count·(1 − (1 − p)^N)``: the block solves it for ``S`` and adds
    four standard deviations; the quick first try is taken when ``S`` draws are expected to
    repeat less than 0.1 times. Deterministic, so seeded draws stay reproducible.
    """
    log_miss = torch.log1p(-p)

    def distinct(n: float) -> float:
        return float((count * -torch.expm1(n * log_miss)).sum())

    target = num_sampled - 0.5
    lo, hi = float(num_sampled), float(num_sampled)
    while distinct(hi) < target and hi < 2.0**40:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if distinct(mid) < target else (lo, mid)
    q = torch.exp(hi * log_miss)
    var = float((count * q * (1 - q)).sum())
    slope = float((count * q * -log_miss).sum())
    sigma = math.sqrt(var) / slope if slope > 0 else hi
    quick = num_sampled - distinct(num_sampled) < 0.1
    return UniquePlan(math.ceil(hi + 4 * sigma) + 8, quick, range_max)
