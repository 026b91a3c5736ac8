"""Candidate samplers: TensorFlow's own sampler tests ported, statistics, state and errors.

Oracles: the formulas of docs/tf-semantics.md §6 (written out below in numpy float64 / float32),
TensorFlow's test constants (§8.2, §8.3), and a plain Python copy of TensorFlow's sequential
rejection loop (``rejection_loop``) for ``unique=True``. Statistical tests use seeded
generators, so they are deterministic; their thresholds (p > 1e-4, 5 sigma) would only fail
by chance once in thousands of seeds, while a wrong formula fails them outright.
"""

from __future__ import annotations

import gc
import io
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import torchnce
import torchnce._sampling.fast
import torchnce._sampling.unique

TRUE_LABELS = [[1, 2], [0, 4], [3, 3]]  # RangeSamplerOpsTest's constants: B=3, T=2, range 5
POW2 = [float(2**i) for i in range(9)]  # range_sampler_test.cc's unigrams 1, 2, 4, ..., 256
POW2_SUM_08 = sum(2 ** (0.8 * i) for i in range(9))  # 197.05..., the tests' normaliser


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make(kind, range_max=10):
    """A sampler of each kind over ``range_max`` classes with a non-trivial distribution."""
    if kind == "uniform":
        return torchnce.UniformSampler(range_max)
    if kind == "log_uniform":
        return torchnce.LogUniformSampler(range_max)
    if kind == "fixed":
        weights = [float((i * 7) % 5 + 1) for i in range(range_max)]
        return torchnce.FixedUnigramSampler(range_max, unigrams=weights, distortion=0.75)
    sampler = torchnce.LearnedUnigramSampler(range_max)
    seen = torch.arange(range_max).repeat_interleave(torch.arange(range_max) % 4)
    sampler.sample(seen[:, None], 1, generator=gen(99))  # counts 1 + (k mod 4)
    return sampler


KINDS = ["uniform", "log_uniform", "fixed", "learned"]
kinds = pytest.mark.parametrize("kind", KINDS)
uniques = pytest.mark.parametrize("unique", [False, True])


@pytest.fixture(params=["native", "pure"])
def path(request, monkeypatch):
    """Run a test on the native kernels (eager CPU's default, where they are built) and on
    the pure-PyTorch path."""
    if request.param == "pure":
        monkeypatch.setattr(torchnce._sampling.fast, "ENABLED", False)
    elif not torchnce.native_available().available:
        pytest.skip("the native kernels are off or could not be built")
    return request.param


def rejection_loop(p, num_sampled, rng):
    """TensorFlow's unique sampling, one draw at a time (docs/tf-semantics.md §6.3)."""
    picked, tries = [], 0
    while len(picked) < num_sampled:
        tries += 1
        v = int(rng.choice(len(p), p=p))
        if v not in picked:
            picked.append(v)
    return picked, tries


def tf_expected(p, num_tries, num_sampled):
    """ExpectedCountHelper (§6.4): float32, log1p/expm1 evaluated in double then rounded."""
    p = np.asarray(p, np.float32)
    if num_tries == num_sampled:
        return p * np.float32(num_sampled)
    log_miss = np.log1p(-p.astype(np.float64)).astype(np.float32) * np.float32(num_tries)
    return (-np.expm1(log_miss.astype(np.float64))).astype(np.float32)


# --- RangeSamplerOpsTest (docs/tf-semantics.md §8.2) ----------------------------------------------


def test_all_sampler_candidates_and_counts():
    out = torchnce.all_candidate_sampler(torch.tensor(TRUE_LABELS), 2, 5, True)
    assert out.sampled_candidates.tolist() == [0, 1, 2, 3, 4]
    assert out.sampled_candidates.dtype == torch.int64
    # testTrueLogExpectedCount / testSampledLogExpectedCount: log(count) == 0.
    torch.testing.assert_close(torch.log(out.true_expected_count), torch.zeros(3, 2))
    torch.testing.assert_close(torch.log(out.sampled_expected_count), torch.zeros(5))


def test_all_sampler_accidental_hits():
    tc = torch.tensor(TRUE_LABELS)
    out = torchnce.all_candidate_sampler(tc, 2, 5, True)
    index, ids, weights = torchnce.compute_accidental_hits(tc, out.sampled_candidates, 2)
    assert index.dim() == ids.dim() == weights.dim() == 1
    for i, j, w in zip(index.tolist(), ids.tolist(), weights.tolist(), strict=True):
        assert j in TRUE_LABELS[i]  # position == value for the All sampler
        assert w < -1e37


@pytest.mark.parametrize("seed", [1, 12, 123, 1234])
def test_seed_gives_the_same_draw(seed):
    tc = torch.tensor(TRUE_LABELS)
    first = torchnce.log_uniform_candidate_sampler(tc, 2, 5, True, 5, seed=seed)
    second = torchnce.log_uniform_candidate_sampler(tc, 2, 5, True, 5, seed=seed)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_seed_gives_different_draws():
    torch.manual_seed(0)
    tc = torch.tensor(TRUE_LABELS)
    equal = 0
    for _ in range(10):
        a = torchnce.log_uniform_candidate_sampler(tc, 2, 5, True, 5).sampled_candidates
        b = torchnce.log_uniform_candidate_sampler(tc, 2, 5, True, 5).sampled_candidates
        equal += bool(torch.equal(a, b))
    assert equal <= 2


