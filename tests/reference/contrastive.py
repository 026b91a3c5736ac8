"""Slow float64 loop oracles for info_nce_loss, mixed_negatives_loss and Algorithm 2.

Also the seeded inputs the three test modules share (``embeddings``, ``log_probs``).

Written from the formulas in the docstrings and docs/beyond-tensorflow.md, one row and one
candidate at a time, with no code shared with torchnce: a masked candidate is *skipped*
(the library fills it with a large negative instead), log-sum-exp is done by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from reference.sampled import f64, i64


def embeddings(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Seeded standard-normal test embeddings."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def log_probs(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Seeded log-probabilities: the logs of probabilities uniform in [0.01, 1)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.empty(*shape, dtype=dtype).uniform_(0.01, 1.0, generator=gen).log()


def similarity(a: Any, b: Any, normalize: bool) -> float:
    a, b = f64(a), f64(b)
    if normalize:
        a = a / max(math.sqrt(float(a @ a)), 1e-12)  # F.normalize's eps
        b = b / max(math.sqrt(float(b @ b)), 1e-12)
    return float(a @ b)


def row_loss(logits: Sequence[float], target: int, masked: Sequence[bool]) -> float:
    """``-logits[target] + log sum exp`` over the candidates that are not masked."""
    kept = [z for j, z in enumerate(logits) if j == target or not masked[j]]
    top = max(kept)
    return -logits[target] + top + math.log(sum(math.exp(z - top) for z in kept))


def info_nce(
    query: Any,
    positive_key: Any,
    negative_keys: Any = None,
    *,
    temperature: float,
    normalize: bool,
    symmetric: bool = False,
    query_ids: Any = None,
    key_ids: Any = None,
    negative_ids: Any = None,
    log_q: Any = None,
    negative_log_q: Any = None,
) -> list[float]:
    """Per-row losses; ``negative_keys`` of rank 3 are per-example ("paired")."""
    q, k = f64(query), f64(positive_key)
    b = len(q)
    lq = f64(log_q) if log_q is not None else [0.0] * b
    if negative_keys is None:
        qid = i64(query_ids) if query_ids is not None else None
        kid = i64(key_ids) if key_ids is not None else None

        def false_negative(i: int, j: int) -> bool:
            same_query = qid is not None and qid[i] == qid[j]
            same_key = kid is not None and kid[i] == kid[j]
            return i != j and (same_query or same_key)

        forward = []
        for i in range(b):
            logits = [similarity(q[i], k[j], normalize) / temperature - lq[j] for j in range(b)]
            forward.append(row_loss(logits, i, [false_negative(i, j) for j in range(b)]))
        if not symmetric:
            return forward
        backward = []
        for j in range(b):  # key j against every query
            logits = [similarity(q[i], k[j], normalize) / temperature for i in range(b)]
            backward.append(row_loss(logits, j, [false_negative(j, i) for i in range(b)]))
        return [(f + g) / 2 for f, g in zip(forward, backward, strict=True)]
    n = f64(negative_keys)
    paired = n.ndim == 3
    out = []
    for i in range(b):
        negs = n[i] if paired else n
        m = len(negs)
        if negative_log_q is None:
            nlq = [0.0] * m
        else:
            nlq = f64(negative_log_q)[i] if paired else f64(negative_log_q)
        logits = [similarity(q[i], k[i], normalize) / temperature - lq[i]]
        logits += [similarity(q[i], negs[j], normalize) / temperature - nlq[j] for j in range(m)]
        masked = [False] * (m + 1)
        if negative_ids is not None:
            nid = i64(negative_ids)[i] if paired else i64(negative_ids)
            masked[1:] = [nid[j] == i64(key_ids)[i] for j in range(m)]
        out.append(row_loss(logits, 0, masked))
    return out


def mixed_negatives(
    query: Any,
    positive_key: Any,
    sampled_keys: Any,
    *,
    batch_log_q: Any,
    sampled_log_q: Any,
    temperature: float,
    normalize: bool,
    query_ids: Any = None,
    key_ids: Any = None,
    sampled_ids: Any = None,
) -> list[float]:
    """Per-row losses over the B in-batch keys then the M sampled keys."""
    q, k, n = f64(query), f64(positive_key), f64(sampled_keys)
    b, m = len(q), len(n)
    blq, slq = f64(batch_log_q), f64(sampled_log_q)
    out = []
    for i in range(b):
        logits = [similarity(q[i], k[j], normalize) / temperature - blq[j] for j in range(b)]
        logits += [
            similarity(q[i], n[s], normalize) / temperature - (math.log(m) + slq[s])
            for s in range(m)
        ]
        masked = []
        for j in range(b):
            same_query = query_ids is not None and i64(query_ids)[i] == i64(query_ids)[j]
            same_key = key_ids is not None and i64(key_ids)[i] == i64(key_ids)[j]
            masked.append(j != i and (same_query or same_key))
        for s in range(m):
            masked.append(sampled_ids is not None and i64(sampled_ids)[s] == i64(key_ids)[i])
        out.append(row_loss(logits, i, masked))
    return out


def multiplicative_bucket(item: int, num_buckets: int) -> int:
    """The high 32 bits of the unsigned 64-bit product ``item × 0x9E3779B97F4A7C15``, mod H."""
    return (((item * 0x9E3779B97F4A7C15) % 2**64) >> 32) % num_buckets


def algorithm2(
    stream: Sequence[Sequence[int]], num_buckets: int, alpha: float, hash: str
) -> tuple[list[int], list[float]]:
    """Yi et al.'s Algorithm 2, one item at a time; a bucket is visited once per batch.

    Returns the arrays ``A`` (last step seen, 0 = never) and ``B`` (average gap).
    """
    last, gap = [0] * num_buckets, [0.0] * num_buckets
    for t, batch in enumerate(stream, start=1):
        if hash == "mod":
            buckets = [item % num_buckets for item in batch]
        else:
            buckets = [multiplicative_bucket(item, num_buckets) for item in batch]
        for h in dict.fromkeys(buckets):  # distinct buckets, first-seen order
            gap[h] = float(t) if last[h] == 0 else (1 - alpha) * gap[h] + alpha * (t - last[h])
            last[h] = t
    return last, gap
