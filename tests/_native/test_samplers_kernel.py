"""The native sampler kernels (``samplers.cpp``) against the pure-PyTorch path they replace on
eager CPU (``torchnce._sampling.fast.ENABLED = False`` forces the pure one).

Both paths draw from the same stream (a ``seed=`` call's counter stream, or one int64 read from
the generator seeding it), so the oracle is the pure path itself: the same candidates, bit for
bit; the expected counts to float32 tolerance (libm's scalar functions against torch's
vectorised ones); the same learned counts and the generator left in the same state. The
distributions themselves are pinned by tests/_sampling (which run on the native path by
default) and here by χ² tests of the native draws against ``probability``, and ``num_tries``
against TensorFlow's loop run in Python.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import threading
from copy import deepcopy

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

import torchnce
from torchnce._native import samplers as native_samplers
from torchnce._sampling import fast

native = pytest.mark.skipif(not torchnce.native_available().available,
                            reason="the native kernels are off or could not be built")

KINDS = ["uniform", "log_uniform", "fixed", "learned"]
kinds = pytest.mark.parametrize("kind", KINDS)
uniques = pytest.mark.parametrize("unique", [False, True])
streams = pytest.mark.parametrize("stream", ["seed", "generator", "default"])


def weights(range_max):
    """Zipf-like word counts with ties and a zero (a class that is never drawn)."""
    w = [float(1 + (1000 // (i + 1)) % 17) for i in range(range_max)]
    w[range_max // 2] = 0.0
    return w


def sampler_call(kind, range_max):
    """A function ``(tc, S, unique, **stream) -> SampledValues`` through the public API; the
    learned sampler is a fresh one per call of this function, so both paths start alike."""
    if kind == "uniform":
        return lambda tc, s, u, **kw: torchnce.uniform_candidate_sampler(tc, tc.shape[1], s, u,
                                                                         range_max, **kw)
    if kind == "log_uniform":
        return lambda tc, s, u, **kw: torchnce.log_uniform_candidate_sampler(
            tc, tc.shape[1], s, u, range_max, **kw)
    if kind == "fixed":  # the function for seed= (the sampler's sample has no seed)
        w = weights(range_max)
        sampler = torchnce.FixedUnigramSampler(range_max, unigrams=w, distortion=0.75)
        return lambda tc, s, u, **kw: (
            torchnce.fixed_unigram_candidate_sampler(tc, tc.shape[1], s, u, range_max,
                                                     unigrams=w, distortion=0.75, **kw)
            if "seed" in kw else sampler.sample(tc, s, unique=u, **kw))
    learned = torchnce.LearnedUnigramSampler(range_max)
    return lambda tc, s, u, **kw: torchnce.learned_unigram_candidate_sampler(
        tc, tc.shape[1], s, u, range_max, sampler=learned, **kw)


def run(enabled, fn, stream, seed):
    """``fn(**stream kwargs)`` on one path, and one draw of the generator afterwards."""
    old = fast.ENABLED
    fast.ENABLED = enabled
    try:
        if stream == "seed":
            return fn(seed=seed), None
        if stream == "generator":
            g = torch.Generator().manual_seed(seed)
            return fn(generator=g), torch.rand(1, generator=g)
        torch.manual_seed(seed)
        return fn(), torch.rand(1)
    finally:
        fast.ENABLED = old


def assert_same(got, want):
    assert torch.equal(got.sampled_candidates, want.sampled_candidates)
    assert got.true_expected_count.shape == want.true_expected_count.shape
    torch.testing.assert_close(got.true_expected_count, want.true_expected_count)
    torch.testing.assert_close(got.sampled_expected_count, want.sampled_expected_count)


def labels(range_max, batch=40, num_true=3, seed=0):
    """Zipfian true classes, as word ids sorted by frequency."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, num_true, generator=g, dtype=torch.float64)
    return torch.expm1(u * math.log1p(range_max)).long().clamp_(max=range_max - 1)


# --- native against pure ----------------------------------------------------------------------


