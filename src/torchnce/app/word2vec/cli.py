"""``python -m torchnce word2vec``: train word vectors on the shipped corpus (or yours).

No finished run is lost: the corpus, the evaluation files and the output directory (by writing
a file there) are checked before training; the outputs are written under temporary names and
renamed into place when all are complete. Bad input (a missing, empty or non-UTF-8 corpus, a
vocabulary too small, an evaluation file in the wrong format, an output directory that cannot
be written) ends with a one-line error naming the file and the fix, exit status 2; a run that
trains nothing, diverges or cannot write its outputs, with its likely cause, exit status 1.
Ctrl-C stops training after the current batches and writes what was trained (exit 130);
before training or while writing, it writes nothing (exit 130).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from torchnce.app.word2vec.corpus import Corpus, CorpusError, load_corpus, shipped_corpus_path
from torchnce.app.word2vec.model import LOSSES, Word2VecConfig
from torchnce.app.word2vec.outputs import RunError, Staged, prepare_output
from torchnce.app.word2vec.plot import write_loss_svg
from torchnce.app.word2vec.training import Trainer, TrainLog, keep_freed_memory
from torchnce.app.word2vec.vectors import (
    Score,
    WordVectors,
    analogy_questions,
    similarity_pairs,
    write_vocabulary,
    write_word2vec,
)

PROBES = ("god", "king", "water", "david", "jesus", "love", "house", "war")


def add_word2vec_parser(sub: Any) -> None:
    p = sub.add_parser("word2vec", help="train word vectors (skip-gram or CBOW)",
                       description="Train word2vec embeddings with torchnce's sampled losses.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = Word2VecConfig()
    p.add_argument("--corpus", type=Path, default=None,
                   help="plain text or .gz/.bz2/.xz; None: the shipped King James Bible")
    p.add_argument("--model", choices=("skipgram", "cbow"), default=d.model,
                   help="skip-gram (predict the context) or CBOW (predict the center)")
    p.add_argument("--loss", choices=tuple(LOSSES), default=d.loss,
                   help="neg: word2vec's negative sampling; nce; sampled_softmax")
    p.add_argument("--sampler", choices=("unigram", "log_uniform"), default=d.sampler,
                   help="noise distribution: unigram^distortion, or Zipf over the ranks")
    p.add_argument("--distortion", type=_finite, default=d.distortion,
                   help="power of the unigram counts")
    p.add_argument("--dim", type=_positive, default=d.dim, help="vector size")
    p.add_argument("--window", type=_positive, default=d.window,
                   help="largest distance to a context word (reduced at random per word)")
    p.add_argument("--num-sampled", type=_positive, default=d.num_sampled,
                   help="negatives per example")
    p.add_argument("--epochs", type=_positive, default=d.epochs, help="passes over the corpus")
    p.add_argument("--batch-size", type=_positive, default=d.batch_size,
                   help="examples per SGD step of the pure-PyTorch path (per worker); the "
                        "native path updates after every example and holds the learning rate "
                        "for this many")
    p.add_argument("--subsample", type=_non_negative, default=d.subsample,
                   help="frequent-word subsampling threshold (0: off)")
    p.add_argument("--min-count", type=_positive, default=d.min_count,
                   help="drop words seen fewer times")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="start learning rate, decaying linearly; None: 0.025 for skip-gram, "
                        "0.05 for CBOW")
    p.add_argument("--threads", type=_positive, default=d.threads,
                   help="Hogwild worker processes")
    p.add_argument("--share-negatives", type=_non_negative_int, default=d.share_negatives,
                   metavar="N",
                   help="skip-gram on the native path: consecutive examples of a window that "
                        "share one set of negatives (1: a set per example, word2vec's own; 0: "
                        "the whole window, HogBatch: fastest, lower similarity scores)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="random seed: a run with --threads 1 is reproducible bit for bit; "
                        "Hogwild workers (--threads 2 or more) update the tables in an "
                        "order that differs from run to run")
    p.add_argument("--out", type=Path, default=Path("word2vec-out"), help="output directory")
    p.add_argument("--eval-similarity", type=Path, default=None, metavar="FILE",
                   help="WordSim353-format file: Spearman correlation")
    p.add_argument("--eval-analogy", type=Path, default=None, metavar="FILE",
                   help="questions-words.txt-format file: 3CosAdd accuracy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_word2vec)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _config(args: argparse.Namespace) -> Word2VecConfig:
    return Word2VecConfig(
        model=args.model, loss=args.loss, sampler=args.sampler, distortion=args.distortion,
        dim=args.dim, window=args.window, num_sampled=args.num_sampled, epochs=args.epochs,
        batch_size=args.batch_size, subsample=args.subsample, min_count=args.min_count,
        lr=args.lr, threads=args.threads, seed=args.seed,
        share_negatives=args.share_negatives)


def run_word2vec(args: argparse.Namespace) -> int:
    """The job, in the order that loses no work: every input read and the output directory
    proven writable before training; the outputs written atomically after it."""
    config = _config(args)
    path = args.corpus or shipped_corpus_path()
    evaluations = _read_evaluations(args)
    corpus = load_corpus(path, config.min_count)
    if len(corpus.words) <= config.num_sampled:
        fix = "--num-sampled or --min-count" if config.min_count > 1 else "--num-sampled"
        raise CorpusError(f"corpus file {path} has a vocabulary of {len(corpus.words)} words, "
                          f"not more than --num-sampled={config.num_sampled}; lower {fix}, "
                          "or give a larger corpus")
    prepare_output(args.out)
    print(f"corpus {path.name}: {corpus.num_words:,} words, vocabulary {len(corpus.words):,} "
          f"(min count {config.min_count})")
    torch.manual_seed(config.seed)
    torch.set_num_threads(1)  # the parallelism is --threads Hogwild worker processes
    keep_freed_memory()
    trainer = Trainer(corpus, config)
    # Everything allocated so far (torch's modules above all) lives until exit: moved out of
    # the collector's sight, forked workers do not copy its pages by touching their counts
    # (the gc module's advice before fork), and exit does not walk it (0.5 s saved there).
    gc.freeze()
    start = time.perf_counter()
    log = _train(trainer, corpus, config, quiet=args.no_progress)
    seconds = time.perf_counter() - start
    _check_trained(log, trainer, config)
    vectors = WordVectors(corpus.words, trainer.model.input_vectors)
    report = _report(vectors, corpus, config, log, seconds, evaluations)
    _write(args.out, corpus, vectors, log, report, config)
    if log.interrupted:
        print("interrupted: wrote the vectors trained so far", file=sys.stderr)
        return 130
    return 0


def _read_evaluations(args: argparse.Namespace) -> dict[str, tuple[Path, Any]]:
    """The evaluation files, read and parsed now, so that a bad one fails before training."""
    evaluations: dict[str, tuple[Path, Any]] = {}
    if args.eval_similarity is not None:
        evaluations["similarity"] = (args.eval_similarity, similarity_pairs(args.eval_similarity))
    if args.eval_analogy is not None:
        evaluations["analogy"] = (args.eval_analogy, analogy_questions(args.eval_analogy))
    return evaluations


def _check_trained(log: TrainLog, trainer: Trainer, config: Word2VecConfig) -> None:
    """A run that trained nothing or diverged ends with its likely cause (exit 1)."""
    if log.examples == 0 and not log.interrupted:
        raise RunError(f"no training example was made (every word subsampled away or no "
                       f"line with two words): lower --subsample (now {config.subsample}) "
                       "or --min-count, or give a larger corpus")
    vectors = (trainer.model.input_vectors, trainer.model.output_vectors)
    if log.diverged or not all(bool(torch.isfinite(v).all()) for v in vectors):
        raise RunError(f"training diverged (a non-finite loss after {log.words:,} words): "
                       f"lower --lr (now {config.start_lr:g}); nothing was written")


def _train(trainer: Trainer, corpus: Corpus, config: Word2VecConfig, quiet: bool) -> TrainLog:
    total = config.epochs * corpus.num_words
    bar, close = _progress(total, quiet)

    def on_chunk(done: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise _Diverged
        bar(done, loss)

    try:
        trainer.run(on_chunk)
    except KeyboardInterrupt:
        trainer.stop()
    except _Diverged:
        trainer.stop()
        trainer.log.interrupted, trainer.log.diverged = False, True
    finally:
        close()
    return trainer.log


class _Diverged(Exception):
    """A chunk's loss was not finite: training stops there."""


