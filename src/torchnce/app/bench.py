"""``python -m torchnce bench``: one training step as the number of classes grows.

Times forward, backward and an SGD update of the full softmax (``F.linear_cross_entropy`` with
explicit batch chunks), ``sampled_softmax_loss`` and ``nce_loss`` (sparse gradients), and
TensorFlow's ``nce_loss`` inside ``tf.function`` when TensorFlow is installed; prints a table
and saves a PNG plot. The full benchmarks with quiet-machine checks live in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from torchnce import nce_loss, sampled_softmax_loss

Step = Callable[[], None]
_LR = 0.1


def add_bench_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="time a training step against the number of classes",
                       description="Time one training step: full softmax, sampled softmax, "
                                   "NCE (and TensorFlow's nce_loss when installed).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--classes", type=_count, nargs="+", default=[10_000, 100_000, 1_000_000],
                   help="numbers of classes C (1e6 is accepted)")
    p.add_argument("--batch-size", type=int, default=512, help="B")
    p.add_argument("--dim", type=int, default=128, help="D")
    p.add_argument("--num-sampled", type=int, default=256, help="S")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per cell (median)")
    p.add_argument("--no-tensorflow", action="store_true", help="skip TensorFlow even if found")
    p.add_argument("--out", type=Path, default=Path("bench.png"), help="plot file")
    p.set_defaults(run=run_bench)


def _count(text: str) -> int:
    """A number of classes: an integer >= 2, written as 1000000 or 1e6."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text}") from None
    if not (value.is_integer() and value >= 2):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 2, got {text}")
    return int(value)


def _data(classes: int, batch: int, dim: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"weights": torch.randn(classes, dim, generator=gen) * 0.05,
            "biases": torch.zeros(classes),
            "inputs": torch.randn(batch, dim, generator=gen),
            "labels": torch.randint(classes, (batch, 1), generator=gen)}


def full_softmax_step(data: dict[str, torch.Tensor], num_sampled: int) -> Step:
    w, b = (data[k].clone().requires_grad_() for k in ("weights", "biases"))
    x, y = data["inputs"], data["labels"][:, 0]
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=64)

    def step() -> None:
        loss = F.linear_cross_entropy(x, w, y, linear_bias=b, options=options)
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w.sub_(gw, alpha=_LR)
            b.sub_(gb, alpha=_LR)
    return step


def sampled_step(loss_fn: Any) -> Callable[[dict[str, torch.Tensor], int], Step]:
    def make(data: dict[str, torch.Tensor], num_sampled: int) -> Step:
        w, b = (data[k].clone().requires_grad_() for k in ("weights", "biases"))
        x, y = data["inputs"], data["labels"]
        opt = torch.optim.SGD([w, b], lr=_LR)
        gen = torch.Generator().manual_seed(0)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(w, b, y, x, num_sampled, w.shape[0], generator=gen,
                    sparse_grad=True).mean().backward()
            opt.step()
        return step
    return make


def _import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    import tensorflow as tf  # type: ignore[import-untyped]

    return tf


def _measured(args: argparse.Namespace) -> str:
    """What a figure is: the median of how many steps, the shape, threads, gradients."""
    return (f"one training step (forward, backward, SGD), median of {args.repeats}; "
            f"B={args.batch_size}, D={args.dim}, S={args.num_sampled}, "
            f"{torch.get_num_threads()} threads; sampled losses with sparse gradients")


def tensorflow_step(data: dict[str, torch.Tensor], num_sampled: int) -> Step:
    tf = _import_tensorflow()

    w, b = tf.Variable(data["weights"].numpy()), tf.Variable(data["biases"].numpy())
    x, y = tf.constant(data["inputs"].numpy()), tf.constant(data["labels"].numpy())

    @tf.function  # type: ignore[untyped-decorator]
    def step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.compat.v1.nn.nce_loss(
                w, b, y, x, num_sampled, int(w.shape[0])))
        gw, gb = tape.gradient(loss, [w, b])
        w.scatter_sub(tf.IndexedSlices(_LR * gw.values, gw.indices))
        b.scatter_sub(tf.IndexedSlices(_LR * gb.values, gb.indices))
    return lambda: step() and None


def median_ms(step: Step, repeats: int) -> float:
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def run_bench(args: argparse.Namespace) -> int:
    makers: dict[str, Callable[[dict[str, torch.Tensor], int], Step]] = {
        "full softmax": full_softmax_step,
        "sampled softmax": sampled_step(sampled_softmax_loss),
        "nce": sampled_step(nce_loss)}
    if not args.no_tensorflow and importlib.util.find_spec("tensorflow") is not None:
        _import_tensorflow()  # now, so that its start-up lines come before the table
        makers["tensorflow nce"] = tensorflow_step
    classes = list(args.classes)
    print(f"{_measured(args)}, ms")
    print(f"{'classes':>10} " + " ".join(f"{name:>15}" for name in makers))
    table: dict[str, list[float]] = {name: [] for name in makers}
    for c in classes:
        data = _data(c, args.batch_size, args.dim)
        for name, make in makers.items():
            table[name].append(median_ms(make(data, args.num_sampled), args.repeats))
        print(f"{c:>10,} " + " ".join(f"{table[n][-1]:>15.2f}" for n in makers), flush=True)
    _plot(args.out, classes, table, args)
    return 0


def _plot(path: Path, classes: list[int], table: dict[str, list[float]],
          args: argparse.Namespace) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot; pip install matplotlib")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, times in table.items():
        ax.loglog(classes, times, marker="o", label=name)
    ax.set_xlabel("number of classes")
    ax.set_ylabel("training step (ms)")
    ax.set_title(_measured(args).replace("; ", "\n", 1), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
