"""A slow float64 loop oracle for the retrieval options of info_nce_loss and
mixed_negatives_loss: multi-vector queries, hard negatives, clipping, score masks, weights.

Written from the docstrings' formulas, one row and one candidate at a time, sharing no code
with torchnce: masked candidates are *skipped*, the ``K`` hardest negatives are found by
sorting the kept ones, log-sum-exp is done by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

Score = Callable[[int, Any], float]


def _vec(x: Any) -> list[float]:
    return [float(v) for v in x]


def sim(query: torch.Tensor, key: torch.Tensor, normalize: bool) -> float:
    """``s(q, k)``; a ``[H, D]`` query takes its best head (max-sim)."""
    if query.dim() == 2:
        return max(sim(head, key, normalize) for head in query)
    a, b = _vec(query), _vec(key)
    if normalize:
        na = max(math.sqrt(sum(x * x for x in a)), 1e-12)
        nb = max(math.sqrt(sum(x * x for x in b)), 1e-12)
        a, b = [x / na for x in a], [x / nb for x in b]
    return sum(x * y for x, y in zip(a, b, strict=True))


def row(logits: Sequence[float], target: int, dropped: Sequence[bool], hard: int | None) -> float:
    """``-logits[target] + log Σ exp`` over the target and its kept negatives (the ``hard``
    largest of them when given)."""
    negatives = sorted((z for j, z in enumerate(logits) if j != target and not dropped[j]),
                       reverse=True)
    if hard is not None:
        negatives = negatives[:hard]
    kept = [logits[target], *negatives]
    top = max(kept)
    return -logits[target] + top + math.log(sum(math.exp(z - top) for z in kept))


def clip_log(log_q: float, min_probability: float | None) -> float:
    """``log clip(exp(log_q), min_probability, 1)``; without a clip, ``log_q`` itself."""
    if min_probability is None:
        return log_q
    p = math.exp(log_q) if log_q != -math.inf else 0.0
    return math.log(min(max(p, min_probability), 1.0))


def losses(
    query: torch.Tensor,
    candidates: Sequence[Sequence[torch.Tensor]],
    targets: Sequence[int],
    corrections: Sequence[Sequence[float]],
    dropped: Sequence[Sequence[bool]],
    *,
    temperature: float,
    normalize: bool,
    hard: int | None = None,
    weight: Any = None,
) -> list[float]:
    """Per-row ``w_i L_i``: row i's candidates, target column, corrections and drops."""
    out = []
    for i, (cands, target) in enumerate(zip(candidates, targets, strict=True)):
        logits = [sim(query[i], c, normalize) / temperature - corrections[i][j]
                  for j, c in enumerate(cands)]
        w = 1.0 if weight is None else float(weight[i])
        out.append(w * row(logits, target, dropped[i], hard))
    return out


def in_batch(query: torch.Tensor, key: torch.Tensor, *, log_q: Any = None,
             key_ids: Any = None, score_mask: Any = None, min_probability: float | None = None,
             **kw: Any) -> list[float]:
    """info_nce_loss's in-batch rows: row i's candidates are every key, its positive key i."""
    b = len(query)
    lq = [0.0] * b if log_q is None else [clip_log(float(v), min_probability) for v in log_q]
    dropped = [[j != i and ((key_ids is not None and int(key_ids[i]) == int(key_ids[j]))
                            or (score_mask is not None and not bool(score_mask[i][j])))
                for j in range(b)] for i in range(b)]
    return losses(query, [list(key)] * b, list(range(b)), [lq] * b, dropped, **kw)


def explicit(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, *,
             score_mask: Any = None, **kw: Any) -> list[float]:
    """info_nce_loss with negatives ``[M, D]`` or ``[B, M, D]``: column 0 is the positive."""
    b = len(query)
    rows = [[key[i], *(negatives[i] if negatives.dim() == 3 else negatives)] for i in range(b)]
    m = len(rows[0]) - 1
    dropped = [[False] + [score_mask is not None and not bool(score_mask[i][j])
                          for j in range(m)] for i in range(b)]
    return losses(query, rows, [0] * b, [[0.0] * (m + 1)] * b, dropped, **kw)


def mixed(query: torch.Tensor, key: torch.Tensor, sampled: torch.Tensor, *, batch_log_q: Any,
          sampled_log_q: Any, key_ids: Any = None, sampled_ids: Any = None,
          score_mask: Any = None, min_probability: float | None = None,
          **kw: Any) -> list[float]:
    """mixed_negatives_loss: the B keys then the M sampled keys, corrected by ``log p_j`` and
    ``log (M q_m)``."""
    b, m = len(query), len(sampled)
    corr = [clip_log(float(v), min_probability) for v in batch_log_q]
    corr += [math.log(m) + clip_log(float(v), min_probability) for v in sampled_log_q]
    dropped = []
    for i in range(b):
        drops = [j != i and key_ids is not None and int(key_ids[i]) == int(key_ids[j])
                 for j in range(b)]
        drops += [sampled_ids is not None and int(sampled_ids[s]) == int(key_ids[i])
                  for s in range(m)]
        if score_mask is not None:
            drops = [d or (j != i and not bool(score_mask[i][j])) for j, d in enumerate(drops)]
        dropped.append(drops)
    cands = [*key, *sampled]
    return losses(query, [cands] * b, list(range(b)), [corr] * b, dropped, **kw)


def supcon(z: torch.Tensor, labels: Any, *, temperature: float, normalize: bool,
           ref: torch.Tensor | None = None, ref_labels: Any = None) -> list[float]:
    """Khosla et al.'s ``L_out`` per anchor (0 without positives), one pair at a time."""
    cands, cand_labels = (z, labels) if ref is None else (ref, ref_labels)
    out = []
    for i in range(len(z)):
        others = [j for j in range(len(cands)) if ref is not None or j != i]
        logits = {j: sim(z[i], cands[j], normalize) / temperature for j in others}
        top = max(logits.values())
        lse = top + math.log(sum(math.exp(v - top) for v in logits.values()))
        pos = [j for j in others if int(cand_labels[j]) == int(labels[i])]
        out.append(sum(lse - logits[j] for j in pos) / len(pos) if pos else 0.0)
    return out
