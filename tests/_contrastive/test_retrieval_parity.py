"""Parity with TensorFlow Recommenders 0.7.7's ``tfrs.tasks.Retrieval``, option by option.

``Retrieval(temperature, num_hard_negatives, remove_accidental_hits)`` called with
``sample_weight``, ``candidate_sampling_probability`` (clipped into [1e-6, 1] by TFRS),
``candidate_ids`` and ``score_mask``, on ``[B, D]`` or ``[B, H, D]`` queries and ``B`` or
``B + M`` candidates, against ``info_nce_loss`` (in-batch) and ``mixed_negatives_loss`` (the
``M`` extra candidates as sampled keys, ``sampled_log_q = log p_m - log M``), with the dot
product and ``reduction="sum"`` (TFRS' defaults). Random inputs, several seeds per case.

Tolerances: rtol 1e-5 on the losses and 1e-4 on the gradients in float32, as in
tests/test_parity_tf.py (reductions are not bit-reproducible across Eigen and torch's BLAS).
TFRS needs tf-keras (``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported); the module is
skipped when either is missing.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import pytest
import torch

import torchnce

pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")
tfrs = pytest.importorskip("tensorflow_recommenders")

B, M, H, D = 12, 5, 3, 8
OPTIONS = ["plain", "hard", "weight", "probability", "hits", "mask", "heads", "all"]
TAU = 0.5


def case(option: str, extra: bool, seed: int) -> dict:
    """Random inputs of one case as numpy float32 arrays (what both sides receive)."""
    rng = np.random.default_rng(seed)
    every = option == "all"
    n = B + M if extra else B
    heads = (every and not extra) or option == "heads"
    out: dict = {
        "query": rng.standard_normal((B, H, D) if heads else (B, D)).astype(np.float32),
        "candidates": rng.standard_normal((n, D)).astype(np.float32),
    }
    if every or option == "hard":
        out["num_hard_negatives"] = int(rng.integers(1, n - 1))
    if every or option == "weight":
        out["sample_weight"] = rng.uniform(0, 2, B).astype(np.float32)
    if every or option == "probability":
        p = rng.uniform(0.01, 1, n).astype(np.float32)
        p[[0, 2]] = 0.0, 1e-8  # clipped to 1e-6 by TFRS: an unseen item and a rare one
        out["probability"] = p
    if every or option == "hits":
        out["ids"] = rng.integers(0, B // 2, n)
    if every or option == "mask":
        mask = rng.uniform(size=(B, n)) < 0.7
        mask[np.arange(B), np.arange(B)] = True  # TFRS would mask the positive itself
        out["mask"] = mask
    return out


def tfrs_loss(c: dict) -> tuple[float, np.ndarray, np.ndarray]:
    task = tfrs.tasks.Retrieval(temperature=TAU, num_hard_negatives=c.get("num_hard_negatives"),
                                remove_accidental_hits="ids" in c)
    q, k = tf.Variable(c["query"]), tf.Variable(c["candidates"])
    with tf.GradientTape() as tape:
        loss = task(q, k, sample_weight=c.get("sample_weight"),
                    candidate_sampling_probability=c.get("probability"),
                    candidate_ids=c.get("ids"), compute_metrics=False,
                    compute_batch_metrics=False, score_mask=c.get("mask"))
    dq, dk = tape.gradient(loss, [q, k])
    return float(loss), dq.numpy(), dk.numpy()


def torchnce_loss(c: dict, extra: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.tensor(c["query"], requires_grad=True)
    cand = torch.tensor(c["candidates"], requires_grad=True)
    opts = {"temperature": TAU, "normalize": False, "reduction": "sum",
            "num_hard_negatives": c.get("num_hard_negatives")}
    if "sample_weight" in c:
        opts["sample_weight"] = torch.tensor(c["sample_weight"])
    if "mask" in c:
        opts["score_mask"] = torch.tensor(c["mask"])
    lq = torch.zeros(cand.shape[0])
    if "probability" in c:
        lq = torch.tensor(c["probability"]).log()
        opts["min_probability"] = 1e-6
    ids = torch.tensor(c["ids"]) if "ids" in c else None
    if not extra:
        loss = torchnce.info_nce_loss(q, cand, log_q=lq if "probability" in c else None,
                                      key_ids=ids, **opts)
    else:
        # The sampled block's clip acts on q_m = p_m / M: the case's extra probabilities
        # are >= 0.01, far above M·1e-6, so only the in-batch block is clipped.
        loss = torchnce.mixed_negatives_loss(
            q, cand[:B], cand[B:], batch_log_q=lq[:B], sampled_log_q=lq[B:] - math.log(M),
            key_ids=None if ids is None else ids[:B],
            sampled_ids=None if ids is None else ids[B:], **opts)
    loss.backward()
    return loss.detach(), q.grad, cand.grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("extra", [False, True], ids=["in-batch", "extra-negatives"])
@pytest.mark.parametrize("option", OPTIONS)
def test_retrieval_task_parity(option, extra, seed):
    if extra and option == "heads":
        pytest.skip("multi-vector queries are info_nce_loss's (in-batch) only")
    c = case(option, extra, seed)
    want, want_dq, want_dk = tfrs_loss(c)
    got, dq, dk = torchnce_loss(c, extra)
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dq, torch.from_numpy(want_dq), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dk, torch.from_numpy(want_dk), rtol=1e-4, atol=1e-5)
