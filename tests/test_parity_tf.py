"""Parity with the real TensorFlow 2.21: losses, logits, gradients, lookups and hit removal.

Every case is built from a seeded numpy RNG and run through both TensorFlow and torchnce on the
same numbers: the same tables (sharded exactly as TensorFlow addresses them), the same labels and
the same ``sampled_values``, drawn by TensorFlow's own ``log_uniform_candidate_sampler``.
Gradients on the TensorFlow side come from ``tf.GradientTape`` (IndexedSlices made dense).

Tolerances: losses rtol 1e-5 and gradients rtol 1e-4 in float32, as TensorFlow's own tests use
(docs/tf-semantics.md §10); reductions are not bit-reproducible across BLAS/Eigen, everything
elementwise is. In float64 the same argument gives ~1e-12, so float64 is held far tighter.

If TensorFlow cannot be imported the module is skipped, unless ``CI`` is set: then it fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

import torchnce

try:
    import tensorflow as tf
    from tensorflow.python.ops import nn_impl
except ImportError as err:
    if os.environ.get("CI"):
        raise ImportError(
            "tensorflow must be importable when CI is set (the parity suite may not skip in CI), "
            f"got {err!r}; install the test extra: pip install -e '.[test]'"
        ) from err
    pytest.skip("TensorFlow is not installed (set CI=1 to make this an error)",
                allow_module_level=True)

CASES = range(2)
NUM_TRUE = [1, 2, 3, 4]
LAYOUTS = ["1", "mod-2", "mod-3", "mod-4", "mod-5", "div-2", "div-3", "div-4", "div-5"]
SHARDED = [layout for layout in LAYOUTS if layout != "1"]
DTYPES = [torch.float32, torch.float64]
TF_DTYPE = {
    torch.float16: tf.float16, torch.bfloat16: tf.bfloat16,
    torch.float32: tf.float32, torch.float64: tf.float64,
}
# float32: the rtol of the brief / TensorFlow's tests; atol covers entries that cancel to ~0,
# whose error is ~eps32 * sum|terms| with at most ~15 terms of size ~3, i.e. ~5e-6.
# float64: the same argument with eps64 = 2.2e-16 gives ~1e-14; 1e-10 leaves a wide margin.
LOSS_TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5},
            torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
GRAD_TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-5},
            torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


# ------------------------------------------------------------------------------------------------
# Case construction


@dataclass(frozen=True)
class Case:
    """One randomised problem: full tables, data, TensorFlow's sampled values, an output grad."""

    weights: np.ndarray  # [C, D] float32
    biases: np.ndarray  # [C] float32
    inputs: np.ndarray  # [B, D] float32
    labels: np.ndarray  # [B, T] int64
    sampled: np.ndarray  # [S] int64, from TensorFlow's sampler
    true_expected: np.ndarray  # [B, T] float32
    sampled_expected: np.ndarray  # [S] float32
    out_grad: np.ndarray  # [B, T + S] float32, upstream gradient for the logits tests

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_sampled(self) -> int:
        return int(self.sampled.shape[0])


def parse_layout(layout: str) -> tuple[str, int]:
    """``"1"`` -> ("mod", 1); ``"div-3"`` -> ("div", 3)."""
    if layout == "1":
        return "mod", 1
    strategy, shards = layout.split("-")
    return strategy, int(shards)


def shard(table: np.ndarray, strategy: str, num_shards: int) -> list[np.ndarray]:
    """Split ``table`` into the shards TensorFlow's ``partition_strategy`` addresses.

    mod: shard p holds global rows p, p+P, p+2P, ...; div: contiguous, the first N % P shards one
    row longer (docs/tf-semantics.md §5).
    """
    if strategy == "mod":
        return [table[p::num_shards] for p in range(num_shards)]
    ipp, extras = divmod(table.shape[0], num_shards)
    sizes = [ipp + 1] * extras + [ipp] * (num_shards - extras)
    return np.split(table, np.cumsum(sizes)[:-1])