@native
@kinds
@uniques
@streams
@pytest.mark.parametrize("range_max", [7, 1000, 10**6])
@pytest.mark.parametrize("num_sampled", [1, 5, 300])
def test_native_draws_what_the_pure_path_draws(kind, unique, stream, range_max, num_sampled):
    if unique and num_sampled > range_max - (kind == "fixed"):
        pytest.skip("more unique samples than drawable classes")
    tc = labels(range_max)
    got, after_got = run(True, lambda **kw: sampler_call(kind, range_max)(
        tc, num_sampled, unique, **kw), stream, 11)
    want, after_want = run(False, lambda **kw: sampler_call(kind, range_max)(
        tc, num_sampled, unique, **kw), stream, 11)
    assert_same(got, want)
    if after_got is not None:  # both paths took the same from the generator
        assert torch.equal(after_got, after_want)


@native
@pytest.mark.parametrize("kind", ["uniform", "log_uniform"])
def test_a_large_unique_sample_has_its_own_id_set(kind):
    # S > 16384: the kernel's set of drawn ids is a table of the call's own, not the thread's.
    tc = labels(10**6, 4, 1)
    got, _ = run(True, lambda **kw: sampler_call(kind, 10**6)(tc, 20_000, True, **kw), "seed", 3)
    want, _ = run(False, lambda **kw: sampler_call(kind, 10**6)(tc, 20_000, True, **kw), "seed", 3)
    assert_same(got, want)
    assert got.sampled_candidates.unique().numel() == 20_000


@native
def test_the_counter_stream_is_the_seed_streams_bit_for_bit():
    # 2^53 classes: each id is floor(u·2^53), the 53 bits of the stream's value itself.
    tc = torch.zeros(1, 1, dtype=torch.int64)
    for seed in (0, 1, -5, 2**63 - 1):
        got, _ = run(True, lambda **kw: torchnce.uniform_candidate_sampler(
            tc, 1, 1000, False, 2**53, **kw), "seed", seed)
        stream = torchnce._sampling.draw.SeedStream(seed)
        want = (stream.rand(1000, torch.device("cpu")) * 2.0**53).long()
        assert torch.equal(got.sampled_candidates, want)


@native
@uniques
def test_the_learned_state_follows_the_pure_path_through_folds(unique):
    # Fold after every few calls (a small fold size), with a generator shared by the calls:
    # each call's candidates, counts, total, recent classes and the device total agree.
    range_max = 500
    samplers = []
    for enabled in (True, False):
        old, fast.ENABLED = fast.ENABLED, enabled
        try:
            sampler = torchnce.LearnedUnigramSampler(range_max)
            sampler._fold_at = 700
            g = torch.Generator().manual_seed(3)
            outs = [sampler.sample(labels(range_max, 100, 2, seed=i), 60, unique=unique,
                                   generator=g) for i in range(12)]
        finally:
            fast.ENABLED = old
        samplers.append((sampler, outs))
    (ours, got), (pure, want) = samplers
    for a, b in zip(got, want, strict=True):
        assert_same(a, b)
    assert torch.equal(ours.counts, pure.counts)
    assert ours.total == pure.total == int(ours._total_dev)
    assert torch.equal(ours.get_extra_state()["recent"], pure.get_extra_state()["recent"])
    assert ours._base_total > 0  # the draws went through the guide of the folded counts
    if native_samplers.load_samplers():  # most of the calls ran in the module's core
        assert type(ours._core).__name__ == "LearnedCore"


@native
def test_the_learned_total_stops_at_the_limit_on_both_paths():
    results = []
    for enabled in (True, False):
        old, fast.ENABLED = fast.ENABLED, enabled
        try:
            sampler = torchnce.LearnedUnigramSampler(4)
            g = torch.Generator().manual_seed(0)  # an empty first call: the core from here on
            sampler.sample(torch.zeros(0, 1, dtype=torch.int64), 2, unique=False, generator=g)
            sampler.counts.fill_(1)
            sampler.counts[3] = 2**31 - 1 - 3 - 5  # W = 2^31 - 6: room for 5 more
            sampler._rebuild()
            sampler.sample(torch.tensor([[0], [1], [2], [0], [1], [2], [0]]), 2, unique=False,
                           generator=g)
        finally:
            fast.ENABLED = old
        results.append((sampler.counts.tolist(), sampler.total, int(sampler._total_dev)))
    assert results[0] == results[1]
    assert results[0][1] == 2**31 - 1


