"""The retrieval options of info_nce_loss and mixed_negatives_loss: multi-vector queries,
num_hard_negatives, sample_weight, min_probability and score_mask.

Oracle: the float64 loop reference of ``retrieval_oracle`` (masked candidates skipped, hard
negatives found by sorting); TFRS itself in ``test_retrieval_parity.py``.
"""

from __future__ import annotations

import math

import pytest
import retrieval_oracle as oracle
import torch

import torchnce
import torchnce._common.checks
from reference.contrastive import embeddings, log_probs

B, H, M, D = 6, 3, 4, 5
OPTIONS = ["plain", "hard", "weight", "clip", "mask", "all"]


def options(name: str, columns: int, negatives: int, seed: int = 9) -> dict:
    """The keyword arguments of one option case (shared by the library and the oracle)."""
    g = torch.Generator().manual_seed(seed)
    chosen = {}
    if name in ("hard", "all"):
        chosen["num_hard_negatives"] = max(1, negatives // 2)
    if name in ("weight", "all"):
        chosen["sample_weight"] = torch.rand(B, generator=g, dtype=torch.float64) * 2
    if name in ("mask", "all"):
        chosen["score_mask"] = torch.rand(B, columns, generator=g) < 0.7
    return chosen


def log_q_for(name: str, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """log-probabilities; with "clip", some are -inf (p = 0), > 0 or below the clip."""
    lq = log_probs(n, seed=seed)
    if name not in ("clip", "all"):
        return lq, {}
    lq[0], lq[-1] = -math.inf, 0.5
    lq[1] = math.log(1e-3)
    return lq, {"min_probability": 0.05}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("heads", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_in_batch_against_oracle(option, heads, normalize):
    q = embeddings(B, H, D, seed=1) if heads else embeddings(B, D, seed=1)
    k = embeddings(B, D, seed=2)
    kids = torch.tensor([0, 1, 2, 1, 3, 4])  # rows 1 and 3 share an item
    lq, clip = log_q_for(option, B, seed=3)
    opts = {**options(option, B, B - 1), **clip}
    loss = torchnce.info_nce_loss(q, k, temperature=0.5, normalize=normalize, reduction="none",
                                  key_ids=kids, log_q=lq, **opts)
    want = oracle.in_batch(q, k, log_q=lq, key_ids=kids, temperature=0.5, normalize=normalize,
                           hard=opts.pop("num_hard_negatives", None),
                           weight=opts.pop("sample_weight", None), **opts)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("option", ["hard", "mask", "all"])
def test_symmetric_with_options(option):
    """The key→query direction takes the same hard negatives and the transposed mask."""
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    opts = options(option, B, B - 1)
    loss = torchnce.info_nce_loss(q, k, temperature=0.5, symmetric=True, reduction="none",
                                  **opts)
    hard, weight = opts.pop("num_hard_negatives", None), opts.pop("sample_weight", None)
    forward = oracle.in_batch(q, k, temperature=0.5, normalize=True, hard=hard, **opts)
    if "score_mask" in opts:
        opts["score_mask"] = opts["score_mask"].T
    backward = oracle.in_batch(k, q, temperature=0.5, normalize=True, hard=hard, **opts)
    want = torch.tensor([(f + b) / 2 for f, b in zip(forward, backward, strict=True)],
                        dtype=torch.float64)
    torch.testing.assert_close(loss, want if weight is None else want * weight)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mode", ["unpaired", "paired"])
@pytest.mark.parametrize("heads", [False, True])
def test_explicit_against_oracle(option, mode, heads):
    q = embeddings(B, H, D, seed=1) if heads else embeddings(B, D, seed=1)
    k = embeddings(B, D, seed=2)
    n = embeddings(M, D, seed=3) if mode == "unpaired" else embeddings(B, M, D, seed=3)
    opts = options(option, M, M)
    loss = torchnce.info_nce_loss(q, k, n, negative_mode=mode, temperature=0.3,
                                  reduction="none", **opts)
    want = oracle.explicit(q, k, n, temperature=0.3, normalize=True,
                           hard=opts.pop("num_hard_negatives", None),
                           weight=opts.pop("sample_weight", None), **opts)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("normalize", [False, True])
def test_mixed_against_oracle(option, normalize):
    q, k, n = embeddings(B, D, seed=1), embeddings(B, D, seed=2), embeddings(M, D, seed=3)
    kids, sids = torch.tensor([0, 1, 2, 1, 3, 4]), torch.tensor([4, 7, 1, 8])
    blq, clip = log_q_for(option, B, seed=4)
    slq, _ = log_q_for(option, M, seed=5)
    opts = {**options(option, B + M, B - 1 + M), **clip}
    loss = torchnce.mixed_negatives_loss(q, k, n, batch_log_q=blq, sampled_log_q=slq,
                                         temperature=0.5, normalize=normalize,
                                         reduction="none", key_ids=kids, sampled_ids=sids,
                                         **opts)
    want = oracle.mixed(q, k, n, batch_log_q=blq, sampled_log_q=slq, key_ids=kids,
                        sampled_ids=sids, temperature=0.5, normalize=normalize,
                        hard=opts.pop("num_hard_negatives", None),
                        weight=opts.pop("sample_weight", None), **opts)
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_reductions(reduction):
    """"sum" is Σ w_i L_i (TFRS' default), "mean" that sum over B (Keras' sum over batch
    size), not over Σ w."""
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    w = torch.arange(B, dtype=torch.float64)
    rows = torchnce.info_nce_loss(q, k, reduction="none")
    loss = torchnce.info_nce_loss(q, k, reduction=reduction, sample_weight=w)
    total = (rows * w).sum()
    torch.testing.assert_close(loss, total if reduction == "sum" else total / B)


def test_every_negative_is_no_mining():
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    torch.testing.assert_close(torchnce.info_nce_loss(q, k, num_hard_negatives=B - 1),
                               torchnce.info_nce_loss(q, k))


def test_an_all_true_mask_and_the_positives_entry_change_nothing():
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    base = torchnce.info_nce_loss(q, k, reduction="none")
    torch.testing.assert_close(
        torchnce.info_nce_loss(q, k, reduction="none", score_mask=torch.ones(B, B).bool()), base)
    diagonal_off = ~torch.eye(B, dtype=torch.bool)  # only the positives' entries are False
    torch.testing.assert_close(
        torchnce.info_nce_loss(q, k, reduction="none", score_mask=diagonal_off), base)


def test_one_head_is_a_plain_query():
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    torch.testing.assert_close(torchnce.info_nce_loss(q.unsqueeze(1), k),
                               torchnce.info_nce_loss(q, k))


def test_clip_equals_clipped_probabilities():
    """min_probability = c is the loss of the probabilities clamped into [c, 1] by hand."""
    q, k = embeddings(B, D, seed=1), embeddings(B, D, seed=2)
    p = torch.tensor([0.0, 1e-9, 0.3, 1.0, 2.0, 0.5], dtype=torch.float64)
    loss = torchnce.info_nce_loss(q, k, log_q=p.log(), min_probability=1e-6)
    torch.testing.assert_close(loss, torchnce.info_nce_loss(q, k, log_q=p.clamp(1e-6, 1).log()))


@pytest.mark.parametrize("form", ["in-batch", "explicit", "mixed"])
def test_gradcheck(form):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, 1.0, 2.0, 0.0], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1, 1],
                         [0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 1]]).bool()
    lq = torch.log(torch.rand(7, generator=g, dtype=torch.float64))
    opts = {"num_hard_negatives": 2, "sample_weight": w}
    if form == "in-batch":
        def f(q, k, n):
            return torchnce.info_nce_loss(q, k, score_mask=mask[:, :4], **opts)
    elif form == "explicit":
        def f(q, k, n):
            return torchnce.info_nce_loss(q, k, n, score_mask=mask[:, 4:], **opts)
    else:
        def f(q, k, n):
            return torchnce.mixed_negatives_loss(
                q[:, 0], k, n, batch_log_q=lq[:4], sampled_log_q=lq[4:], score_mask=mask,
                **opts)
    assert torch.autograd.gradcheck(f, (q, k, n))