@pytest.mark.parametrize("range_max", [2**31 - 1, 2**32 + 1, 2**63 - 1])
def test_unigram_range_too_large(range_max):
    with pytest.raises(ValueError, match=r"^range_max must be less than 2147483647"):
        torchnce.learned_unigram_candidate_sampler(torch.tensor([[0]]), 1, 1, False, range_max)
    with pytest.raises(ValueError, match=r"^range_max must be less than 2147483647"):
        torchnce.LearnedUnigramSampler(range_max)
    with pytest.raises(ValueError, match=r"^range_max must be less than 2147483647"):
        torchnce.FixedUnigramSampler(range_max, unigrams=[1.0])


@pytest.mark.parametrize("range_max", [0, -1])
def test_nonpositive_range(range_max):
    with pytest.raises(ValueError, match=r"^range_max must be >= 1"):
        torchnce.learned_unigram_candidate_sampler(torch.tensor([[0]]), 1, 1, False, range_max)
    with pytest.raises(ValueError, match=r"^range_max must be >= 1"):
        torchnce.uniform_candidate_sampler(torch.tensor([[0]]), 1, 1, False, range_max)


@kinds
@uniques
def test_single_class(kind, unique):
    out = make(kind, 1).sample(torch.tensor([[0]]), 1, unique=unique, generator=gen())
    assert out.sampled_candidates.tolist() == [0]
    assert out.true_expected_count.tolist() == [[1.0]]
    assert out.sampled_expected_count.tolist() == [1.0]


@pytest.mark.parametrize(
    "fn", [torchnce.uniform_candidate_sampler, torchnce.log_uniform_candidate_sampler]
)
@uniques
def test_large_range(fn, unique):
    out = fn(torch.tensor([[0, 2**32]]), 2, 2, unique, 2**32 + 1, seed=123)
    assert bool(((out.sampled_candidates >= 0) & (out.sampled_candidates <= 2**32)).all())
    for count in out[1:]:
        assert bool((torch.isfinite(count) & (count > 0)).all())


@pytest.mark.parametrize("bad", [10, -10])
def test_candidate_out_of_range(bad):
    with pytest.raises(ValueError, match=r"^true_classes must hold ids in \[0, 2\).*out of range"):
        torchnce.log_uniform_candidate_sampler(torch.tensor([[0, bad]]), 2, 1000, False, 2)


# --- range_sampler_test.cc (docs/tf-semantics.md §8.3) --------------------------------------------


@kinds
def test_probabilities_sum_to_one(kind):
    sampler = make(kind, 10)
    assert abs(float(sampler.probability(torch.arange(10)).double().sum()) - 1) <= 1e-4


def test_uniform_probabilities_equal():
    assert torchnce.UniformSampler(10).probability(torch.arange(10)).tolist() == [0.1] * 10 or (
        torch.equal(
            torchnce.UniformSampler(10).probability(torch.arange(10)), torch.full((10,), 0.1)
        )
    )


def test_log_uniform_ratio():
    # P(i) / P(i/2) ≈ 1/2 for a Zipfian law (the C++ test's tolerance 0.1).
    sampler = torchnce.LogUniformSampler(1_000_000)
    i = 100
    while i < 1_000_000:
        ratio = float(sampler.probability(torch.tensor([i]))) / float(
            sampler.probability(torch.tensor([i // 2]))
        )
        assert abs(ratio - 0.5) < 0.1
        i *= 2


def test_learned_unigram_update_one_value():
    sampler = torchnce.LearnedUnigramSampler(10)
    sampler.sample(torch.full((10, 1), 3), 1, generator=gen())
    p = sampler.probability(torch.arange(10))
    assert abs(float(p[3]) - 0.55) < 1e-4  # (1 + 10) / 20
    torch.testing.assert_close(p[torch.arange(10) != 3], torch.full((9,), 0.05))


def test_learned_unigram_update_ranges():
    sampler = torchnce.LearnedUnigramSampler(10)
    for i in range(1, 10):
        sampler.sample(torch.arange(i, 10)[:, None], 1, generator=gen(i))
    expected = (torch.arange(10) + 1) / 55  # value v was added v times: 1 + v out of 10 + 45
    torch.testing.assert_close(sampler.probability(torch.arange(10)), expected.float())


@pytest.fixture
def pow2_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"w{i + 1},{int(u)}\n" for i, u in enumerate(POW2)))
    return str(path)


@pytest.mark.parametrize("source", ["file", "vector"])
@pytest.mark.parametrize("reserved", [0, 1, 2])
def test_fixed_unigram_distortion_and_reserved(source, reserved, pow2_vocab):
    kwargs = {"vocab_file": pow2_vocab} if source == "file" else {"unigrams": POW2}
    sampler = torchnce.FixedUnigramSampler(
        9 + reserved, distortion=0.8, num_reserved_ids=reserved, **kwargs
    )
    p = sampler.probability(torch.arange(9 + reserved)).double()
    assert p[:reserved].tolist() == [0.0] * reserved
    expected = torch.tensor([2 ** (0.8 * i) / POW2_SUM_08 for i in range(9)], dtype=torch.float64)
    torch.testing.assert_close(p[reserved:], expected, rtol=0, atol=1e-4)


def test_fixed_unigram_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"^vocab_file must be a readable file.*not found"):
        torchnce.FixedUnigramSampler(9, vocab_file=str(tmp_path / "absent.txt"))