def make_case(seed: int, num_true: int, num_shards: int, *, unique: bool = True) -> Case:
    """A small random problem where accidental hits (and, if not unique, duplicates) occur."""
    rng = np.random.default_rng(seed)
    batch, dim = int(rng.integers(2, 7)), int(rng.integers(2, 9))
    num_sampled = int(rng.integers(3, 9))
    num_classes = int(rng.integers(max(10, num_sampled), 31))
    if num_shards > 1 and num_classes % num_shards == 0:
        num_classes += 1  # uneven shards
    weights = rng.standard_normal((num_classes, dim)).astype(np.float32)
    biases = rng.standard_normal(num_classes).astype(np.float32)
    inputs = rng.standard_normal((batch, dim)).astype(np.float32)
    # Half the labels among the lowest ids, which the log-uniform sampler favours: frequent hits
    # and, with num_true > 1, repeated labels within a row.
    wide = rng.integers(0, num_classes, (batch, num_true))
    narrow = rng.integers(0, 5, (batch, num_true))
    labels = np.where(rng.random((batch, num_true)) < 0.5, narrow, wide).astype(np.int64)
    for attempt in range(50):
        op_seed = seed % 10**6 * 100 + attempt + 1
        sampled, expected_all, sampled_q = _tf_sample(num_sampled, unique, num_classes, op_seed)
        if unique or len(np.unique(sampled)) < num_sampled:
            break
    else:
        raise AssertionError("no draw with duplicate candidates")
    if not np.isin(labels, sampled).any():  # at least one accidental hit, in row 0
        labels[0, -1] = sampled[-1]
    true_q = expected_all[labels]  # what the sampler returns for these labels, bit for bit
    out_grad = rng.standard_normal((batch, num_true + num_sampled)).astype(np.float32)
    return Case(weights, biases, inputs, labels, sampled, true_q, sampled_q, out_grad)


