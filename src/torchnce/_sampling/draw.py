"""The draw machinery shared by every candidate sampler.

A sampler is described by two functions: ``draw(n)``, which returns ``n`` independent ids from
its distribution, and ``probability(ids)``, TensorFlow's float32 ``P(id)``. This module turns them
into TensorFlow's ``(sampled_candidates, true_expected_count, sampled_expected_count)``
(docs/tf-semantics.md §6.3–§6.4):

* ``unique=False``: ``S`` independent draws, ``num_tries = S``.
* ``unique=True``: the result of TensorFlow's sequential rejection loop, computed on blocks
  of independent draws (``torchnce._sampling.unique``).
* expected counts ``p·S`` when ``num_tries == S``, else ``-expm1(num_tries·log1p(-p))``, in
  float32 with the same rounding points as TensorFlow's ``log1pf``/``expm1f`` (evaluated in
  float64 and rounded to float32, which is within 1 ulp of glibc).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable

import torch

from torchnce._common.checks import (
    as_int_tensor,
    check_bool,
    check_ids_in_range,
    check_int,
    range_too_small,
)
from torchnce._common.types import SampledValues
from torchnce._native import samplers as native
from torchnce._sampling import fast
from torchnce._sampling.unique import Draw, UniquePlan, draw_unique

Probability = Callable[[torch.Tensor], torch.Tensor]

UNIGRAM_RANGE_LIMIT = 2**31 - 1  # TensorFlow's bound on range_max for unigram samplers
_SEARCH_CHUNK = 200  # torch.searchsorted's parallel grain size


_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment and multipliers
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_KEY_XOR = 0x5851F42D4C957F2D


def _signed(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    c &= 0xFFFF_FFFF_FFFF_FFFF
    return c - (1 << 64) if c >= 1 << 63 else c


def _shift_right(z: torch.Tensor, k: int) -> torch.Tensor:
    """The logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


class SeedStream:
    """The random stream of ``seed=``: SplitMix64's mixer (Steele et al. 2014) of a counter, in
    int64 tensor ops (wrapping products), so that ``torch.compile`` traces it: torch 2.13's dynamo
    cannot trace a random op given an explicit ``torch.Generator``. Each call of ``rand``
    continues the stream, so a seeded call draws the same ids eager and compiled.

    ``seed`` is an int, or an int64 scalar tensor (a seed drawn from a generator on the
    device: see :func:`call_stream`); the native kernels compute the same stream.
    """

    def __init__(self, seed: int | torch.Tensor) -> None:
        # Never 0, so that the xor below stays (inductor folds ``arange·c + d`` into an index
        # expression and gets it wrong for 64-bit wrapping values; an xor first avoids that).
        self.key: int | torch.Tensor
        if isinstance(seed, torch.Tensor):
            self.key = (seed * _signed(_GOLDEN) ^ _signed(_KEY_XOR)) | 1
        else:
            self.key = _signed((seed * _GOLDEN) ^ _KEY_XOR) | 1
        self.offset = 0

    def rand(self, n: int, device: torch.device) -> torch.Tensor:
        """``n`` float64 uniforms on ``[0, 1)`` with 53 random bits each: SplitMix64's
        finaliser of ``(counter xor key)·φ``."""
        z = torch.arange(self.offset + 1, self.offset + n + 1, dtype=torch.int64, device=device)
        self.offset += n
        z = (z ^ self.key) * _signed(_GOLDEN)
        z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
        z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
        z = z ^ _shift_right(z, 31)
        return _shift_right(z, 11).double() * 2.0**-53


Rng = torch.Generator | SeedStream


def call_stream(rng: Rng | None, device: torch.device) -> Rng | None:
    """The stream one sampler call on ``device`` draws from (its pure path).

    On CPU a ``torch.Generator`` (None: torch's default) gives one random int64
    (``torch.randint`` over the whole range, which dynamo traces for the default generator),
    which seeds a :class:`SeedStream`: what the native kernels draw (``torchnce._sampling.fast``),
    so a call draws the same candidates on either path, eager or compiled. Elsewhere, and for
    a ``SeedStream``, ``rng`` itself.
    """
    if device.type != "cpu" or isinstance(rng, SeedStream):
        return rng
    low, high = native.SEED_RANGE
    return SeedStream(torch.randint(low, high, (), generator=rng))


def uniform_doubles(n: int, rng: Rng | None, device: torch.device) -> torch.Tensor:
    """``n`` float64 uniforms on ``[0, 1)`` from ``rng`` (None: torch's default generator)."""
    if isinstance(rng, SeedStream):
        return rng.rand(n, device)
    return torch.rand(n, dtype=torch.float64, generator=rng, device=device)


