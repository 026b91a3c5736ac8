"""The main job, ``python -m torchnce word2vec``, on a tiny corpus: files, evaluation, errors."""

import bz2
import json
import os
import platform
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
from scipy.stats import spearmanr

from torchnce.__main__ import main
from torchnce.app.word2vec.corpus import load_corpus, shipped_corpus_path
from torchnce.app.word2vec.model import Word2Vec, Word2VecConfig
from torchnce.app.word2vec.training import Trainer, WorkerError, keep_freed_memory
from torchnce.app.word2vec.vectors import WordVectors, spearman

SUBJECTS = ["cat", "dog", "cow", "horse", "bird", "fish"]
VERBS = ["eats", "sees", "likes", "finds"]
OBJECTS = ["grass", "meat", "seeds", "water", "bread"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """1,200 short sentences of a toy grammar, one per line (about 5,000 words)."""
    gen = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(1200):
        s, v, o = (torch.randint(len(xs), (1,), generator=gen).item()
                   for xs in (SUBJECTS, VERBS, OBJECTS))
        lines.append(f"The {SUBJECTS[s]} {VERBS[v]} the {OBJECTS[o]}.")
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(args, tmp_path):
    out = tmp_path / "out"
    status = main(["word2vec", "--no-progress", "--epochs", "1", "--dim", "8",
                   "--threads", "1", "--out", str(out), *args])
    return status, out


def read_word2vec(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    count, dim = map(int, lines[0].split())
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == count
    assert all(len(r) == dim + 1 for r in rows)
    return [r[0] for r in rows], torch.tensor([[float(v) for v in r[1:]] for r in rows])


@pytest.mark.parametrize("loss", ["neg", "nce", "sampled_softmax"])
@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_word2vec_writes_vectors_vocab_plot_and_metrics(corpus, tmp_path, loss, model):
    status, out = run(["--corpus", str(corpus), "--loss", loss, "--model", model,
                       "--batch-size", "64"], tmp_path)
    assert status == 0
    words, vectors = read_word2vec(out / "vectors.txt")
    vocab = [line.split() for line in (out / "vocab.txt").read_text().splitlines()]
    assert [w for w, _ in vocab] == words
    assert words[0] == "the"  # the most frequent word gets id 0 (log-uniform's assumption)
    assert torch.isfinite(vectors).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["words"] == 5 * 1200
    assert metrics["final_loss"] > 0
    svg = ET.parse(out / "loss.svg").getroot()  # well-formed XML
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2  # raw and smoothed


def test_vectors_load_in_gensim(corpus, tmp_path):
    gensim_models = pytest.importorskip("gensim.models")
    status, out = run(["--corpus", str(corpus)], tmp_path)
    assert status == 0
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(out / "vectors.txt"))
    words, vectors = read_word2vec(out / "vectors.txt")
    assert kv.index_to_key == words
    torch.testing.assert_close(torch.from_numpy(kv.vectors), vectors)


def test_training_learns_the_grammar(corpus, tmp_path):
    """Nouns used alike end up closer to each other than to the verbs."""
    status, out = run(["--corpus", str(corpus), "--epochs", "5", "--dim", "16",
                       "--subsample", "0", "--batch-size", "32", "--lr", "0.05"], tmp_path)
    assert status == 0
    words, vectors = read_word2vec(out / "vectors.txt")
    wv = WordVectors(words, vectors)
    unit = wv.unit
    s = unit[[wv.index[w] for w in SUBJECTS]]
    v = unit[[wv.index[w] for w in VERBS]]
    within = (s @ s.T)[~torch.eye(len(SUBJECTS), dtype=torch.bool)].mean()
    across = (s @ v.T).mean()
    assert within > across + 0.2


def test_one_thread_is_deterministic(corpus, tmp_path):
    _, first = run(["--corpus", str(corpus), "--seed", "3"], tmp_path / "a")
    _, second = run(["--corpus", str(corpus), "--seed", "3"], tmp_path / "b")
    assert (first / "vectors.txt").read_text() == (second / "vectors.txt").read_text()


def test_hogwild_threads_train(corpus, tmp_path):
    out = tmp_path / "out"
    status = main(["word2vec", "--no-progress", "--corpus", str(corpus), "--threads", "2",
                   "--dim", "8", "--epochs", "1", "--out", str(out)])
    assert status == 0
    assert torch.isfinite(read_word2vec(out / "vectors.txt")[1]).all()


def test_compressed_corpora_read_like_plain_text(corpus, tmp_path):
    packed = tmp_path / "toy.txt.bz2"
    packed.write_bytes(bz2.compress(corpus.read_bytes()))
    plain, compressed = load_corpus(corpus, 1), load_corpus(packed, 1)
    assert plain.words == compressed.words
    assert torch.equal(plain.ids, compressed.ids)


def test_shipped_corpus_is_the_king_james_bible():
    c = load_corpus(shipped_corpus_path(), 5)
    # wc -w gives 789,634; here the 51 hyphenated names (beth-el) count as two words each and
    # the tokens without a letter ("?") as none.
    assert 789_634 < c.num_words < 789_634 + 51
    assert c.words[:3] == ["the", "and", "of"]


def similarity_file(tmp_path, rows):
    path = tmp_path / "sim.tsv"
    path.write_text("# word1\tword2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    return path


def test_similarity_is_spearman_over_known_pairs(tmp_path):
    words = ["a", "b", "c", "d"]
    vectors = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.1]])
    rows = [("a", "b", 9.0), ("a", "c", 5.0), ("a", "d", 1.0), ("b", "c", 6.0),
            ("c", "d", 6.0), ("a", "zzz", 3.0)]
    score = WordVectors(words, vectors).similarity(similarity_file(tmp_path, rows))
    unit = torch.nn.functional.normalize(vectors, dim=1)
    cos = [float(unit[words.index(a)] @ unit[words.index(b)]) for a, b, _ in rows[:5]]
    expected = spearmanr(cos, [s for _, _, s in rows[:5]]).statistic
    assert score.value == pytest.approx(expected, abs=1e-12)
    assert (score.used, score.total) == (5, 6)


