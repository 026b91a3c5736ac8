"""compute_sampled_logits: a port of TF's ComputeSampledLogitsTest (docs/tf-semantics.md §8.1).

TF compares against numpy with rtol 1e-3; here every value is compared with the float64 oracle
``reference.sampled.sampled_logits`` at torch's per-dtype default tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnce
from reference import sampled as ref

C, B = ref.TF_NUM_CLASSES, ref.TF_BATCH
S = len(ref.TF_SAMPLED)


def as_torch(weights, biases, labels, hidden, sampled_values):
    """The numpy fixtures as tensors; sampled_values stays as TF's tests pass it (list, arrays)."""
    return (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(hidden),
        sampled_values,
    )


def tf_div_shards(table: np.ndarray) -> list[torch.Tensor]:
    """``fixed_size_partitioner(3)`` over 5 rows: contiguous shards of 2, 2 and 1 rows."""
    return [torch.from_numpy(s) for s in ref.split_div(table, 3)]


def tf_mod_shards(table: np.ndarray) -> list[torch.Tensor]:
    """TF1 ``_GenerateTestInputs``: shard s holds rows r with r % 3 == s."""
    return [torch.from_numpy(s) for s in ref.split_mod(table, 3)]


def check(got, case, *, strategy="mod", subtract_log_q, remove_accidental_hits=False):
    """Compare ``(logits, labels)`` with the oracle run on ``case``."""
    weights, biases, labels, hidden, sampled_values = case
    exp_logits, exp_labels = ref.sampled_logits(
        weights,
        biases,
        labels,
        hidden,
        sampled_values,
        S,
        subtract_log_q=subtract_log_q,
        remove_accidental_hits=remove_accidental_hits,
        partition_strategy=strategy,
    )
    logits, out_labels = got
    torch.testing.assert_close(logits, ref.expected_like(exp_logits, logits))
    torch.testing.assert_close(out_labels, ref.expected_like(exp_labels, out_labels))


# --- TF2 ComputeSampledLogitsTest -----------------------------------------------------------


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_shapes(num_true):
    w, b, labels, x, sv = as_torch(*ref.tf2_logits_case(num_true))
    logits, out_labels = torchnce.compute_sampled_logits(
        w, b, labels, x, S, C, num_true, sv, subtract_log_q=False, partition_strategy="div"
    )
    assert logits.shape == out_labels.shape == (B, num_true + S)


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_basic(num_true):
    case = ref.tf2_logits_case(num_true)
    w, b, labels, x, sv = as_torch(*case)
    got = torchnce.compute_sampled_logits(
        w, b, labels, x, S, C, num_true, sv, subtract_log_q=False, partition_strategy="div"
    )
    check(got, case, strategy="div", subtract_log_q=False)


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_accidental_hit_removal(num_true):
    case = ref.tf2_logits_case(num_true)
    w, b, labels, x, sv = as_torch(*case)
    got = torchnce.compute_sampled_logits(
        w,
        b,
        labels,
        x,
        S,
        C,
        num_true,
        sv,
        subtract_log_q=False,
        remove_accidental_hits=True,
        partition_strategy="div",
    )
    # TF's own check: exp(logit) of every accidental hit is within 1e-3 of 0 ...
    logits = got[0]
    for row in range(B):
        for col, sampled_id in enumerate(ref.TF_SAMPLED):
            if sampled_id in case[2][row]:
                assert abs(torch.exp(logits[row, num_true + col]).item()) <= 1e-3
    # ... and ours: every value equals the oracle (hits are -FLT_MAX exactly).
    check(got, case, strategy="div", subtract_log_q=False, remove_accidental_hits=True)


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_subtract_log_q(num_true):
    case = ref.tf2_logits_case(num_true)
    w, b, labels, x, sv = as_torch(*case)
    got = torchnce.compute_sampled_logits(
        w, b, labels, x, S, C, num_true, sv, subtract_log_q=True, partition_strategy="div"
    )
    check(got, case, strategy="div", subtract_log_q=True)


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_sharded(num_true):
    # Weights and biases both in 3 contiguous "div" shards; equal to the unsharded oracle.
    case = ref.tf2_logits_case(num_true)
    weights, biases, labels, hidden, sv = case
    got = torchnce.compute_sampled_logits(
        tf_div_shards(weights),
        tf_div_shards(biases),
        torch.from_numpy(labels),
        torch.from_numpy(hidden),
        S,
        C,
        num_true,
        sv,
        subtract_log_q=False,
        partition_strategy="div",
    )
    check(got, case, strategy="div", subtract_log_q=False)