def call(**overrides):
    args = {"query": embeddings(B, D, seed=1), "positive_key": embeddings(B, D, seed=2)}
    return torchnce.info_nce_loss(**{**args, **overrides})


def call_mixed(**overrides):
    args = {"query": embeddings(B, D, seed=1), "positive_key": embeddings(B, D, seed=2),
            "sampled_keys": embeddings(M, D, seed=3), "batch_log_q": log_probs(B),
            "sampled_log_q": log_probs(M)}
    return torchnce.mixed_negatives_loss(**{**args, **overrides})


@pytest.mark.parametrize("value", [0, -1, B])
def test_num_hard_negatives_out_of_range(value):
    with pytest.raises(ValueError, match=rf"^num_hard_negatives must be in \[1, {B - 1}\]"):
        call(num_hard_negatives=value)


def test_num_hard_negatives_out_of_range_explicit_and_mixed():
    with pytest.raises(ValueError, match=rf"^num_hard_negatives must be in \[1, {M}\]"):
        call(negative_keys=embeddings(M, D), num_hard_negatives=M + 1)
    with pytest.raises(ValueError, match=rf"^num_hard_negatives must be in \[1, {B - 1 + M}\]"):
        call_mixed(num_hard_negatives=B + M)


def test_num_hard_negatives_not_an_int():
    with pytest.raises(TypeError, match=r"^num_hard_negatives must be an int"):
        call(num_hard_negatives=2.0)


