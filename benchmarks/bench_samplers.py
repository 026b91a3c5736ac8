"""Candidate samplers: torchnce against TensorFlow 2.21, side by side in one run.

For every sampler, C in {1e5, 1e6, 1e7}, S in {64, 1024, 8192} and unique in {False, True}
it times one call (true classes: B = 512, T = 1, cycling through 16 Zipfian batches) and
prints the median microseconds of each
library and the ratio TF / torchnce. TensorFlow is timed both eagerly and inside a
``tf.function``; the faster of the two is reported, with which one it was. TensorFlow runs in
a worker process, driven config by config from this one: in one process its thread pools
spin while torch's OpenMP threads wait, which slowed torch's ops by up to 50x here.

torchnce is timed through its TensorFlow-named functions (the learned sampler with
``sampler=``), except the fixed-unigram sampler, whose function looks its table up by value
(O(C) per call): there ``FixedUnigramSampler.sample`` is timed, and TensorFlow's op inside
``tf.function`` (eagerly it converts its C-float attribute every call). The script also times
building a fixed-unigram table over 1e7 classes, and where the time of the smallest call
goes (``--floor``: the uniform sampler at C = 1e5, S = 64, part by part).

    python benchmarks/bench_samplers.py                  # the full grid (about 15 minutes)
    python benchmarks/bench_samplers.py --samples 64 1024  # S <= 1024 only
    python benchmarks/bench_samplers.py --quick          # a smoke run (about a minute)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import torch

import torchnce

BATCH = 512
POOL = 16
KINDS = ["uniform", "log_uniform", "learned_unigram", "fixed_unigram"]


def median_us(fn: Callable[[], object], budget_s: float, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean time of one call, in microseconds."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(budget_s / rounds / once))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def unigrams(num_classes: int) -> np.ndarray:
    """Zipf-like word counts, the typical input of a fixed-unigram sampler."""
    rng = np.random.default_rng(0)
    return np.floor(rng.random(num_classes) ** -1.2).astype(np.float64)


def labels(num_classes: int) -> list[np.ndarray]:
    """A pool of label batches, Zipfian (log-uniform) like word ids sorted by frequency.

    Calls cycle through it, so the learned-unigram counts grow as in training rather than
    piling onto one batch.
    """
    rng = np.random.default_rng(num_classes)
    ids = np.floor(np.exp(rng.random((POOL, BATCH, 1)) * np.log1p(num_classes))) - 1
    return list(np.clip(ids, 0, num_classes - 1).astype(np.int64))


def cycle(batches: list[Any]) -> Callable[[], Any]:
    """A function returning the batches in turn."""
    position = iter(range(10**12))
    return lambda: batches[next(position) % len(batches)]


def tf_call(
    tf: Any, kind: str, c: int, s: int, unique: bool, w: list[float]
) -> Callable[[Any], Any]:
    """One TensorFlow sampler call on a batch of labels."""
    if kind == "fixed_unigram":
        fixed = tf.random.fixed_unigram_candidate_sampler
        return lambda tc: fixed(tc, 1, s, unique, c, distortion=0.75, unigrams=w)
    fn = getattr(tf.random, f"{kind}_candidate_sampler")
    return lambda tc: fn(tc, 1, s, unique, c)


def tf_worker(conn: Connection) -> None:
    """Time TensorFlow's samplers for the configurations sent over ``conn``."""
    import tensorflow as tf

    conn.send(tf.__version__)
    weights: dict[int, list[float]] = {}
    while (job := conn.recv()) is not None:
        kind, c, s, unique, budget = job
        w = weights.setdefault(c, unigrams(c).tolist()) if kind == "fixed_unigram" else []
        call = tf_call(tf, kind, c, s, unique, w)
        batch = cycle([tf.constant(b) for b in labels(c)])
        spec = [tf.TensorSpec([BATCH, 1], tf.int64)]
        graph = tf.function(call, input_signature=spec)
        t_graph = median_us(lambda: graph(batch()), budget)  # noqa: B023
        eager = lambda: call(batch())  # noqa: B023, E731
        t_eager = float("inf") if kind == "fixed_unigram" else median_us(eager, budget)
        conn.send((t_eager, t_graph))
    build = conn.recv()
    once = tf_call(tf, "fixed_unigram", build, 1, False, unigrams(build).tolist())
    start = time.perf_counter()
    tf.function(once)(tf.constant([[0]], tf.int64))  # tracing, then the kernel builds its table
    conn.send(time.perf_counter() - start)


