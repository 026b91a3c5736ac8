"""Slow, obviously-correct float64 oracles for the core, written from the spec.

Every function here works on numpy arrays (or anything ``np.asarray`` accepts), computes in
float64 with plain Python loops, and follows the numbered steps of the spec literally:
docs/tf-semantics.md §5 (``embedding_lookup``, "mod"/"div" sharding, ``max_norm``), §6.10
(accidental hits), §2 (``_compute_sampled_logits``), §3.1 (``nce_loss``) and §3.3
(``sampled_softmax_loss``).
They are deliberately independent of torchnce: no vectorised tricks, no shared code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# TensorFlow's accidental-hit weight is -FLT_MAX as float32 (§6.10); in float64 it is this value.
FLT_MAX = float(np.finfo(np.float32).max)


def expected_like(reference: Any, actual: torch.Tensor) -> torch.Tensor:
    """The float64 oracle's result as a tensor of ``actual``'s dtype, for ``assert_close``."""
    return torch.as_tensor(np.asarray(reference), dtype=actual.dtype)


def f64(x: Any) -> np.ndarray:
    """Any tensor, array or nested list as a float64 numpy array (tensors detached first)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def i64(x: Any) -> np.ndarray:
    """Any tensor, array or nested list of ids as an int64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.int64).numpy()
    return np.asarray(x, dtype=np.int64)


def as_shards(params: Any) -> list[np.ndarray]:
    """§5: a Python list is a shard list; anything else (a tuple too) is one shard."""
    shards = params if isinstance(params, list) else [params]
    return [f64(s) for s in shards]


def mod_shard_and_row(i: int, num_shards: int) -> tuple[int, int]:
    """§5 "mod": shard ``i mod P`` holds global id ``i`` at local row ``floor(i / P)``."""
    return i % num_shards, i // num_shards


def div_shard_and_row(i: int, num_rows: int, num_shards: int) -> tuple[int, int]:
    """§5 "div", threshold form (the one TF's own test reference uses)."""
    ids_per_shard, extras = divmod(num_rows, num_shards)
    threshold = extras * (ids_per_shard + 1)
    if i < threshold:
        return i // (ids_per_shard + 1), i % (ids_per_shard + 1)
    return extras + (i - threshold) // ids_per_shard, (i - threshold) % ids_per_shard


def split_mod(table: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Shard ``p`` holds the global rows p, p+P, p+2P, ... (the "mod" layout)."""
    return [table[p::num_shards] for p in range(num_shards)]


def split_div(table: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Contiguous shards, the first ``N % P`` one row longer (the "div" layout, §5)."""
    ids_per_shard, extras = divmod(len(table), num_shards)
    sizes = [ids_per_shard + (1 if p < extras else 0) for p in range(num_shards)]
    starts = np.cumsum([0, *sizes])
    return [table[starts[p] : starts[p + 1]] for p in range(num_shards)]


def lookup_row(shards: Sequence[np.ndarray], i: int, partition_strategy: str) -> np.ndarray:
    """The row (or trailing block) of global id ``i``."""
    num_shards = len(shards)
    if num_shards == 1:
        return shards[0][i]
    if partition_strategy == "mod":
        p, r = mod_shard_and_row(i, num_shards)
    else:
        p, r = div_shard_and_row(i, sum(len(s) for s in shards), num_shards)
    return shards[p][r]


def clip_by_max_norm(e: np.ndarray, max_norm: float) -> np.ndarray:
    """§5 ``_clip`` for one looked-up element: ``(e·c) / max(‖e‖, c)`` over all its axes."""
    l2sum = float(np.sum(e * e))
    norm = math.sqrt(l2sum) if l2sum > 0 else 0.0
    return (e * max_norm) / max(norm, max_norm)


def embedding_lookup(
    params: Any, ids: Any, partition_strategy: str = "mod", max_norm: float | None = None
) -> np.ndarray:
    """§5: output shape ``ids.shape + shard.shape[1:]``; each element looked up one by one."""
    shards = as_shards(params)
    ids = i64(ids)
    trailing = shards[0].shape[1:]
    out = np.empty((ids.size, *trailing), dtype=np.float64)
    for k, i in enumerate(ids.reshape(-1).tolist()):
        e = np.array(lookup_row(shards, i, partition_strategy), dtype=np.float64)
        out[k] = e if max_norm is None else clip_by_max_norm(e, max_norm)
    return out.reshape(*ids.shape, *trailing)


def accidental_hits(
    true_classes: Any, sampled_candidates: Any
) -> tuple[list[int], list[int], list[float]]:
    """§6.10: value → *last* position in the sample; emit a triple per matching label, row-major."""
    true_classes = i64(true_classes)
    last_position = {}
    for position, value in enumerate(i64(sampled_candidates).reshape(-1).tolist()):
        last_position[value] = position
    indices, ids, weights = [], [], []
    for i, row in enumerate(true_classes.tolist()):
        for label in row:
            if label in last_position:
                indices.append(i)
                ids.append(last_position[label])
                weights.append(-FLT_MAX)
    return indices, ids, weights


def sampled_logits(
    weights: Any,
    biases: Any,
    labels: Any,
    inputs: Any,
    sampled_values: Sequence[Any],
    num_sampled: int,
    *,
    subtract_log_q: bool = True,
    remove_accidental_hits: bool = False,
    partition_strategy: str = "mod",
) -> tuple[np.ndarray, np.ndarray]:
    """§2, in its exact composition order; returns float64 ``(logits, labels)`` ``[B, T+S']``."""
    w_shards, b_shards = as_shards(weights), as_shards(biases)
    inputs = f64(inputs)
    batch, dim = inputs.shape
    labels = i64(labels).reshape(batch, -1)  # step 2
    num_true = labels.shape[1]
    sampled = i64(sampled_values[0]).reshape(-1)
    true_count = np.broadcast_to(f64(sampled_values[1]), (batch, num_true))
    sampled_count = f64(sampled_values[2]).reshape(-1)

    def logit(b: int, class_id: int) -> float:  # steps 8, 10, 11: row-wise dot, then the bias
        w = lookup_row(w_shards, class_id, partition_strategy)
        dot = sum(float(inputs[b, d]) * float(w[d]) for d in range(dim))
        return dot + float(lookup_row(b_shards, class_id, partition_strategy))

    true_logits = np.array([[logit(b, c) for c in labels[b]] for b in range(batch)])
    samp_logits = np.array([[logit(b, c) for c in sampled] for b in range(batch)])
    samp_logits = samp_logits.reshape(batch, len(sampled))
    if remove_accidental_hits:  # step 12: before log-q; duplicate (row, pos) pairs assigned once
        mask = np.zeros((batch, num_sampled))
        for i, pos, w in zip(*accidental_hits(labels, sampled), strict=True):
            # pos ≥ num_sampled raises IndexError here, as TF raises "Indices are not valid".
            mask[i, pos] = w
        samp_logits[:, :num_sampled] += mask
    if subtract_log_q:  # step 13
        true_logits = true_logits - np.log(true_count)
        samp_logits = samp_logits - np.log(sampled_count)[None, :]
    out_logits = np.concatenate([true_logits, samp_logits], axis=1)  # step 14
    out_labels = np.concatenate(  # step 15
        [np.full((batch, num_true), 1.0 / num_true), np.zeros((batch, len(sampled)))], axis=1
    )
    return out_logits, out_labels


def sigmoid_cross_entropy(x: float, z: float) -> float:
    """§3.1, evaluated as TF does: ``(relu(x) − x·z) + log1p(exp(−|x|))``."""
    relu_x = x if x >= 0 else 0.0
    neg_abs = -x if x >= 0 else x
    return (relu_x - x * z) + math.log1p(math.exp(neg_abs))


def softmax_cross_entropy(xs: Sequence[float], zs: Sequence[float]) -> float:
    """§3.3 kernel: ``m = max x``, ``s = x − m``, ``Σ z·(log Σ exp s − s)``."""
    m = max(xs)
    s = [x - m for x in xs]
    lse = math.log(sum(math.exp(v) for v in s))
    return sum(z * (lse - v) for z, v in zip(zs, s, strict=True))


def nce_loss(*args: Any, **kwargs: Any) -> np.ndarray:
    """§3.1: row sums of the elementwise sigmoid cross entropy, ``[B]``; no batch mean."""
    logits, labels = sampled_logits(*args, subtract_log_q=True, **kwargs)
    return np.array(
        [
            sum(sigmoid_cross_entropy(x, z) for x, z in zip(lr, zr, strict=True))
            for lr, zr in zip(logits.tolist(), labels.tolist(), strict=True)
        ]
    )


def sampled_softmax_loss(
    *args: Any, remove_accidental_hits: bool = True, **kwargs: Any
) -> np.ndarray:
    """§3.3: per-row softmax cross entropy of the sampled logits, ``[B]``."""
    logits, labels = sampled_logits(
        *args, subtract_log_q=True, remove_accidental_hits=remove_accidental_hits, **kwargs
    )
    return np.array(
        [
            softmax_cross_entropy(lr, zr)
            for lr, zr in zip(logits.tolist(), labels.tolist(), strict=True)
        ]
    )


# --- TensorFlow's own test fixtures (docs/tf-semantics.md §8.1), reproduced draw for draw ---------

TF_NUM_CLASSES, TF_DIM, TF_BATCH = 5, 10, 3
TF_SAMPLED = [1, 0, 2, 3]


def tf_generate_test_data(
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[list[int], np.ndarray, np.ndarray]]:
    """``_GenerateTestData``: weights [C, D], biases [C], hidden [B, D] (float32, in that order).

    The sampled values are ``TF_SAMPLED`` with every expected count 0.5 (true counts [B, 1]).
    """
    weights = rng.randn(TF_NUM_CLASSES, TF_DIM).astype(np.float32)
    biases = rng.randn(TF_NUM_CLASSES).astype(np.float32)
    hidden = rng.randn(TF_BATCH, TF_DIM).astype(np.float32)
    true_exp = np.full([TF_BATCH, 1], 0.5, dtype=np.float32)
    sampled_exp = np.full([len(TF_SAMPLED)], 0.5, dtype=np.float32)
    return weights, biases, hidden, (list(TF_SAMPLED), true_exp, sampled_exp)


def tf2_logits_case(num_true: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """TF2 ``ComputeSampledLogitsTest``: seed 0, then per num_true 1, 2, ...: labels, then data.

    Returns ``(weights, biases, labels [B, T], hidden, sampled_values)`` (the API's argument
    order) of iteration ``num_true``.
    """
    rng = np.random.RandomState(0)
    for t in range(1, num_true + 1):
        labels = rng.randint(0, TF_NUM_CLASSES, size=TF_BATCH * t)
        weights, biases, hidden, sampled_values = tf_generate_test_data(rng)
    return weights, biases, labels.reshape(TF_BATCH, num_true), hidden, sampled_values


def tf_loss_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """``testNCELoss`` / ``testSampledSoftmaxLoss`` (TF1 and TF2): seed 0, labels [0, 1, 2]."""
    weights, biases, hidden, sampled_values = tf_generate_test_data(np.random.RandomState(0))
    return weights, biases, np.array([[0], [1], [2]]), hidden, sampled_values


def tf1_logits_case(num_true: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any]:
    """TF1 ``testComputeSampledLogitsValues``: data from seed 0 first, then labels per num_true."""
    rng = np.random.RandomState(0)
    weights, biases, hidden, sampled_values = tf_generate_test_data(rng)
    for t in range(1, num_true + 1):
        labels = rng.randint(0, TF_NUM_CLASSES, size=TF_BATCH * t)
    return weights, biases, labels.reshape(TF_BATCH, num_true), hidden, sampled_values


# --- Full evaluation: the recipe in TensorFlow's nce_loss docstring (matmul, bias, one-hot) ---


def full_logits(weights: Any, biases: Any, inputs: Any, partition_strategy: str = "mod") -> Any:
    """``matmul(inputs, Wᵀ) + b`` in global class order; row c is found as §5 finds id c."""
    w_shards = as_shards(weights)
    b_shards = None if biases is None else as_shards(biases)
    inputs = f64(inputs)
    num_classes = sum(len(s) for s in w_shards)
    out = np.empty((len(inputs), num_classes))
    for c in range(num_classes):
        w = lookup_row(w_shards, c, partition_strategy)
        b = 0.0 if b_shards is None else float(lookup_row(b_shards, c, partition_strategy))
        for i, x in enumerate(inputs.tolist()):
            out[i, c] = sum(xd * float(wd) for xd, wd in zip(x, w, strict=True)) + b
    return out


def scaled_one_hot(labels: Any, num_classes: int) -> np.ndarray:
    """``one_hot(labels, C)`` summed over a row's T true classes and divided by T (§2 step 15).

    ``labels`` may also be ragged (a list of rows of any lengths): a row of n labels
    gets 1/n per label, a row without labels all zeros.
    """
    rows = [list(r) for r in labels] if isinstance(labels, list) else i64(labels).tolist()
    out = np.zeros((len(rows), num_classes))
    for i, row in enumerate(rows):
        for c in row:
            out[i, c] += 1.0 / len(row)
    return out


def nce_eval_loss(
    weights: Any, biases: Any, labels: Any, inputs: Any, partition_strategy: str = "mod"
) -> np.ndarray:
    """Row sums of §3.1's sigmoid cross entropy over all classes, ``[B]``."""
    logits = full_logits(weights, biases, inputs, partition_strategy)
    targets = scaled_one_hot(labels, logits.shape[1])
    return np.array([
        sum(sigmoid_cross_entropy(x, z) for x, z in zip(lr, zr, strict=True))
        for lr, zr in zip(logits.tolist(), targets.tolist(), strict=True)
    ])


def sampled_softmax_eval_loss(
    weights: Any, biases: Any, labels: Any, inputs: Any, partition_strategy: str = "mod"
) -> np.ndarray:
    """§3.3's softmax cross entropy over all classes, ``[B]``."""
    logits = full_logits(weights, biases, inputs, partition_strategy)
    targets = scaled_one_hot(labels, logits.shape[1])
    return np.array([
        softmax_cross_entropy(lr, zr)
        for lr, zr in zip(logits.tolist(), targets.tolist(), strict=True)
    ])


# --- Per-example negatives, negative sampling, variable numbers of true labels ----------------


def negative_sampling_loss(*args: Any, **kwargs: Any) -> np.ndarray:
    """word2vec's NEG: §3.1's row sums of sigmoid cross entropy on §2's logits *without* log-q."""
    logits, labels = sampled_logits(*args, subtract_log_q=False, **kwargs)
    return np.array(
        [
            sum(sigmoid_cross_entropy(x, z) for x, z in zip(lr, zr, strict=True))
            for lr, zr in zip(logits.tolist(), labels.tolist(), strict=True)
        ]
    )


def per_example_oracle(oracle: Any, weights: Any, biases: Any, labels: Any, inputs: Any,
                       sampled_values: Sequence[Any], num_sampled: int,
                       **kwargs: Any) -> Any:
    """Per-example negatives by definition: row ``b`` is the shared-negatives ``oracle`` of that
    row alone with ``sampled_values = (cands[b], true_count[b], sampled_count[b])``."""
    labels, inputs, cands = i64(labels), f64(inputs), i64(sampled_values[0])
    batch = len(inputs)
    labels = labels.reshape(batch, -1)
    tc = np.broadcast_to(f64(sampled_values[1]), labels.shape)
    sc = np.broadcast_to(f64(sampled_values[2]), cands.shape)
    rows = [oracle(weights, biases, labels[b : b + 1], inputs[b : b + 1],
                   (cands[b], tc[b : b + 1], sc[b]), num_sampled, **kwargs)
            for b in range(batch)]
    if rows and isinstance(rows[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*rows, strict=True))
    return np.concatenate(rows) if rows else np.zeros(0)


def per_example_torch(fn: Any, weights: Any, biases: Any, labels: torch.Tensor,
                      inputs: torch.Tensor, sampled_values: Sequence[torch.Tensor],
                      num_sampled: int, num_classes: int, **kwargs: Any) -> Any:
    """The same loop with torchnce's shared-negatives ``fn`` (autograd, for gradient oracles)."""
    cands = sampled_values[0]
    tc = torch.broadcast_to(sampled_values[1], labels.shape)
    sc = torch.broadcast_to(sampled_values[2], cands.shape)
    rows = [fn(weights, biases, labels[b : b + 1], inputs[b : b + 1], num_sampled, num_classes,
               labels.shape[1], (cands[b], tc[b : b + 1], sc[b]), **kwargs)
            for b in range(labels.shape[0])]
    if isinstance(rows[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))
    return torch.cat(rows)


def unique_rejection_loop(stream: Sequence[int], num_sampled: int) -> tuple[list[int], int]:
    """§6.3: consume ``stream`` one draw at a time until ``num_sampled`` distinct ids are seen;
    the ids in first-seen order and ``num_tries``."""
    picked: list[int] = []
    for tries, v in enumerate(stream, start=1):
        if v not in picked:
            picked.append(v)
        if len(picked) == num_sampled:
            return picked, tries
    raise ValueError("stream too short")


def expected_count_f32(p: Any, num_tries: int, num_sampled: int) -> np.ndarray:
    """§6.4 in float32, ``log1p``/``expm1`` in double then rounded (within 1 ulp of glibc)."""
    p = np.asarray(p, np.float32)
    if num_tries == num_sampled:
        return p * np.float32(num_sampled)
    log_miss = np.log1p(-p.astype(np.float64)).astype(np.float32) * np.float32(num_tries)
    return (-np.expm1(log_miss.astype(np.float64))).astype(np.float32)


def log_uniform_p(ids: Any, range_max: int) -> np.ndarray:
    """§6.6: ``fl32(log((k + 2) / (k + 1)) / log1p(range))`` in double."""
    k = i64(ids).astype(np.float64)
    return (np.log((k + 2.0) / (k + 1.0)) / math.log1p(range_max)).astype(np.float32)


def negatives_only(kind: str, weights: Any, biases: Any, x_row: Any, cands: Any,
                   sampled_count: Any, partition_strategy: str = "mod") -> float:
    """The documented loss of a row without labels: targets all 0, so sampled softmax gives 0
    and NCE / NEG the sigmoid cross entropy of the negatives alone (NCE with log-q)."""
    if kind == "softmax":
        return 0.0
    w_shards, b_shards = as_shards(weights), as_shards(biases)
    total = 0.0
    for c, q in zip(i64(cands).reshape(-1).tolist(), f64(sampled_count).reshape(-1).tolist(),
                    strict=True):
        w = lookup_row(w_shards, c, partition_strategy)
        logit = sum(float(xd) * float(wd) for xd, wd in zip(f64(x_row), w, strict=True))
        logit += float(lookup_row(b_shards, c, partition_strategy))
        total += sigmoid_cross_entropy(logit - (math.log(q) if kind == "nce" else 0.0), 0.0)
    return total


def variable_labels_oracle(kind: str, weights: Any, biases: Any, rows: Sequence[Sequence[int]],
                           inputs: Any, cands: Any, true_counts: Sequence[Sequence[float]],
                           sampled_count: Any, num_sampled: int, **kwargs: Any) -> np.ndarray:
    """Variable labels by definition: row ``b`` computed alone with ``num_true`` =
    its ``n_b`` labels ``rows[b]``, their counts ``true_counts[b]`` and the same candidates
    (``cands`` ``[S]`` shared, or ``[B, S]`` per row); a row without labels gets
    :func:`negatives_only`."""
    oracle = {"nce": nce_loss, "softmax": sampled_softmax_loss,
              "neg": negative_sampling_loss}[kind]
    inputs, cands = f64(inputs), i64(cands)
    sampled_count = np.broadcast_to(f64(sampled_count), cands.shape)
    out = []
    for b, row in enumerate(rows):
        c_b = cands[b] if cands.ndim == 2 else cands
        q_b = sampled_count[b] if cands.ndim == 2 else sampled_count
        if not row:
            strategy = kwargs.get("partition_strategy", "mod")
            out.append(negatives_only(kind, weights, biases, inputs[b], c_b, q_b, strategy))
            continue
        values = (c_b, np.asarray([true_counts[b]], np.float64), q_b)
        loss = oracle(weights, biases, np.asarray([row]), inputs[b : b + 1], values,
                      num_sampled, **kwargs)
        out.append(float(loss[0]))
    return np.asarray(out)