def _progress(total: int, quiet: bool) -> tuple[Callable[[int, float], None], Callable[[], None]]:
    """A tqdm bar (words, words/s, running loss); a plain line per 10 % without tqdm."""
    if quiet:
        return (lambda done, loss: None), (lambda: None)
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        marks = iter(range(1, 11))
        next_mark = [next(marks)]

        def line(done: int, loss: float) -> None:
            if done * 10 >= next_mark[0] * total:
                print(f"{done:,}/{total:,} words, loss {loss:.4f}", flush=True)
                next_mark[0] = next(marks, 11)
        return line, (lambda: None)
    bar = tqdm(total=total, unit="word", unit_scale=True, dynamic_ncols=True, smoothing=0.1)

    def update(done: int, loss: float) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    return update, bar.close


def _report(vectors: WordVectors, corpus: Corpus, config: Word2VecConfig, log: TrainLog,
            seconds: float, evaluations: dict[str, tuple[Path, Any]]) -> dict[str, Any]:
    rate = log.words / seconds if seconds > 0 else 0.0
    print(f"trained {config.model} with {config.loss} ({config.num_sampled} negatives, "
          f"{config.sampler} sampler) in {seconds:.1f} s: {rate:,.0f} words/s, "
          f"{log.examples:,} examples, {config.threads} thread(s)")
    probes = [w for w in PROBES if w in vectors.index][:5] or vectors.words[50:55]
    for word in probes:
        print(f"  {word:>10}: {' '.join(vectors.neighbours(word))}")
    report: dict[str, Any] = {"config": asdict(config),
                              "words": log.words, "seconds": seconds, "words_per_second": rate,
                              "examples": log.examples, "vocabulary": len(corpus.words),
                              "final_loss": log.losses[-1] if log.losses else None}
    if "similarity" in evaluations:
        file, pairs = evaluations["similarity"]
        report["similarity"] = _show("similarity (Spearman)", vectors.similarity(pairs), file)
    if "analogy" in evaluations:
        file, questions = evaluations["analogy"]
        report["analogy"] = _show("analogy (accuracy)", vectors.analogy(questions), file)
    return report