def test_fixed_unigram_range_mismatch(pow2_vocab):
    with pytest.raises(ValueError, match=r"^range_max must equal .*range is 8 must be equal to"):
        torchnce.FixedUnigramSampler(8, vocab_file=pow2_vocab)


def test_all_sampler_ten():
    out = torchnce.AllCandidateSampler().sample(torch.tensor([[9]]), 10)
    assert out.sampled_candidates.tolist() == list(range(10))
    assert out.true_expected_count.tolist() == [[1.0]]
    assert out.sampled_expected_count.tolist() == [1.0] * 10


def test_unique_trials_agree():
    # RangeSamplerTest.Unique: LogUniform(100), 50 unique draws, 100 trials. The "within 50 %
    # of the first trial" condition is itself a coin toss: num_tries ranges over ~80-175 under
    # TensorFlow's loop (checked against rejection_loop below), so about 1 seed in 10 fails
    # it; TensorFlow's test passes with its fixed seed, this one with seed 0.
    sampler, g = torchnce.LogUniformSampler(100), gen(0)
    all_ids = torch.arange(100)[None, :]
    first = None
    observed = torch.zeros(100)
    expected = torch.zeros(100)
    for _ in range(100):
        out = sampler.sample(all_ids, 50, generator=g)
        if first is None:
            first = out.true_expected_count[0]
        assert bool(((out.true_expected_count[0] - first).abs() <= 0.5 * first).all())
        observed[out.sampled_candidates] += 1
        expected += out.true_expected_count[0]
    assert float((observed / 100 - expected / 100).abs().max()) < 0.2


# --- statistics -----------------------------------------------------------------------------


@kinds
@pytest.mark.usefixtures("path")
def test_draws_fit_probability(kind):
    # chi-square goodness of fit of 200,000 independent draws against probability().
    sampler = make(kind, 30)
    p = sampler.probability(torch.arange(30)).double()  # before the learned sampler updates
    out = sampler.sample(torch.tensor([[0]]), 200_000, unique=False, generator=gen(1))
    observed = torch.bincount(out.sampled_candidates, minlength=30).double()
    assert stats.chisquare(observed, p / p.sum() * observed.sum()).pvalue > 1e-4