def learned_calls(sampler, seed, calls=6, num_sampled=40):
    """The next ``calls`` draws of ``sampler`` from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [sampler.sample(labels(sampler.range_max, 50, 2, seed=i), num_sampled, unique=False,
                           generator=g) for i in range(calls)]


@native
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "state_dict", "share_memory", "to"])
def test_a_copied_or_moved_learned_sampler_draws_what_the_original_does(how):
    # The core (the module's LearnedCore) is not copied: a copy makes its own at its first
    # native call, a reload or an in-place move binds the new buffers, and every one then
    # draws what the original draws.
    original = torchnce.LearnedUnigramSampler(300)
    learned_calls(original, 1)
    if how == "deepcopy":
        copy = deepcopy(original)
    elif how == "pickle":
        copy = pickle.loads(pickle.dumps(original))
    elif how == "state_dict":
        copy = torchnce.LearnedUnigramSampler(300)
        learned_calls(copy, 2)  # a live core, bound again by the load
        copy.load_state_dict(original.state_dict())
    elif how == "share_memory":
        copy = deepcopy(original)
        learned_calls(copy, 3, calls=0)
        copy.share_memory()
    else:
        copy = deepcopy(original).to(torch.float64)  # the dtypes stay; the buffers are rebound
    for a, b in zip(learned_calls(copy, 4), learned_calls(original, 4), strict=True):
        assert_same(a, b)
    assert torch.equal(copy.counts, original.counts) and copy.total == original.total
    assert torch.equal(copy.get_extra_state()["recent"], original.get_extra_state()["recent"])


@native
@pytest.mark.parametrize("binding", ["module", "ctypes"])
def test_threads_sharing_a_learned_sampler_lose_no_update(binding, monkeypatch):
    # Large draws run without the GIL, in the core or on the general path (the first call, a
    # grown buffer, a fold every few calls); the core's lock orders the calls, so every batch
    # is counted once, and the recent classes are the batches since the last fold, in order.
    if binding == "ctypes":  # no samplers' module: the ctypes calls, under the Python lock
        monkeypatch.setattr(native_samplers, "_FAST", False)
    sampler = torchnce.LearnedUnigramSampler(1000)
    sampler._fold_at = 40_000
    batches = [labels(1000, 4096, 2, seed=i) for i in range(48)]
    errors = []

    def work(first):
        try:
            g = torch.Generator().manual_seed(first)
            for tc in batches[first::4]:
                sampler.sample(tc, 4096 if first % 2 else 500, unique=first % 2 == 0,
                               generator=g)
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (type(sampler._core).__name__ == "_Pending") == (binding == "ctypes")
    everything = torch.cat([b.reshape(-1) for b in batches])
    assert sampler.total == 1000 + everything.numel() == int(sampler._total_dev)
    assert torch.equal(sampler.counts.long(), 1 + torch.bincount(everything, minlength=1000))
    recent = sampler.get_extra_state()["recent"]
    assert recent.numel() % 8192 == 0 and 0 < recent.numel() <= 40_000
    last = {tuple(b.reshape(-1)[:8].tolist()): b.reshape(-1) for b in batches}
    for chunk in recent.split(8192):  # each batch whole
        assert torch.equal(chunk, last[tuple(chunk[:8].tolist())])


@native
def test_a_learned_core_that_gives_up_raises_the_pure_paths_error():
    sampler = torchnce.LearnedUnigramSampler(5)

    class GivesUp:
        recent_len = 0

        def sample(self, *args):
            return None  # what the module's core returns where a unique draw gave up

    sampler._core = GivesUp()
    with pytest.raises(RuntimeError, match=r"^unique sampling needed more than 2147483647"):
        sampler.sample(torch.tensor([[1]]), 2, generator=torch.Generator())


@native
def test_per_example_draws_agree():
    # The per-row sampler draws through the samplers' cores (shared draws, then rows).
    sampler = torchnce.FixedUnigramSampler(50, unigrams=weights(50))
    rows = []
    for enabled in (True, False):
        old, fast.ENABLED = fast.ENABLED, enabled
        try:
            torch.manual_seed(4)
            rows.append(torchnce._sampling.per_example.sampler_rows(sampler, labels(50), 6))
        finally:
            fast.ENABLED = old
    assert_same(*rows)


@native
def test_non_contiguous_and_int32_true_classes():
    tc = labels(100, 10, 4)
    for variant in (tc.t().contiguous().t(), tc[:, ::2], tc.int()):
        got, _ = run(True, lambda **kw: torchnce.log_uniform_candidate_sampler(
            variant, variant.shape[1], 8, True, 100, **kw), "seed", 2)  # noqa: B023
        want, _ = run(False, lambda **kw: torchnce.log_uniform_candidate_sampler(
            variant.contiguous(), variant.shape[1], 8, True, 100, **kw), "seed", 2)  # noqa: B023
        assert_same(got, want)


@native
@kinds
@pytest.mark.parametrize("stream", ["generator", "default"])
def test_a_sampler_core_takes_a_view_of_the_labels(kind, stream):
    """The modules call the samplers' cores with their labels as given: a strided view (a
    column of a wider tensor) draws what its contiguous copy draws, on both paths, with the
    expected counts of the view's own ids. (The native call read a view's memory as if it were
    contiguous until 2026-12-02.)"""
    wide = labels(1000, 40, 5, seed=3)
    view = wide[:, 1:2]  # strides (5, 1)
    assert not view.is_contiguous()
    results, states = [], []
    for tc, enabled in ((view, True), (view.contiguous(), True), (view.contiguous(), False)):
        if kind == "uniform":
            sampler = torchnce.UniformSampler(1000)
        elif kind == "log_uniform":
            sampler = torchnce.LogUniformSampler(1000)
        elif kind == "fixed":
            sampler = torchnce.FixedUnigramSampler(1000, unigrams=weights(1000))
        else:
            sampler = torchnce.LearnedUnigramSampler(1000)
        results.append(run(enabled, lambda sampler=sampler, tc=tc, **kw: sampler._sample(
            tc, 16, True, kw.get("generator")), stream, 9)[0])
        states.append(sampler.state_dict())
    assert_same(results[0], results[1])
    assert_same(results[1], results[2])
    for other in states[1:]:  # a learned sampler's counts and extra state, exactly
        torch.testing.assert_close(other, states[0], rtol=0, atol=0)


@native
@kinds
@uniques
def test_the_python_module_and_the_ctypes_call_draw_alike(kind, unique, monkeypatch):
    """A draw with a generator goes through the pybind11 module (pysamplers.cpp) where it
    built, else through ctypes: the same candidates, counts and generator state either way."""
    if not native_samplers.load_samplers():
        pytest.skip("the samplers' module did not build")
    tc = labels(1000, 30, 2, seed=5)
    results = []
    for module in (None, False):  # None: the module (loaded on demand); False: ctypes
        monkeypatch.setattr(native_samplers, "_FAST", module)
        call = sampler_call(kind, 1000)
        results.append(run(True, lambda call=call, **kw: call(tc, 12, unique, **kw),
                           "generator", 4))
    (a, after_a), (b, after_b) = results
    assert_same(a, b)
    assert torch.equal(after_a, after_b)


def test_an_empty_batch():
    out = torchnce.learned_unigram_candidate_sampler(
        torch.zeros(0, 2, dtype=torch.int64), 2, 3, True, 5,
        sampler=torchnce.LearnedUnigramSampler(5))
    assert out.true_expected_count.shape == (0, 2)
    assert out.sampled_candidates.unique().numel() == 3


# --- which path runs -----------------------------------------------------------------------------


@native
def test_the_native_path_runs_on_eager_cpu_only():
    tc = torch.tensor([[1]])
    assert fast.runs(tc)
    assert not fast.runs(torch.tensor([[1]], device="meta"))

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Passthrough():  # a dispatch mode sees every op: the pure path
        assert not fast.runs(tc)
        out = torchnce.uniform_candidate_sampler(tc, 1, 3, True, 10, seed=1)
    assert torch.equal(out.sampled_candidates,
                       torchnce.uniform_candidate_sampler(tc, 1, 3, True, 10, seed=1)[0])


@native
def test_kernels_off_gives_the_pure_path_and_the_same_draws():
    code = ("import torch, torchnce; from torchnce._sampling import fast;"
            "tc = torch.tensor([[1, 5]]);"
            "out = torchnce.log_uniform_candidate_sampler(tc, 2, 20, True, 100, seed=9);"
            "assert not fast.runs(tc);"
            "print(out.sampled_candidates.tolist())")
    env = {**os.environ, "TORCHNCE_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    here = torchnce.log_uniform_candidate_sampler(torch.tensor([[1, 5]]), 2, 20, True, 100,
                                                  seed=9)
    assert done.stdout.strip() == str(here.sampled_candidates.tolist())


def test_threads_each_use_their_own_call():
    tc = labels(1000, 64, 1)
    want = torchnce.log_uniform_candidate_sampler(tc, 1, 200, True, 1000, seed=5)
    failures = []

    def work():
        for _ in range(200):
            out = torchnce.log_uniform_candidate_sampler(tc, 1, 200, True, 1000, seed=5)
            if not torch.equal(out.sampled_candidates, want.sampled_candidates):
                failures.append(out)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@native
def test_a_unique_draw_that_gives_up_raises_the_pure_paths_error(monkeypatch):
    monkeypatch.setattr(native_samplers, "uniform", lambda *args: None)  # the kernel gave up
    with pytest.raises(RuntimeError, match=r"^unique sampling needed more than 2147483647"):
        torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 3, True, 10)


def test_ranges_past_the_kernels_limit_take_the_pure_path():
    out = torchnce.uniform_candidate_sampler(torch.tensor([[2**62 + 5]]), 1, 4, True, 2**62 + 9,
                                             seed=0)
    assert out.sampled_candidates.unique().numel() == 4
    assert float(out.true_expected_count) == pytest.approx(4 / (2**62 + 9), rel=1e-6)


# --- statistics of the native draws --------------------------------------------------------------


def probabilities(kind, range_max):
    if kind == "uniform":
        return np.full(range_max, 1.0 / range_max)
    if kind == "log_uniform":
        k = np.arange(range_max, dtype=np.float64)
        return np.log((k + 2) / (k + 1)) / np.log1p(range_max)
    if kind == "fixed":
        w = np.asarray(weights(range_max), np.float64) ** 0.75
        return w / w.sum()
    return np.full(range_max, 1.0 / range_max)  # a fresh learned sampler


@kinds
def test_native_draws_fit_the_distribution(kind):
    range_max = 40
    out = sampler_call(kind, range_max)(torch.tensor([[0]]), 200_000, False,
                                        generator=torch.Generator().manual_seed(1))
    observed = np.bincount(out.sampled_candidates.numpy(), minlength=range_max)
    p = probabilities(kind, range_max)
    keep = p > 0
    assert observed[~keep].sum() == 0
    assert stats.chisquare(observed[keep], p[keep] / p[keep].sum() * observed.sum()).pvalue > 1e-4


def _loop_tries(p, num_sampled, rng):
    """TensorFlow's rejection loop (docs/tf-semantics.md §6.3), its num_tries."""
    picked, tries = set(), 0
    while len(picked) < num_sampled:
        tries += 1
        picked.add(int(rng.choice(len(p), p=p)))
    return tries


