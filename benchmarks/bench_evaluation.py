"""Exact full evaluation at scale: time and peak memory of the chunked losses and top-k.

At B=1024, D=128, C=1e6 (float32, CPU, 2 threads) the dense ``[B, C]`` logits alone are 4 GB.
Each variant is timed against the bare chunked matmuls of the same size (``addmm`` of every
chunk of classes into one reused buffer, nothing else), interleaved in rounds; the ratio is
the median of the per-round ratios, so a slow round slows both. Peak additional memory is
measured in a fresh subprocess per variant: the kernel's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident set just before the
call, with the parameters already in memory.

Variants (forward, under ``torch.no_grad``, unless marked fwd+bwd):
* ``nce_eval_loss``, ``sampled_softmax_eval_loss``, ``top_k`` (k=10), default chunk size;
* ``F.linear_cross_entropy`` with ``LinearCrossEntropyOptions(batch_chunk_size=16)`` (torch's
  batch-chunked exact softmax; 16 rows of 1e6 logits = 64 MB per chunk);
* fwd+bwd of both losses (gradients of inputs, weights and biases), against three bare chunked
  matmuls (the logits, the inputs' and the weights' gradients).

    python benchmarks/bench_evaluation.py            # full run, writes results_evaluation.md
    python benchmarks/bench_evaluation.py --quick    # C=1e5, 2 rounds, prints only
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import torchnce
from torchnce._exact.chunked import default_chunk_size
from torchnce._sampled.logits import linear_logits

THREADS = 2
K = 10
LCE_CHUNK = 16
MEMORY_LIMIT_MB = 256
TIME_LIMIT = 1.5
FORWARD = ("nce_eval_loss", "sampled_softmax_eval_loss", "top_k", "linear_cross_entropy")
BACKWARD = ("nce_eval_loss fwd+bwd", "sampled_softmax_eval_loss fwd+bwd")
Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="C=1e5, 2 rounds, no file")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=float, default=None, help="C (default 1e6; 1e5 quick)")
    parser.add_argument("--chunk", type=int, default=None, help="classes per chunk (default: "
                        "the library's default for the batch size)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--no-backward", action="store_true", help="skip the fwd+bwd variants")
    parser.add_argument("--limit-s", type=float, default=None,
                        help="keep running rounds up to this long to collect --rounds quiet ones "
                             "(default 900; 30 with --quick)")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file (default benchmarks/results_evaluation.md; none with "
                             "--quick)")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def make_data(batch: int, dim: int, classes: int, seed: int = 0) -> Data:
    """Inputs, weights (std 1/√D), zero biases and labels, filled in place (no temporaries)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(batch, dim).normal_(generator=g)
    w = torch.empty(classes, dim).normal_(0.0, dim ** -0.5, generator=g)
    return x, w, torch.zeros(classes), torch.randint(0, classes, (batch,), generator=g)


def chunked_matmuls(data: Data, chunk: int, count: int) -> Callable[[], object]:
    """``count`` bare matmuls per chunk: ``x·Wcᵀ + bc`` (and for backward ``G·Wc``, ``Gᵀ·x``)."""
    x, w, b, _ = data
    buffer = torch.empty(x.shape[0] * chunk)
    grad_x, grad_w = torch.zeros_like(x), torch.empty_like(w) if count > 1 else w

    def run() -> None:
        for start in range(0, w.shape[0], chunk):
            stop = min(start + chunk, w.shape[0])
            out = buffer[: x.shape[0] * (stop - start)].view(x.shape[0], stop - start)
            linear_logits(x, w[start:stop], b[start:stop], out=out)
            if count > 1:
                grad_x.addmm_(out, w[start:stop])
                torch.mm(out.t(), x, out=grad_w[start:stop])

    return run


