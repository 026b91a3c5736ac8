"""Per-example negatives: ``S`` candidates drawn independently for every row of a batch.

Row ``b`` gets what TensorFlow's unique sampler would return for that row alone
(docs/tf-semantics.md §6.3–§6.4): the first ``S`` distinct ids of its own stream of independent
draws, in first-seen order, and expected counts from its own ``num_tries``. All rows are drawn
at once: a ``[B, N]`` block of draws, first occurrences found by a sort along each row, and a
further block only for the (rare) rows with fewer than ``S`` distinct ids; the result is the
loop's whatever the block sizes, since each row's stream is i.i.d.
"""

from __future__ import annotations

import math

import torch

from torchnce._common.checks import range_too_small
from torchnce._common.types import SampledValues
from torchnce._sampling.closed_form import (
    log_uniform_draw,
    log_uniform_plan,
    log_uniform_probability,
    uniform_plan,
)
from torchnce._sampling.draw import Probability, Rng
from torchnce._sampling.samplers import (
    AllCandidateSampler,
    CandidateSampler,
    LogUniformSampler,
    UniformSampler,
    all_values,
)
from torchnce._sampling.unique import Draw, UniquePlan, block_tries, check_block, first_distinct

_MAX_BLOCK = 1 << 16  # most draws per row in one block
_MAX_TRIES = 1 << 22  # most draws per row before giving up (too few drawable classes)


def draw_unique_rows(
    draw: Draw, batch: int, num_sampled: int, block: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """TensorFlow's rejection loop for every row: int64 ``[B, S]`` candidates and ``[B]``
    ``num_tries``. One fixed ``[B, N]`` block (no host read) where the plan has one
    (``P(a row is short) ≤ 2⁻⁶⁴``, see ``torchnce._sampling.unique``); the short rows'
    streams continue on the host only in the eager CPU case."""
    if block is not None:
        x = draw(batch * block).view(batch, block)
        cands, seen = first_distinct(x, num_sampled)
        if not check_block(seen[:, -1] < num_sampled, f"{block} draws per row"):
            return cands, block_tries(seen, num_sampled)
    else:
        x = draw(batch * num_sampled).view(batch, num_sampled)
    return _rows_loop(draw, num_sampled, x, block or 2 * num_sampled + 16)


def _rows_loop(
    draw: Draw, num_sampled: int, x: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' streams continued after the block ``x`` until each has ``S`` distinct ids,
    round after round of draws for the rows still short (reads the device each round)."""
    batch = x.shape[0]
    rows = torch.arange(batch, device=x.device)
    cands = x.new_empty(batch, num_sampled)
    tries = x.new_empty(batch)
    while True:
        first, seen = first_distinct(x, num_sampled)
        done = seen[:, -1] >= num_sampled
        cands[rows[done]] = first[done]
        tries[rows[done]] = block_tries(seen[done], num_sampled)
        if bool(done.all()):
            return cands, tries
        rows, x, found = rows[~done], x[~done], seen[~done, -1]
        fewest = int(found.min())
        if x.shape[1] >= _MAX_TRIES:
            raise range_too_small(num_sampled, "the number of classes the sampler can draw",
                                  f" ({fewest} distinct ids in {x.shape[1]} draws)")
        more = min(max(block, math.ceil(1.5 * (num_sampled - fewest) * x.shape[1]
                                        / max(fewest, 1)) + 16), _MAX_BLOCK)
        x = torch.cat((x, draw(rows.numel() * more).view(-1, more)), dim=1)


def expected_count_rows(p: torch.Tensor, tries: torch.Tensor, num_sampled: int) -> torch.Tensor:
    """``expected_count`` of ``_sampling`` with one ``num_tries`` per row: float32 ``[B, K]``
    from float32 ``p`` ``[B, K]`` and int64 ``tries`` ``[B]``, with the same rounding points."""
    n = tries.unsqueeze(1)
    log_miss = torch.log1p(p.double().neg()).float()
    rejected = torch.expm1(log_miss.mul(n.float()).double()).neg().float()
    return torch.where(n == num_sampled, p * float(num_sampled), rejected)


def rows_values(
    labels: torch.Tensor,
    num_sampled: int,
    draw: Draw,
    probability: Probability,
    block: int | None,
) -> SampledValues:
    """Per-row unique candidates ``[B, S]`` and expected counts ``[B, T]``, ``[B, S]``."""
    cands, tries = draw_unique_rows(draw, labels.shape[0], num_sampled, block)
    return SampledValues(
        cands,
        expected_count_rows(probability(labels), tries, num_sampled),
        expected_count_rows(probability(cands), tries, num_sampled),
    )


def log_uniform_rows(
    labels: torch.Tensor, num_sampled: int, range_max: int, generator: Rng | None
) -> SampledValues:
    """The default sampler per row: log-uniform over ``[0, range_max)``, unique per row."""
    return rows_values(
        labels,
        num_sampled,
        log_uniform_draw(range_max, generator, labels.device),
        lambda ids: log_uniform_probability(ids, range_max),
        log_uniform_plan(range_max, num_sampled).block,
    )


def _block(plan: UniquePlan) -> int | None:
    return plan.block


def _sampler_block(sampler: CandidateSampler, num_sampled: int) -> int | None:
    """The fixed block of draws per row from the sampler's plan (None: none, or not ours)."""
    if isinstance(sampler, UniformSampler):
        return _block(uniform_plan(sampler.range_max, num_sampled))
    if isinstance(sampler, LogUniformSampler):
        return _block(log_uniform_plan(sampler.range_max, num_sampled))
    plan = getattr(sampler, "_plan", None)
    return plan(num_sampled).block if callable(plan) else None


def sampler_rows(
    sampler: CandidateSampler, labels: torch.Tensor, num_sampled: int, *, trusted: bool = False
) -> SampledValues:
    """Per-row unique candidates from any :class:`CandidateSampler`, for validated labels
    (ids in the sampler's range, checked by the caller).

    Draws are ``sampler``'s i.i.d. draws from its current distribution (``unique=False``, no
    true classes, leaving a learned sampler's counts alone); expected counts use its
    probabilities; then one draw with the batch's true classes feeds them to a stateful
    sampler exactly once, as a shared draw would. The :class:`AllCandidateSampler` gives every
    row all classes, i.e. its shared sample. A ``trusted`` sampler (one of torchnce's) is
    called through its unchecked core, reading nothing from the device; any other through its
    public ``sample`` and ``probability``.
    """
    if isinstance(sampler, AllCandidateSampler):
        return all_values(labels, num_sampled)
    if sampler.range_max is not None and num_sampled > sampler.range_max:
        raise range_too_small(num_sampled,
                              f"range_max ({sampler.range_max}) for unique per-example draws")
    none = labels[:0]
    sample = sampler._sample if trusted else (
        lambda tc, n, unique, gen: sampler.sample(tc, n, unique=unique, generator=gen))

    def draw(n: int) -> torch.Tensor:
        return sample(none, n, False, None).sampled_candidates

    probability = sampler._probability if trusted else sampler.probability
    values = rows_values(labels, num_sampled, draw, probability,
                         _sampler_block(sampler, num_sampled))
    sample(labels, 1, False, None)
    return values