@kinds
def test_native_num_tries_follow_tensorflows_loop(kind):
    # num_tries is recovered from a candidate's count Q = 1 - (1 - p)^n (or p·S when n = S);
    # its mean over 2000 calls against the loop's, within 5 sigma. No true classes, so the
    # learned sampler keeps its (uniform) law.
    range_max, num_sampled, trials = 12, 6, 2000
    call = sampler_call(kind, range_max)
    p = probabilities(kind, range_max)
    g = torch.Generator().manual_seed(7)
    ours = []
    for _ in range(trials):
        out = call(torch.zeros(0, 1, dtype=torch.int64), num_sampled, True, generator=g)
        q, pc = float(out.sampled_expected_count[0]), p[int(out.sampled_candidates[0])]
        same = math.isclose(q, pc * num_sampled, rel_tol=1e-5)
        ours.append(num_sampled if same else round(math.log1p(-q) / math.log1p(-pc)))
    rng = np.random.default_rng(7)
    loop = [_loop_tries(p / p.sum(), num_sampled, rng) for _ in range(trials)]
    assert min(ours) >= num_sampled
    spread = math.sqrt(np.var(loop) * 2 / trials)
    assert abs(np.mean(ours) - np.mean(loop)) < 5 * spread


# --- errors: validation stays in Python, before the call ------------------------------------------