@pytest.mark.parametrize("weight", [torch.ones(B - 1), torch.ones(B, 1)])
def test_sample_weight_wrong_shape(weight):
    with pytest.raises(ValueError, match=rf"^sample_weight must be \[B\] = \[{B}\]"):
        call(sample_weight=weight)
    with pytest.raises(ValueError, match=r"^sample_weight must be \[B\]"):
        call_mixed(sample_weight=weight)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_sample_weight_negative_or_not_finite(bad):
    w = torch.ones(B)
    w[2] = bad
    with pytest.raises(ValueError, match=r"^sample_weight must hold finite weights >= 0"):
        call(sample_weight=w)


def test_sample_weight_integer_tensor():
    with pytest.raises(TypeError, match=r"^sample_weight must be a floating tensor"):
        call(sample_weight=torch.ones(B, dtype=torch.long))


@pytest.mark.parametrize("clip", [0, -1e-6, 1.5, math.nan])
def test_min_probability_out_of_range(clip):
    with pytest.raises(ValueError, match=r"^min_probability must be in \(0, 1\]"):
        call(log_q=log_probs(B), min_probability=clip)
    with pytest.raises(ValueError, match=r"^min_probability must be in \(0, 1\]"):
        call_mixed(min_probability=clip)


def test_min_probability_not_a_number():
    with pytest.raises(TypeError, match=r"^min_probability must be a float"):
        call(min_probability="1e-6")


def test_clipped_log_q_still_refuses_nan():
    lq = log_probs(B)
    lq[3] = math.nan
    with pytest.raises(ValueError, match=r"^log_q must hold log-probabilities \(NaN"):
        call(log_q=lq, min_probability=1e-6)


def test_unclipped_zero_probability_names_the_clip():
    lq = log_probs(B)
    lq[0] = -math.inf
    with pytest.raises(ValueError, match=r"^log_q must hold .* or set min_probability"):
        call(log_q=lq)


@pytest.mark.parametrize("shape", [(B, B - 1), (B,), (B + 1, B)])
def test_score_mask_wrong_shape(shape):
    with pytest.raises(ValueError, match=rf"^score_mask must be \[B, B\] = \[{B}, {B}\]"):
        call(score_mask=torch.ones(shape, dtype=torch.bool))


def test_score_mask_wrong_shape_explicit_and_mixed():
    with pytest.raises(ValueError, match=rf"^score_mask must be \[B, M\] = \[{B}, {M}\]"):
        call(negative_keys=embeddings(M, D), score_mask=torch.ones(B, B, dtype=torch.bool))
    with pytest.raises(ValueError, match=rf"^score_mask must be \[B, B \+ M\] = \[{B}, {B + M}"):
        call_mixed(score_mask=torch.ones(B, B, dtype=torch.bool))


@pytest.mark.parametrize("mask", [torch.ones(B, B), torch.ones(B, B, dtype=torch.long)])
def test_score_mask_wrong_dtype(mask):
    with pytest.raises(TypeError, match=r"^score_mask must be a bool tensor, got torch\."):
        call(score_mask=mask)


def test_score_mask_not_a_tensor():
    with pytest.raises(TypeError, match=r"^score_mask must be a bool tensor, got list"):
        call(score_mask=[[True] * B] * B)


def test_the_options_read_nothing_on_the_device_path(monkeypatch):
    """With the checks on the device path (as on an accelerator), a step with every option
    reads nothing back (tests/test_host_reads.py counts the reads)."""
    from test_host_reads import host_reads

    monkeypatch.setattr(torchnce._common.checks, "HOST_READS_ON_CPU", False)
    q = embeddings(B, H, D, seed=1).requires_grad_()
    k, n = embeddings(B, D, seed=2), embeddings(M, D, seed=3)
    opts = {"num_hard_negatives": 2, "sample_weight": torch.rand(B, dtype=torch.float64),
            "min_probability": 1e-6, "reduction": "none"}
    lq = log_probs(B + M)
    mask = torch.rand(B, B + M) < 0.8
    assert host_reads(lambda: torchnce.info_nce_loss(
        q, k, log_q=lq[:B], score_mask=mask[:, :B], **opts)) == {}
    assert host_reads(lambda: torchnce.mixed_negatives_loss(
        q[:, 0], k, n, batch_log_q=lq[:B], sampled_log_q=lq[B:], score_mask=mask, **opts)) == {}


def test_a_negative_weight_on_the_device_path_is_a_device_assertion(monkeypatch):
    monkeypatch.setattr(torchnce._common.checks, "HOST_READS_ON_CPU", False)
    w = -torch.ones(B)
    with pytest.raises(RuntimeError, match=r"sample_weight must hold finite weights >= 0"):
        call(sample_weight=w)
