"""torchnce's word2vec main job against gensim 4.4, side by side on the shipped corpus.

Same corpus (the King James Bible shipped in the package, tokenised by torchnce's tokenizer and
handed to gensim as the same sentences), same settings: skip-gram, dim 100, window 5, 5
negatives from the unigram^0.75 distribution, subsampling 1e-3, min count 5, 5 epochs,
2 threads, start learning rate 0.025. The two alternate, one run each per seed, so load
changes hit both alike; the figures are the mean (and spread) over the seeds.

* throughput: corpus words × epochs / training wall time (vocabulary building excluded on
  both sides; it is the unit gensim reports).
* quality: Spearman correlation on WordSim353 and SimLex-999 over the pairs in both
  vocabularies (the same vocabulary here), 3CosAdd accuracy on Google's analogies; the files
  come with gensim (gensim/test/test_data).

    python benchmarks/bench_word2vec.py             # 3 seeds, writes results_word2vec.md
    python benchmarks/bench_word2vec.py --seeds 1 --epochs 1 --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gensim
import torch
from gensim.models import Word2Vec as GensimWord2Vec
from gensim.test.utils import datapath

import torchnce
from torchnce.app.word2vec.corpus import (
    Corpus,
    load_corpus,
    read_lines,
    shipped_corpus_path,
    tokenize,
)
from torchnce.app.word2vec.model import Word2VecConfig
from torchnce.app.word2vec.training import Trainer, keep_freed_memory
from torchnce.app.word2vec.vectors import WordVectors

THREADS = 2
BENCHMARKS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=Word2VecConfig().batch_size)
    p.add_argument("--share-negatives", type=int, default=Word2VecConfig().share_negatives,
                   help="torchnce's examples of a window sharing one set of negatives "
                        "(1: a set per example; 0: the whole window, HogBatch)")
    p.add_argument("--processes", type=int, default=3,
                   help="whole-process runs of each side, alternating (0: none)")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args()


# The gensim side of a whole-process run: read and tokenise the shipped corpus as torchnce
# does (the same regular expression, no torch import), build the vocabulary, train, write
# the vectors in word2vec's text format.
GENSIM_PROCESS = """
import lzma, re, sys
from gensim.models import Word2Vec
word = re.compile(r"[^\\W\\d_]+(?:'[^\\W\\d_]+)*")
with lzma.open(sys.argv[1], "rt", encoding="utf-8") as f:
    sentences = [s for s in (word.findall(line.lower()) for line in f) if s]
model = Word2Vec(sentences, vector_size=100, window=5, min_count=5, sg=1, negative=5,
                 sample=1e-3, alpha=0.025, workers=2, epochs=5, seed=int(sys.argv[3]))
model.wv.save_word2vec_format(sys.argv[2])
"""


def whole_processes(runs: int, share: int) -> dict[str, list[float]]:
    """Seconds of whole processes (start, corpus, vocabulary, training, vectors written):
    ``python -m torchnce word2vec`` and the gensim script above, alternating."""
    seconds: dict[str, list[float]] = {"torchnce": [], "gensim": []}
    corpus = str(shipped_corpus_path())
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, runs + 1):
            commands = {
                "torchnce": [sys.executable, "-m", "torchnce", "word2vec", "--no-progress",
                             "--seed", str(seed), "--out", f"{tmp}/t",
                             "--share-negatives", str(share)],
                "gensim": [sys.executable, "-c", GENSIM_PROCESS, corpus, f"{tmp}/g.txt",
                           str(seed)],
            }
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                seconds[name].append(time.perf_counter() - start)
            print(f"process {seed}: torchnce {seconds['torchnce'][-1]:.1f} s, "
                  f"gensim {seconds['gensim'][-1]:.1f} s", flush=True)
    return seconds


def evaluate(vectors: WordVectors, shared: set[str]) -> dict[str, float]:
    """Scores over the pairs in both vocabularies (``shared``): the benchmark files are
    filtered to those pairs, then scored by torchnce's own ``WordVectors.similarity``."""
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, file in BENCHMARKS.items():
            rows = [line for line in read_lines(Path(datapath(file))) if not line.startswith("#")]
            known = [r for r in rows if all(w.lower() in shared for w in r.split("\t")[:2])]
            filtered = Path(tmp) / f"{name}.tsv"
            filtered.write_text("\n".join(known) + "\n", encoding="utf-8")
            scores[name] = vectors.similarity(filtered).value
            scores[name + "_pairs"] = len(known)
    scores["analogy"] = vectors.analogy(Path(datapath("questions-words.txt"))).value
    return scores