def test_huge_uniform_range_is_uniform():
    # 2^32 + 1 classes: 16 equal buckets of ids, and both halves of the low 32 bits.
    out = torchnce.uniform_candidate_sampler(
        torch.tensor([[0]]), 1, 100_000, False, 2**32 + 1, generator=gen(2)
    )
    ids = out.sampled_candidates
    buckets = torch.bincount(ids * 16 // (2**32 + 1), minlength=16).double()
    assert stats.chisquare(buckets).pvalue > 1e-4
    assert stats.chisquare(torch.bincount(ids % 2, minlength=2).double()).pvalue > 1e-4


@pytest.mark.parametrize("kind", ["log_uniform", "fixed"])
@pytest.mark.parametrize("path", ["native", "block", "device", "loop"])
def test_unique_matches_rejection_loop(kind, path, monkeypatch):
    # The unique draw against TensorFlow's loop run in Python on the same P: inclusion
    # frequency of every class, the first candidate's law, and the mean num_tries. The paths:
    # the native kernel's loop (eager CPU, where the kernels are built), and the pure ones:
    # one fixed block (CPU, continued on the host if short), the same with the device-side
    # assertion instead of a read, and the block-after-block loop used where no fixed block
    # is planned.
    if path != "native":
        monkeypatch.setattr(torchnce._sampling.fast, "ENABLED", False)
    elif not torchnce.native_available().available:
        pytest.skip("the native kernels are off or could not be built")
    if path == "device":
        monkeypatch.setattr(torchnce._common.checks, "HOST_READS_ON_CPU", False)
    if path == "loop":
        monkeypatch.setattr(torchnce._sampling.unique, "MAX_BLOCK", 0)
        torchnce._sampling.closed_form._log_uniform_plan.cache_clear()
    sampler, range_max, num_sampled, trials = make(kind, 12), 12, 6, 3000
    p32 = sampler.probability(torch.arange(range_max)).numpy()
    p = p32.astype(np.float64) / p32.astype(np.float64).sum()
    g, rng = gen(3), np.random.default_rng(3)
    ours, loop = np.zeros(range_max), np.zeros(range_max)
    ours_first, loop_first = np.zeros(range_max), np.zeros(range_max)
    ours_tries, loop_tries = [], []
    for _ in range(trials):
        out = sampler.sample(torch.arange(range_max)[None, :], num_sampled, generator=g)
        ours[out.sampled_candidates.numpy()] += 1
        ours_first[int(out.sampled_candidates[0])] += 1
        ours_tries.append(_num_tries(p32, out, num_sampled))
        picked, tries = rejection_loop(p, num_sampled, rng)
        loop[picked] += 1
        loop_first[picked[0]] += 1
        loop_tries.append(tries)
    assert stats.chi2_contingency(np.stack([ours, loop])).pvalue > 1e-4
    assert stats.chi2_contingency(np.stack([ours_first, loop_first]) + 0.5).pvalue > 1e-4
    spread = math.sqrt(np.var(loop_tries) * 2 / trials)
    assert abs(np.mean(ours_tries) - np.mean(loop_tries)) < 5 * spread


def _num_tries(p, out, num_sampled):
    """Recover num_tries from the expected counts of every class (a function of it)."""
    for n in range(num_sampled, 10_000):
        q = tf_expected(p, n, num_sampled)
        if np.array_equal(q, out.true_expected_count[0].numpy()):
            return n
    raise AssertionError("no num_tries reproduces the expected counts")


@kinds
@pytest.mark.usefixtures("path")
def test_unique_inclusion_frequency_near_expected_count(kind):
    # TensorFlow's Q = 1 - (1 - p)^num_tries approximates P(class is in the sample).
    sampler, trials = make(kind, 20), 2000
    g = gen(4)
    seen = torch.zeros(20)
    mean_q = torch.zeros(20)
    for _ in range(trials):
        out = sampler.sample(torch.arange(20)[None, :], 8, generator=g)
        seen[out.sampled_candidates] += 1
        mean_q += out.true_expected_count[0] / trials
    # Q's own approximation error is about 0.05 here, plus noise of ~0.01: the block and the
    # loop paths both give 0.054-0.071 over seeds 4-8 (the exact law is pinned by
    # test_unique_matches_rejection_loop).
    assert float((seen / trials - mean_q).abs().max()) < 0.08


@kinds
@pytest.mark.parametrize("num_sampled", [1, 7, 20])
@pytest.mark.usefixtures("path")
def test_unique_has_no_duplicates(kind, num_sampled):
    sampler = make(kind, 20)
    for seed in range(20):
        ids = sampler.sample(torch.tensor([[1]]), num_sampled, generator=gen(seed))[0]
        assert ids.unique().numel() == num_sampled
        assert bool(((ids >= 0) & (ids < 20)).all())


@kinds
@uniques
@pytest.mark.usefixtures("path")
def test_expected_counts_follow_tensorflow_formula(kind, unique):
    sampler = make(kind, 50)
    tc = torch.arange(50).reshape(5, 10)
    p = sampler.probability(torch.arange(50)).numpy()  # before the learned sampler updates
    out = sampler.sample(tc, 30, unique=unique, generator=gen(6))
    tries = _num_tries(p, out._replace(true_expected_count=out[1].reshape(1, 50)), 30)
    assert not unique or tries >= 30
    assert unique or tries == 30
    q = tf_expected(p, tries, 30)
    assert np.array_equal(out.true_expected_count.numpy(), q.reshape(5, 10))
    assert np.array_equal(out.sampled_expected_count.numpy(), q[out.sampled_candidates.numpy()])


@kinds
@uniques
def test_output_types(kind, unique):
    out = make(kind, 10).sample(torch.tensor([[1, 2], [3, 4]], dtype=torch.int32), 4, unique=unique)
    assert out.sampled_candidates.dtype == torch.int64 and out.sampled_candidates.shape == (4,)
    assert out.true_expected_count.dtype == torch.float32 and out.true_expected_count.shape == (
        2,
        2,
    )
    assert out.sampled_expected_count.dtype == torch.float32
    assert out.sampled_expected_count.shape == (4,)


def test_empty_batch():
    out = torchnce.uniform_candidate_sampler(torch.zeros(0, 2, dtype=torch.int64), 2, 3, True, 5)
    assert out.true_expected_count.shape == (0, 2)


def test_log_probability():
    sampler = torchnce.FixedUnigramSampler(3, unigrams=[0.0, 1.0, 3.0])
    torch.testing.assert_close(
        sampler.log_probability(torch.arange(3)),
        torch.tensor([-math.inf, math.log(0.25), math.log(0.75)]),
    )


# --- seeds and generators ---------------------------------------------------------------------

FUNCTIONS = {
    "uniform": lambda tc, u, **kw: torchnce.uniform_candidate_sampler(tc, 2, 3, u, 10, **kw),
    "log_uniform": lambda tc, u, **kw: torchnce.log_uniform_candidate_sampler(
        tc, 2, 3, u, 10, **kw
    ),
    "learned": lambda tc, u, **kw: torchnce.learned_unigram_candidate_sampler(
        tc, 2, 3, u, 10, **kw
    ),
    "fixed": lambda tc, u, **kw: torchnce.fixed_unigram_candidate_sampler(
        tc, 2, 3, u, 10, unigrams=[float(i + 1) for i in range(10)], **kw
    ),
}
functions = pytest.mark.parametrize("fn_name", list(FUNCTIONS))


@functions
@uniques
def test_seed_reproducible(fn_name, unique):
    tc = torch.tensor([[1, 2]])
    fn = FUNCTIONS[fn_name]
    if fn_name == "learned":  # the counts change between calls, so compare fresh samplers
        a = fn(tc, unique, seed=7, sampler=torchnce.LearnedUnigramSampler(10))
        b = fn(tc, unique, seed=7, sampler=torchnce.LearnedUnigramSampler(10))
    else:
        a, b = fn(tc, unique, seed=7), fn(tc, unique, seed=7)
    assert torch.equal(a.sampled_candidates, b.sampled_candidates)


@functions
def test_seed_and_generator_conflict(fn_name):
    with pytest.raises(ValueError, match=r"^seed and generator must not both be given"):
        FUNCTIONS[fn_name](torch.tensor([[1, 2]]), False, seed=1, generator=gen())


@functions
def test_generator_drives_the_draw(fn_name):
    tc = torch.tensor([[1, 2]])
    kw = {"sampler": torchnce.LearnedUnigramSampler(10)} if fn_name == "learned" else {}
    a = FUNCTIONS[fn_name](tc, True, generator=gen(11), **kw)
    kw = {"sampler": torchnce.LearnedUnigramSampler(10)} if fn_name == "learned" else {}
    b = FUNCTIONS[fn_name](tc, True, generator=gen(11), **kw)
    assert torch.equal(a.sampled_candidates, b.sampled_candidates)


def test_default_generator_follows_manual_seed():
    torch.manual_seed(3)
    a = torchnce.log_uniform_candidate_sampler(torch.tensor([[1]]), 1, 5, True, 100)
    torch.manual_seed(3)
    b = torchnce.log_uniform_candidate_sampler(torch.tensor([[1]]), 1, 5, True, 100)
    assert torch.equal(a.sampled_candidates, b.sampled_candidates)


# --- learned unigram state --------------------------------------------------------------------


def test_learned_uses_counts_before_the_batch():
    sampler = torchnce.LearnedUnigramSampler(4)
    out = sampler.sample(torch.tensor([[2], [2], [2]]), 2, unique=False, generator=gen())
    assert out.true_expected_count.tolist() == [[0.5]] * 3  # 2 · 1/4, not 2 · 4/7
    assert sampler.counts.tolist() == [1, 1, 4, 1]


def test_learned_function_registry_and_explicit_sampler():
    tc = torch.tensor([[3]])
    args = (tc, 1, 2, False, 6)
    first = torchnce.learned_unigram_candidate_sampler(*args, seed=424242)
    second = torchnce.learned_unigram_candidate_sampler(*args, seed=424242)
    assert float(first.true_expected_count) == pytest.approx(2 / 6)
    assert float(second.true_expected_count) == pytest.approx(2 * 2 / 7)  # the counts persisted
    sampler = torchnce.LearnedUnigramSampler(6)
    fresh = torchnce.learned_unigram_candidate_sampler(*args, seed=424242, sampler=sampler)
    assert float(fresh.true_expected_count) == pytest.approx(2 / 6)
    assert sampler.counts.tolist() == [1, 1, 1, 2, 1, 1]


def test_learned_rejected_call_leaves_counts():
    sampler = torchnce.LearnedUnigramSampler(5)
    sampler.sample(torch.tensor([[1]]), 2, generator=gen())
    before = sampler.counts.clone()
    with pytest.raises(ValueError, match=r"^true_classes must hold ids"):
        sampler.sample(torch.tensor([[1], [5]]), 2, generator=gen())
    with pytest.raises(ValueError, match=r"^num_sampled must be <= range_max"):
        sampler.sample(torch.tensor([[1]]), 6, generator=gen())
    assert torch.equal(sampler.counts, before)


def test_learned_total_is_capped():
    # Only the first 2^31 - 1 - W true classes are added (docs/tf-semantics.md §6.7).
    sampler = torchnce.LearnedUnigramSampler(2)
    sampler.load_state_dict(
        {
            "counts": torch.tensor([2**31 - 10, 5], dtype=torch.int32),
            "_extra_state": {"recent": torch.zeros(0, dtype=torch.int64)},
        }
    )
    sampler.sample(torch.ones(10, 1, dtype=torch.int64), 1, unique=False, generator=gen())
    assert sampler.counts.tolist() == [2**31 - 10, 9]
    assert sampler.total == 2**31 - 1


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.usefixtures("path")
def test_learned_state_dict_resumes_identically(unique):
    range_max, rng = 300, np.random.default_rng(8)
    sizes = (50, 530_000, 30, 20)  # the second batch passes the fold threshold of 2^20 classes
    batches = [torch.from_numpy(rng.integers(0, range_max, (n, 2))) for n in sizes]
    a, g = torchnce.LearnedUnigramSampler(range_max), gen(9)
    a.sample(batches[0], 16, unique=unique, generator=g)
    a.sample(batches[1], 16, unique=unique, generator=g)  # folds the recent classes
    assert a.state_dict()["_extra_state"]["recent"].numel() == 0  # folded
    a.sample(batches[2], 16, unique=unique, generator=g)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = torchnce.LearnedUnigramSampler(range_max)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    g_b = torch.Generator()
    g_b.set_state(g.get_state())
    for batch in batches[3:] * 3:
        out_a = a.sample(batch, 16, unique=unique, generator=g)
        out_b = b.sample(batch, 16, unique=unique, generator=g_b)
        for x, y in zip(out_a, out_b, strict=True):
            assert torch.equal(x, y)
    assert torch.equal(a.counts, b.counts)


@pytest.mark.usefixtures("path")
def test_learned_draws_fit_after_folding():
    # Past the fold threshold (2^20 recent classes) the static cumulative sum takes over.
    sampler = torchnce.LearnedUnigramSampler(40)
    sampler.sample((torch.arange(1_100_000) % 40 // 8)[:, None], 1, generator=gen(12))
    assert sampler.state_dict()["_extra_state"]["recent"].numel() == 0  # folded
    sampler.sample(torch.full((500, 1), 39), 1, generator=gen(13))  # and a recent tail
    out = sampler.sample(torch.tensor([[0]]), 100_000, unique=False, generator=gen(14))
    observed = torch.bincount(out.sampled_candidates, minlength=40).double()
    p = sampler.counts.double() - (torch.arange(40) == 0).double()  # minus the last batch's 0
    assert stats.chisquare(observed, p / p.sum() * observed.sum()).pvalue > 1e-4


def test_learned_to_and_repr():
    sampler = torchnce.LearnedUnigramSampler(7).to("cpu")
    assert "range_max=7" in repr(sampler)
    assert list(sampler.state_dict()) == ["counts", "_extra_state"]


def test_tables_keep_dtypes_under_module_casts():
    # A model's .double() / .half() must not round the float32 probabilities or the float64
    # alias thresholds: they are TensorFlow's numbers.
    fixed = torchnce.FixedUnigramSampler(3, unigrams=[1.0, 2.0, 3.0])
    learned = torchnce.LearnedUnigramSampler(3)
    model = torch.nn.ModuleDict({"fixed": fixed, "learned": learned}).half().double()
    assert fixed.probs.dtype == torch.float32 and fixed.threshold.dtype == torch.float64
    assert learned.counts.dtype == torch.int32
    out = fixed.sample(torch.tensor([[2]]), 2, unique=False, generator=gen())
    assert out.true_expected_count.dtype == torch.float32
    assert float(out.true_expected_count) == 1.0  # 2 · 3/6
    assert model is not None


def test_bad_state_dict():
    sampler = torchnce.LearnedUnigramSampler(3)
    state = {
        "counts": torch.tensor([1, 0, 1], dtype=torch.int32),
        "_extra_state": {"recent": torch.zeros(0, dtype=torch.int64)},
    }
    with pytest.raises(ValueError, match=r"^counts must be 3 integers >= 1"):
        sampler.load_state_dict(state)


# --- fixed unigram ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_fixed_unigram_alias_table_is_exact(size):
    # Column c keeps itself with probability threshold[c] - c, else gives alias[c]; summed
    # over the columns this must rebuild P exactly (to the table's 2^-30 resolution).
    rng = np.random.default_rng(size)
    weights = np.append(rng.random(size) ** 3 * (rng.random(size) < 0.8), 1.0).astype(np.float32)
    sampler = torchnce.FixedUnigramSampler(size + 1, unigrams=weights.tolist())
    keep = sampler.threshold - torch.arange(size + 1, dtype=torch.float64)
    assert bool(((keep >= 0) & (keep <= 1)).all())
    implied = keep.clone().index_add_(0, sampler.alias, 1 - keep) / (size + 1)
    exact = torch.from_numpy(weights.astype(np.float64) / weights.astype(np.float64).sum())
    torch.testing.assert_close(implied, exact, rtol=0, atol=1e-9)


def test_fixed_unigram_shard_quirk():
    # reserved=2, shards=2, shard=0: one reserved id in the shard, then the word ids start at 1
    # (not 2), so TensorFlow keeps unigrams 2, 4, 6 (docs/tf-semantics.md §6.8).
    sampler = torchnce.FixedUnigramSampler(
        4, num_reserved_ids=2, num_shards=2, shard=0, unigrams=[1.0, 2, 3, 4, 5, 6]
    )
    torch.testing.assert_close(
        sampler.probability(torch.arange(4)), torch.tensor([0.0, 2 / 12, 4 / 12, 6 / 12])
    )


def test_vocab_file_format(tmp_path):
    # Last comma field, surrounding whitespace, CRLF, hex and empty lines as strtof reads them.
    path = tmp_path / "v.txt"
    path.write_bytes(b"a,b,1\r\n\n 2 \n0x3\nd,4\t\n")
    sampler = torchnce.FixedUnigramSampler(4, vocab_file=path)
    torch.testing.assert_close(
        sampler.probability(torch.arange(4)), torch.tensor([0.1, 0.2, 0.3, 0.4])
    )


@pytest.mark.parametrize("line", ["c,x", "3.5x", " ", "1_0", "3,"])
def test_vocab_file_bad_line(tmp_path, line):
    path = tmp_path / "v.txt"
    path.write_text(f"1\n2\n{line}\n4\n")
    with pytest.raises(
        ValueError,
        match=r"^vocab_file line 3 must end with a number.*Wrong vocabulary format at line",
    ):
        torchnce.FixedUnigramSampler(4, vocab_file=path)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1e6, width=32), min_size=1, max_size=300), st.integers(0, 3))