def resolve_generator(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> Rng | None:
    """Return the stream to draw from: ``generator``, a :class:`SeedStream` of ``seed``, or
    None (torch's default generator for ``device``, seeded by ``torch.manual_seed``)."""
    if generator is None and seed is None:
        return None
    if seed is None and type(generator) is torch.Generator and generator.device == device:
        return generator  # the usual call, checked at once (a device's .type costs 0.2 µs)
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
    return SeedStream(check_int("seed", seed))


def check_true_classes(
    true_classes: object,
    num_true: int | None,
    num_sampled: int,
    unique: bool,
    range_max: int,
) -> torch.Tensor:
    """Validate in TensorFlow's kernel order and return ``true_classes`` as int64 ``[B, T]``.

    Reads the ids on CPU (a device-side assertion elsewhere) to check that they lie in
    ``[0, range_max)``; on the native path (``fast.runs``) with one native pass, the error
    coming from the pure check. A non-contiguous ``tc`` is made contiguous there.
    """
    if type(true_classes) is torch.Tensor and true_classes.dtype is torch.int64:
        tc = true_classes  # what as_int_tensor returns for it, at a fraction of the cost
    else:
        tc = as_int_tensor("true_classes", true_classes)
    if tc.dim() != 2:
        raise ValueError(
            f"true_classes must be a matrix [B, num_true], got shape {tuple(tc.shape)}"
            " (true_classes must be a matrix)"
        )
    if num_true is not None and tc.shape[1] != num_true:
        raise ValueError(
            f"true_classes must have num_true={num_true} columns, got shape {tuple(tc.shape)}"
            f" (true_classes must have num_true columns, expected: {tc.shape[1]} was: {num_true})"
        )
    if unique and num_sampled > range_max:
        raise range_too_small(num_sampled, f"range_max ({range_max}) when unique=True")
    if not fast.runs(tc):
        check_ids_in_range("true_classes", tc, range_max)
        return tc
    if not tc.is_contiguous():
        tc = tc.contiguous()
    if not native.ids_in_range(tc, range_max):
        check_ids_in_range("true_classes", tc, range_max)  # raises the error
    return tc


def check_sampler_args(
    num_true: object,
    num_sampled: object,
    unique: object,
    range_max: object,
    *,
    unigram: bool = False,
) -> tuple[int, int, bool, int]:
    """Validate the scalar arguments every sampler function shares."""
    if (type(num_true) is int and type(num_sampled) is int and type(unique) is bool
            and type(range_max) is int and num_true >= 1 and num_sampled >= 1
            and 1 <= range_max < (UNIGRAM_RANGE_LIMIT if unigram else math.inf)):
        return num_true, num_sampled, unique, range_max  # the usual call, checked at once
    return (
        check_int("num_true", num_true, minimum=1),
        check_num_sampled(num_sampled),
        check_bool("unique", unique),
        check_range_max(range_max, unigram=unigram),
    )


def check_num_sampled(num_sampled: object) -> int:
    """Return ``num_sampled`` as an int >= 1."""
    return check_int("num_sampled", num_sampled, minimum=1)


def check_range_max(range_max: object, *, unigram: bool = False) -> int:
    """Return ``range_max`` as an int >= 1 (and < 2³¹ − 1 for the unigram samplers)."""
    value = check_int("range_max", range_max, minimum=1)
    if unigram and value >= UNIGRAM_RANGE_LIMIT:
        raise ValueError(
            f"range_max must be less than {UNIGRAM_RANGE_LIMIT} for a unigram sampler, got {value}"
        )
    return value


def check_same_device(name: str, tensor: torch.Tensor, table: torch.Tensor) -> None:
    """Raise unless ``tensor`` is on the device of a sampler's ``table``."""
    if not (tensor.is_cpu and table.is_cpu) and tensor.device != table.device:
        raise ValueError(
            f"{name} must be on the sampler's device ({table.device}), got {tensor.device};"
            " move the sampler with .to(device)"
        )


def check_ids(ids: object, range_max: int) -> torch.Tensor:
    """Return ``ids`` as int64 after checking that they lie in ``[0, range_max)`` (one sync)."""
    tensor = as_int_tensor("ids", ids)
    check_ids_in_range("ids", tensor, range_max)
    return tensor


def uniform_ints(
    n: int, upper: int, generator: Rng | None, device: torch.device
) -> torch.Tensor:
    """Return ``n`` int64 ids uniform on ``[0, upper)``.

    Uses ``floor(u·upper)`` with 53-bit uniform doubles ``u``: each id's probability is exact to
    a relative ``upper·2⁻⁵³`` (``torch.randint`` reduces 32-bit words modulo ``upper``, which
    biases ids by up to ``upper·2⁻³²``).
    """
    u = uniform_doubles(n, generator, device)
    return u.mul_(upper).to(torch.int64).clamp_(max=upper - 1)


def gather(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` for a 1-D ``table`` and ids of any shape (``index_select`` is the fastest
    gather on CPU: about half the time of advanced indexing or ``torch.take``)."""
    if ids.dim() == 1:
        return table.index_select(0, ids)
    return table.index_select(0, ids.reshape(-1)).view(ids.shape)


def search_right(sorted_values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``torch.searchsorted(sorted_values, queries, right=True)``, 200 queries per call on CPU.

    torch parallelises searchsorted from 200 queries on; on a CPU shared with other work its
    threads' barrier then stalls for milliseconds (measured on the project's 2-vCPU machine,
    torch 2.13.0, November 2026: 8 ms for 1,200 queries when busy, 36 µs in chunks), for
    little gain on a few thousand queries.
    """
    serial = queries.device.type != "cpu" or torch.get_num_threads() == 1
    if serial or queries.numel() <= _SEARCH_CHUNK:
        return torch.searchsorted(sorted_values, queries, right=True)
    chunks = [
        torch.searchsorted(sorted_values, queries[i : i + _SEARCH_CHUNK], right=True)
        for i in range(0, queries.numel(), _SEARCH_CHUNK)
    ]
    return torch.cat(chunks)


def true_divide_(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """``x /= divisor`` in place, correctly rounded on every device.

    CUDA turns a division by a Python scalar into a multiplication by its reciprocal, which
    can differ in the last bit; dividing by a one-element tensor keeps a true division.
    """
    if x.device.type == "cpu":
        return x.div_(divisor)
    return x.div_(_divisor(divisor, x.dtype, x.device))


@functools.lru_cache(maxsize=64)
def _divisor(divisor: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A one-element divisor on ``device``, copied there once (no host-to-device copy per step)."""
    return torch.tensor([divisor], dtype=dtype, device=device)


def expected_count(
    p: torch.Tensor, num_tries: int | torch.Tensor, num_sampled: int
) -> torch.Tensor:
    r"""TensorFlow's ``ExpectedCountHelper`` in float32 (docs/tf-semantics.md §6.4).

    .. math::
        Q = \begin{cases} p·S & \text{num\_tries} = S \\
        -\operatorname{expm1}(\text{num\_tries}·\operatorname{log1p}(-p)) & \text{otherwise}
        \end{cases}

    ``num_tries`` is an int or an int64 tensor that broadcasts against ``p`` (read by no one:
    the choice between the cases is a ``torch.where``). (Out-of-place transcendental ops:
    torch 2.13's in-place ``log_`` on small float64 tensors can stall for milliseconds when
    the CPU is shared.)
    """
    if isinstance(num_tries, torch.Tensor):
        log_miss = torch.log1p(p.double().neg()).float()
        rejected = torch.expm1(log_miss.mul(num_tries.float()).double()).neg().float()
        return torch.where(num_tries == num_sampled, p * float(num_sampled), rejected)
    if num_tries == num_sampled:
        return p * float(num_sampled)
    log_miss = torch.log1p(p.double().neg_()).float()
    return torch.expm1(log_miss.mul_(float(num_tries)).double()).neg_().float()


def expected_count_scalar(p: float, num_tries: int, num_sampled: int) -> float:
    """``expected_count`` for one float32 value ``p``, in Python floats.

    Products of two float32 values are exact in double, so rounding them once to float32
    gives the float32 product.
    """
    if num_tries == num_sampled and num_sampled < 2**29:
        return f32(p * num_sampled)
    if num_tries == num_sampled:
        return float(torch.tensor([p], dtype=torch.float32) * float(num_sampled))
    log_miss = f32(math.log1p(-p))
    return f32(-math.expm1(f32(log_miss * f32(num_tries))))


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 (ties to even)."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


def sample_values(
    true_classes: torch.Tensor,
    num_sampled: int,
    unique: bool,
    draw: Draw,
    probability: Probability | float,
    plan: Callable[[], UniquePlan],
) -> SampledValues:
    """Draw ``num_sampled`` candidates and both expected counts (docs/tf-semantics.md §6.3–§6.4).

    ``probability`` is a function of the ids, or one float32 value when every id has it.
    """
    num_tries: int | torch.Tensor = num_sampled
    if unique:
        candidates, num_tries = draw_unique(draw, num_sampled, plan())
    else:
        candidates = draw(num_sampled)
    if isinstance(probability, float) and isinstance(num_tries, torch.Tensor):
        p = torch.full((), probability, dtype=torch.float32, device=num_tries.device)
        q_t = expected_count(p, num_tries, num_sampled)
        return SampledValues(candidates, q_t.expand(true_classes.shape).contiguous(),
                             q_t.expand(num_sampled).contiguous())
    if isinstance(probability, float):
        q = expected_count_scalar(probability, num_sampled, num_sampled)  # no rejection
        device = true_classes.device
        return SampledValues(
            candidates,
            torch.full(true_classes.shape, q, dtype=torch.float32, device=device),
            torch.full((num_sampled,), q, dtype=torch.float32, device=device),
        )
    ids = torch.cat((true_classes.reshape(-1), candidates))
    counts = expected_count(probability(ids), num_tries, num_sampled)
    split = ids.numel() - num_sampled
    return SampledValues(candidates, counts[:split].view(true_classes.shape), counts[split:])
