"""Tables behind the unigram samplers: TensorFlow's fixed-unigram weights and the alias table.

Everything is vectorised: a table over 10⁷ classes builds in well under two seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

from torchnce._sampling import Draw

_F32_MIN_ULP = 2.0**-149


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
    """TensorFlow's shard-local float32 weight vector and its float32 running total (§6.8).

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
    d = float(torch.tensor(distortion, dtype=torch.float32))
    w = kept.double().pow_(d).float()
    total = sequential_sum_f32(w)
    return torch.cat((torch.zeros(reserved, dtype=torch.float32), w)), total


def sequential_sum_f32(w: torch.Tensor) -> float:
    """The float32 running sum ``s ← fl32(s + wᵢ)`` of non-negative float32 ``w``, in order.

    Vectorised: while ``s`` stays in one binade ``[2ᵉ, 2ᵉ⁺¹)`` every step adds ``wᵢ`` rounded
    to a multiple of ``ulp = 2ᵉ⁻²³`` (ties to even, which depends on the parity of ``s/ulp``
    only just after the previous tie), so the sum is an exact integer cumulative sum. The
    step that leaves the binade is redone exactly, then the next binade starts.
    """
    x = w.double()
    n, i, s, chunk = x.numel(), 0, 0.0, 4096
    while i < n:
        if s == 0.0:
            nonzero = torch.nonzero(x[i:]).flatten()
            if nonzero.numel() == 0:
                break
            i += int(nonzero[0])
            s, i = float(x[i]), i + 1
            continue
        ulp = max(math.ldexp(1.0, math.frexp(s)[1] - 24), _F32_MIN_ULP)
        top = int(math.ldexp(1.0, math.frexp(s)[1]) / ulp)
        m = int(s / ulp) + _binade_steps(x[i : i + chunk] / ulp, int(s / ulp))
        out = torch.nonzero(m >= top).flatten()
        if out.numel() == 0:
            s, i = float(m[-1]) * ulp, i + m.numel()
            chunk *= 2
            continue
        j = int(out[0])
        before = float(m[j - 1]) * ulp if j > 0 else s
        s = float(torch.tensor(before + float(x[i + j]), dtype=torch.float64).float())
        i, chunk = i + j + 1, max(4096, 2 * j)
    return s


def _binade_steps(q: torch.Tensor, m0: int) -> torch.Tensor:
    """Cumulative increments (in ulps) of ``s/ulp`` for steps ``q = w/ulp``, ties to even."""
    q = q.clamp(max=2.0**40)
    floor = q.floor()
    frac = q - floor
    inc = floor.to(torch.int64) + (frac > 0.5)
    ties = torch.nonzero(frac == 0.5).flatten()
    if ties.numel():
        run = torch.cumsum(inc, 0)[ties]
        since = torch.diff(run, prepend=run.new_tensor([-m0]))
        inc[ties] += since & 1
    return torch.cumsum(inc, 0)


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
    k = min(40, 62 - n.bit_length())
    one = 1 << k
    w = weights.double()
    mass = torch.round(w / w.sum() * float(n * one)).to(torch.int64)
    mass[torch.argmax(mass)] += n * one - int(mass.sum())
    light = torch.nonzero(mass < one).flatten()
    heavy = torch.nonzero(mass >= one).flatten()
    deficit = torch.cumsum(one - mass[light], 0)
    surplus = torch.cumsum(mass[heavy] - one, 0)
    threshold = torch.full((n,), float(one), dtype=torch.float64, device=w.device)
    alias = torch.arange(n, device=w.device)
    before = deficit - (one - mass[light])
    pair = torch.searchsorted(surplus, before).clamp_(max=heavy.numel() - 1)
    alias[light] = heavy[pair]
    threshold[light] = mass[light].double()
    spent = torch.searchsorted(deficit, surplus, right=True)[:-1]
    done = torch.nonzero(spent < light.numel()).flatten()
    left = one + surplus[done] - deficit[spent[done]]
    alias[heavy[done]] = heavy[done + 1]
    threshold[heavy[done]] = left.double()
    threshold.div_(one).add_(torch.arange(n, dtype=torch.float64, device=w.device))
    return threshold, alias


def alias_draw(
    threshold: torch.Tensor, alias: torch.Tensor, generator: torch.Generator | None
) -> Draw:
    """``n ↦`` ``n`` ids from an alias table (one uniform double per id)."""
    size = threshold.numel()

    def draw(n: int) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64, generator=generator, device=threshold.device)
        column = u.mul_(size).to(torch.int64).clamp_(max=size - 1)
        return torch.where(u < threshold[column], column, alias[column])

    return draw


def weight_bins(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summarise a distribution as bins of nearly equal probability (for ``unique_block``)."""
    w = weights.double().flatten()
    w = w[w > 0]
    key = torch.floor(torch.log2(w / w.max()) * 8).to(torch.int64)
    key -= key.min()
    count = torch.bincount(key).double()
    mass = torch.bincount(key, weights=w)
    keep = count > 0
    return (mass[keep] / count[keep] / w.sum()).cpu(), count[keep].cpu()