def test_fixed_unigram_total_is_float32_running_sum(unigrams, reserved):
    if sum(unigrams) == 0:
        return
    sampler = torchnce.FixedUnigramSampler(
        len(unigrams) + reserved, num_reserved_ids=reserved, unigrams=unigrams
    )
    w = np.asarray(unigrams, np.float32)
    total = np.add.accumulate(w)[-1]  # numpy accumulates float32 strictly in order
    expected = np.concatenate([np.zeros(reserved, np.float32), w / total])
    assert np.array_equal(sampler.probability(torch.arange(len(expected))).numpy(), expected)


def test_fixed_unigram_unique_needs_enough_weights():
    sampler = torchnce.FixedUnigramSampler(4, unigrams=[0.0, 1.0, 0.0, 2.0])
    with pytest.raises(
        ValueError,
        match=r"^num_sampled must be <= the number of classes the sampler can draw \(2\)",
    ):
        sampler.sample(torch.tensor([[1]]), 3)
    assert sampler.sample(torch.tensor([[1]]), 3, unique=False, generator=gen())[0].shape == (3,)


def test_fixed_unigram_function_cache_rereads_changed_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("1\n3\n")
    first = torchnce.fixed_unigram_candidate_sampler(
        torch.tensor([[0]]), 1, 1, False, 2, vocab_file=str(path)
    )
    path.write_text("3\n1\n")
    os.utime(path, ns=(1, 1))
    second = torchnce.fixed_unigram_candidate_sampler(
        torch.tensor([[0]]), 1, 1, False, 2, vocab_file=str(path)
    )
    assert float(first.true_expected_count) == 0.25 and float(second.true_expected_count) == 0.75


