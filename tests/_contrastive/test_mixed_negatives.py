"""mixed_negatives_loss: in-batch plus sampled negatives, each with its own log-Q correction.

Oracles: the float64 loop reference of ``reference.contrastive``, closed forms derived in the
comments, and info_nce_loss where the two must agree (no sampled keys).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import torchnce
from reference import contrastive as ref
from reference.contrastive import embeddings, log_probs

B, M, D = 5, 4, 3


def good(**overrides):
    args = {
        "query": embeddings(B, D, seed=1),
        "positive_key": embeddings(B, D, seed=2),
        "sampled_keys": embeddings(M, D, seed=3),
        "batch_log_q": log_probs(B, seed=4),
        "sampled_log_q": log_probs(M, seed=5),
    }
    return {**args, **overrides}


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_against_loop_reference(normalize, temperature, dtype):
    args = {name: value.to(dtype) for name, value in good().items()}
    loss = torchnce.mixed_negatives_loss(
        **args, temperature=temperature, normalize=normalize, reduction="none"
    )
    want = ref.mixed_negatives(**args, temperature=temperature, normalize=normalize)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=dtype))


@pytest.mark.parametrize("ids", ["key_ids", "query_ids", "all"])
def test_masking_against_loop_reference(ids):
    all_ids = {
        "key_ids": torch.tensor([1, 2, 1, 3, 4]),
        "query_ids": torch.tensor([0, 5, 6, 0, 7]),
        "sampled_ids": torch.tensor([4, 9, 1, 4]),
    }
    chosen = all_ids if ids == "all" else {ids: all_ids[ids]}
    loss = torchnce.mixed_negatives_loss(**good(), temperature=0.5, reduction="none", **chosen)
    want = ref.mixed_negatives(**good(), temperature=0.5, normalize=True, **chosen)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=loss.dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions(reduction):
    rows = torchnce.mixed_negatives_loss(**good(), reduction="none")
    loss = torchnce.mixed_negatives_loss(**good(), reduction=reduction)
    torch.testing.assert_close(loss, rows.mean() if reduction == "mean" else rows.sum())


def test_corrections_hand_derived():
    # q = k = I (B = 2), dot product, τ = 1, one sampled key n = (1, 1) (M = 1, similarity 1
    # with both queries). p = (1/2, 1/4) for the in-batch keys, q_n = 1/8 for the sampled one,
    # so its correction is log(M q_n) = log(1/8). Row 0's logits: 1 + log 2, 0 + log 4 and
    # 1 + log 8, so L0 = log(1 + e^(log 2 - 1) + e^(log 4)) = log(1 + 2/e + 4); row 1's:
    # 0 + log 2, 1 + log 4, 1 + log 8, so L1 = log(1 + e^(-1 - log 2) + e^(log 2))
    # = log(1 + 1/(2e) + 2).
    eye = torch.eye(2, dtype=torch.float64)
    loss = torchnce.mixed_negatives_loss(
        eye,
        eye,
        torch.ones(1, 2, dtype=torch.float64),
        batch_log_q=torch.tensor([0.5, 0.25], dtype=torch.float64).log(),
        sampled_log_q=torch.tensor([0.125], dtype=torch.float64).log(),
        temperature=1.0,
        normalize=False,
        reduction="none",
    )
    want = [math.log(5 + 2 / math.e), math.log(3 + 1 / (2 * math.e))]
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


def test_sampled_correction_includes_log_num_sampled():
    # Duplicating every sampled key (M → 2M, same q_m) doubles each key's expected count
    # (log 2 more subtracted) and its number of copies (log 2 more in the sum): the loss is
    # unchanged. Without the log M term it would not be.
    args = good()
    twice = good(
        sampled_keys=args["sampled_keys"].repeat(2, 1),
        sampled_log_q=args["sampled_log_q"].repeat(2),
    )
    torch.testing.assert_close(
        torchnce.mixed_negatives_loss(**twice, reduction="none"),
        torchnce.mixed_negatives_loss(**args, reduction="none"),
    )


def test_no_sampled_keys_is_in_batch_info_nce():
    args = good(sampled_keys=embeddings(0, D), sampled_log_q=torch.zeros(0))
    loss = torchnce.mixed_negatives_loss(**args, key_ids=torch.tensor([1, 2, 1, 3, 4]))
    want = torchnce.info_nce_loss(
        args["query"],
        args["positive_key"],
        log_q=args["batch_log_q"],
        key_ids=torch.tensor([1, 2, 1, 3, 4]),
    )
    torch.testing.assert_close(loss, want)


def test_is_cross_entropy_over_concatenated_logits():
    args = good()
    q, k, n = args["query"], args["positive_key"], args["sampled_keys"]
    logits = torch.cat([q @ k.T, q @ n.T], 1) / 0.2 - torch.cat(
        [args["batch_log_q"], args["sampled_log_q"] + math.log(M)]
    )
    loss = torchnce.mixed_negatives_loss(**args, temperature=0.2, normalize=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.arange(B)))


def test_gradcheck():
    q = embeddings(3, 2, seed=6).requires_grad_()
    k = embeddings(3, 2, seed=7).requires_grad_()
    n = embeddings(2, 2, seed=8).requires_grad_()
    tau = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)

    def fn(q, k, n, tau):
        return torchnce.mixed_negatives_loss(
            q,
            k,
            n,
            batch_log_q=log_probs(3, seed=9),
            sampled_log_q=log_probs(2, seed=10),
            temperature=tau,
            key_ids=torch.tensor([0, 1, 0]),
            sampled_ids=torch.tensor([1, 2]),
            reduction="none",
        )

    assert torch.autograd.gradcheck(fn, (q, k, n, tau))


def test_learnable_temperature_gradients_finite_with_masked_entries():
    args = good(
        query=embeddings(B, D, seed=11).mul(30).requires_grad_(),
        sampled_keys=embeddings(M, D, seed=12).mul(30).requires_grad_(),
    )
    tau = torch.tensor(1e-3, dtype=torch.float64, requires_grad=True)  # clamped to 0.01
    loss = torchnce.mixed_negatives_loss(
        **args,
        temperature=tau,
        normalize=False,
        key_ids=torch.tensor([1, 1, 2, 3, 4]),
        sampled_ids=torch.tensor([1, 2, 3, 4]),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(args["query"].grad).all()
    assert torch.isfinite(args["sampled_keys"].grad).all()
    assert torch.isfinite(tau.grad)


def test_frequency_estimator_as_batch_log_q():
    estimator = torchnce.StreamingFrequencyEstimator(16)
    ids = torch.tensor([3, 5, 3, 8, 1])
    estimator.update(ids)
    loss = torchnce.mixed_negatives_loss(
        **good(batch_log_q=estimator.log_probability(ids)), key_ids=ids
    )
    assert torch.isfinite(loss)


# --- bad input -------------------------------------------------------------------------------


def call(**overrides):
    return torchnce.mixed_negatives_loss(**good(**overrides))


@pytest.mark.parametrize("name", ["batch_log_q", "sampled_log_q"])
@pytest.mark.parametrize("probability", [0.0, 2.0])
def test_log_q_of_probability_outside_unit_interval(name, probability):
    value = good()[name].clone()
    value[0] = math.log(probability) if probability > 0 else -math.inf
    with pytest.raises(ValueError, match=rf"^{name} must hold log-probabilities"):
        call(**{name: value})


@pytest.mark.parametrize("name", ["batch_log_q", "sampled_log_q"])
def test_log_q_nan(name):
    value = good()[name].clone()
    value[-1] = math.nan
    with pytest.raises(ValueError, match=rf"^{name} must hold log-probabilities"):
        call(**{name: value})


def test_batch_log_q_wrong_shape():
    with pytest.raises(ValueError, match=r"^batch_log_q must be \[B\] = \[5\]"):
        call(batch_log_q=torch.zeros(M))


def test_sampled_log_q_wrong_shape():
    with pytest.raises(ValueError, match=r"^sampled_log_q must be \[M\] = \[4\]"):
        call(sampled_log_q=torch.zeros(B))


def test_sampled_keys_dim_mismatch():
    with pytest.raises(ValueError, match=r"^sampled_keys must be \[M, D\] = \[M, 3\]"):
        call(sampled_keys=embeddings(M, D + 1))


def test_positive_key_dim_mismatch():
    with pytest.raises(ValueError, match=r"^positive_key must be \[B, D\] = \[5, 3\]"):
        call(positive_key=embeddings(B, D + 1))


def test_sampled_keys_per_example():
    with pytest.raises(ValueError, match=r"^sampled_keys must be \[M, D\]"):
        call(sampled_keys=embeddings(B, M, D))


def test_sampled_keys_dtype_differs_from_query():
    with pytest.raises(TypeError, match=r"^sampled_keys must have query's dtype"):
        call(sampled_keys=embeddings(M, D, dtype=torch.float32))


def test_integer_query():
    with pytest.raises(TypeError, match=r"^query must be a floating tensor"):
        call(query=torch.ones(B, D, dtype=torch.long))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_not_positive(temperature):
    with pytest.raises(ValueError, match=r"^temperature must be > 0"):
        call(temperature=temperature)


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"^reduction must be one of"):
        call(reduction="mean_per_row")


def test_sampled_ids_without_key_ids():
    with pytest.raises(ValueError, match=r"^key_ids must be given with sampled_ids"):
        call(sampled_ids=torch.arange(M))


def test_float_sampled_ids():
    with pytest.raises(TypeError, match=r"^sampled_ids must be an integer tensor"):
        call(key_ids=torch.arange(B), sampled_ids=torch.zeros(M))


def test_sampled_ids_wrong_shape():
    with pytest.raises(ValueError, match=r"^sampled_ids must be \[M\] = \[4\]"):
        call(key_ids=torch.arange(B), sampled_ids=torch.arange(B))
