"""Retrieval losses: torchnce against TFRS' Retrieval task, and the gathered loss on gloo.

Part 1, side by side in one run: one loss forward + backward (gradients of the query and
candidate embeddings, both leaves) at B in {256, 4096}, D = 128, with and without 4096 extra
sampled negatives, temperature 0.05, dot product, log-Q correction with clipping:

* torchnce: ``info_nce_loss(q, k, log_q=, min_probability=1e-6)`` and, with extra negatives,
  ``mixed_negatives_loss(q, k, extra, batch_log_q=, sampled_log_q=, min_probability=1e-6)``;
* TFRS 0.7.7: ``tfrs.tasks.Retrieval(temperature=0.05)`` called with
  ``candidate_sampling_probability`` (``[B]`` or ``[B + M]`` candidates) inside a
  ``tf.function`` with a ``GradientTape``, metrics off. Compile time is not counted.

The two libraries alternate: each round times a few calls of one, then of the other; the
table shows the median over the rounds of the mean time per call, keeping only rounds in
which other processes used under 10 % of the cores (the machine is shared). TFRS runs in a worker
process driven from this one (in one process TF's spinning thread pools slowed torch ~50x).

Part 2: ``torchnce.distributed.GatheredNegatives`` on gloo groups of P = 1, 2, 3 local
processes (one thread each), B = 256 rows per rank, D = 128: the in-batch InfoNCE over the
global batch and the mixed loss with 1024 sampled keys per rank; median time per step
(forward + backward) and bytes sent per rank per step (``bytes_sent``, float32).

    python benchmarks/bench_retrieval.py                 # both parts, a few minutes
    python benchmarks/bench_retrieval.py --quick         # a smoke run
    python benchmarks/bench_retrieval.py --out benchmarks/results_retrieval.md
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torchnce
from torchnce.distributed import GatheredNegatives

D, EXTRA, TAU = 128, 4096, 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="B = 256 only, 3 rounds")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    return parser.parse_args()


def data(batch: int, extra: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = batch + extra
    p = rng.uniform(1e-4, 0.05, n).astype(np.float32)
    p[::97] = 0.0  # never-seen items: clipped to 1e-6 on both sides
    return {"q": rng.standard_normal((batch, D)).astype(np.float32) / math.sqrt(D),
            "c": rng.standard_normal((n, D)).astype(np.float32) / math.sqrt(D), "p": p}


def torch_step(x: dict[str, np.ndarray], batch: int, extra: int) -> Callable[[], Any]:
    q = torch.tensor(x["q"], requires_grad=True)
    c = torch.tensor(x["c"], requires_grad=True)
    lq = torch.tensor(x["p"]).log()
    opts = {"temperature": TAU, "normalize": False, "reduction": "sum",
            "min_probability": 1e-6}

    def step() -> None:
        q.grad = c.grad = None
        if extra:
            loss = torchnce.mixed_negatives_loss(
                q, c[:batch], c[batch:], batch_log_q=lq[:batch],
                sampled_log_q=lq[batch:] - math.log(extra), **opts)
        else:
            loss = torchnce.info_nce_loss(q, c, log_q=lq, **opts)
        loss.backward()

    return step


def tfrs_step(x: dict[str, np.ndarray]) -> Callable[[], Any]:
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    task = tfrs.tasks.Retrieval(temperature=TAU)
    q, c, p = tf.constant(x["q"]), tf.constant(x["c"]), tf.constant(x["p"])

    @tf.function
    def run() -> Any:
        with tf.GradientTape() as tape:
            tape.watch([q, c])
            loss = task(q, c, candidate_sampling_probability=p, compute_metrics=False,
                        compute_batch_metrics=False)
        return tape.gradient(loss, [q, c])

    def step() -> None:
        for g in run():
            g.numpy()  # wait for the result

    return step


def _tfrs_worker(conn: Any, threads: int) -> None:
    """TFRS in its own process, driven by messages: ("setup", B, extra), ("run", calls) ->
    (ms per call, this process's CPU seconds), ("stop",). In one process with torch, TF's
    spinning thread pools slowed torch's ops ~50x here (bench_samplers.py saw the same)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    step: Callable[[], Any] | None = None
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "setup":
            step = tfrs_step(data(message[1], message[2]))
            step()
            conn.send(tf.__version__)
        else:
            assert step is not None
            cpu, start = time.process_time(), time.perf_counter()
            for _ in range(message[1]):
                step()
            conn.send(((time.perf_counter() - start) / message[1] * 1e3,
                       time.process_time() - cpu))


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Round:
    """Times one round and says whether other processes stayed under 10 % of the cores."""

    def __enter__(self) -> Round:
        self.busy, self.start = _machine_busy_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.start
        self.machine = _machine_busy_s() - self.busy

    def quiet(self, own_cpu_s: float) -> bool:
        others = (self.machine - own_cpu_s) / (self.wall * (os.cpu_count() or 1))
        return others < 0.10


def alternate(torch_fn: Callable[[], Any], conn: Any, rounds: int, budget_s: float) -> dict:
    """Median over quiet rounds of the mean ms per call; torchnce and TFRS take turns every
    round; rounds where other processes used >= 10 % of the cores are dropped and rerun (at
    most 4x as many attempts); ``kept`` says how many attempts were kept."""
    torch_fn()
    start = time.perf_counter()
    torch_fn()
    torch_calls = max(1, int(budget_s / rounds / max(time.perf_counter() - start, 1e-6)))
    conn.send(("run", 1))
    tf_calls = max(1, int(budget_s / rounds / max(conn.recv()[0] / 1e3, 1e-6)))
    samples: dict[str, list[float]] = {"torchnce": [], "tfrs": []}
    attempts = 0
    while min(map(len, samples.values())) < rounds and attempts < 4 * rounds:
        attempts += 1
        cpu = time.process_time()
        with Round() as r:
            for _ in range(torch_calls):
                torch_fn()
        if r.quiet(time.process_time() - cpu):
            samples["torchnce"].append(r.wall / torch_calls * 1e3)
        with Round() as r:
            conn.send(("run", tf_calls))
            ms, tf_cpu = conn.recv()
        if r.quiet(tf_cpu):
            samples["tfrs"].append(ms)
    kept = min(map(len, samples.values()))
    if kept == 0:  # never quiet: report every round rather than nothing
        return {"torchnce": float("nan"), "tfrs": float("nan"), "kept": f"0/{attempts}"}
    result: dict[str, Any] = {n: statistics.median(s) for n, s in samples.items()}
    result["kept"] = f"{kept}/{attempts}"
    return result


def part_one(args: argparse.Namespace) -> list[str]:
    lines = ["| B | extra negatives | torchnce ms | TFRS ms | TFRS / torchnce | quiet rounds |",
             "|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    worker = ctx.Process(target=_tfrs_worker, args=(child, args.threads), daemon=True)
    worker.start()
    try:
        for batch in (256,) if args.quick else (256, 4096):
            for extra in (0, EXTRA):
                x = data(batch, extra)
                conn.send(("setup", batch, extra))
                conn.recv()
                ms = alternate(torch_step(x, batch, extra), conn, args.rounds,
                               budget_s=2.0 if args.quick else 8.0)
                lines.append(f"| {batch} | {extra} | {ms['torchnce']:.2f} | {ms['tfrs']:.2f} |"
                             f" {ms['tfrs'] / ms['torchnce']:.2f}x | {ms['kept']} |")
                print(lines[-1], flush=True)
    finally:
        conn.send(("stop",))
        worker.join(30)
    return lines


def _rank(rank: int, world: int, store: str, rounds: int, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    gathered = GatheredNegatives()
    g = torch.Generator().manual_seed(rank)
    batch, sampled = 256, 1024
    q = torch.randn(batch, D, generator=g).requires_grad_()
    k = torch.randn(batch, D, generator=g).requires_grad_()
    n = torch.randn(sampled, D, generator=g).requires_grad_()
    lq = torch.full((batch,), -5.0)
    slq = torch.full((sampled,), -math.log(1e5))
    ids = torch.randint(0, 10**5, (batch,), generator=g)
    sids = torch.randint(0, 10**5, (sampled,), generator=g)

    def info() -> None:
        gathered.info_nce_loss(q, k, temperature=TAU, log_q=lq, key_ids=ids).backward()

    def mixed() -> None:
        gathered.mixed_negatives_loss(q, k, n, batch_log_q=lq, sampled_log_q=slq,
                                      key_ids=ids, sampled_ids=sids,
                                      temperature=TAU).backward()

    result = {}
    for name, step in (("info_nce", info), ("mixed", mixed)):
        step()
        before = gathered.bytes_sent
        step()
        sent = gathered.bytes_sent - before
        times = []
        for _ in range(rounds):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(5):
                step()
            times.append((time.perf_counter() - start) / 5 * 1e3)
        result[name] = (statistics.median(times), sent)
    out.put((rank, result))
    dist.barrier()
    dist.destroy_process_group()


def formula(world: int, name: str, batch: int = 256, sampled: int = 1024, e: int = 4) -> int:
    """The class docstring's bytes per rank and step: the agreement (8 int64 counts), keys
    both ways, key ids and log-Q; the mixed loss adds the sampled keys both ways, their ids
    and log-Q."""
    rows = batch + (sampled if name == "mixed" else 0)
    return (world - 1) * (8 * 8 + 2 * rows * D * e + rows * (8 + e))


def _cpu_busy() -> float:
    """The fraction of the machine's CPU time spent busy over the next second."""
    def read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total0, idle0 = read()
    time.sleep(1.0)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_until_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_s``) until other processes leave the cores idle; the last busy
    fraction seen (a loaded core makes torch's OpenMP threads wait on each other)."""
    deadline = time.monotonic() + limit_s
    busy = _cpu_busy() if Path("/proc/stat").exists() else 0.0
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(4.0)
        busy = _cpu_busy()
    return busy


def part_two(args: argparse.Namespace) -> list[str]:
    lines = ["| P | loss | global batch | ms per step (rank 0) | bytes sent per rank per step |"
             " formula |", "|---:|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    ctx = mp.get_context("spawn")
    for world in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            queue = ctx.Queue()
            procs = [ctx.Process(target=_rank, args=(r, world, f"{tmp}/store", args.rounds,
                                                     queue)) for r in range(world)]
            for proc in procs:
                proc.start()
            results = dict(queue.get(timeout=600) for _ in procs)
            for proc in procs:
                proc.join(60)
        for name in ("info_nce", "mixed"):
            ms, sent = results[0][name]
            extra = f" + {world * 1024} sampled" if name == "mixed" else ""
            lines.append(f"| {world} | {name} | {world * 256}{extra} | {ms:.2f} | {sent:,} | "
                         f"{formula(world, name):,} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    busy = wait_until_quiet(0 if args.quick else 900)
    header = [
        "# Retrieval losses: torchnce vs TFRS Retrieval, and GatheredNegatives on gloo", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, TensorFlow {version('tensorflow-cpu')}, TFRS "
        f"{version('tensorflow-recommenders')}; "
        f"threads: {args.threads} (torch intra-op, TF intra- and inter-op); date: "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"median of {args.rounds} alternating rounds; other processes' CPU use at the start: "
        f"{busy:.0%}.", "",
        f"## Loss forward + backward, D = {D}, temperature {TAU}, log-Q with clipping", ""]
    print("\n".join(header), flush=True)
    one = part_one(args)
    two_header = ["", "## GatheredNegatives on gloo, 256 rows per rank, D = 128, float32, "
                  "one thread per rank", ""]
    print("\n".join(two_header), flush=True)
    two = part_two(args)
    if args.out:
        args.out.write_text("\n".join(header + one + two_header + two) + "\n")


if __name__ == "__main__":
    main()
