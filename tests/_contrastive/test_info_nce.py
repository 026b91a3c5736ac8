"""info_nce_loss: in-batch and explicit negatives, symmetric loss, masking, log-Q, temperature.

Oracles: ``F.cross_entropy`` on the hand-built logit matrix (the in-batch form), the float64
loop references of ``reference.contrastive``, and closed forms derived in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import torchnce
from reference import contrastive as ref
from reference.contrastive import embeddings, log_probs

B, M, D = 5, 3, 4


def expected(values, like):
    return torch.tensor(values, dtype=like.dtype)


# --- in-batch negatives ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.05, 1.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_in_batch_dot_product_is_cross_entropy(dtype, temperature, reduction):
    q, k = embeddings(B, D, seed=1, dtype=dtype), embeddings(B, D, seed=2, dtype=dtype)
    loss = torchnce.info_nce_loss(
        q, k, temperature=temperature, normalize=False, reduction=reduction
    )
    want = F.cross_entropy(q @ k.T / temperature, torch.arange(B), reduction=reduction)
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_batch_cosine_is_cross_entropy_of_normalized(dtype):
    q, k = embeddings(B, D, seed=1, dtype=dtype), embeddings(B, D, seed=2, dtype=dtype)
    loss = torchnce.info_nce_loss(q, k, temperature=0.1)
    want = F.cross_entropy(F.normalize(q) @ F.normalize(k).T / 0.1, torch.arange(B))
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("normalize", [False, True])
def test_symmetric_against_loop_reference(normalize):
    q, k = embeddings(B, D, seed=3), embeddings(B, D, seed=4)
    loss = torchnce.info_nce_loss(
        q, k, temperature=0.5, symmetric=True, normalize=normalize, reduction="none"
    )
    want = ref.info_nce(q, k, temperature=0.5, normalize=normalize, symmetric=True)
    torch.testing.assert_close(loss, expected(want, loss))


def test_symmetric_is_mean_of_both_directions_of_cross_entropy():
    q, k = embeddings(B, D, seed=3), embeddings(B, D, seed=4)
    logits = q @ k.T / 0.2
    target = torch.arange(B)
    want = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    loss = torchnce.info_nce_loss(q, k, temperature=0.2, symmetric=True, normalize=False)
    torch.testing.assert_close(loss, want)


# --- masking of duplicates / false negatives ------------------------------------------------


@pytest.mark.parametrize("which", ["key_ids", "query_ids", "both"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_duplicate_masking_against_loop_reference(which, symmetric):
    q, k = embeddings(6, D, seed=5), embeddings(6, D, seed=6)
    ids = {
        "key_ids": torch.tensor([3, 1, 3, 2, 1, 3]),
        "query_ids": torch.tensor([0, 0, 4, 5, 6, 4]),
    }
    if which != "both":
        ids = {which: ids[which]}
    loss = torchnce.info_nce_loss(
        q, k, temperature=0.3, symmetric=symmetric, reduction="none", **ids
    )
    want = ref.info_nce(q, k, temperature=0.3, normalize=True, symmetric=symmetric, **ids)
    torch.testing.assert_close(loss, expected(want, loss))


def test_masking_closed_form():
    # q = k = I (cosine 1 on the diagonal, 0 off it), τ = 1. Rows 0 and 1 hold item 7: each
    # keeps its own key and row 2's, so -log(e / (e + 1)) = log(1 + 1/e); row 2 keeps all
    # three: log(1 + 2/e).
    eye = torch.eye(3, dtype=torch.float64)
    loss = torchnce.info_nce_loss(
        eye, eye, temperature=1.0, reduction="none", key_ids=torch.tensor([7, 7, 9])
    )
    one, two = math.log1p(1 / math.e), math.log1p(2 / math.e)
    torch.testing.assert_close(loss, expected([one, one, two], loss))


def test_masking_with_all_ids_equal_leaves_only_the_positive():
    # Every off-diagonal key is masked: the softmax holds the positive alone, loss exactly 0.
    q, k = embeddings(B, D, seed=7), embeddings(B, D, seed=8)
    loss = torchnce.info_nce_loss(q, k, key_ids=torch.zeros(B, dtype=torch.long), reduction="none")
    assert torch.equal(loss, torch.zeros(B, dtype=loss.dtype))


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.integers(0, 3), min_size=1, max_size=7))
def test_masking_rule_random_ids(ids):
    n = len(ids)
    q, k = embeddings(n, D, seed=n), embeddings(n, D, seed=n + 50)
    key_ids = torch.tensor(ids)
    loss = torchnce.info_nce_loss(q, k, temperature=0.7, reduction="none", key_ids=key_ids)
    want = ref.info_nce(q, k, temperature=0.7, normalize=True, key_ids=key_ids)
    torch.testing.assert_close(loss, expected(want, loss))


# --- log-Q correction ------------------------------------------------------------------------


def test_log_q_hand_derived():
    # q = k = I, dot product, τ = 1, q(key 0) = 1/2, q(key 1) = 1/4. Row 0's logits are
    # (1 - log 1/2, 0 - log 1/4), so L0 = log(1 + exp(ℓ01 - ℓ00)) = log(1 + exp(log 2 - 1))
    # = log(1 + 2/e); row 1's are (0 - log 1/2, 1 - log 1/4): L1 = log(1 + 1/(2e)). The wrong
    # sign (adding log q) would swap them.
    eye = torch.eye(2, dtype=torch.float64)
    log_q = torch.tensor([0.5, 0.25], dtype=torch.float64).log()
    loss = torchnce.info_nce_loss(
        eye, eye, temperature=1.0, normalize=False, reduction="none", log_q=log_q
    )
    want = [math.log1p(2 / math.e), math.log1p(1 / (2 * math.e))]
    torch.testing.assert_close(loss, expected(want, loss))


def test_log_q_is_cross_entropy_of_corrected_logits():
    q, k = embeddings(B, D, seed=9), embeddings(B, D, seed=10)
    log_q = log_probs(B, seed=11)
    loss = torchnce.info_nce_loss(q, k, temperature=0.2, normalize=False, log_q=log_q)
    want = F.cross_entropy(q @ k.T / 0.2 - log_q, torch.arange(B))
    torch.testing.assert_close(loss, want)


def test_log_q_with_masking_against_loop_reference():
    q, k = embeddings(6, D, seed=12), embeddings(6, D, seed=13)
    log_q, key_ids = log_probs(6, seed=14), torch.tensor([1, 2, 1, 3, 3, 4])
    loss = torchnce.info_nce_loss(
        q, k, temperature=0.4, reduction="none", key_ids=key_ids, log_q=log_q
    )
    want = ref.info_nce(q, k, temperature=0.4, normalize=True, key_ids=key_ids, log_q=log_q)
    torch.testing.assert_close(loss, expected(want, loss))


def test_log_q_is_cast_to_the_embeddings_dtype():
    q, k = embeddings(B, D, dtype=torch.float64), embeddings(B, D, seed=1, dtype=torch.float64)
    log_q = log_probs(B, dtype=torch.float32)
    loss = torchnce.info_nce_loss(q, k, log_q=log_q)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, torchnce.info_nce_loss(q, k, log_q=log_q.double()))


# --- explicit negatives ----------------------------------------------------------------------


@pytest.mark.parametrize("negative_mode", ["unpaired", "paired"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("corrected", [False, True])
def test_explicit_negatives_against_loop_reference(negative_mode, normalize, corrected):
    q, k = embeddings(B, D, seed=15), embeddings(B, D, seed=16)
    shape = (M,) if negative_mode == "unpaired" else (B, M)
    n = embeddings(*shape, D, seed=17)
    extra = {"log_q": log_probs(B, seed=18), "negative_log_q": log_probs(*shape, seed=19)}
    extra = extra if corrected else {}
    loss = torchnce.info_nce_loss(
        q,
        k,
        n,
        temperature=0.25,
        negative_mode=negative_mode,
        normalize=normalize,
        reduction="none",
        **extra,
    )
    want = ref.info_nce(q, k, n, temperature=0.25, normalize=normalize, **extra)
    torch.testing.assert_close(loss, expected(want, loss))


@pytest.mark.parametrize("negative_mode", ["unpaired", "paired"])
def test_explicit_negative_ids_mask_against_loop_reference(negative_mode):
    q, k = embeddings(B, D, seed=20), embeddings(B, D, seed=21)
    key_ids = torch.tensor([0, 1, 2, 3, 4])
    if negative_mode == "unpaired":
        n, negative_ids = embeddings(M, D, seed=22), torch.tensor([1, 3, 1])
    else:
        n = embeddings(B, M, D, seed=22)
        negative_ids = torch.tensor([[0, 9, 0], [9, 9, 9], [2, 2, 2], [3, 9, 8], [9, 4, 9]])
    loss = torchnce.info_nce_loss(
        q,
        k,
        n,
        negative_mode=negative_mode,
        reduction="none",
        key_ids=key_ids,
        negative_ids=negative_ids,
    )
    want = ref.info_nce(
        q, k, n, temperature=0.1, normalize=True, key_ids=key_ids, negative_ids=negative_ids
    )
    torch.testing.assert_close(loss, expected(want, loss))
    if negative_mode == "paired":
        assert loss[2] == 0  # every negative of row 2 is its own item: the positive stands alone


def test_paired_with_shared_negatives_equals_unpaired():
    q, k, n = embeddings(B, D, seed=23), embeddings(B, D, seed=24), embeddings(M, D, seed=25)
    paired = torchnce.info_nce_loss(q, k, n.expand(B, M, D), negative_mode="paired")
    torch.testing.assert_close(paired, torchnce.info_nce_loss(q, k, n))


def test_zero_negatives_give_zero_loss():
    q, k = embeddings(B, D), embeddings(B, D, seed=1)
    loss = torchnce.info_nce_loss(q, k, torch.zeros(0, D, dtype=q.dtype), reduction="none")
    assert torch.equal(loss, torch.zeros(B, dtype=q.dtype))


# --- temperature -----------------------------------------------------------------------------


def test_tensor_temperature_equals_float():
    q, k = embeddings(B, D, seed=26), embeddings(B, D, seed=27)
    tau = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(
        torchnce.info_nce_loss(q, k, temperature=tau), torchnce.info_nce_loss(q, k, temperature=0.3)
    )


@pytest.mark.parametrize("value", [1e-4, -1.0, 0.0])
def test_tensor_temperature_is_clamped_below(value):
    # Clamped to TEMPERATURE_RANGE's 0.01, with no gradient while clamped.
    q, k = embeddings(B, D, seed=28), embeddings(B, D, seed=29)
    tau = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    loss = torchnce.info_nce_loss(q, k, temperature=tau)
    torch.testing.assert_close(loss, torchnce.info_nce_loss(q, k, temperature=0.01))
    loss.backward()
    assert tau.grad == 0


def test_tensor_temperature_is_clamped_above():
    q, k = embeddings(B, D, seed=28), embeddings(B, D, seed=29)
    loss = torchnce.info_nce_loss(q, k, temperature=torch.tensor(1e4, dtype=torch.float64))
    torch.testing.assert_close(loss, torchnce.info_nce_loss(q, k, temperature=100.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("symmetric", [False, True])
def test_learnable_temperature_gradients_finite_with_masked_entries(dtype, symmetric):
    # Large dot products and the smallest temperature: masked logits near -FLT_MAX must not
    # overflow to -inf, and -inf / τ would give NaN in τ's gradient.
    q = embeddings(6, D, seed=30, dtype=dtype).mul(30).requires_grad_()
    k = embeddings(6, D, seed=31, dtype=dtype).mul(30).requires_grad_()
    log_tau = torch.tensor(math.log(0.01), dtype=dtype, requires_grad=True)
    loss = torchnce.info_nce_loss(
        q,
        k,
        temperature=log_tau.exp(),
        normalize=False,
        symmetric=symmetric,
        key_ids=torch.tensor([1, 1, 2, 2, 2, 3]),
        query_ids=torch.tensor([0, 1, 2, 3, 4, 0]),
    )
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (q.grad, k.grad, log_tau.grad):
        assert torch.isfinite(grad).all()
    assert log_tau.grad != 0


def test_learnable_temperature_gradients_finite_with_masked_explicit_negatives():
    q = embeddings(B, D, seed=32).requires_grad_()
    k = embeddings(B, D, seed=33).requires_grad_()
    n = embeddings(B, M, D, seed=34).requires_grad_()
    tau = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    loss = torchnce.info_nce_loss(
        q,
        k,
        n,
        temperature=tau,
        negative_mode="paired",
        key_ids=torch.arange(B),
        negative_ids=torch.tensor([[0, 1, 2]] * B),
    )
    loss.backward()
    for grad in (q.grad, k.grad, n.grad, tau.grad):
        assert torch.isfinite(grad).all()
    assert n.grad[0, 0].abs().sum() == 0  # row 0's negative 0 is its own item: masked


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_in_batch(symmetric):
    q = embeddings(4, 3, seed=35).requires_grad_()
    k = embeddings(4, 3, seed=36).requires_grad_()
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    key_ids = torch.tensor([0, 1, 0, 2])
    log_q = None if symmetric else log_probs(4, seed=37)

    def fn(q, k, tau):
        return torchnce.info_nce_loss(
            q,
            k,
            temperature=tau,
            symmetric=symmetric,
            key_ids=key_ids,
            log_q=log_q,
            reduction="none",
        )

    assert torch.autograd.gradcheck(fn, (q, k, tau))


@pytest.mark.parametrize("negative_mode", ["unpaired", "paired"])
def test_gradcheck_explicit(negative_mode):
    q = embeddings(3, 2, seed=38).requires_grad_()
    k = embeddings(3, 2, seed=39).requires_grad_()
    shape = (2,) if negative_mode == "unpaired" else (3, 2)
    n = embeddings(*shape, 2, seed=40).requires_grad_()
    tau = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    negative_ids = (
        torch.tensor([5, 1])
        if negative_mode == "unpaired"
        else torch.tensor([[0, 5], [5, 5], [2, 1]])
    )

    def fn(q, k, n, tau):
        return torchnce.info_nce_loss(
            q,
            k,
            n,
            temperature=tau,
            negative_mode=negative_mode,
            normalize=False,
            key_ids=torch.tensor([0, 1, 2]),
            negative_ids=negative_ids,
            log_q=log_probs(3, seed=41),
            negative_log_q=log_probs(*shape, seed=42),
        )

    assert torch.autograd.gradcheck(fn, (q, k, n, tau))


# --- bad input -------------------------------------------------------------------------------


def good():
    return {
        "query": embeddings(B, D),
        "positive_key": embeddings(B, D, seed=1),
        "negative_keys": None,
    }


def call(**overrides):
    return torchnce.info_nce_loss(**{**good(), **overrides})


def test_good_call_passes():
    call()
    call(negative_keys=embeddings(M, D))


@pytest.mark.parametrize("temperature", [0.0, -0.1, math.nan, math.inf])
def test_temperature_not_positive(temperature):
    with pytest.raises(ValueError, match=r"^temperature must be > 0"):
        call(temperature=temperature)


@pytest.mark.parametrize("temperature", ["0.1", True, None])
def test_temperature_wrong_type(temperature):
    with pytest.raises(TypeError, match=r"^temperature must be a float"):
        call(temperature=temperature)


def test_temperature_integer_tensor():
    with pytest.raises(TypeError, match=r"^temperature must be a float or a floating tensor"):
        call(temperature=torch.tensor(1))


def test_temperature_tensor_with_many_elements():
    with pytest.raises(ValueError, match=r"^temperature must be a float or a one-element"):
        call(temperature=torch.ones(2))


def test_unknown_negative_mode():
    with pytest.raises(ValueError, match=r"^negative_mode must be one of 'unpaired', 'paired'"):
        call(negative_keys=embeddings(M, D), negative_mode="shared")


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"^reduction must be one of 'none', 'mean', 'sum'"):
        call(reduction="batchmean")


@pytest.mark.parametrize("flag", ["symmetric", "normalize"])
def test_flags_must_be_bool(flag):
    with pytest.raises(TypeError, match=rf"^{flag} must be a bool"):
        call(**{flag: 1})


def test_key_query_dim_mismatch():
    with pytest.raises(ValueError, match=r"^positive_key must be \[B, D\] = \[5, 4\]"):
        call(positive_key=embeddings(B, D + 1))


def test_key_query_batch_mismatch():
    with pytest.raises(ValueError, match=r"^positive_key must be \[B, D\]"):
        call(positive_key=embeddings(B + 1, D))


def test_negative_keys_dim_mismatch():
    with pytest.raises(ValueError, match=r"^negative_keys must be \[M, D\] = \[M, 4\]"):
        call(negative_keys=embeddings(M, D + 1))


def test_paired_negatives_with_mismatched_batch_size():
    with pytest.raises(ValueError, match=r"^negative_keys must be \[B, M, D\] = \[5, M, 4\]"):
        call(negative_keys=embeddings(B - 1, M, D), negative_mode="paired")


def test_unpaired_mode_with_per_example_negatives():
    with pytest.raises(ValueError, match=r"^negative_keys must be \[M, D\]"):
        call(negative_keys=embeddings(B, M, D))


@pytest.mark.parametrize("shape", [(D,), (B, 1, 1, D), (B, 0, D)])
def test_query_not_a_matrix(shape):  # [B, H, D] is a multi-vector query (test_retrieval.py)
    with pytest.raises(ValueError, match=r"^query must be a non-empty \[B, D\] matrix or "
                                         r"\[B, H, D\] tensor"):
        call(query=embeddings(*shape))


def test_empty_query():
    with pytest.raises(ValueError, match=r"^query must be a non-empty"):
        call(query=embeddings(0, D), positive_key=embeddings(0, D))


@pytest.mark.parametrize("name", ["query", "positive_key"])
def test_integer_embeddings(name):
    with pytest.raises(TypeError, match=rf"^{name} must be a floating tensor"):
        call(**{name: torch.ones(B, D, dtype=torch.long)})


def test_key_dtype_differs_from_query():
    with pytest.raises(TypeError, match=r"^positive_key must have query's dtype torch.float64"):
        call(positive_key=embeddings(B, D, dtype=torch.float32))


def test_negative_keys_dtype_differs_from_query():
    with pytest.raises(TypeError, match=r"^negative_keys must have query's dtype"):
        call(negative_keys=embeddings(M, D, dtype=torch.float32))


@pytest.mark.parametrize("name", ["key_ids", "query_ids"])
def test_float_ids(name):
    with pytest.raises(TypeError, match=rf"^{name} must be an integer tensor"):
        call(**{name: torch.zeros(B)})


@pytest.mark.parametrize("name", ["key_ids", "query_ids"])
def test_ids_wrong_shape(name):
    with pytest.raises(ValueError, match=rf"^{name} must be \[B\] = \[5\]"):
        call(**{name: torch.zeros(B + 1, dtype=torch.long)})


def test_negative_ids_wrong_shape():
    with pytest.raises(ValueError, match=r"^negative_ids must be \[M\] = \[3\]"):
        call(
            negative_keys=embeddings(M, D),
            key_ids=torch.arange(B),
            negative_ids=torch.arange(M + 1),
        )


def test_negative_ids_without_key_ids():
    with pytest.raises(ValueError, match=r"^key_ids must be given with negative_ids"):
        call(negative_keys=embeddings(M, D), negative_ids=torch.arange(M))


@pytest.mark.parametrize("probability", [0.0, 1.5, -0.5])
def test_log_q_of_probability_outside_unit_interval(probability):
    # log(0) = -inf, log(1.5) > 0, log(-0.5) = NaN: none is the log of a probability in (0, 1].
    log_q = torch.full((B,), 0.5, dtype=torch.float64)
    log_q[2] = probability
    with pytest.raises(ValueError, match=r"^log_q must hold log-probabilities"):
        call(log_q=log_q.log())


def test_log_q_wrong_shape():
    with pytest.raises(ValueError, match=r"^log_q must be \[B\] = \[5\]"):
        call(log_q=torch.zeros(B, 1))


def test_log_q_integer():
    with pytest.raises(TypeError, match=r"^log_q must be a floating tensor"):
        call(log_q=torch.zeros(B, dtype=torch.long))


def test_negative_log_q_outside_unit_interval():
    with pytest.raises(ValueError, match=r"^negative_log_q must hold log-probabilities"):
        call(negative_keys=embeddings(M, D), negative_log_q=torch.tensor([0.0, 0.1, -1.0]))


def test_negative_log_q_wrong_shape_paired():
    with pytest.raises(ValueError, match=r"^negative_log_q must be \[B, M\] = \[5, 3\]"):
        call(
            negative_keys=embeddings(B, M, D), negative_mode="paired", negative_log_q=torch.zeros(M)
        )


@pytest.mark.parametrize("name", ["negative_ids", "negative_log_q"])
def test_negative_options_without_negative_keys(name):
    with pytest.raises(ValueError, match=rf"^{name} must be None without negative_keys"):
        call(**{name: torch.zeros(M)})


def test_symmetric_with_explicit_negatives():
    with pytest.raises(ValueError, match=r"^symmetric must be False with negative_keys"):
        call(negative_keys=embeddings(M, D), symmetric=True)


def test_query_ids_with_explicit_negatives():
    with pytest.raises(ValueError, match=r"^query_ids must be None with negative_keys"):
        call(negative_keys=embeddings(M, D), query_ids=torch.arange(B))


def test_symmetric_with_log_q():
    with pytest.raises(ValueError, match=r"^log_q must be None when symmetric=True"):
        call(symmetric=True, log_q=torch.zeros(B))


# --- fuzzing regressions ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("negatives", [False, True])
def test_normalize_zero_row_low_precision(dtype, negatives):
    # F.normalize's eps 1e-12 is 0 in float16: an all-zero row became 0/0 = NaN. Rows are
    # normalised in float32 (a zero row stays zero, cosine similarity 0), as in float32.
    gen = torch.Generator().manual_seed(11)  # (unseeded, 11 of 300 draws failed for bf16)
    q = torch.randn(B, D, generator=gen).to(dtype).index_fill_(0, torch.tensor([1]), 0.0)
    k = torch.randn(B, D, generator=gen).to(dtype)
    extra = {"negative_keys": torch.randn(M, D, generator=gen).to(dtype)} if negatives else {}
    got = torchnce.info_nce_loss(q, k, reduction="none", **extra)
    want = torchnce.info_nce_loss(q.float(), k.float(), reduction="none",
                                  **{n: t.float() for n, t in extra.items()})
    assert torch.isfinite(got).all()
    # the logits (|z| up to 1/τ = 10) carry bfloat16's 2⁻⁹ relative rounding, ~0.02 each, so
    # a bf16 loss may be 0.06 off the float32 one; float16 has 3 more bits
    atol = 1e-1 if dtype == torch.bfloat16 else 2e-2
    torch.testing.assert_close(got, want.to(dtype), rtol=1e-2, atol=atol)


def test_normalize_zero_row_mixed_negatives_float16():
    q = torch.zeros(B, D, dtype=torch.float16)
    k, n = torch.randn(B, D).half(), torch.randn(M, D).half()
    got = torchnce.mixed_negatives_loss(q, k, n, batch_log_q=torch.zeros(B),
                                        sampled_log_q=torch.zeros(M), reduction="none")
    # Every similarity is 0: B in-batch logits 0 and M sampled ones −log(M·q) = −log M, so
    # each row's loss is log(B + M·e^{−log M}) = log(B + 1).
    torch.testing.assert_close(got, torch.full((B,), math.log(B + 1)).half())