# --- TF1 variant (default "mod", mod-sharded weights, unsharded biases) ------------------------


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
def test_tf1_shapes_with_hit_removal(num_true):
    weights, biases, labels, hidden, (sampled, _, _) = ref.tf1_logits_case(num_true)
    ones = (sampled, np.ones([B, 1], dtype=np.float32), np.ones([S], dtype=np.float32))
    logits, out_labels = torchnce.compute_sampled_logits(
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(hidden),
        S,
        C,
        num_true,
        ones,
        subtract_log_q=False,
        remove_accidental_hits=True,
    )
    assert logits.shape == out_labels.shape == (B, num_true + S)


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
@pytest.mark.parametrize("subtract_log_q", [False, True])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
@pytest.mark.parametrize("sharded", [False, True])
def test_tf1_values(num_true, subtract_log_q, remove_accidental_hits, sharded):
    # testComputeSampledLogitsValues's four sub-cases (basic, hits, log-q, mod-sharded weights)
    # and their combinations, all with the default partition_strategy.
    case = ref.tf1_logits_case(num_true)
    weights, biases, labels, hidden, sv = case
    w = tf_mod_shards(weights) if sharded else torch.from_numpy(weights)
    got = torchnce.compute_sampled_logits(
        w,
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(hidden),
        S,
        C,
        num_true,
        sv,
        subtract_log_q=subtract_log_q,
        remove_accidental_hits=remove_accidental_hits,
    )
    check(got, case, subtract_log_q=subtract_log_q, remove_accidental_hits=remove_accidental_hits)


# --- Our additions --------------------------------------------------------------------------


@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_label_values_are_one_over_num_true(num_true, dtype):
    # §2 step 15: 1/T computed in the logits' dtype (float32, T = 3: fl32(1/3) = 0.33333334).
    w, b, labels, x, sv = as_torch(*ref.tf2_logits_case(num_true))
    _, out_labels = torchnce.compute_sampled_logits(
        w.to(dtype), b.to(dtype), labels, x.to(dtype), S, C, num_true, sv
    )
    assert out_labels.dtype == dtype
    expected = torch.cat(
        [torch.ones(B, num_true, dtype=dtype) / num_true, torch.zeros(B, S, dtype=dtype)], dim=1
    )
    assert torch.equal(out_labels, expected)


def random_case(num_true, num_classes=11, batch=3, dim=4, num_sampled=5, seed=0):
    """Random float64 data with duplicate and colliding sampled ids (hits are likely)."""
    rng = np.random.RandomState(seed)
    weights = rng.randn(num_classes, dim)
    biases = rng.randn(num_classes)
    labels = rng.randint(0, num_classes, size=(batch, num_true))
    inputs = rng.randn(batch, dim)
    sampled = np.concatenate([labels[0, :1], rng.randint(0, num_classes, size=num_sampled - 1)])
    counts = (sampled, rng.uniform(0.1, 1.0, (batch, num_true)), rng.uniform(0.1, 1.0, num_sampled))
    return weights, biases, labels, inputs, counts


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 2, 4])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_random_sharded_float64(num_true, strategy, num_shards, remove_accidental_hits):
    # Uneven shards (11 rows over 2 or 4) of weights and biases, true counts [B, T]; float64 end
    # to end so the comparison is at float64's default tolerance.
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(num_true)
    split = ref.split_mod if strategy == "mod" else ref.split_div
    w = [torch.from_numpy(s) for s in split(weights, num_shards)]
    b = [torch.from_numpy(s) for s in split(biases, num_shards)]
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    got = torchnce.compute_sampled_logits(
        w,
        b,
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sampled),
        11,
        num_true,
        sv,
        remove_accidental_hits=remove_accidental_hits,
        partition_strategy=strategy,
    )
    assert got[0].dtype == torch.float64
    exp_logits, exp_labels = ref.sampled_logits(
        w,
        b,
        labels,
        inputs,
        sv,
        len(sampled),
        remove_accidental_hits=remove_accidental_hits,
        partition_strategy=strategy,
    )
    torch.testing.assert_close(got[0], torch.from_numpy(exp_logits))
    torch.testing.assert_close(got[1], torch.from_numpy(exp_labels))


def test_sampled_values_as_lists_and_arrays():
    # Counts that are multiples of 1/16 are exact in float32 too, so a Python float list (which
    # becomes float32 first) gives the same logits as the float64 arrays.
    weights, biases, labels, inputs, (sampled, _, _) = random_case(2)
    tc, sc = np.full((3, 2), 0.5), np.array([0.25, 0.5, 0.75, 1.0, 0.125])
    args = (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sampled),
        11,
        2,
    )
    as_tensors = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    expected = torchnce.compute_sampled_logits(*args, as_tensors)
    for sv in [(sampled.tolist(), tc.tolist(), sc.tolist()), (sampled, tc, sc), [sampled, tc, sc]]:
        got = torchnce.compute_sampled_logits(*args, sv)
        torch.testing.assert_close(got, expected)


