"""The native word2vec kernel against its pure-PyTorch twin, ``Word2Vec.step`` (itself pinned
to autograd through the public losses in tests/app/test_word2vec.py): same tables, examples
and negatives in, the same tables and loss out, to float32 tolerance.

The kernel trains one example after the other (word2vec's own SGD); the pure step computes a
batch from the tables at its start. The two are the same maths at a batch of one example,
which is where they are compared; a larger batch only sets how long a learning rate holds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import torchnce
from torchnce._native.sampling import alias_draws
from torchnce._native.word2vec import word2vec_batches, word2vec_skipgram
from torchnce._sampling.tables import alias_draw
from torchnce.app.word2vec import model as w2v_model
from torchnce.app.word2vec.corpus import load_corpus
from torchnce.app.word2vec.model import Word2Vec, Word2VecConfig, examples
from torchnce.app.word2vec.training import Trainer

native = pytest.mark.skipif(not torchnce.native_available().available,
                            reason="the native kernels are off or could not be built")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = ["the", "cat", "sees", "a", "dog", "and", "the", "dog", "sees", "the", "cat",
             "near", "a", "tree", "by", "the", "water"]
    gen = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (8,), generator=gen).tolist())
             for _ in range(60)]
    path = tmp_path_factory.mktemp("w2v") / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_corpus(path, 1)


def twins(corpus, batch_size=1, **settings):
    """The same model twice, native and pure, with non-zero output vectors."""
    config = Word2VecConfig(dim=12, num_sampled=4, batch_size=batch_size, **settings)
    pair = [Word2Vec(corpus, config, native=flag) for flag in (True, False)]
    for model in pair:
        model.output_vectors.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    return pair


@native
@pytest.mark.parametrize("loss", ["neg", "nce", "sampled_softmax"])
@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_native_batches_equal_the_pure_steps(corpus, loss, model):
    fast, pure = twins(corpus, model=model, loss=loss)
    gen = torch.Generator().manual_seed(1)
    inputs, mask, labels = examples(model, corpus.ids, corpus.lines, 2, gen)
    inputs, labels = inputs[:40], labels[:40]
    mask = None if mask is None else mask[:40]
    drawn = fast.negatives(labels, gen)
    sampled = drawn.sampled.clone()
    sampled[0, 1] = sampled[0, 3] = labels[0]  # an accidental hit, twice: the last copy counts
    classes = fast.loss.classes(labels, (sampled, drawn.true_count, drawn.sampled_count))
    lrs = [0.5 / (1 + i) for i in range(40)]  # large, so that a wrong update shows
    got = fast.train_batches(inputs, mask, classes, lrs)
    expected = pure.train_batches(inputs, mask, classes, lrs)
    assert got == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(fast.input_vectors, pure.input_vectors)
    torch.testing.assert_close(fast.output_vectors, pure.output_vectors)


@native
def test_a_batch_holds_its_learning_rate_for_each_of_its_examples(corpus):
    batched, single = twins(corpus, batch_size=7), twins(corpus)[0]
    batched = batched[0]
    gen = torch.Generator().manual_seed(4)
    inputs, mask, labels = examples("skipgram", corpus.ids, corpus.lines, 2, gen)
    inputs, labels = inputs[:40], labels[:40]
    classes = batched.negatives(labels, gen)
    lrs = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]  # 6 batches of 7, the last one short
    got = batched.train_batches(inputs, mask, classes, lrs)
    expected = single.train_batches(inputs, mask, classes, [lrs[i // 7] for i in range(40)])
    assert got == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(batched.output_vectors, single.output_vectors)


@native
@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_a_seeded_single_thread_run_gives_the_same_vectors(corpus, model, monkeypatch):
    # The native negatives have a random stream of their own: draw them as the pure path does,
    # from the same generator, so that both runs see the same negatives.
    monkeypatch.setattr(w2v_model, "alias_draws", lambda threshold, alias, n, gen:
                        alias_draw(threshold, alias, gen)(n))
    config = Word2VecConfig(model=model, dim=12, epochs=2, threads=1, batch_size=1)
    runs = []
    for flag in (True, False):
        trainer = Trainer(corpus, config)
        trainer.model = Word2Vec(corpus, config, native=flag)
        trainer.model.native_skipgram = False  # the batches kernel; its window twin below
        log = trainer.run(lambda words, loss: None)
        runs.append((trainer.model, log))
    (fast, fast_log), (pure, pure_log) = runs
    assert fast_log.examples == pure_log.examples > 0
    # Hundreds of SGD steps: float32 rounding differences compound, to about 1e-5 relative.
    torch.testing.assert_close(fast.input_vectors, pure.input_vectors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.output_vectors, pure.output_vectors, rtol=1e-4, atol=1e-5)


def arguments(n=5, k=3, vocab=6, dim=4):
    gen = torch.Generator().manual_seed(0)
    return dict(in_vec=torch.zeros(vocab, dim), out_vec=torch.zeros(vocab, dim),
                inputs=torch.randint(vocab, (n, 1), generator=gen), mask=None,
                labels=torch.randint(vocab, (n,), generator=gen),
                negatives=torch.randint(vocab, (n, k), generator=gen), true_logq=None,
                neg_logq=None, lrs=torch.full((1,), 0.1), softmax=False, remove_hits=False,
                batch_size=8)


@native
@pytest.mark.parametrize(("name", "value", "error", "match"), [
    ("in_vec", torch.zeros(6, 4, dtype=torch.float64), TypeError,
     r"^in_vec must be a torch.float32"),
    ("labels", torch.zeros(5, dtype=torch.int32), TypeError, r"^labels must be a torch.int64"),
    ("negatives", torch.zeros(5, 2, 2, dtype=torch.int64), ValueError, r"^negatives must be"),
    ("negatives", torch.full((5, 3), 6), ValueError, r"^negatives must hold ids in \[0, 6\)"),
    ("inputs", torch.full((5, 1), -1), ValueError, r"^inputs must hold ids in \[0, 6\)"),
    ("lrs", torch.full((2,), 0.1), ValueError, r"^lrs must be a contiguous CPU tensor"),
    ("true_logq", torch.zeros(5), ValueError, r"^true_logq and neg_logq must be given"),
    ("mask", torch.zeros(5, 1, dtype=torch.bool), ValueError, r"^mask must mark"),
])
def test_bad_arguments_raise_before_the_kernel_runs(name, value, error, match):
    args = arguments()
    args[name] = value
    before = args["out_vec"].clone()
    with pytest.raises(error, match=match):
        word2vec_batches(**args)
    assert torch.equal(args["out_vec"], before)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, check=False, timeout=120)


def test_torchnce_native_0_forces_the_pure_path():
    done = run_python("import torchnce; print(torchnce.native_available())",
                      TORCHNCE_NATIVE="0")
    assert "available=False" in done.stdout and "TORCHNCE_NATIVE=0" in done.stdout
    assert done.returncode == 0


def test_a_failed_build_falls_back_with_one_warning(tmp_path):
    code = ("import warnings, torchnce\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    first, second = torchnce.native_available(), torchnce.native_available()\n"
            "print(first.available, second.available, len(caught))\n"
            "print(first.reason)")
    done = run_python(code, TORCHNCE_NATIVE="1", CXX="false", TORCHNCE_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    flags, reason = done.stdout.splitlines()
    assert flags == "False False 1"
    assert reason.startswith("the native kernels could not be built: false failed")


@native
def test_native_alias_draws_follow_the_samplers_distribution():
    from scipy import stats

    weights = torch.tensor([5.0, 1.0, 0.0, 3.0, 0.5, 8.0, 2.0])
    sampler = torchnce.FixedUnigramSampler(7, unigrams=weights.tolist(), distortion=0.75)
    draws = alias_draws(sampler.threshold, sampler.alias, 200_000,
                        torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=7).double()
    probs = sampler.probs.double()
    expected = probs / probs.sum() * draws.numel()  # renormalised: the float32 probs sum to 1 ± ulp
    assert counts[2] == 0  # weight 0 is never drawn
    keep = expected > 0
    _, pvalue = stats.chisquare(counts[keep].numpy(), expected[keep].numpy())
    assert pvalue > 1e-4
    again = alias_draws(sampler.threshold, sampler.alias, 200_000,
                        torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # a seeded generator gives the same draws


@native
def test_native_alias_draws_check_their_tables():
    with pytest.raises(ValueError, match=r"^threshold must be a contiguous CPU torch.float64"):
        alias_draws(torch.zeros(3), torch.zeros(3, dtype=torch.int64), 5, torch.Generator())


def one_hot_sampler(vocab: int, cls: int) -> torchnce.FixedUnigramSampler:
    """A sampler that only ever draws ``cls``, so that the negatives are known."""
    return torchnce.FixedUnigramSampler(vocab, unigrams=[float(i == cls) for i in range(vocab)])


@native
@pytest.mark.parametrize("loss", ["negative_sampling_loss", "nce_loss", "sampled_softmax_loss"])
@pytest.mark.parametrize("share", [1, 2, 0])
@pytest.mark.parametrize("dim", [4, 16, 17, 100, 129])
def test_a_skipgram_window_is_one_step_of_the_public_loss(loss, share, dim, gen):
    """A centre with contexts 7, 7, 2 and 4 (reach 2, one line; 7 twice): four examples,
    inputs the context vectors, label the centre, K negatives each (all class 3 here), one SGD
    step of the public loss with per-example candidates, computed from the tables at the
    window's start. With log-Q the centre must have a probability: it is class 3 too (every
    negative is then an accidental hit, and a repeated row). The sizes cover the kernel's
    register-held rows (1, 2, 7 vectors of 16, full and with a tail) and its generic loop
    (over 128)."""
    vocab, k, lr = 9, 3, 0.4
    in_vec, out_vec = torch.randn(vocab, dim, generator=gen), torch.randn(vocab, dim, generator=gen)
    sampler = one_hot_sampler(vocab, 3)
    centre_id = 5 if loss == "negative_sampling_loss" else 3
    ids, lines = torch.tensor([2, 7, centre_id, 7, 4]), torch.zeros(5, dtype=torch.int64)
    reach = torch.tensor([0, 0, 2, 0, 0])
    spec = {"negative_sampling_loss": (False, False), "nce_loss": (True, False),
            "sampled_softmax_loss": (True, True)}[loss]
    x, w = in_vec.clone().requires_grad_(), out_vec.clone().requires_grad_()
    contexts, centre = torch.tensor([7, 7, 2, 4]), torch.full((4,), centre_id)
    counts = float(sampler.probs[3]) * k
    values = (torch.full((4, k), 3), (sampler.probs[centre] * k).unsqueeze(1),
              torch.full((4, k), counts))
    expected = getattr(torchnce, loss)(w, None, centre, x[contexts], k, vocab,
                                       sampled_values=values)
    expected.sum().backward()
    out = word2vec_skipgram(in_vec, out_vec, ids, lines, reach, sampler.threshold,
                            sampler.alias, sampler.probs, k, spec[0], loss.startswith("sampled"),
                            spec[1], lr, lr, 0.0, 0, share)
    assert out[1] == 4
    assert float(out[0]) == pytest.approx(float(expected.sum().detach()), rel=1e-5)
    torch.testing.assert_close(in_vec, (x - lr * x.grad).detach())
    torch.testing.assert_close(out_vec, (w - lr * w.grad).detach())


@native
def test_skipgram_windows_make_the_pairs_of_skipgram_pairs(gen):
    from torchnce.app.word2vec.corpus import skipgram_pairs

    ids = torch.randint(9, (60,), generator=gen)
    lines = torch.sort(torch.randint(6, (60,), generator=gen)).values
    reach_gen, pairs_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    reach = torch.randint(1, 4, ids.shape, generator=reach_gen)
    centres, _ = skipgram_pairs(ids, lines, 3, pairs_gen)  # draws the same reach first
    out = word2vec_skipgram(torch.zeros(9, 2), torch.zeros(9, 2), ids, lines, reach,
                            *(lambda s: (s.threshold, s.alias, s.probs))(one_hot_sampler(9, 0)),
                            2, False, False, False, 0.1, 0.1, 0.0, 0, 1)
    assert int(out[1]) == centres.numel()


@native
@pytest.mark.parametrize("share, most", [(0, 1 + 3), (2, 1 + 2 * 3), (1, 1 + 4 * 3)])
def test_examples_of_a_window_share_their_negatives(share, most, gen):
    """One window of four examples, 3 negatives each from 1,000 equally likely classes: the
    output rows it writes are the centre's and its negatives', so at most 1 + 3 when the whole
    window shares one set (share 0), 1 + 2·3 for two sets (share 2), 1 + 4·3 for one set per
    example. With so many classes the sets rarely collide: the seeded draw reaches the bound."""
    vocab, dim = 1000, 8
    in_vec = torch.randn(vocab, dim, generator=gen)
    out_vec = torch.randn(vocab, dim, generator=gen)
    before = out_vec.clone()
    sampler = torchnce.FixedUnigramSampler(vocab, unigrams=[1.0] * vocab)
    ids, lines = torch.tensor([2, 7, 5, 9, 4]), torch.zeros(5, dtype=torch.int64)
    word2vec_skipgram(in_vec, out_vec, ids, lines, torch.tensor([0, 0, 2, 0, 0]),
                      sampler.threshold, sampler.alias, sampler.probs, 3, False, False, False,
                      0.1, 0.1, 0.0, 11, share)
    written = int((out_vec != before).any(1).sum())
    assert written == most
