"""The draw machinery shared by every candidate sampler.

A sampler is described by two functions: ``draw(n)``, which returns ``n`` independent ids from
its distribution, and ``probability(ids)``, TensorFlow's float32 ``P(id)``. This module turns them
into TensorFlow's ``(sampled_candidates, true_expected_count, sampled_expected_count)``
(tf-semantics.md §6.3–§6.4):

* ``unique=False``: ``S`` independent draws, ``num_tries = S``.
* ``unique=True``: the result of TensorFlow's sequential rejection loop (draw until ``S``
  distinct ids have been seen, keep them in first-seen order, count every draw in
  ``num_tries``), computed on blocks of independent draws with a stable sort instead of a loop.
  The block is sized from the distribution so that one block almost always suffices; a short
  block is followed by more blocks that skip the ids already seen. The result depends only on
  the stream of independent draws, so its distribution is exactly that of the loop.
* expected counts ``p·S`` when ``num_tries == S``, else ``-expm1(num_tries·log1p(-p))``, in
  float32 with the same rounding points as TensorFlow's ``log1pf``/``expm1f`` (evaluated in
  float64 and rounded to float32, which is within 1 ulp of glibc).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from torchnce._checks import as_int_tensor, check_ids_in_range, check_int
from torchnce._types import SampledValues

Draw = Callable[[int], torch.Tensor]
Probability = Callable[[torch.Tensor], torch.Tensor]

UNIGRAM_RANGE_LIMIT = 2**31 - 1  # TensorFlow's bound on range_max for unigram samplers
_MAX_BLOCK = 1 << 22  # largest single block of draws for unique sampling (32 MiB of int64)


def resolve_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """Return the generator to draw with: ``generator``, a fresh one seeded with ``seed``, or None.

    None means torch's default generator for ``device`` (seeded by ``torch.manual_seed``).
    """
    if generator is not None:
        if seed is not None:
            raise ValueError(
                f"seed and generator must not both be given, got seed={seed!r} and a generator;"
                " pass one of them"
            )
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(
                f"generator must be on the device of true_classes ({device}), got a generator"
                f" on {generator.device}"
            )
        return generator
    if seed is None:
        return None
    seed = check_int("seed", seed)
    fresh = torch.Generator(device=device)
    fresh.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
    return fresh


def check_true_classes(
    true_classes: object,
    num_true: int | None,
    num_sampled: int,
    unique: bool,
    range_max: int,
) -> torch.Tensor:
    """Validate in TensorFlow's kernel order and return ``true_classes`` as int64 ``[B, T]``.

    Reads the ids (one device synchronisation) to check that they lie in ``[0, range_max)``.
    """
    tc = as_int_tensor("true_classes", true_classes)
    if tc.dim() != 2:
        raise ValueError(
            f"true_classes must be a matrix [B, num_true], got shape {tuple(tc.shape)}"
            " (true_classes must be a matrix)"
        )
    if num_true is not None and tc.shape[1] != num_true:
        raise ValueError(
            f"true_classes must have num_true columns, expected: {num_true} was: {tc.shape[1]},"
            f" got shape {tuple(tc.shape)}"
        )
    if unique and num_sampled > range_max:
        raise ValueError(
            f"num_sampled must be <= range_max ({range_max}) when unique=True, got {num_sampled}"
            " (Sampler's range is too small.)"
        )
    check_ids_in_range("true_classes", tc, range_max)
    return tc


def check_num_sampled(num_sampled: object) -> int:
    """Return ``num_sampled`` as an int >= 1."""
    return check_int("num_sampled", num_sampled, minimum=1)


def check_range_max(range_max: object, *, unigram: bool = False) -> int:
    """Return ``range_max`` as an int >= 1 (and < 2³¹ − 1 for the unigram samplers)."""
    value = check_int("range_max", range_max, minimum=1)
    if unigram and value >= UNIGRAM_RANGE_LIMIT:
        raise ValueError(
            f"range_max must be less than {UNIGRAM_RANGE_LIMIT} for a unigram sampler,"
            f" got {value}"
        )
    return value


def check_ids(ids: object, range_max: int) -> torch.Tensor:
    """Return ``ids`` as int64 after checking that they lie in ``[0, range_max)`` (one sync)."""
    tensor = as_int_tensor("ids", ids)
    check_ids_in_range("ids", tensor, range_max)
    return tensor


def uniform_ints(
    n: int, upper: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Return ``n`` int64 ids uniform on ``[0, upper)``.

    Uses ``floor(u·upper)`` with 53-bit uniform doubles ``u``: each id's probability is exact to
    a relative ``upper·2⁻⁵³`` (``torch.randint`` reduces 32-bit words modulo ``upper``, which
    biases ids by up to ``upper·2⁻³²``).
    """
    u = torch.rand(n, dtype=torch.float64, generator=generator, device=device)
    return u.mul_(upper).to(torch.int64).clamp_(max=upper - 1)