def test_spearman_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(5, (40,), generator=gen).double()
    y = x + torch.randint(3, (40,), generator=gen)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_analogy_accuracy_and_coverage(tmp_path):
    # king - man + woman = queen by construction; paris - france + italy -> rome.
    words = ["man", "woman", "king", "queen", "france", "paris", "italy", "rome"]
    vectors = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0],
                            [0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 1]])
    path = tmp_path / "questions.txt"
    path.write_text(": family\nman woman king queen\nMan King Woman Queen\n"
                    ": capitals\nfrance paris italy rome\nfrance paris spain madrid\n"
                    "rome italy paris man\n")
    score = WordVectors(words, vectors).analogy(path)
    # 3 right (two families, one capital), 1 wrong (rome - italy + paris is france), 1 unknown
    assert (score.value, score.used, score.total) == (3 / 4, 4, 5)


def errors(args, tmp_path, capsys):
    status, _ = run(args, tmp_path)
    err = capsys.readouterr().err
    return status, err


def test_missing_corpus_is_a_one_line_error(tmp_path, capsys):
    status, err = errors(["--corpus", str(tmp_path / "nope.txt")], tmp_path, capsys)
    assert status == 2
    assert err.startswith("torchnce word2vec: error: corpus file ")
    assert "does not exist" in err and err.count("\n") == 1


def test_corpus_that_is_a_directory(tmp_path, capsys):
    status, err = errors(["--corpus", str(tmp_path)], tmp_path, capsys)
    assert (status, "is a directory" in err) == (2, True)