BAD_CALLS = [
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[5]]), 1, 2, False, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[-1]]), 1, 2, True, 5, seed=1),
    lambda: torchnce.log_uniform_candidate_sampler(torch.tensor([[9]]), 1, 2, False, 5,
                                                   seed=1, generator=torch.Generator()),
    lambda: torchnce.log_uniform_candidate_sampler(torch.tensor([[1]]), 1, 6, True, 5),
    lambda: torchnce.log_uniform_candidate_sampler(torch.tensor([[1.0]]), 1, 2, True, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([1]), 1, 2, True, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 2, 2, True, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 0, True, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 2, 1, 5),
    lambda: torchnce.uniform_candidate_sampler(torch.tensor([[1]]), 1, 2, True, 5, generator=3),
    lambda: torchnce.learned_unigram_candidate_sampler(torch.tensor([[7]]), 1, 2, True, 5,
                                                       sampler=torchnce.UniformSampler(5)),
    lambda: torchnce.learned_unigram_candidate_sampler(
        torch.tensor([[1]]), 1, 2, True, 5, sampler=torchnce.LearnedUnigramSampler(6)),
    lambda: torchnce.learned_unigram_candidate_sampler(torch.tensor([[1]]), 1, 2, True, 2**31),
    lambda: torchnce.LearnedUnigramSampler(5).sample(torch.tensor([[5]]), 2),
    lambda: torchnce.FixedUnigramSampler(3, unigrams=[0.0, 1.0, 1.0]).sample(
        torch.tensor([[1]]), 3, unique=True),
    lambda: torchnce.FixedUnigramSampler(3, unigrams=[1.0, 1.0, 1.0]).sample(
        torch.tensor([[3]]), 2),
    lambda: torchnce.fixed_unigram_candidate_sampler(torch.tensor([[4]]), 1, 2, False, 3,
                                                     unigrams=[1.0, 2.0]),
]


@pytest.mark.parametrize("call", BAD_CALLS)
def test_bad_arguments_raise_the_pure_paths_error(call):
    errors = []
    for enabled in (True, False):
        old, fast.ENABLED = fast.ENABLED, enabled
        try:
            with pytest.raises((TypeError, ValueError)) as info:
                call()
        finally:
            fast.ENABLED = old
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_a_rejected_learned_call_leaves_the_counts():
    sampler = torchnce.LearnedUnigramSampler(5)
    with pytest.raises(ValueError, match=r"^true_classes must hold ids in \[0, 5\)"):
        sampler.sample(torch.tensor([[1], [5]]), 2)
    assert sampler.counts.tolist() == [1] * 5 and sampler.total == 5