def variant(name: str, data: Data, chunk: int) -> Callable[[], object]:
    x, w, b, y = data
    classes = w.shape[0]
    if name == "matmul":
        return chunked_matmuls(data, chunk, 1)
    if name == "matmul x3":
        return chunked_matmuls(data, chunk, 3)
    if name == "nce_eval_loss":
        return lambda: torchnce.nce_eval_loss(w, b, y, x, classes, chunk_size=chunk)
    if name == "sampled_softmax_eval_loss":
        return lambda: torchnce.sampled_softmax_eval_loss(w, b, y, x, classes, chunk_size=chunk)
    if name == "top_k":
        return lambda: torchnce.top_k(w, b, x, K, chunk_size=chunk)
    if name == "linear_cross_entropy":
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=LCE_CHUNK)
        return lambda: F.linear_cross_entropy(x, w, y, linear_bias=b, reduction="none",
                                              options=options)
    loss = {"nce_eval_loss fwd+bwd": torchnce.nce_eval_loss,
            "sampled_softmax_eval_loss fwd+bwd": torchnce.sampled_softmax_eval_loss}[name]
    px, pw, pb = (t.detach().requires_grad_() for t in (x, w, b))  # same storage

    def step() -> None:
        out = loss(pw, pb, y, px, classes, chunk_size=chunk).sum()
        grads = torch.autograd.grad(out, (px, pw, pb))
        del grads

    return step


# ------------------------------------------------------------------------------------------------
# Memory: one fresh process per variant


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(match.group(1))


def probe(args: argparse.Namespace, name: str) -> None:
    """In a fresh process: peak resident memory added by one call of ``name``, in MiB."""
    torch.set_num_threads(THREADS)
    data = make_data(args.batch, args.dim, int(args.classes))
    run = variant(name, data, args.chunk)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    before = _status_kib("VmRSS")
    if name.endswith("fwd+bwd"):
        run()
    else:
        with torch.no_grad():
            run()
    peak = _status_kib("VmHWM")
    grads = 4 * (data[0].numel() + data[1].numel() + data[2].numel())  # dense gradients
    print(json.dumps({"peak_mib": (peak - before) / 1024,
                      "grads_mib": grads / 2**20 if name.endswith("fwd+bwd") else 0.0}))


