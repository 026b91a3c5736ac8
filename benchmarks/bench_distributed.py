"""The class-sharded output layer on gloo: step time and bytes sent per rank for P = 1, 2, 3.

Each world size runs in its own group of spawned local processes (gloo over loopback, one
thread each). Every rank holds the shard of ``ShardedNCELoss`` that ``partition_strategy``
gives it and trains on its own batch of ``b`` examples with log-uniform (Zipfian) labels;
a step is forward, backward (sparse shard gradients) and SGD. Reported per world size and
strategy: the median step time (the slowest rank's), and the bytes each rank sent per step
(the layer's own count, forward and backward) beside the balanced-shard formula

    bytes/rank/step ≈ 2·(P−1)/P·(S + b·T)·(D + 1)·4 + (P−1)/P·b·T·8 + 8·(P+1)·(P−1)

(rows and biases both ways, the label indices, the split sizes; docs/distributed.md). Under
"div" the Zipfian head lives on rank 0, which then sends most of the rows: the column "max"
shows it. On a 2-core machine 3 processes oversubscribe the cores: compare bytes, not times,
across P.

    python benchmarks/bench_distributed.py            # C=1e6, D=128, S=8192, b=1024, 10 steps
    python benchmarks/bench_distributed.py --quick    # C=1e5, S=1024, b=256, 3 steps
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torchnce
from torchnce.distributed import ShardedNCELoss

WARMUP = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="C=1e5, S=1024, b=256, 3 steps")
    parser.add_argument("--classes", type=float, default=None, help="C (default 1e6)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sampled", type=int, default=None, help="S (default 8192)")
    parser.add_argument("--batch", type=int, default=None, help="b per rank (default 1024)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    quick = args.quick
    args.classes = int(args.classes or (1e5 if quick else 1e6))
    args.sampled = args.sampled or (1024 if quick else 8192)
    args.batch = args.batch or (256 if quick else 1024)
    args.steps = args.steps or (3 if quick else 10)
    return args


def formula(world: int, args: argparse.Namespace, num_true: int = 1) -> float:
    """Balanced-shard bytes sent per rank and step (float32 rows with a bias column)."""
    share = (world - 1) / world
    rows = 2 * share * (args.sampled + args.batch * num_true) * (args.dim + 1) * 4
    return rows + share * args.batch * num_true * 8 + 8 * (world + 1) * (world - 1)


def _rank(rank: int, world: int, store: str, strategy: str, args: Any, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(rank)
    layer = ShardedNCELoss(args.classes, args.dim, args.sampled, partition_strategy=strategy,
                           sparse_grad=True, seed=0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)
    times, sent = [], []
    for step in range(WARMUP + args.steps):
        x = torch.randn(args.batch, args.dim, generator=gen)
        labels = torchnce.log_uniform_candidate_sampler(
            torch.zeros(args.batch, 1, dtype=torch.long), 1, args.batch, False, args.classes,
            generator=gen).sampled_candidates
        dist.barrier()
        before, start = layer.bytes_sent, time.perf_counter()
        optimizer.zero_grad()
        layer(x, labels).backward()
        optimizer.step()
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
            sent.append(layer.bytes_sent - before)
    out.put((rank, times, sent))
    dist.destroy_process_group()


def run(world: int, strategy: str, args: argparse.Namespace) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        procs = [ctx.Process(target=_rank, args=(r, world, store, strategy, args, queue))
                 for r in range(world)]
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
    per_step = [max(r[1][i] for r in results) for i in range(args.steps)]
    bytes_per_rank = [statistics.mean(r[2]) for r in results]
    return {"ms": 1e3 * statistics.median(per_step), "mean": statistics.mean(bytes_per_rank),
            "max": max(bytes_per_rank), "formula": formula(world, args)}


def main() -> None:
    args = parse_args()
    print(f"C={args.classes:.0e}, D={args.dim}, S={args.sampled}, b={args.batch} per rank, "
          f"T=1, float32, {args.steps} steps, torch {torch.__version__}, gloo, 1 thread/rank\n")
    print("| P | strategy | ms/step (median) | MB sent/rank/step mean | max | formula |")
    print("|---:|---|---:|---:|---:|---:|")
    for world in args.worlds:
        for strategy in ("mod", "div") if world > 1 else ("mod",):
            r = run(world, strategy, args)
            print(f"| {world} | {strategy} | {r['ms']:.1f} | {r['mean'] / 1e6:.2f} | "
                  f"{r['max'] / 1e6:.2f} | {r['formula'] / 1e6:.2f} |", flush=True)


if __name__ == "__main__":
    main()