def test_sampled_values_as_named_tuple():
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(1)
    sv = torchnce.SampledValues(
        torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc)
    )
    got = torchnce.compute_sampled_logits(
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sampled),
        11,
        1,
        sv,
    )
    exp_logits, _ = ref.sampled_logits(weights, biases, labels, inputs, sv, len(sampled))
    torch.testing.assert_close(got[0], torch.from_numpy(exp_logits))


@pytest.mark.parametrize("count_dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_expected_counts_are_cast(count_dtype, dtype):
    # Unlike TF (which raises), expected counts of another dtype are cast to the logits' dtype.
    # Counts 0.5 and 0.25 are exact in every dtype, so the oracle sees the same values.
    weights, biases, labels, inputs, (sampled, _, _) = random_case(2)
    tc = torch.full((3, 2), 0.5, dtype=count_dtype)
    sc = torch.full((len(sampled),), 0.25, dtype=count_dtype)
    logits, _ = torchnce.compute_sampled_logits(
        torch.from_numpy(weights).to(dtype),
        torch.from_numpy(biases).to(dtype),
        torch.from_numpy(labels),
        torch.from_numpy(inputs).to(dtype),
        len(sampled),
        11,
        2,
        (torch.from_numpy(sampled), tc, sc),
    )
    assert logits.dtype == dtype
    exp_logits, _ = ref.sampled_logits(
        torch.from_numpy(weights).to(dtype),
        torch.from_numpy(biases).to(dtype),
        labels,
        torch.from_numpy(inputs).to(dtype),
        (sampled, tc, sc),
        len(sampled),
    )
    torch.testing.assert_close(logits, ref.expected_like(exp_logits, logits))


def test_true_expected_count_broadcasts_from_b_by_1():
    # TF's tests pass true counts of shape [B, 1]; the sampler returns [B, T]: both work.
    weights, biases, labels, inputs, (sampled, _, sc) = random_case(3)
    args = (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sampled),
        11,
        3,
    )
    narrow = torch.full((3, 1), 0.5, dtype=torch.float64)
    wide = narrow.expand(3, 3).clone()
    a = torchnce.compute_sampled_logits(*args, (sampled, narrow, sc))
    b = torchnce.compute_sampled_logits(*args, (sampled, wide, sc))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("label_dtype", [torch.int32, torch.int64])
def test_label_dtypes_and_rank_1_labels(label_dtype):
    # int32 labels work; labels of shape [B] are accepted when num_true is 1.
    weights, biases, labels, inputs, sv = random_case(1)
    args = (torch.from_numpy(weights), torch.from_numpy(biases))
    rest = (torch.from_numpy(inputs), len(sv[0]), 11, 1, sv)
    expected = torchnce.compute_sampled_logits(*args, torch.from_numpy(labels), *rest)
    as_2d = torch.from_numpy(labels).to(label_dtype)
    torch.testing.assert_close(torchnce.compute_sampled_logits(*args, as_2d, *rest), expected)
    as_1d = as_2d.reshape(-1)
    torch.testing.assert_close(torchnce.compute_sampled_logits(*args, as_1d, *rest), expected)


def test_name_is_ignored():
    weights, biases, labels, inputs, sv = random_case(1)
    args = (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sv[0]),
        11,
        1,
        sv,
    )
    torch.testing.assert_close(
        torchnce.compute_sampled_logits(*args, name="logits"),
        torchnce.compute_sampled_logits(*args),
    )


def test_no_gradient_reaches_sampled_values():
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(2)
    tc_t = torch.from_numpy(tc).requires_grad_()
    sc_t = torch.from_numpy(sc).requires_grad_()
    x = torch.from_numpy(inputs).requires_grad_()
    logits, out_labels = torchnce.compute_sampled_logits(
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        x,
        len(sampled),
        11,
        2,
        (torch.from_numpy(sampled), tc_t, sc_t),
    )
    assert not out_labels.requires_grad
    logits.sum().backward()
    assert x.grad is not None
    assert tc_t.grad is None
    assert sc_t.grad is None