def true_divide_(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """``x /= divisor`` in place, correctly rounded on every device.

    CUDA turns a division by a Python scalar into a multiplication by its reciprocal, which
    can differ in the last bit; dividing by a one-element tensor keeps a true division.
    """
    if x.device.type == "cpu":
        return x.div_(divisor)
    return x.div_(torch.tensor([divisor], dtype=x.dtype, device=x.device))


def expected_count(p: torch.Tensor, num_tries: int, num_sampled: int) -> torch.Tensor:
    """TensorFlow's ``ExpectedCountHelper`` in float32 (tf-semantics.md §6.4).

    .. math::
        Q = \\begin{cases} p·S & \\text{num\\_tries} = S \\\\
        -\\operatorname{expm1}(\\text{num\\_tries}·\\operatorname{log1p}(-p)) & \\text{otherwise}
        \\end{cases}
    """
    if num_tries == num_sampled:
        return p * float(num_sampled)
    log_miss = torch.log1p(p.double().neg_()).float()
    return torch.expm1(log_miss.mul_(float(num_tries)).double()).neg_().float()


def first_occurrences(x: torch.Tensor) -> torch.Tensor:
    """Positions (ascending) of the first occurrence of each distinct value of ``x``."""
    sorted_x, order = torch.sort(x, stable=True)
    head = torch.ones_like(sorted_x, dtype=torch.bool)
    torch.ne(sorted_x[1:], sorted_x[:-1], out=head[1:])
    mask = torch.zeros_like(head)
    mask[order[head]] = True
    return mask.nonzero().squeeze(1)


def draw_unique(draw: Draw, num_sampled: int, block: int) -> tuple[torch.Tensor, int]:
    """TensorFlow's rejection loop: the first ``num_sampled`` distinct draws and ``num_tries``.

    ``block`` is the size of each block of independent draws; any size gives the same
    distribution (larger blocks waste draws, smaller ones need more rounds).
    """
    block = min(max(block, num_sampled), max(_MAX_BLOCK, num_sampled))
    x = draw(block)
    first = first_occurrences(x)
    if first.numel() >= num_sampled:
        pos = first[:num_sampled]
        return x[pos], int(pos[-1]) + 1
    found, tries = x[first], block
    while True:
        x = draw(block)
        first = first_occurrences(x)
        fresh = ~torch.isin(x[first], found)
        first = first[fresh]
        need = num_sampled - found.numel()
        if first.numel() >= need:
            pos = first[:need]
            return torch.cat((found, x[pos])), tries + int(pos[-1]) + 1
        found, tries = torch.cat((found, x[first])), tries + block


def unique_block(p: torch.Tensor, count: torch.Tensor, num_sampled: int) -> int:
    """A block size that holds ``num_sampled`` distinct draws with high probability.

    The distribution is summarised as bins of ``count[j]`` ids of probability ``p[j]``
    (float64). Solves ``E[distinct in N draws] = Σ count·(1 − (1 − p)^N) = S`` for ``N`` and adds
    four standard deviations. Deterministic, so seeded draws stay reproducible.
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
    return math.ceil(hi + 4 * sigma) + 8


def sample_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    draw: Draw,
    probability: Probability,
    block: Callable[[], int],
) -> SampledValues:
    """Draw ``num_sampled`` candidates and both expected counts (tf-semantics.md §6.3–§6.4)."""
    if unique:
        candidates, num_tries = draw_unique(draw, num_sampled, block())
    else:
        candidates, num_tries = draw(num_sampled), num_sampled
    flat = true_classes.reshape(-1)
    q = expected_count(probability(torch.cat((flat, candidates))), num_tries, num_sampled)
    return SampledValues(candidates, q[: flat.numel()].view(true_classes.shape), q[flat.numel() :])