_SAMPLES: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _tf_sample(
    num_sampled: int, unique: bool, num_classes: int, op_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's log-uniform draw, with the expected count of *every* class.

    The candidates depend on the seed, not on ``true_classes``, and a true class's expected count
    depends only on the class and the draw's num_tries (docs/tf-semantics.md §6.1, §6.4): so passing
    all C classes as one row of true classes gives, in one call, the count TensorFlow returns for
    any labels, which can then be chosen after the draw. Memoised: TensorFlow's eager kernels
    continue their stream when called again with the same attributes, and ``tf.random.set_seed``
    (which would reset it) flushes the kernel cache, costing ~35 ms per case.
    """
    key = (num_sampled, unique, num_classes, op_seed)
    if key not in _SAMPLES:
        every_class = tf.range(num_classes, dtype=tf.int64)[None, :]
        values = tf.random.log_uniform_candidate_sampler(
            every_class, num_classes, num_sampled, unique, num_classes, seed=op_seed)
        _SAMPLES[key] = (values[0].numpy(), values[1].numpy()[0], values[2].numpy())
    return _SAMPLES[key]


# ------------------------------------------------------------------------------------------------
# Running both sides


@dataclass(frozen=True)
class Options:
    kind: str  # "nce", "softmax", "logits"
    layout: str = "1"
    remove_accidental_hits: bool = False
    subtract_log_q: bool = True
    dtype: torch.dtype = torch.float32
    label_dtype: torch.dtype = torch.int64
    biases_sharded: bool = True  # only when weights are sharded
    sparse_grad: bool = False


def _tables(case: Case, opts: Options) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """Weight shards, bias shards, and whether to pass them as lists (False: single tensors)."""
    strategy, num_shards = parse_layout(opts.layout)
    if num_shards == 1:
        return [case.weights], [case.biases], False
    w = shard(case.weights, strategy, num_shards)
    b = shard(case.biases, strategy, num_shards) if opts.biases_sharded else [case.biases]
    return w, b, True


def _pack(shards: list[Any], as_list: bool) -> Any:
    return shards if as_list and len(shards) > 1 else shards[0]


def run_tf(case: Case, opts: Options) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """TensorFlow's outputs (loss, or logits and labels) and dense gradients of every source."""
    dtype = TF_DTYPE[opts.dtype]
    w_np, b_np, as_list = _tables(case, opts)
    w = [tf.constant(a, dtype) for a in w_np]
    b = [tf.constant(a, dtype) for a in b_np]
    x = tf.constant(case.inputs, dtype)
    labels = tf.constant(case.labels, tf.int32 if opts.label_dtype == torch.int32 else tf.int64)
    # TensorFlow does not cast the expected counts to the compute dtype (docs/tf-semantics.md §4).
    sampled_values = (tf.constant(case.sampled), tf.constant(case.true_expected, dtype),
                      tf.constant(case.sampled_expected, dtype))
    strategy = parse_layout(opts.layout)[0]
    args = (_pack(w, as_list), _pack(b, as_list), labels, x, case.num_sampled, case.num_classes,
            case.labels.shape[1], sampled_values)
    sources = [x, *w, *b]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        if opts.kind == "nce":
            outs = [tf.compat.v1.nn.nce_loss(*args, opts.remove_accidental_hits, strategy)]
        elif opts.kind == "softmax":
            outs = [tf.compat.v1.nn.sampled_softmax_loss(
                *args, opts.remove_accidental_hits, strategy)]
        else:
            outs = list(nn_impl._compute_sampled_logits(
                *args, subtract_log_q=opts.subtract_log_q,
                remove_accidental_hits=opts.remove_accidental_hits, partition_strategy=strategy))
    grads = tape.gradient(outs[0], sources, output_gradients=_out_grad_tf(case, opts, dtype))
    return [o.numpy() for o in outs], [_dense_tf(g, s) for g, s in zip(grads, sources, strict=True)]


def _out_grad_tf(case: Case, opts: Options, dtype: Any) -> Any:
    g = case.out_grad if opts.kind == "logits" else case.out_grad[:, 0]
    return tf.constant(g, dtype)


def _dense_tf(grad: Any, source: Any) -> np.ndarray:
    if grad is None:
        return np.zeros(source.shape, source.dtype.as_numpy_dtype)
    return tf.convert_to_tensor(grad).numpy()


def run_ours(case: Case, opts: Options) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """torchnce's outputs and dense gradients, on the same numbers as :func:`run_tf`."""
    w_np, b_np, as_list = _tables(case, opts)
    w = [torch.tensor(a, dtype=opts.dtype, requires_grad=True) for a in w_np]
    b = [torch.tensor(a, dtype=opts.dtype, requires_grad=True) for a in b_np]
    x = torch.tensor(case.inputs, dtype=opts.dtype, requires_grad=True)
    labels = torch.tensor(case.labels, dtype=opts.label_dtype)
    # float32 counts on purpose: torchnce casts them to the compute dtype (unlike TensorFlow).
    sampled_values = (torch.tensor(case.sampled), torch.tensor(case.true_expected),
                      torch.tensor(case.sampled_expected))
    strategy = parse_layout(opts.layout)[0]
    args = (_pack(w, as_list), _pack(b, as_list), labels, x, case.num_sampled, case.num_classes,
            case.labels.shape[1], sampled_values)
    common = {"remove_accidental_hits": opts.remove_accidental_hits,
              "partition_strategy": strategy, "sparse_grad": opts.sparse_grad}
    if opts.kind == "nce":
        outs = [torchnce.nce_loss(*args, **common)]
    elif opts.kind == "softmax":
        outs = [torchnce.sampled_softmax_loss(*args, **common)]
    else:
        outs = list(torchnce.compute_sampled_logits(
            *args, subtract_log_q=opts.subtract_log_q, **common))
    g = case.out_grad if opts.kind == "logits" else case.out_grad[:, 0]
    sources = [x, *w, *b]
    grads = torch.autograd.grad(outs[0], sources, torch.tensor(g, dtype=opts.dtype),
                                allow_unused=True)
    dense = [torch.zeros_like(s) if gr is None else (gr.to_dense() if gr.is_sparse else gr)
             for gr, s in zip(grads, sources, strict=True)]
    if opts.sparse_grad:  # the weight shards' gradients are sparse (IndexedSlices' equivalent)
        assert all(gr is None or gr.is_sparse for gr in grads[1:1 + len(w)])
    return [o.detach() for o in outs], dense


def assert_parity(case: Case, opts: Options) -> None:
    expected_outs, expected_grads = run_tf(case, opts)
    outs, grads = run_ours(case, opts)
    for name, out, exp in zip(["output", "labels"], outs, expected_outs, strict=False):
        assert out.dtype == opts.dtype, name
        torch.testing.assert_close(out, torch.from_numpy(exp), **LOSS_TOL[opts.dtype], msg=name)
    w_np, b_np, _ = _tables(case, opts)
    names = (["inputs"] + [f"weights[{i}]" for i in range(len(w_np))]
             + [f"biases[{i}]" for i in range(len(b_np))])
    for name, grad, exp in zip(names, grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, torch.from_numpy(exp), **GRAD_TOL[opts.dtype],
                                   msg=lambda m, n=name: f"gradient of {n}:\n{m}")


def _case_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------
# Losses and logits over the main option axes


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("num_true", NUM_TRUE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nce_loss_matches_tf(
    case: int, num_true: int, layout: str, remove_accidental_hits: bool, dtype: torch.dtype
) -> None:
    data = make_case(_case_seed(1, case, num_true), num_true, parse_layout(layout)[1])
    assert_parity(data, Options("nce", layout, remove_accidental_hits, dtype=dtype))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("num_true", NUM_TRUE)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sampled_softmax_loss_matches_tf(
    case: int, num_true: int, layout: str, remove_accidental_hits: bool, dtype: torch.dtype
) -> None:
    data = make_case(_case_seed(2, case, num_true), num_true, parse_layout(layout)[1])
    assert_parity(data, Options("softmax", layout, remove_accidental_hits, dtype=dtype))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("num_true", NUM_TRUE)
@pytest.mark.parametrize("layout", ["1", "mod-3", "div-4"])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
@pytest.mark.parametrize("subtract_log_q", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compute_sampled_logits_matches_tf(
    case: int, num_true: int, layout: str, remove_accidental_hits: bool, subtract_log_q: bool,
    dtype: torch.dtype,
) -> None:
    data = make_case(_case_seed(3, case, num_true), num_true, parse_layout(layout)[1])
    opts = Options("logits", layout, remove_accidental_hits, subtract_log_q, dtype=dtype)
    assert_parity(data, opts)


# ------------------------------------------------------------------------------------------------
# The remaining options: label dtype, unsharded biases beside sharded weights, unique=False


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["nce", "softmax", "logits"])
@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("biases_sharded", [False, True])
@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_options_match_tf(
    case: int, kind: str, label_dtype: torch.dtype, biases_sharded: bool, unique: bool,
    dtype: torch.dtype,
) -> None:
    # num_true and the (sharded) layout vary from one combination of options to the next.
    combo = [case, len(kind), label_dtype.itemsize, biases_sharded, unique, dtype.itemsize]
    rng = np.random.default_rng(_case_seed(4, *combo))
    num_true, layout = int(rng.integers(1, 5)), str(rng.choice(SHARDED))
    data = make_case(_case_seed(4, *combo), num_true, parse_layout(layout)[1], unique=unique)
    # With unique=False only the last duplicate of a sampled id is masked
    # (docs/tf-semantics.md §6.10).
    opts = Options(kind, layout, remove_accidental_hits=True, dtype=dtype,
                   label_dtype=label_dtype, biases_sharded=biases_sharded)
    assert_parity(data, opts)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["nce", "softmax"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_sparse_grad_matches_tf(
    case: int, kind: str, layout: str, remove_accidental_hits: bool
) -> None:
    num_true = 1 + case % 4
    data = make_case(_case_seed(5, case, num_true), num_true, parse_layout(layout)[1])
    assert_parity(data, Options(kind, layout, remove_accidental_hits, sparse_grad=True))


# ------------------------------------------------------------------------------------------------
# float16 / bfloat16 with hit removal: TensorFlow gives NaN, torchnce must stay finite


# Tolerance against TensorFlow float32 on the same (already rounded) numbers. Each logit is
# rounded to the half type ~3 times (matmul, +bias, -log Q), unit roundoff u = 2^-11 (float16) or
# 2^-8 (bfloat16), |logit| <~ 9 here: <~ 27u per logit, and a row's loss or gradient sums <= 13
# such terms with factors <= 1 (sigmoid/softmax slopes): worst ~0.17 (float16) / 1.4 (bfloat16),
# typically sqrt(13) x smaller (~0.05 / 0.4). Loss rows are ~2-20, hence rtol + atol below; the
# observed error of a correct implementation uses about a tenth of it.
HALF_TOL = {torch.float16: {"rtol": 1e-2, "atol": 2e-2},
            torch.bfloat16: {"rtol": 6e-2, "atol": 1.5e-1}}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["nce", "softmax"])
@pytest.mark.parametrize("layout", ["1", "mod-3", "div-2"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_hit_removal_is_finite_where_tf_is_nan(
    case: int, kind: str, layout: str, dtype: torch.dtype
) -> None:
    num_true = 1 + case
    data = make_case(_case_seed(6, case, num_true), num_true, parse_layout(layout)[1])
    rounded = {name: getattr(data, name).astype(np.float32) for name in
               ("weights", "biases", "inputs", "true_expected", "sampled_expected")}
    for name, value in rounded.items():  # round once to the half type: both sides see these
        rounded[name] = torch.from_numpy(value).to(dtype).float().numpy()
    data = Case(**{**data.__dict__, **rounded})
    hit_rows = np.isin(data.labels, data.sampled).any(axis=1)
    assert hit_rows.any(), "the case must contain an accidental hit"

    tf_outs, _ = run_tf(data, Options(kind, layout, remove_accidental_hits=True, dtype=dtype))
    assert np.isnan(tf_outs[0][hit_rows].astype(np.float32)).all()  # the premise (§4)

    expected, expected_grads = run_tf(data, Options(kind, layout, remove_accidental_hits=True))
    outs, grads = run_ours(data, Options(kind, layout, remove_accidental_hits=True, dtype=dtype))
    assert outs[0].dtype == dtype
    assert torch.isfinite(outs[0]).all()
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(outs[0].float(), torch.from_numpy(expected[0]), **HALF_TOL[dtype])
    for grad, exp in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad.float(), torch.from_numpy(exp), **HALF_TOL[dtype])


# ------------------------------------------------------------------------------------------------
# embedding_lookup and compute_accidental_hits


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("partition_strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 2, 3, 5])
@pytest.mark.parametrize("max_norm", [None, 1.5])
@pytest.mark.parametrize("ids_shape", [(7,), (3, 4)], ids=str)
@pytest.mark.parametrize("row_shape", [(4,), (2, 3)], ids=str)
def test_embedding_lookup_matches_tf(
    case: int, partition_strategy: str, num_shards: int, max_norm: float | None,
    ids_shape: tuple[int, ...], row_shape: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(_case_seed(7, case, num_shards))
    num_rows = int(rng.integers(num_shards + 1, 20)) | 1  # odd: uneven for 2 shards
    table = rng.standard_normal((num_rows, *row_shape)).astype(np.float32)
    ids = rng.integers(0, num_rows, ids_shape)
    shards = shard(table, partition_strategy, num_shards)
    tf_params: Any = [tf.constant(s) for s in shards] if num_shards > 1 else tf.constant(table)
    params: Any = [torch.from_numpy(s) for s in shards] if num_shards > 1 else torch.tensor(table)
    expected = tf.compat.v1.nn.embedding_lookup(
        tf_params, tf.constant(ids), partition_strategy, max_norm=max_norm).numpy()
    actual = torchnce.embedding_lookup(params, torch.from_numpy(ids), partition_strategy,
                                       max_norm=max_norm)
    if max_norm is None:  # a pure copy: bit for bit (§5)
        assert torch.equal(actual, torch.from_numpy(expected))
    else:  # the norm is a reduction: equal to an ulp or so
        torch.testing.assert_close(actual, torch.from_numpy(expected))


def _hits_case(case: int) -> tuple[np.ndarray, np.ndarray, int]:
    if case == 0:  # the example verified in docs/tf-semantics.md §6.10
        return np.array([[1, 2], [0, 4], [3, 3]]), np.array([3, 1, 3, 0]), 2
    rng = np.random.default_rng(_case_seed(8, case))
    num_true, span = int(rng.integers(1, 5)), int(rng.integers(3, 9))
    labels = rng.integers(0, span, (int(rng.integers(1, 6)), num_true))  # repeats within rows
    sampled = rng.integers(0, span, int(rng.integers(1, 9)))  # duplicates: last one wins
    return labels, sampled, num_true


@pytest.mark.parametrize("case", range(12))
def test_compute_accidental_hits_matches_tf(case: int) -> None:
    labels, sampled, num_true = _hits_case(case)
    expected = tf.nn.compute_accidental_hits(
        tf.constant(labels, tf.int64), tf.constant(sampled, tf.int64), num_true)
    actual = torchnce.compute_accidental_hits(
        torch.from_numpy(labels), torch.from_numpy(sampled), num_true)
    assert len(actual) == 3
    for got, exp in zip(actual, expected, strict=True):
        assert torch.equal(got, torch.from_numpy(exp.numpy())), (got, exp)


@pytest.mark.parametrize("unique", [False, True])
def test_harness_expected_count_table_matches_tf_sampler(unique: bool) -> None:
    """The premise of :func:`_tf_sample`: same seed, same candidates; counts by class only."""
    labels = np.array([[3, 0], [17, 3], [1, 29]])
    sampled, expected_all, sampled_q = _tf_sample(6, unique, 30, op_seed=987_654_321)
    values = tf.random.log_uniform_candidate_sampler(
        tf.constant(labels), 2, 6, unique, 30, seed=987_654_321)
    np.testing.assert_array_equal(values[0].numpy(), sampled)
    np.testing.assert_array_equal(values[1].numpy(), expected_all[labels])
    np.testing.assert_array_equal(values[2].numpy(), sampled_q)
