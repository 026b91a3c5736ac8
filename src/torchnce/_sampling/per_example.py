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
from torchnce._sampling.draw import Probability
from torchnce._sampling.samplers import (
    AllCandidateSampler,
    CandidateSampler,
    LogUniformSampler,
    UniformSampler,
    all_values,
)
from torchnce._sampling.unique import Draw

_MAX_BLOCK = 1 << 16  # most draws per row in one block
_MAX_TRIES = 1 << 22  # most draws per row before giving up (too few drawable classes)


def _first_distinct(x: torch.Tensor, num_sampled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``[R, N]`` block: the bool mask of each row's first ``S`` first occurrences (all of
    them where a row has fewer) and each row's count of positions up to its S-th one."""
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    head = torch.ones_like(sorted_x, dtype=torch.bool)
    torch.ne(sorted_x[:, 1:], sorted_x[:, :-1], out=head[:, 1:])
    first = torch.zeros_like(head).scatter_(1, order, head)
    seen = first.cumsum(dim=1)
    return first & (seen <= num_sampled), (seen < num_sampled).sum(dim=1) + 1


def draw_unique_rows(
    draw: Draw, batch: int, num_sampled: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """TensorFlow's rejection loop for every row: int64 ``[B, S]`` candidates and ``[B]``
    ``num_tries``. Loops over rounds of draws (almost always one), never over rows."""
    size = min(max(block, num_sampled), _MAX_BLOCK)
    x = draw(batch * size).view(batch, size)
    rows = torch.arange(batch, device=x.device)
    cands = x.new_empty(batch, num_sampled)
    tries = x.new_empty(batch)
    while True:
        keep, row_tries = _first_distinct(x, num_sampled)
        found = keep.sum(dim=1)
        done = found == num_sampled
        cands[rows[done]] = x[done][keep[done]].view(-1, num_sampled)
        tries[rows[done]] = row_tries[done]
        if bool(done.all()):
            return cands, tries
        rows, x, found = rows[~done], x[~done], found[~done]
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
    block: int,
) -> SampledValues:
    """Per-row unique candidates ``[B, S]`` and expected counts ``[B, T]``, ``[B, S]``."""
    cands, tries = draw_unique_rows(draw, labels.shape[0], num_sampled, block)
    return SampledValues(
        cands,
        expected_count_rows(probability(labels), tries, num_sampled),
        expected_count_rows(probability(cands), tries, num_sampled),
    )


def log_uniform_rows(
    labels: torch.Tensor, num_sampled: int, range_max: int, generator: torch.Generator | None
) -> SampledValues:
    """The default sampler per row: log-uniform over ``[0, range_max)``, unique per row."""
    return rows_values(
        labels,
        num_sampled,
        log_uniform_draw(range_max, generator, labels.device),
        lambda ids: log_uniform_probability(ids, range_max),
        log_uniform_plan(range_max, num_sampled).block,
    )


def _sampler_block(sampler: CandidateSampler, num_sampled: int) -> int:
    """A first block of draws per row: the closed-form plan where there is one."""
    if isinstance(sampler, UniformSampler):
        return uniform_plan(sampler.range_max, num_sampled).block
    if isinstance(sampler, LogUniformSampler):
        return log_uniform_plan(sampler.range_max, num_sampled).block
    return 2 * num_sampled + 16


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