def test_all_sampler_probability_is_undefined():
    with pytest.raises(NotImplementedError):
        torchnce.AllCandidateSampler().probability(torch.tensor([0]))


# --- errors -----------------------------------------------------------------------------------

FIXED = torchnce.fixed_unigram_candidate_sampler
ERRORS = [
    (
        TypeError,
        r"^distortion must be a float, got str",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 2, unigrams=[1.0, 2.0], distortion="1"),
    ),
    (
        ValueError,
        r"^distortion must be finite, got inf",
        lambda: torchnce.FixedUnigramSampler(2, unigrams=[1.0, 2.0], distortion=math.inf),
    ),
    (
        TypeError,
        r"^unigrams must be a sequence of floats, got list",
        lambda: torchnce.FixedUnigramSampler(2, unigrams=["a", "b"]),
    ),
    (
        TypeError,
        r"^vocab_file must be a path, got int",
        lambda: torchnce.FixedUnigramSampler(2, vocab_file=3),
    ),
    (
        TypeError,
        r"^true_classes must be an integer tensor of class ids, got torch.float32",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1.0]]), 1, 1, False, 5),
    ),
    (
        ValueError,
        r"^true_classes must be a matrix .*got shape \(2,\)",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([1, 2]), 1, 1, False, 5),
    ),
    (
        ValueError,
        r"^true_classes must have num_true=2 columns, got shape \(1, 3\)",
        lambda: torchnce.uniform_candidate_sampler(
            torch.zeros(1, 3, dtype=torch.int64), 2, 1, False, 5
        ),
    ),
    (
        ValueError,
        r"^num_sampled must be <= range_max \(5\) when unique=True, got 6 "
        r"\(Sampler's range is too small",
        lambda: torchnce.log_uniform_candidate_sampler(torch.tensor([[1]]), 1, 6, True, 5),
    ),
    (
        ValueError,
        r"^num_sampled must be >= 1, got 0",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 0, False, 5),
    ),
    (
        ValueError,
        r"^num_true must be >= 1, got 0",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 0, 1, False, 5),
    ),
    (
        TypeError,
        r"^unique must be a bool, got int",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 1, 1, 5),
    ),
    (
        TypeError,
        r"^seed must be an int, got str",
        lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 1, False, 5, seed="1"),
    ),
    (
        TypeError,
        r"^generator must be a torch.Generator",
        lambda: torchnce.uniform_candidate_sampler(
            torch.tensor([[1]]), 1, 1, False, 5, generator=3
        ),
    ),
    (
        ValueError,
        r"^vocab_file or unigrams must be given, got neither "
        r"\(Must provide either vocab_file or unigrams",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 5),
    ),
    (
        ValueError,
        r"^vocab_file and unigrams must not both be given"
        r".*Must only provide one of vocab_file and unigrams",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 2, vocab_file="x", unigrams=[1.0, 2.0]),
    ),
    (
        ValueError,
        r"^unigrams must be finite and >= 0, got a weight -2",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 3, unigrams=[1.0, -2.0, 3.0]),
    ),
    (
        ValueError,
        r"^unigrams must have a positive, finite total weight",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 2, unigrams=[0.0, 0.0]),
    ),
    (
        ValueError,
        r"^shard must be in \[0, num_shards=2\), got 2",
        lambda: FIXED(
            torch.tensor([[1]]), 1, 1, False, 2, unigrams=[1.0, 2.0], num_shards=2, shard=2
        ),
    ),
    (
        ValueError,
        r"^num_shards must be >= 1, got 0",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 2, unigrams=[1.0, 2.0], num_shards=0),
    ),
    (
        ValueError,
        r"^num_reserved_ids must be >= 0, got -1",
        lambda: FIXED(
            torch.tensor([[1]]), 1, 1, False, 2, unigrams=[1.0, 2.0], num_reserved_ids=-1
        ),
    ),
    (
        ValueError,
        r"^range_max must equal the number of weights in this shard \(2\), got 3 "
        r"\(range is 3 must be equal to weights size 2\)",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 3, unigrams=[1.0, 2.0]),
    ),
    (
        ValueError,
        r"^distortion must keep every weight",
        lambda: FIXED(torch.tensor([[1]]), 1, 1, False, 2, unigrams=[0.0, 2.0], distortion=-1.0),
    ),
    (
        TypeError,
        r"^sampler must be a LearnedUnigramSampler, got UniformSampler",
        lambda: torchnce.learned_unigram_candidate_sampler(
            torch.tensor([[1]]), 1, 1, False, 5, sampler=torchnce.UniformSampler(5)
        ),
    ),
    (
        ValueError,
        r"^sampler must have range_max=5, got 6",
        lambda: torchnce.learned_unigram_candidate_sampler(
            torch.tensor([[1]]), 1, 1, False, 5, sampler=torchnce.LearnedUnigramSampler(6)
        ),
    ),
    (
        ValueError,
        r"^true_classes must hold ids in \[0, 3\), got 3 \(out of range",
        lambda: torchnce.all_candidate_sampler(torch.tensor([[3]]), 1, 3, True),
    ),
    (
        ValueError,
        r"^ids must hold ids in \[0, 4\), got -1",
        lambda: torchnce.UniformSampler(4).probability(torch.tensor([-1])),
    ),
    (
        TypeError,
        r"^ids must be an integer tensor",
        lambda: torchnce.LogUniformSampler(4).probability(torch.tensor([0.5])),
    ),
]