def _show(label: str, score: Score, path: Path) -> dict[str, Any]:
    print(f"{label} on {path.name}: {score.value:.4f} over {score.used}/{score.total} "
          f"({score.coverage:.1%} in vocabulary)")
    return {"file": str(path), "value": score.value, "used": score.used, "total": score.total}


def _write(out: Path, corpus: Corpus, vectors: WordVectors, log: TrainLog,
           report: dict[str, Any], config: Word2VecConfig) -> None:
    """The outputs, each written under a temporary name and renamed into place when all are
    complete; a failed write (a full disk, say) removes them and ends the run (exit 1)."""
    names = {"neg": "negative sampling", "nce": "NCE", "sampled_softmax": "sampled softmax"}
    staged = Staged(out)
    try:
        write_word2vec(staged.path("vectors.txt"), corpus.words, vectors.vectors)
        write_vocabulary(staged.path("vocab.txt"), corpus.words, corpus.counts)
        staged.path("metrics.json").write_text(json.dumps(report, indent=2) + "\n",
                                               encoding="utf-8")
        title = (f"torchnce word2vec: {config.model}, {names.get(config.loss, config.loss)} "
                 f"loss, {config.num_sampled} negatives")
        write_loss_svg(staged.path("loss.svg"), log.words_seen, log.losses, corpus.num_words,
                       config.epochs, title, "training loss per example")
        written = list(staged.names)
        staged.commit()
    except OSError as e:
        staged.discard()
        raise RunError(f"the outputs could not be written to {out} ({e.strerror or e}); "
                       "nothing was written: free some space or choose another --out") from None
    except BaseException:  # Ctrl-C while writing: the old files stay as they were
        staged.discard()
        raise
    print(f"wrote {', '.join(written)} to {out}/")
