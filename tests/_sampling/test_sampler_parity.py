"""Parity of the candidate samplers with the real TensorFlow 2.21.

With ``unique=False`` the expected counts are ``fl32(P·S)``, so ``true_expected_count`` for
every id of the range pins ``P`` bit for bit: compared for every sampler over several ranges,
distortions, reserved ids and shards, and for the learned sampler along a sequence of calls.
With ``unique=True`` the counts depend on TensorFlow's random ``num_tries``; the test finds the
``num_tries`` that reproduces TensorFlow's counts and checks every class against it, within
2 ulp (glibc 2.36's ``log1pf`` and ``expm1f`` are each within 1 ulp of the correctly rounded
value torchnce computes). Draws are compared in distribution (TensorFlow's random stream is not
reproduced), and TensorFlow's error words are checked to appear in torchnce's messages.

If TensorFlow cannot be imported the module is skipped, unless ``CI`` is set: then it fails.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import torch
from scipy import stats

import torchnce

try:
    import tensorflow as tf
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("TensorFlow 2.21 is not installed", allow_module_level=True)


def ulps(a, b):
    """Largest distance in float32 units in the last place between two float32 arrays."""
    a = np.ascontiguousarray(np.asarray(a, np.float32)).view(np.int32).astype(np.int64)
    b = np.ascontiguousarray(np.asarray(b, np.float32)).view(np.int32).astype(np.int64)
    return int(np.abs(a - b).max()) if a.size else 0


def every_id(range_max):
    return np.arange(range_max, dtype=np.int64)[None, :]


def tf_counts(fn, ids, *args, **kwargs):
    out = fn(tf.constant(ids), ids.shape[1], *args, **kwargs)
    return [x.numpy() for x in out]


def zipf_unigrams(size, seed):
    rng = np.random.default_rng(seed)
    return (rng.zipf(1.3, size) % 100_000).astype(np.float64).tolist()


@pytest.mark.parametrize("range_max", [1, 7, 1000, 2**16])
@pytest.mark.parametrize("num_sampled", [1, 5, 64])
def test_uniform_counts(range_max, num_sampled):
    ids = every_id(range_max)
    theirs = tf_counts(tf.random.uniform_candidate_sampler, ids, num_sampled, False, range_max)
    ours = torchnce.uniform_candidate_sampler(
        torch.from_numpy(ids), range_max, num_sampled, False, range_max
    )
    assert ulps(ours.true_expected_count, theirs[1]) == 0


@pytest.mark.parametrize("range_max", [1, 7, 1000, 2**16])
@pytest.mark.parametrize("num_sampled", [1, 5, 64])
def test_log_uniform_counts(range_max, num_sampled):
    ids = every_id(range_max)
    theirs = tf_counts(tf.random.log_uniform_candidate_sampler, ids, num_sampled, False, range_max)
    ours = torchnce.log_uniform_candidate_sampler(
        torch.from_numpy(ids), range_max, num_sampled, False, range_max
    )
    assert ulps(ours.true_expected_count, theirs[1]) == 0


@pytest.mark.parametrize("range_max", [2**20 + 3, 2**31 + 11, 2**40])
def test_log_uniform_counts_huge_range(range_max):
    rng = np.random.default_rng(range_max % 1000)
    ids = np.concatenate([rng.integers(0, range_max, 3000), [0, 1, range_max - 1]])[None, :]
    theirs = tf_counts(tf.random.log_uniform_candidate_sampler, ids, 3, False, range_max)
    ours = torchnce.log_uniform_candidate_sampler(
        torch.from_numpy(ids), ids.shape[1], 3, False, range_max
    )
    assert ulps(ours.true_expected_count, theirs[1]) <= 1


@pytest.mark.parametrize("size", [10, 1000, 50_000])
@pytest.mark.parametrize("distortion", [0.0, 0.5, 0.75, 0.8, 1.0, 1.3])
@pytest.mark.parametrize("layout", [(0, 1, 0), (3, 1, 0), (2, 2, 0), (5, 3, 1), (4, 3, 2)])
def test_fixed_unigram_counts(size, distortion, layout):
    reserved, shards, shard = layout
    unigrams = zipf_unigrams(size, size)
    in_shard = len(range(shard, reserved, shards))
    range_max = in_shard + len(unigrams[(shard - in_shard) % shards :: shards])
    ids = every_id(range_max)
    kwargs = {
        "distortion": distortion,
        "num_reserved_ids": reserved,
        "num_shards": shards,
        "shard": shard,
        "unigrams": unigrams,
    }
    theirs = tf_counts(
        tf.random.fixed_unigram_candidate_sampler, ids, 3, False, range_max, **kwargs
    )
    ours = torchnce.fixed_unigram_candidate_sampler(
        torch.from_numpy(ids), range_max, 3, False, range_max, **kwargs
    )
    assert ulps(ours.true_expected_count, theirs[1]) == 0


def test_fixed_unigram_counts_from_file(tmp_path):
    unigrams = zipf_unigrams(2000, 1)
    path = tmp_path / "vocab.txt"
    path.write_text("".join(f"word{i},x,{u:g}\n" for i, u in enumerate(unigrams)))
    ids = every_id(2001)
    kwargs = {"vocab_file": str(path), "distortion": 0.75, "num_reserved_ids": 1}
    theirs = tf_counts(tf.random.fixed_unigram_candidate_sampler, ids, 4, False, 2001, **kwargs)
    ours = torchnce.fixed_unigram_candidate_sampler(
        torch.from_numpy(ids), 2001, 4, False, 2001, **kwargs
    )
    assert ulps(ours.true_expected_count, theirs[1]) == 0


@pytest.mark.parametrize("range_max", [1, 50, 3000])
def test_learned_unigram_counts_over_calls(range_max):
    # TensorFlow's eager kernel (and its counts) is cached per attributes (num_true included):
    # the seed makes this test's kernel its own and every call has num_true = 1. The probe
    # steps hold every id once; every batch's true classes are added after its call.
    rng = np.random.default_rng(range_max)
    sampler = torchnce.LearnedUnigramSampler(range_max)
    probe = every_id(range_max).T
    for step in range(6):
        batch = rng.integers(0, range_max, (64, 1)) if step % 2 else probe
        seed = 90_000 + range_max
        theirs = tf_counts(
            tf.random.learned_unigram_candidate_sampler, batch, 7, False, range_max, seed=seed
        )
        ours = torchnce.learned_unigram_candidate_sampler(
            torch.from_numpy(batch), batch.shape[1], 7, False, range_max, sampler=sampler
        )
        assert ulps(ours.true_expected_count, theirs[1]) == 0, step


def test_all_sampler():
    ids = np.array([[1, 2], [0, 4], [3, 3]], dtype=np.int64)
    theirs = tf_counts(tf.random.all_candidate_sampler, ids, 5, True)
    ours = torchnce.all_candidate_sampler(torch.from_numpy(ids), 2, 5, True)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)


def _counts_at(p, num_tries, num_sampled):
    """docs/tf-semantics.md §6.4, log1p/expm1 in double then rounded to float32 (as torchnce)."""
    if num_tries == num_sampled:
        return p * np.float32(num_sampled)
    log_miss = np.log1p(-p.astype(np.float64)).astype(np.float32) * np.float32(num_tries)
    return (-np.expm1(log_miss.astype(np.float64))).astype(np.float32)


@pytest.mark.parametrize("kind", ["uniform", "log_uniform"])
@pytest.mark.parametrize("range_max", [20, 1000])
def test_unique_counts(kind, range_max):
    fn = getattr(tf.random, f"{kind}_candidate_sampler")
    ours_fn = getattr(torchnce, f"{kind}_candidate_sampler")
    ids = every_id(range_max)
    p = ours_fn(torch.from_numpy(ids), range_max, 1, False, range_max).true_expected_count.numpy()[
        0
    ]
    for seed in range(5):
        theirs = tf_counts(fn, ids, 10, True, range_max, seed=seed)
        best = min(range(10, 2000), key=lambda n: ulps(_counts_at(p, n, 10), theirs[1][0]))
        assert ulps(_counts_at(p, best, 10), theirs[1][0]) <= 2
        assert ulps(_counts_at(p, best, 10)[theirs[0]], theirs[2]) <= 2
        # torchnce's own counts follow the same formula for its own num_tries
        ours = ours_fn(torch.from_numpy(ids), range_max, 10, True, range_max, seed=seed)
        mine = min(range(10, 2000), key=lambda n: ulps(_counts_at(p, n, 10), ours[1][0].numpy()))
        assert ulps(_counts_at(p, mine, 10), ours[1][0].numpy()) == 0


@pytest.mark.parametrize("kind", ["uniform", "log_uniform", "fixed"])
def test_draws_match_in_distribution(kind):
    # 100,000 independent draws from each library over 40 classes: a two-sample chi-square.
    ids = np.array([[0]], dtype=np.int64)
    extra = (
        {"unigrams": [float(i % 7 + 1) for i in range(40)], "distortion": 0.75}
        if kind == "fixed"
        else {}
    )
    name = "fixed_unigram" if kind == "fixed" else kind
    theirs = tf_counts(
        getattr(tf.random, f"{name}_candidate_sampler"), ids, 100_000, False, 40, seed=1, **extra
    )
    ours = getattr(torchnce, f"{name}_candidate_sampler")(
        torch.from_numpy(ids), 1, 100_000, False, 40, seed=1, **extra
    )
    table = np.stack(
        [np.bincount(theirs[0], minlength=40), np.bincount(ours[0].numpy(), minlength=40)]
    )
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_unique_draws_match_in_distribution():
    # 400 unique draws of 8 out of 30 log-uniform classes: inclusion counts and num_tries.
    ids = every_id(30)
    theirs, ours = np.zeros(30), np.zeros(30)
    g = torch.Generator().manual_seed(2)
    for i in range(400):
        t = tf_counts(tf.random.log_uniform_candidate_sampler, ids, 8, True, 30, seed=i + 1)
        theirs[t[0]] += 1
        o = torchnce.log_uniform_candidate_sampler(
            torch.from_numpy(ids), 30, 8, True, 30, generator=g
        )
        ours[o[0].numpy()] += 1
    assert stats.chi2_contingency(np.stack([theirs, ours])).pvalue > 1e-4


ERROR_CASES = [
    (
        "Sampler's range is too small",
        lambda m: m.log_uniform_candidate_sampler,
        ([[1, 2]], 2, 10, True, 5),
        {},
    ),
    ("out of range", lambda m: m.log_uniform_candidate_sampler, ([[0, 10]], 2, 3, False, 2), {}),
    (
        "true_classes must be a matrix",
        lambda m: m.uniform_candidate_sampler,
        ([1, 2], 1, 3, False, 5),
        {},
    ),
    (
        "true_classes must have num_true columns, expected: 3 was: 2",
        lambda m: m.uniform_candidate_sampler,
        ([[1, 2, 3]], 2, 3, False, 5),
        {},
    ),
    (
        "range is 8 must be equal to weights size",
        lambda m: m.fixed_unigram_candidate_sampler,
        ([[1]], 1, 3, False, 8),
        {"unigrams": [1.0] * 9},
    ),
    (
        "Must provide either vocab_file or unigrams",
        lambda m: m.fixed_unigram_candidate_sampler,
        ([[1]], 1, 3, False, 8),
        {},
    ),
    (
        "Must only provide one of vocab_file and unigrams",
        lambda m: m.fixed_unigram_candidate_sampler,
        ([[1]], 1, 3, False, 2),
        {"vocab_file": "x.txt", "unigrams": [1.0, 2.0]},
    ),
]


@pytest.mark.parametrize(
    ("words", "fn", "args", "kwargs"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_error_words_match_tensorflow(words, fn, args, kwargs):
    tc, *rest = args
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)) as theirs:
        fn(tf.random)(tf.constant(tc, tf.int64), *rest, **kwargs)
    assert words.replace(" ", "") in str(theirs.value).replace(" ", "")
    with pytest.raises(ValueError) as ours:
        fn(torchnce)(torch.tensor(tc), *rest, **kwargs)
    assert words in str(ours.value)


def test_wrong_vocabulary_format_words(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("a,1\nb,2\nc,x\n")
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="Wrong vocabulary format at line: c,x"
    ):
        tf.random.fixed_unigram_candidate_sampler(
            tf.constant([[0]], tf.int64), 1, 1, False, 3, vocab_file=str(path)
        )
    with pytest.raises(ValueError, match="Wrong vocabulary format at line: c,x"):
        torchnce.fixed_unigram_candidate_sampler(
            torch.tensor([[0]]), 1, 1, False, 3, vocab_file=str(path)
        )
