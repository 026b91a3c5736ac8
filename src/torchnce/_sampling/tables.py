"""Tables behind the unigram samplers: TensorFlow's fixed-unigram weights and the alias table.

Everything is vectorised: a table over 10⁷ classes builds in well under two seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
from collections.abc import Callable, Sequence

import torch

from torchnce._sampling.draw import Rng, call_stream, uniform_doubles
from torchnce._sampling.unique import Draw

_F32_MIN_ULP = 2.0**-149
_HARD_POWF = int(0.005 * 2**29)  # 0.005 ulp of float32: glibc's powf misrounds within ~0.0016


def read_vocab_weights(vocab_file: str | os.PathLike[str]) -> list[float]:
    """The last comma-separated field of every non-empty line of ``vocab_file``, as floats."""
    try:
        with open(vocab_file, encoding="utf-8", errors="replace", newline="") as f:
            lines = f.read().split("\n")
    except OSError as err:
        raise ValueError(
            f"vocab_file must be a readable file, got {os.fspath(vocab_file)!r}"
            f" ({err.strerror or err}; not found)"
        ) from err
    weights = []
    for number, line in enumerate(lines, start=1):
        if line:
            weights.append(_parse_weight(line, number))
    return weights


def _parse_weight(line: str, number: int) -> float:
    """Parse the last field of a vocabulary line as strtof would (whitespace, hex, inf, nan)."""
    field = line.rsplit(",", 1)[-1]
    text = field.strip()
    try:
        if "_" in text:
            raise ValueError(text)
        if text.lower().lstrip("+-").startswith("0x"):
            return float.fromhex(text)
        return float(text)
    except ValueError:
        raise ValueError(
            f"vocab_file line {number} must end with a number after its last ',', got {line!r}"
            f" (Wrong vocabulary format at line: {line})"
        ) from None


def unigram_weights(
    unigrams: torch.Tensor | Sequence[float],
    distortion: float,
    num_reserved_ids: int,
    num_shards: int,
    shard: int,
) -> tuple[torch.Tensor, float]:
    """TensorFlow's shard-local float32 weight vector and its float32 running total.

    The rules are those of docs/tf-semantics.md §6.8.

    Reserved ids of this shard get weight 0; the unigrams follow, starting (TensorFlow's
    quirk) at word id = the number of reserved ids *in this shard*; each kept unigram ``u``
    becomes ``powf(u, distortion)``.
    """
    u = torch.as_tensor(unigrams, dtype=torch.float64).reshape(-1).float()
    if not bool(torch.isfinite(u).all()) or bool((u < 0).any()):
        bad = u[~torch.isfinite(u) | (u < 0)][0].item()
        raise ValueError(f"unigrams must be finite and >= 0, got a weight {bad}")
    reserved = len(range(shard, num_reserved_ids, num_shards))
    kept = u[(shard - reserved) % num_shards :: num_shards]
    w = powf(kept, float(torch.tensor(distortion, dtype=torch.float32)))
    total = sequential_sum_f32(w)
    return torch.cat((torch.zeros(reserved, dtype=torch.float32), w)), total


def powf(u: torch.Tensor, exponent: float) -> torch.Tensor:
    """The C library's float32 ``powf(u, exponent)``, elementwise, for a float32 ``u``.

    Evaluated in double and rounded to float32 (correctly rounded); the few results within
    0.005 ulp of a rounding boundary, where a libm's ``powf`` (glibc's errs by up to 0.82 ulp)
    may round the other way, are recomputed with the platform's ``powf`` when it can be
    loaded, so the weights match TensorFlow's bit for bit on the same machine.
    """
    exact = u.double().pow_(exponent)
    w = exact.float()
    libm_powf = _libm_powf()
    if libm_powf is None or exponent in (0.0, 1.0):
        return w
    # The 29 low mantissa bits of the double are its position between float32 neighbours.
    tail = exact.view(torch.int64).bitwise_and_((1 << 29) - 1).sub_(1 << 28).abs_()
    hard = torch.nonzero(tail < _HARD_POWF).flatten()
    if hard.numel():
        values, where = torch.unique(u[hard], return_inverse=True)
        fixed = [libm_powf(x, exponent) for x in values.tolist()]
        w[hard] = torch.tensor(fixed, dtype=torch.float32)[where]
    return w


@functools.cache
def _libm_powf() -> Callable[[float, float], float] | None:
    """The platform's ``powf`` through ctypes, or None where no C math library loads."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6").powf
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float, ctypes.c_float]
    return fn


def sequential_sum_f32(w: torch.Tensor) -> float:
    """The float32 running sum ``s ← fl32(s + wᵢ)`` of non-negative float32 ``w``, in order.

    Vectorised: while ``s`` stays in one binade ``[2ᵉ, 2ᵉ⁺¹)`` every step adds ``wᵢ`` rounded
    to a multiple of ``ulp = 2ᵉ⁻²³`` (ties to even, which depends on the parity of ``s/ulp``
    only since the previous tie), so the sum is an exact cumulative sum of integers. The step
    that leaves the binade is redone exactly, then the next binade starts. A float64 prefix sum
    predicts where each binade ends, so each weight is processed about once.
    """
    x = w.double()
    prefix = torch.cumsum(x, 0)
    n, s, i, grow = x.numel(), 0.0, 0, 1024
    while i < n:
        if s == 0.0:  # only before the first non-zero weight
            i = int(torch.searchsorted(prefix, 0.0, right=True))
            if i >= n:
                break
            s, i = float(x[i]), i + 1
            continue
        exponent = math.frexp(s)[1]
        ulp = max(math.ldexp(1.0, exponent - 24), _F32_MIN_ULP)
        top = math.ldexp(1.0, exponent) / ulp
        target = float(prefix[i - 1]) + 1.25 * (math.ldexp(1.0, exponent) - s)
        stop = min(n, int(torch.searchsorted(prefix, target)) + grow)
        m = _binade_steps(x[i:stop] / ulp, s / ulp)
        k = int(torch.searchsorted(m, top))
        if k == m.numel():
            s, i, grow = float(m[-1]) * ulp, stop, 2 * grow
            continue
        before = float(m[k - 1]) * ulp if k else s
        s = float(torch.tensor(before + float(x[i + k]), dtype=torch.float64).float())
        i, grow = i + k + 1, 1024
    return s