def peak_memory(args: argparse.Namespace, name: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--probe", name, "--batch", str(args.batch),
           "--dim", str(args.dim), "--classes", str(args.classes), "--chunk", str(args.chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------------
# Time: interleaved rounds


def _cpu_busy_s() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def timed(run: Callable[[], object], backward: bool) -> float:
    start = time.perf_counter()
    if backward:
        run()
    else:
        with torch.no_grad():
            run()
    return time.perf_counter() - start


class OthersLoad:
    """Share of the machine's cores that *other* processes kept busy over a window."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()

    def fraction(self) -> float:
        others = (_cpu_busy_s() - self.busy) - (_own_cpu_s() - self.own)
        wall = time.perf_counter() - self.wall
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def measure(
    runs: dict[str, Callable[[], object]], rounds: int, limit_s: float, quiet: float = 0.1
) -> tuple[dict[str, list[float]], int, int]:
    """Seconds per call of every variant, per round, over the quiet rounds.

    A round is quiet when other processes kept less than ``quiet`` of the cores busy. Rounds
    repeat until ``rounds`` quiet ones are collected or ``limit_s`` has passed; if fewer than
    a third were quiet, all rounds are used. Returns the times, the quiet and the total rounds.
    """
    for name, run in runs.items():  # warm-up
        timed(run, name.endswith("fwd+bwd"))
    kept: dict[str, list[float]] = {name: [] for name in runs}
    every: dict[str, list[float]] = {name: [] for name in runs}
    n_quiet = n_all = 0
    deadline = time.perf_counter() + limit_s
    gc.disable()
    try:
        while n_quiet < rounds and (n_all < rounds or time.perf_counter() < deadline):
            window = OthersLoad()
            got = {name: timed(run, name.endswith("fwd+bwd")) for name, run in runs.items()}
            n_all += 1
            is_quiet = window.fraction() < quiet
            n_quiet += is_quiet
            for name, t in got.items():
                every[name].append(t)
                if is_quiet:
                    kept[name].append(t)
    finally:
        gc.enable()
    return (kept if n_quiet >= max(1, rounds // 3) else every), n_quiet, n_all


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))


# ------------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"* CPU: {cpu} ({os.cpu_count()} logical cores visible; {THREADS} threads used)\n"
            f"* torch {torch.__version__}, Python {platform.python_version()}\n"
            f"* load average at the end: {load}\n* date: {now}\n")


def report(args: argparse.Namespace, times: dict[str, list[float]], rounds: tuple[int, int],
           memory: dict[str, dict[str, float]]) -> str:
    b, d, c = args.batch, args.dim, int(args.classes)
    n_quiet, n_all = rounds
    over = (f"the {n_quiet} quiet rounds of {n_all} (other processes kept < 10 % of the cores "
            "busy)" if n_quiet >= max(1, args.rounds // 3)
            else f"all {n_all} rounds (only {n_quiet} quiet: NOT representative)")
    lines = [
        "# Exact full evaluation: chunked losses and top-k at scale\n",
        f"B={b}, D={d}, C={c:,}, float32, CPU; chunk = {args.chunk} classes "
        f"({b * args.chunk * 4 / 2**20:.0f} MiB of logits; the dense [B, C] logits would be "
        f"{b * c * 4 / 2**30:.1f} GiB). Medians over {over}; ratio = median over those rounds "
        f"of (variant / bare chunked matmuls of the same round). "
        f"Peak memory: VmHWM − VmRSS around one call in a fresh process. "
        f"Produced by `python benchmarks/bench_evaluation.py`.\n",
        machine(),
        "| variant | median s | ratio to bare matmuls | peak additional MiB | within bounds "
        f"(≤ {TIME_LIMIT}×, ≤ {MEMORY_LIMIT_MB} MiB) |",
        "|---|---:|---:|---:|---|",
    ]
    for name in times:
        if name.startswith("matmul"):
            lines.append(f"| bare chunked {name} | {statistics.median(times[name]):.3f} | 1.00 "
                         "| – | – |")
            continue
        base = "matmul x3" if name.endswith("fwd+bwd") else "matmul"
        r = ratio(times, name, base)
        mem = memory.get(name, {})
        extra = mem.get("peak_mib", float("nan")) - mem.get("grads_mib", 0.0)
        mem_text = f"{extra:.0f}" + (" beyond the gradients" if mem.get("grads_mib") else "")
        bounded = "yes" if r <= TIME_LIMIT and extra <= MEMORY_LIMIT_MB else "NO"
        if name == "linear_cross_entropy" or name.endswith("fwd+bwd"):
            bounded = "(reference)" if name == "linear_cross_entropy" else "(no bound set)"
        lines.append(f"| {name} | {statistics.median(times[name]):.3f} | {r:.2f} | {mem_text} "
                     f"| {bounded} |")
    lines.append(
        "\nThe fwd+bwd rows are against three bare chunked matmuls (logits, inputs' gradient, "
        "weights' gradient); their memory excludes the dense gradients themselves "
        f"({(b * d + c * d + c) * 4 / 2**20:.0f} MiB). `linear_cross_entropy` is "
        f"`F.linear_cross_entropy(..., options=LinearCrossEntropyOptions(batch_chunk_size="
        f"{LCE_CHUNK}))`, the single-target softmax alternative the issue asked to compare; "
        "torchnce's class chunks are faster, so `sampled_softmax_eval_loss` does not use it.\n")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.classes = args.classes or (1e5 if args.quick else 1e6)
    args.chunk = args.chunk or default_chunk_size(args.batch)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.limit_s = args.limit_s if args.limit_s is not None else (30.0 if args.quick else 900.0)
    if args.probe:
        probe(args, args.probe)
        return
    torch.set_num_threads(THREADS)
    names = ["matmul", *FORWARD] + ([] if args.no_backward else ["matmul x3", *BACKWARD])
    memory = {name: peak_memory(args, name) for name in names if not name.startswith("matmul")}
    data = make_data(args.batch, args.dim, int(args.classes))
    runs = {name: variant(name, data, args.chunk) for name in names}
    times, n_quiet, n_all = measure(runs, args.rounds, args.limit_s)
    text = report(args, times, (n_quiet, n_all), memory)
    print(text)
    output = args.output or (None if args.quick else Path(__file__).with_name(
        "results_evaluation.md"))
    if output is not None:
        output.write_text(text + "\n")


if __name__ == "__main__":
    main()
