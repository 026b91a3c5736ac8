"""StreamingFrequencyEstimator: Algorithm 2 of Yi et al. (RecSys 2019), vectorised.

Oracles: ``reference.contrastive.algorithm2`` (the paper's loop, one item at a time), closed forms
derived in the comments, and a seeded synthetic stream whose true frequencies are known.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import torchnce
from reference import contrastive as ref


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_stream(steps, batch, high, seed):
    """Batches of ``batch`` ids uniform in ``[-3, high)``: duplicates and negative ids."""
    return [
        torch.randint(-3, high, (batch,), generator=gen(seed + t)).tolist() for t in range(steps)
    ]


@pytest.mark.parametrize("hash", ["mod", "multiplicative"])
@pytest.mark.parametrize("num_buckets", [4, 64])
def test_matches_algorithm2_loop(hash, num_buckets):
    # 4 buckets: many ids share one; 64: mostly one id per bucket. Either way the vectorised
    # update must equal the paper's sequential loop with each bucket visited once per batch.
    stream = random_stream(40, 9, 30, seed=1)
    estimator = torchnce.StreamingFrequencyEstimator(num_buckets, alpha=0.3, hash=hash)
    for batch in stream:
        estimator.update(torch.tensor(batch))
    last, gap = ref.algorithm2(stream, num_buckets, 0.3, hash)
    assert estimator.last_step.tolist() == last
    torch.testing.assert_close(estimator.gap, torch.tensor(gap, dtype=torch.float32))
    assert int(estimator.step) == len(stream)


@pytest.mark.parametrize("hash", ["mod", "multiplicative"])
def test_buckets_match_reference_hash(hash):
    ids = torch.tensor([0, 1, 2, 7, 2**40 + 3, -1, -(2**62), 2**63 - 1])
    estimator = torchnce.StreamingFrequencyEstimator(97, hash=hash)
    if hash == "mod":
        want = [i % 97 for i in ids.tolist()]
    else:
        want = [ref.multiplicative_bucket(i, 97) for i in ids.tolist()]
    assert estimator.buckets(ids).tolist() == want


def test_duplicates_within_a_batch_count_once():
    once, many = (torchnce.StreamingFrequencyEstimator(8, alpha=0.5) for _ in range(2))
    for batch in ([1, 2], [2], [1, 3]):
        once.update(torch.tensor(batch))
        many.update(torch.tensor(batch * 3).reshape(3, -1))  # any shape; each id three times
    assert once.state_dict().keys() == many.state_dict().keys()
    for name, value in once.state_dict().items():
        assert torch.equal(value, many.state_dict()[name]), name


def test_first_sighting_and_unseen_items():
    # Item 5 first appears at step 3: its gap is 3 (counted from step 0), probability 1/3.
    # Item 6, never seen in 3 steps, gets 1/(3 + 1).
    estimator = torchnce.StreamingFrequencyEstimator(10)
    for batch in ([1], [2], [5]):
        estimator.update(torch.tensor(batch))
    torch.testing.assert_close(
        estimator.probability(torch.tensor([5, 6])), torch.tensor([1 / 3, 1 / 4])
    )


def test_before_any_update_every_probability_is_one():
    estimator = torchnce.StreamingFrequencyEstimator(4)
    assert torch.equal(estimator.probability(torch.tensor([0, 3])), torch.ones(2))


def test_log_probability_is_log_of_probability_and_keeps_shape():
    estimator = torchnce.StreamingFrequencyEstimator(32, alpha=0.1)
    for batch in random_stream(20, 6, 40, seed=2):
        estimator.update(torch.tensor(batch))
    ids = torch.arange(24).reshape(2, 3, 4)
    p = estimator.probability(ids)
    assert p.shape == ids.shape
    assert p.dtype == torch.float32
    assert ((p > 0) & (p <= 1)).all()
    torch.testing.assert_close(estimator.log_probability(ids), p.log())


def test_converges_to_true_frequencies():
    # Item i appears in each batch independently with probability p_i, so the steps between
    # two sightings are iid geometric: mean 1/p, variance (1 - p)/p². Read back from step T,
    # the gaps before the last sighting are again iid geometric (the Bernoulli process looks
    # the same backwards), and the first-sighting term t ~ geometric too, so E[B] = 1/p. The
    # moving average Σ α(1-α)^k G_k has variance α/(2-α)·Var(G) once the first sighting's
    # weight (1-α)^n is gone (n ≈ pT ≥ 500 sightings here: (0.98)^500 ≈ 4e-5). So B·p has
    # relative sd σ = sqrt(α/(2-α)·(1-p)) ≈ 0.10·sqrt(1-p) per item, and the mean over a group
    # of 100 independent items has sd σ/10. We assert it within 5 of those sds of 1 (a chance
    # failure ~1e-6 per group); an off-by-one gap (mean 1/p - 1, so B·p off by p) misses it
    # by 5 (p = 0.05), 22 (p = 0.2) and 70 (p = 0.5) sds. Each item's own B·p must also lie
    # within 6σ of 1 (over 300 items, a chance failure ~1e-6 in the normal approximation).
    alpha, steps, per_group = 0.02, 10_000, 100
    p_groups = torch.tensor([0.5, 0.2, 0.05])
    p = p_groups.repeat_interleave(per_group)
    present = torch.rand(steps, p.numel(), generator=gen(3)) < p
    estimator = torchnce.StreamingFrequencyEstimator(p.numel(), alpha=alpha)
    for row in present:
        estimator.update(torch.nonzero(row).squeeze(1))
    gap = 1 / estimator.probability(torch.arange(p.numel())).double()
    sigma = torch.sqrt(alpha / (2 - alpha) * (1 - p_groups.double()))
    group_mean = (gap.reshape(3, per_group) * p_groups.double().unsqueeze(1)).mean(1)
    assert ((group_mean - 1).abs() < 5 * sigma / math.sqrt(per_group)).all(), group_mean
    per_item = (gap * p - 1).abs().reshape(3, per_group)
    assert (per_item < 6 * sigma.unsqueeze(1)).all()


def test_usable_as_info_nce_log_q():
    estimator = torchnce.StreamingFrequencyEstimator(16)
    for batch in random_stream(5, 4, 16, seed=4):
        estimator.update(torch.tensor(batch))
    ids = torch.tensor([3, 5, 3, 8])
    estimator.update(ids)
    q, k = torch.randn(4, 3, generator=gen(5)), torch.randn(4, 3, generator=gen(6))
    log_q = estimator.log_probability(ids)
    loss = torchnce.info_nce_loss(q, k, log_q=log_q, key_ids=ids)
    assert torch.isfinite(loss)


# --- state ------------------------------------------------------------------------------------


def test_state_dict_round_trip_resumes_exactly():
    stream = random_stream(30, 5, 20, seed=7)
    whole = torchnce.StreamingFrequencyEstimator(16, alpha=0.2)
    first = torchnce.StreamingFrequencyEstimator(16, alpha=0.2)
    for batch in stream[:12]:
        whole.update(torch.tensor(batch))
        first.update(torch.tensor(batch))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = torchnce.StreamingFrequencyEstimator(16, alpha=0.2)
    resumed.load_state_dict(torch.load(buffer))
    for batch in stream[12:]:
        whole.update(torch.tensor(batch))
        resumed.update(torch.tensor(batch))
    assert set(whole.state_dict()) == {"last_step", "gap", "step"}
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_state_dict_of_other_size_is_rejected():
    with pytest.raises(RuntimeError, match="size mismatch"):
        torchnce.StreamingFrequencyEstimator(8).load_state_dict(
            torchnce.StreamingFrequencyEstimator(4).state_dict()
        )


@pytest.mark.parametrize("convert", ["half", "double", "bfloat16"])
def test_dtype_conversions_keep_buffer_dtypes(convert):
    estimator = getattr(torchnce.StreamingFrequencyEstimator(4), convert)()
    assert estimator.gap.dtype == torch.float32
    assert estimator.last_step.dtype == estimator.step.dtype == torch.int64


def test_to_device_moves_buffers():
    estimator = torchnce.StreamingFrequencyEstimator(4).to("meta")
    assert {b.device.type for b in estimator.buffers()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    stream = random_stream(25, 7, 20, seed=8)
    cpu = torchnce.StreamingFrequencyEstimator(8, alpha=0.3, hash="multiplicative")
    gpu = torchnce.StreamingFrequencyEstimator(8, alpha=0.3, hash="multiplicative").to("cuda")
    for batch in stream:
        cpu.update(torch.tensor(batch))
        gpu.update(torch.tensor(batch))  # CPU ids are moved to the estimator's device
    ids = torch.arange(-3, 20)
    assert gpu.probability(ids).device.type == "cuda"
    torch.testing.assert_close(gpu.probability(ids).cpu(), cpu.probability(ids))
    for name, value in cpu.state_dict().items():
        torch.testing.assert_close(gpu.state_dict()[name].cpu(), value)


def test_extra_repr():
    estimator = torchnce.StreamingFrequencyEstimator(8, alpha=0.5, hash="multiplicative")
    assert repr(estimator) == (
        "StreamingFrequencyEstimator(num_buckets=8, alpha=0.5, hash='multiplicative')"
    )


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("num_buckets", [0, -3])
def test_num_buckets_below_one(num_buckets):
    with pytest.raises(ValueError, match=r"^num_buckets must be >= 1"):
        torchnce.StreamingFrequencyEstimator(num_buckets)


@pytest.mark.parametrize("num_buckets", [4.0, True, "4"])
def test_num_buckets_not_int(num_buckets):
    with pytest.raises(TypeError, match=r"^num_buckets must be an int"):
        torchnce.StreamingFrequencyEstimator(num_buckets)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, math.nan])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\]"):
        torchnce.StreamingFrequencyEstimator(4, alpha=alpha)


@pytest.mark.parametrize("alpha", [True, "0.1", None])
def test_alpha_not_a_number(alpha):
    with pytest.raises(TypeError, match=r"^alpha must be a float"):
        torchnce.StreamingFrequencyEstimator(4, alpha=alpha)


def test_unknown_hash():
    with pytest.raises(ValueError, match=r"^hash must be one of 'mod', 'multiplicative'"):
        torchnce.StreamingFrequencyEstimator(4, hash="murmur")


@pytest.mark.parametrize("method", ["update", "probability", "log_probability"])
def test_float_ids(method):
    estimator = torchnce.StreamingFrequencyEstimator(4)
    with pytest.raises(TypeError, match=r"^ids must be an integer tensor"):
        getattr(estimator, method)(torch.tensor([1.0, 2.0]))


def test_rejected_update_leaves_state_unchanged():
    estimator = torchnce.StreamingFrequencyEstimator(4)
    estimator.update(torch.tensor([1]))
    before = {name: value.clone() for name, value in estimator.state_dict().items()}
    with pytest.raises(TypeError):
        estimator.update(torch.tensor([0.5]))
    for name, value in estimator.state_dict().items():
        assert torch.equal(value, before[name]), name