def unmasked(logits):
    # A removed hit's logit is x + (-FLT_MAX), which rounds to -FLT_MAX: its numerical gradient
    # is 0 while its analytic one is 1, exactly as in TensorFlow (test_parity_tf checks that).
    # gradcheck therefore looks at the other logits only.
    return torch.where(logits > -1e30, logits, 0.0)


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
@pytest.mark.parametrize("subtract_log_q", [False, True])
def test_gradcheck(num_shards, strategy, remove_accidental_hits, subtract_log_q):
    # Gradients with respect to inputs, every weight shard and every bias shard, in float64.
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(2, num_classes=7, dim=3)
    split = ref.split_mod if strategy == "mod" else ref.split_div
    w = [torch.from_numpy(s.copy()).requires_grad_() for s in split(weights, num_shards)]
    b = [torch.from_numpy(s.copy()).requires_grad_() for s in split(biases, num_shards)]
    x = torch.from_numpy(inputs).requires_grad_()
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    labels_t = torch.from_numpy(labels)

    def fn(x, *params):
        logits, _ = torchnce.compute_sampled_logits(
            list(params[:num_shards]),
            list(params[num_shards:]),
            labels_t,
            x,
            len(sampled),
            7,
            2,
            sv,
            subtract_log_q=subtract_log_q,
            remove_accidental_hits=remove_accidental_hits,
            partition_strategy=strategy,
        )
        return unmasked(logits)

    assert torch.autograd.gradcheck(fn, (x, *w, *b))


def test_gradcheck_unsharded_tensors():
    # The plain-tensor (not list) form of weights and biases.
    weights, biases, labels, inputs, sv = random_case(1, num_classes=11, dim=3)
    w = torch.from_numpy(weights).requires_grad_()
    b = torch.from_numpy(biases).requires_grad_()
    x = torch.from_numpy(inputs).requires_grad_()

    def fn(x, w, b):
        return unmasked(torchnce.compute_sampled_logits(
            w, b, torch.from_numpy(labels), x, len(sv[0]), 11, 1, sv, remove_accidental_hits=True
        )[0])

    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("num_shards", [1, 2])
def test_sparse_grad(num_shards):
    # sparse_grad=True: COO weight and bias gradients equal to the dense ones once densified.
    weights, biases, labels, inputs, sv = random_case(2, num_classes=30)
    grads = {}
    for sparse in (True, False):
        w = [
            torch.from_numpy(s.copy()).requires_grad_() for s in ref.split_div(weights, num_shards)
        ]
        b = [torch.from_numpy(s.copy()).requires_grad_() for s in ref.split_div(biases, num_shards)]
        logits, _ = torchnce.compute_sampled_logits(
            w,
            b,
            torch.from_numpy(labels),
            torch.from_numpy(inputs),
            5,
            30,
            2,
            sv,
            remove_accidental_hits=True,
            partition_strategy="div",
            sparse_grad=sparse,
        )
        (logits * torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)).sum().backward()
        grads[sparse] = [p.grad for p in (*w, *b)]
    for sparse_grad, dense_grad in zip(grads[True], grads[False], strict=True):
        assert sparse_grad.layout == torch.sparse_coo
        torch.testing.assert_close(sparse_grad.to_dense(), dense_grad)


def test_mixed_parameter_dtypes_are_cast_to_inputs_dtype():
    # §2 steps 6 and 9: looked-up weights and biases are cast to inputs' dtype; gradients come
    # back in each parameter's own dtype. Values are float16-exact (multiples of 1/8 below 4),
    # so the float64 oracle sees the same numbers.
    weights, biases, labels, inputs, sv = random_case(2)
    weights, biases = np.round(weights * 8) / 8, np.round(biases * 8) / 8
    w = torch.from_numpy(weights).float().requires_grad_()
    b = torch.from_numpy(biases).half().requires_grad_()
    x = torch.from_numpy(inputs).requires_grad_()
    logits, _ = torchnce.compute_sampled_logits(w, b, torch.from_numpy(labels), x, 5, 11, 2, sv)
    assert logits.dtype == torch.float64
    exp_logits, _ = ref.sampled_logits(weights, biases, labels, inputs, sv, 5)
    torch.testing.assert_close(logits, torch.from_numpy(exp_logits))
    logits.sum().backward()
    assert (w.grad.dtype, b.grad.dtype, x.grad.dtype) == (
        torch.float32,
        torch.float16,
        torch.float64,
    )


def test_non_contiguous_inputs_and_weights():
    weights, biases, labels, inputs, sv = random_case(2)
    wide_w = torch.from_numpy(np.repeat(weights, 2, axis=1))  # every column twice
    wide_x = torch.from_numpy(np.repeat(inputs, 2, axis=1))
    w, x = wide_w[:, ::2], wide_x[:, ::2]
    assert not w.is_contiguous() and not x.is_contiguous()
    logits, _ = torchnce.compute_sampled_logits(
        w, torch.from_numpy(biases), torch.from_numpy(labels), x, 5, 11, 2, sv
    )
    exp_logits, _ = ref.sampled_logits(weights, biases, labels, inputs, sv, 5)
    torch.testing.assert_close(logits, torch.from_numpy(exp_logits))