@pytest.mark.parametrize(("error", "pattern", "call"), ERRORS, ids=[e[1][1:30] for e in ERRORS])
def test_errors(error, pattern, call):
    with pytest.raises(error, match=pattern):
        call()


# --- fuzzing regressions ---------------------------------------------------------------------


def _alive_learned_samplers() -> int:
    gc.collect()
    return sum(type(o) is torchnce.LearnedUnigramSampler for o in gc.get_objects())  # final


def test_learned_function_keeps_a_bounded_number_of_samplers():
    # seed=step makes every call a new configuration: one sampler each was kept for the life
    # of the process (200 calls at C = 10⁶ held 3 GB). Only the most recent few are kept now.
    before = _alive_learned_samplers()
    for step in range(40):
        torchnce.learned_unigram_candidate_sampler(torch.tensor([[1]]), 1, 2, False, 50,
                                                   seed=10_000 + step)
    assert _alive_learned_samplers() - before <= 8


def test_learned_function_recent_configuration_keeps_learning():
    # Bounding the registry keeps TensorFlow's rule for a configuration in use: repeated
    # identical calls keep learning, even with other configurations in between.
    args = (torch.tensor([[3]]), 1, 2, False, 6)
    torchnce.learned_unigram_candidate_sampler(*args, seed=515151)
    for step in range(3):
        torchnce.learned_unigram_candidate_sampler(*args, seed=616161 + step)
    again = torchnce.learned_unigram_candidate_sampler(*args, seed=515151)
    assert float(again.true_expected_count) == pytest.approx(2 * 2 / 7)  # counts 1,1,1,2,1,1