def torch_call(kind: str, c: int, s: int, unique: bool, table: Any) -> Callable[[], object]:
    """One torchnce sampler call on the next batch of labels."""
    g = torch.Generator().manual_seed(0)
    batch = cycle([torch.from_numpy(b) for b in labels(c)])
    if kind == "fixed_unigram":
        return lambda: table.sample(batch(), s, unique=unique, generator=g)
    if kind == "learned_unigram":
        sampler = torchnce.LearnedUnigramSampler(c)
        return lambda: torchnce.learned_unigram_candidate_sampler(
            batch(), 1, s, unique, c, generator=g, sampler=sampler
        )
    fn = getattr(torchnce, f"{kind}_candidate_sampler")
    return lambda: fn(batch(), 1, s, unique, c, generator=g)


def run(conn: Connection, sizes: list[int], samples: list[int], budget: float) -> None:
    for c in sizes:
        for kind in KINDS:
            table = None
            if kind == "fixed_unigram":
                weights = torch.from_numpy(unigrams(c))
                table = torchnce.FixedUnigramSampler(c, distortion=0.75, unigrams=weights)
            for s in samples:
                for unique in (False, True):
                    t_ours = median_us(torch_call(kind, c, s, unique, table), budget)
                    conn.send((kind, c, s, unique, budget))
                    t_eager, t_graph = conn.recv()
                    t_tf, how = min((t_eager, "eager"), (t_graph, "tf.function"))
                    print(
                        f"| {kind} | {c:.0e} | {s} | {unique} | {t_tf:,.0f} ({how}) | {t_ours:,.0f}"
                        f" | {t_tf / t_ours:.1f}× |",
                        flush=True,
                    )


def floor(budget: float) -> None:
    """Where a call of the uniform sampler (C = 1e5, S = 64, B = 512) spends its time: each
    part of the call alone, then the whole call (the kernel call is a few hundred ns)."""
    from torchnce._native import samplers as native
    from torchnce._sampling import draw

    c, s = 100_000, 64
    tc = torch.from_numpy(labels(c)[0])
    g = torch.Generator().manual_seed(0)
    seed, proto = torch.empty(1, dtype=torch.int64), torch.empty(0)

    def outputs() -> object:
        return tc.new_empty(s), proto.new_empty(BATCH, 1), proto.new_empty(s)

    def kernel() -> object:
        return native.uniform(tc, s, False, c, g)  # the outputs and the seed included

    def checks() -> object:
        draw.check_sampler_args(1, s, False, c)
        t = draw.check_true_classes(tc, 1, s, False, c)
        return draw.resolve_generator(None, g, t.device)

    parts = [
        ("the checks (arguments, true classes and their range, generator)", checks),
        ("three outputs made and freed (`new_empty`)", outputs),
        ("one int64 from the generator (`random_`)", lambda: seed.random_(-(2**63), 2**63 - 1,
                                                                          generator=g)),
        ("the binding: outputs, seed, call block, kernel", kernel),
        ("the whole call, unique=False", lambda: torchnce.uniform_candidate_sampler(
            tc, 1, s, False, c, generator=g)),
        ("the whole call, unique=True", lambda: torchnce.uniform_candidate_sampler(
            tc, 1, s, True, c, generator=g)),
    ]
    print(f"\n| uniform, C=1e5, S={s}: part of a call | µs |\n|---|---:|")
    for name, fn in parts:
        print(f"| {name} | {median_us(fn, budget):.2f} |", flush=True)


def stamp(what: str) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {what} {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--samples", type=int, nargs="+", help="the S to time (default: all)")
    parser.add_argument("--floor", action="store_true", help="only the parts of one call")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.floor:
        stamp("start")
        floor(0.5)
        return
    if args.quick:
        sizes, samples, budget, build = [100_000], [64, 1024], 0.05, 100_000
    else:
        sizes, samples, budget = [100_000, 1_000_000, 10_000_000], [64, 1024, 8192], 0.3
        build = 10_000_000
    samples = args.samples or samples
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    worker = ctx.Process(target=tf_worker, args=(child,), daemon=True)
    worker.start()
    tf_version = conn.recv()
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs,"
        f" torch {torch.__version__} ({torch.get_num_threads()} threads),"
        f" tensorflow {tf_version}, python {sys.version.split()[0]},"
        f" {torchnce.native_available().reason}"
    )
    stamp("start")
    print(f"# median µs per call, B={BATCH}, T=1\n")
    print("| sampler | C | S | unique | TensorFlow µs | torchnce µs | TF / torchnce |")
    print("|---|---|---|---|---|---|---|")
    run(conn, sizes, samples, budget)
    conn.send(None)
    weights = torch.from_numpy(unigrams(build))
    start = time.perf_counter()
    torchnce.FixedUnigramSampler(build, distortion=0.75, unigrams=weights)
    ours = time.perf_counter() - start
    conn.send(build)
    theirs = conn.recv()
    worker.join()
    print(
        f"\nfixed-unigram table over {build:.0e} classes: torchnce {ours:.2f} s,"
        f" TensorFlow (first tf.function call) {theirs:.2f} s"
    )
    floor(budget)
    stamp("end")


if __name__ == "__main__":
    main()
