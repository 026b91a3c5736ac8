"""Per-example negatives against shared ones: one forward + backward of ``nce_loss``.

(B, D, S) = (1024, 128, 64) over C = 1e5 classes, plus word2vec's shape
(B, D, S) = (1024, 100, 5). Shared: ``S`` candidates for the whole batch (TensorFlow's layout,
one ``[B, D] × [D, S]`` matmul). Per example: ``S`` candidates per row, ``[B, S]`` (one batched
gather of ``[B, S, D]`` rows, batched dots). Both with given sampled values (the sampler is
timed separately: the default per-row log-uniform unique draw) and ``sparse_grad=True``.

    python benchmarks/bench_per_example.py          # prints a Markdown table
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

import torchnce

CLASSES = 100_000
SHAPES = [(1024, 128, 64), (1024, 100, 5), (4096, 100, 5)]


def timed(fn: Callable[[], object], seconds: float = 0.5, rounds: int = 5) -> float:
    """Median over rounds of the mean µs per call."""
    fn()
    results = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            fn()
            count += 1
        results.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(results)


def step(weights: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
         values: tuple[torch.Tensor, ...], num_sampled: int) -> Callable[[], object]:
    def run() -> object:
        loss = torchnce.nce_loss(weights, None, labels, inputs, num_sampled, CLASSES,
                                 sampled_values=values, sparse_grad=True).sum()
        return torch.autograd.grad(loss, (weights, inputs))
    return run


def row(batch: int, dim: int, num_sampled: int, gen: torch.Generator) -> str:
    weights = (torch.randn(CLASSES, dim, generator=gen) * 0.05).requires_grad_()
    inputs = torch.randn(batch, dim, generator=gen).requires_grad_()
    labels = torch.randint(CLASSES, (batch, 1), generator=gen)
    shared = torchnce.log_uniform_candidate_sampler(labels, 1, num_sampled, True, CLASSES,
                                                    generator=gen)
    rows = torch.randint(CLASSES, (batch, num_sampled), generator=gen)
    given = (rows, torch.full((batch, 1), 1e-3), torch.full((batch, num_sampled), 1e-3))
    t_shared = timed(step(weights, inputs, labels, tuple(shared), num_sampled))
    t_rows = timed(step(weights, inputs, labels, given, num_sampled))
    w, x = weights.detach(), inputs.detach()
    t_drawn = timed(lambda: torchnce.nce_loss(w, None, labels, x, num_sampled, CLASSES,
                                              per_example_negatives=True, generator=gen))
    t_given = timed(lambda: torchnce.nce_loss(w, None, labels, x, num_sampled, CLASSES,
                                              sampled_values=given))
    t_sampler = t_drawn - t_given  # forward with the default per-row draw, minus without
    return (f"| {batch}, {dim}, {num_sampled} | {t_shared:,.0f} | {t_rows:,.0f} | "
            f"{t_rows / t_shared:.2f} | {max(t_sampler, 0):,.0f} |")


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"# per-example vs shared negatives, C = {CLASSES:,}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{platform.machine()}\n")
    print("| B, D, S | shared µs | per-example µs | per-example / shared | per-row sampler µs |")
    print("|---|---|---|---|---|")
    for batch, dim, num_sampled in SHAPES:
        print(row(batch, dim, num_sampled, gen), flush=True)


if __name__ == "__main__":
    main()