def test_fixed_unigram_weight_below_the_alias_resolution_is_not_drawable():
    # 1e-30 is a positive float32 weight, but it rounds to mass 0 in the alias table (units of
    # 2⁻⁴⁰ of a column): the class is never drawn, so 3 unique draws from 3 classes stalled
    # for minutes before a RuntimeError. It is refused at once, like a zero weight.
    sampler = torchnce.FixedUnigramSampler(3, unigrams=[1.0, 1.0, 1e-30])
    assert float(sampler.probability(torch.tensor([2]))) > 0
    with pytest.raises(ValueError, match=r"^num_sampled must be <= the number of classes "
                                         r"the sampler can draw \(2\)"):
        sampler.sample(torch.tensor([[1]]), 3)
    with pytest.raises(ValueError, match=r"^num_sampled must be <= the number of classes"):
        torchnce.fixed_unigram_candidate_sampler(torch.tensor([[1]]), 1, 3, True, 3,
                                                 unigrams=[1.0, 1.0, 1e-30])
    assert sorted(sampler.sample(torch.tensor([[1]]), 2, generator=gen())[0].tolist()) == [0, 1]


def test_the_seed_stream_is_uniform():
    # seed='s stream (SplitMix64 of a counter): 64 equal buckets of u and of its lowest
    # mantissa bits, chi-squared; two seeds give different streams; a stream continues.
    from torchnce._sampling.draw import SeedStream

    u = SeedStream(7).rand(200_000, torch.device("cpu"))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    high = torch.bincount((u * 64).long(), minlength=64).double()
    low = torch.bincount((u * 2.0**53).long() % 64, minlength=64).double()
    assert stats.chisquare(high).pvalue > 1e-4
    assert stats.chisquare(low).pvalue > 1e-4
    assert not torch.equal(SeedStream(8).rand(10, u.device), u[:10])
    stream = SeedStream(7)
    parts = torch.cat((stream.rand(3, u.device), stream.rand(7, u.device)))
    assert torch.equal(parts, u[:10])