def test_output_path_that_is_a_file_fails_before_training(corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status = main(["word2vec", "--no-progress", "--corpus", str(corpus),
                   "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert (status, "cannot be created" in err, err.count("\n")) == (2, True, 1)


def test_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n 123 \n")
    status, err = errors(["--corpus", str(empty)], tmp_path, capsys)
    assert (status, "holds no words" in err) == (2, True)


def test_non_utf8_corpus(tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    status, err = errors(["--corpus", str(latin)], tmp_path, capsys)
    assert (status, "is not UTF-8 text" in err, "iconv" in err) == (2, True, True)


def test_vocabulary_smaller_than_num_sampled(corpus, tmp_path, capsys):
    status, err = errors(["--corpus", str(corpus), "--num-sampled", "50"], tmp_path, capsys)
    assert status == 2
    assert "not more than --num-sampled=50" in err


@pytest.mark.parametrize("flag", ["--eval-similarity", "--eval-analogy"])
def test_evaluation_file_in_the_wrong_format(corpus, tmp_path, capsys, flag):
    bad = tmp_path / "bad.txt"
    bad.write_text("just one field per line\n")
    status, err = errors(["--corpus", str(corpus), flag, str(bad)], tmp_path, capsys)
    assert status == 2
    assert "bad.txt line 1 is not" in err and err.count("\n") == 1


def test_missing_evaluation_file_fails_before_training(corpus, tmp_path, capsys):
    status, err = errors(["--corpus", str(corpus), "--eval-analogy", "nope.txt"],
                         tmp_path, capsys)
    assert (status, "analogy file nope.txt does not exist" in err) == (2, True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--dim", "0", "must be a positive integer"),
    ("--lr", "-1", "must be a positive number"),
    ("--distortion", "nan", "must be a finite number"),
    ("--subsample", "-0.1", "must be >= 0"),
    ("--loss", "hinge", "invalid choice"),
])
def test_bad_option_value_exits_2(capsys, option, value, message):
    with pytest.raises(SystemExit) as e:
        main(["word2vec", option, value])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_ctrl_c_saves_what_was_trained(corpus, tmp_path, monkeypatch):
    calls = []

    def interrupting(step):
        def interrupted(self, *args):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return step(self, *args)
        return interrupted

    # Whichever path trains (the pure or native batches, or native skip-gram windows).
    for name in ("train_batches", "train_skipgram"):
        monkeypatch.setattr(Word2Vec, name, interrupting(getattr(Word2Vec, name)))
    status, out = run(["--corpus", str(corpus), "--batch-size", "1", "--epochs", "3"], tmp_path)
    assert status == 130
    assert read_word2vec(out / "vectors.txt")[0][0] == "the"


def test_module_entry_point_runs(corpus, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torchnce", "word2vec", "--corpus", str(corpus), "--epochs", "1",
         "--dim", "8", "--no-progress", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "words/s" in result.stdout and "wrote vectors.txt" in result.stdout


def bench(tmp_path, classes):
    """The bench command at a tiny size, without TensorFlow: its exit status."""
    return main(["bench", "--classes", classes, "--batch-size", "8", "--dim", "4",
                 "--num-sampled", "4", "--repeats", "1", "--no-tensorflow",
                 "--out", str(tmp_path / "bench.png")])


def test_bench_command_prints_a_table(tmp_path, capsys):
    assert bench(tmp_path, "1000") == 0
    out = capsys.readouterr().out
    assert "full softmax" in out and "1,000" in out
    assert (tmp_path / "bench.png").exists()


def test_worker_failure_is_reported_with_its_traceback(corpus, monkeypatch):
    def broken(self, *args):
        raise ValueError("boom in a worker")

    monkeypatch.setattr(Word2Vec, "train_batches", broken)
    monkeypatch.setattr(Word2Vec, "train_skipgram", broken)
    config = Word2VecConfig(dim=8, epochs=1, threads=2, min_count=1)
    trainer = Trainer(load_corpus(corpus, 1), config)
    with pytest.raises(WorkerError, match="boom in a worker"):
        trainer.run(lambda done, loss: None)
    assert all(not p.is_alive() for p in trainer._processes)


def test_ctrl_c_with_worker_processes_saves_and_exits_130(corpus, tmp_path, monkeypatch):
    record = Trainer._record

    def interrupt_after_first_chunk(self, *args):
        record(self, *args)
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C, while the workers are running

    monkeypatch.setattr(Trainer, "_record", interrupt_after_first_chunk)
    status = main(["word2vec", "--no-progress", "--corpus", str(corpus), "--threads", "2",
                   "--dim", "8", "--epochs", "1000", "--batch-size", "16",
                   "--out", str(tmp_path / "o")])
    assert status == 130
    words, vectors = read_word2vec(tmp_path / "o" / "vectors.txt")
    assert words[0] == "the" and torch.isfinite(vectors).all()


def test_keep_freed_memory_takes_effect_on_linux_glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt")
    assert keep_freed_memory() is True


@pytest.mark.parametrize("value, message", [("1.5", "must be a whole number >= 2"),
                                            ("1", "must be a whole number >= 2"),
                                            ("many", "must be a whole number")])
def test_bench_classes_must_be_whole_numbers(value, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--classes", value])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_says_what_it_measured_and_accepts_1e3(tmp_path, capsys):
    assert bench(tmp_path, "1e3") == 0
    out = capsys.readouterr().out
    assert "median of 1" in out and "sparse gradients" in out and "1,000" in out