def _binade_steps(q: torch.Tensor, m0: float) -> torch.Tensor:
    """``m0`` plus the running sum of ``q`` rounded to integers, ties to even on the sum."""
    q.clamp_(max=2.0**40)
    inc = torch.round(q)
    ties = torch.nonzero(torch.frac(q) == 0.5).flatten()
    if ties.numel():
        inc[ties] = q[ties] - 0.5
        run = torch.cumsum(inc, 0)[ties]
        since = torch.diff(run, prepend=run.new_tensor([-m0]))
        inc[ties] += torch.remainder(since, 2.0)
    return torch.cumsum(inc, 0).add_(m0)


def alias_unit(n: int) -> int:
    """The mass of one column of an alias table over ``n`` classes, in integer units."""
    return 1 << min(40, 62 - n.bit_length())


def alias_masses(weights: torch.Tensor) -> torch.Tensor:
    """Each class's int64 mass in an alias table of ``weights``: ``w·n·unit / Σw`` rounded,
    the rounding error given to the largest, so the masses sum to ``n·unit`` exactly. A class
    of mass 0 (a weight below about ``Σw / (n·unit)``) is never drawn."""
    n, one = weights.numel(), alias_unit(weights.numel())
    w = weights.double()
    mass = torch.mul(w, n * one / float(w.sum())).round_().to(torch.int64)
    mass[torch.argmax(mass)] += n * one - int(mass.sum())
    return mass


def alias_table(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias table of ``weights`` (float, ``[n]``), built without a Python loop.

    Returns ``(threshold, alias)``: column ``c`` keeps ``c`` when ``u < threshold[c]`` for
    ``u = n·U`` in ``[c, c+1)``, else gives ``alias[c]``. Column masses are integers in units
    of ``2⁻ᴷ`` of a column, so the table is exact to ``2⁻ᴷ``; ``K ≥ 30``.

    Pairing (a vectorised sweep): lights (mass < 1) in index order take their deficit from the
    current heavy; a heavy whose remaining mass drops below 1 becomes a light column whose
    alias is the next heavy. With ``D`` the cumulative deficits of the lights and ``E`` the
    cumulative surpluses of the heavies, light ``k`` pairs with the first heavy ``j`` with
    ``E_j >= D_{k-1}``, and heavy ``j`` is left with ``1 + E_j − D_k`` for the first light ``k``
    with ``D_k > E_j``.
    """
    n = weights.numel()
    one = alias_unit(n)
    mass = alias_masses(weights)
    is_light = mass < one
    light = torch.nonzero(is_light).flatten()
    heavy = torch.nonzero(~is_light).flatten()
    light_mass = mass.index_select(0, light)
    need = torch.sub(one, light_mass)
    deficit = torch.cumsum(need, 0)
    surplus = torch.cumsum(mass.index_select(0, heavy).sub_(one), 0)
    alias = torch.arange(n, device=weights.device)
    threshold = torch.full((n,), float(one), dtype=torch.float64, device=weights.device)
    pair = torch.searchsorted(surplus, deficit - need).clamp_(max=heavy.numel() - 1)
    alias.index_copy_(0, light, heavy.index_select(0, pair))
    threshold.index_copy_(0, light, light_mass.double())
    spent = torch.searchsorted(deficit, surplus[:-1], right=True)
    done = torch.nonzero(spent < light.numel()).flatten()
    emptied = heavy.index_select(0, done)
    alias.index_copy_(0, emptied, heavy.index_select(0, done + 1))
    left = (
        surplus.index_select(0, done) + one - deficit.index_select(0, spent.index_select(0, done))
    )
    threshold.index_copy_(0, emptied, left.double())
    columns = torch.arange(n, dtype=torch.float64, device=weights.device)
    return threshold.div_(one).add_(columns), alias


def alias_draw(
    threshold: torch.Tensor, alias: torch.Tensor, generator: Rng | None
) -> Draw:
    """``n ↦`` ``n`` ids from an alias table (one uniform double per id), from the stream
    of ``call_stream`` (as ``FixedUnigramSampler`` draws, on either path)."""
    size = threshold.numel()
    generator = call_stream(generator, threshold.device)

    def draw(n: int) -> torch.Tensor:
        u = uniform_doubles(n, generator, threshold.device)
        column = u.mul_(size).to(torch.int64).clamp_(max=size - 1)
        keep = u < threshold.index_select(0, column)
        return torch.where(keep, column, alias.index_select(0, column))

    return draw


def weight_bins(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summarise non-negative weights as bins for ``unique_block``: ``(p, count)``, float64.

    The bins are the float32 exponent and top three mantissa bits (8 bins per octave, ±4 %);
    zero weights are left out. An estimate only: it sizes blocks of draws.
    """
    key = weights.float().flatten().view(torch.int32).bitwise_right_shift(20)
    count = torch.bincount(key).double().cpu()
    k = torch.arange(count.numel(), dtype=torch.float64)
    rep = torch.exp2(torch.div(k, 8, rounding_mode="floor") - 127) * (1 + (k % 8 + 0.5) / 8)
    keep = count > 0
    keep[0] = False
    p = rep[keep] / (rep[keep] * count[keep]).sum()
    return p, count[keep]