def run_torchnce(corpus: Corpus, config: Word2VecConfig) -> tuple[float, WordVectors]:
    torch.set_num_threads(1)  # the two Hogwild worker processes are the parallelism (CLI too)
    keep_freed_memory()  # as the command line does
    trainer = Trainer(corpus, config)
    start = time.perf_counter()
    trainer.run(lambda done, loss: None)
    seconds = time.perf_counter() - start
    return corpus.num_words * config.epochs / seconds, WordVectors(
        corpus.words, trainer.model.input_vectors)


def run_gensim(sentences: list[list[str]], corpus: Corpus, config: Word2VecConfig
               ) -> tuple[float, WordVectors]:
    model = GensimWord2Vec(vector_size=config.dim, window=config.window, min_count=config.min_count,
                           sg=1, negative=config.num_sampled, ns_exponent=config.distortion,
                           sample=config.subsample, alpha=config.start_lr, workers=THREADS,
                           seed=config.seed)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=config.epochs)
    seconds = time.perf_counter() - start
    words = list(model.wv.index_to_key)
    return corpus.num_words * config.epochs / seconds, WordVectors(
        words, torch.from_numpy(model.wv.vectors.copy()))


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    args = parse_args()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    path = shipped_corpus_path()
    corpus = load_corpus(path, 5)
    sentences = [tokenize(line) for line in read_lines(path)]
    results: dict[str, dict[str, list[float]]] = {"torchnce": {}, "gensim": {}}
    for seed in range(1, args.seeds + 1):
        config = Word2VecConfig(epochs=args.epochs, seed=seed, threads=THREADS,
                                batch_size=args.batch_size,
                                share_negatives=args.share_negatives)
        runs = {"torchnce": run_torchnce(corpus, config),
                "gensim": run_gensim(sentences, corpus, config)}
        shared = set(runs["torchnce"][1].words) & set(runs["gensim"][1].words)
        for name, (rate, vectors) in runs.items():
            scores = {"words_per_second": rate, **evaluate(vectors, shared)}
            for key, value in scores.items():
                results[name].setdefault(key, []).append(value)
            print(f"seed {seed} {name:>9}: {rate:>10,.0f} words/s  " + "  ".join(
                f"{k} {v:.3f}" for k, v in scores.items() if k != "words_per_second"),
                flush=True)
    processes = whole_processes(args.processes, args.share_negatives)
    text = report(results, args, len(corpus.words), processes)
    print(text)
    if not args.no_write:
        (Path(__file__).parent / "results_word2vec.md").write_text(text, encoding="utf-8")


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace,
           vocabulary: int, processes: dict[str, list[float]]) -> str:
    t, g = results["torchnce"], results["gensim"]
    ratio = [a / b for a, b in zip(t["words_per_second"], g["words_per_second"], strict=True)]
    lines = [
        "# word2vec: torchnce's main job vs gensim 4.4, side by side\n",
        f"* {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores, torch {torch.__version__}, gensim {gensim.__version__}",
        f"* shipped King James Bible, vocabulary {vocabulary:,}; skip-gram, dim 100, window 5, "
        f"5 negatives, subsample 1e-3, {args.epochs} epochs, {THREADS} threads, "
        f"{args.seeds} seed(s); mean ± sd over seeds\n",
        "| measure | torchnce | gensim |", "|---|---|---|",
        f"| words/s | {statistics.mean(t['words_per_second']):,.0f} | "
        f"{statistics.mean(g['words_per_second']):,.0f} |",
    ]
    for key in ("wordsim353", "simlex999", "analogy"):
        lines.append(f"| {key} | {summary(t[key])} | {summary(g[key])} |")
    lines += [
        "",
        f"* throughput ratio torchnce/gensim: {summary(ratio)}",
        f"* WordSim353 difference (torchnce − gensim): "
        f"{statistics.mean(t['wordsim353']) - statistics.mean(g['wordsim353']):+.3f} over "
        f"{int(t['wordsim353_pairs'][0])} pairs in both vocabularies",
        f"* torchnce: native kernels {torchnce.native_available().available}"
        f", --share-negatives {args.share_negatives}",
    ]
    if processes["torchnce"]:
        speed = [g / t for t, g in zip(processes["torchnce"], processes["gensim"], strict=True)]
        lines.append(
            f"* whole processes (start, corpus, vocabulary, 5 epochs, vectors written), "
            f"{len(speed)} alternating runs each: torchnce {summary(processes['torchnce'])} s, "
            f"gensim {summary(processes['gensim'])} s; gensim's time / torchnce's: "
            f"{summary(speed)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
