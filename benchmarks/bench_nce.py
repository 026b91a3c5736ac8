"""One training step of ``torchnce.nce_loss`` against ``tf.compat.v1.nn.nce_loss``, side by side.

A step is forward, backward and an SGD update (lr 0.1) of weights and biases. ``inputs`` is a leaf
that requires grad but is not updated (its gradient is computed and stored on both sides). Both
sides sample S candidates with the default log-uniform unique sampler inside the step.

* torchnce: eager, ``torch.optim.SGD``, with ``sparse_grad=True`` and with dense gradients; and
  ``NCELoss(..., update=RowUpdate("sgd" | "adagrad", lr))``, the optimizer in backward.
* torchnce compiled: the dense-gradient loss under ``torch.compile(fullgraph=True)`` (inductor)
  against the same step eager, both seeded with ``seed=`` (torch 2.13's dynamo cannot trace an
  explicit ``torch.Generator``); the SGD update stays eager. Compile time is not counted.
* TensorFlow 2.21: the step inside ``tf.function``; the update is the faster of Keras' ``SGD``
  (which applies IndexedSlices sparsely) and a manual ``scatter_sub`` of the IndexedSlices; the
  table says which won.
* full softmax (smallest shape only): ``F.cross_entropy(inputs @ W.T + b, labels)`` and
  ``F.linear_cross_entropy`` with an explicit batch chunk, dense SGD; the faster is reported.

Variants are interleaved in rounds; each figure is the median per-step time over all measured
steps after warm-up. Both libraries use 2 threads.

    python benchmarks/bench_nce.py            # full run, writes benchmarks/results_nce.md
    python benchmarks/bench_nce.py --quick    # smoke run, prints only
    python benchmarks/bench_nce.py --shapes 2 --profile   # torch.profiler of the sparse step
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHAPES = [  # (B, D, C, S, T)
    (128, 128, 50_000, 64, 1),
    (1024, 256, 100_000, 1024, 1),
    (512, 128, 1_000_000, 256, 1),
    (512, 128, 1_000_000, 256, 4),
]
LR = 0.1
THREADS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, no file")
    parser.add_argument("--shapes", type=int, nargs="*", help="indices into SHAPES (default all)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--block-ms", type=float, default=60.0,
                        help="target time of one variant's block of steps per round")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of the torchnce sparse step")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file (default benchmarks/results_nce.md; none with --quick)")
    parser.add_argument("--wait-quiet", type=float, default=120.0,
                        help="before each shape, wait up to this many seconds for other "
                             "processes to leave the cores idle (torch's OpenMP degrades far "
                             "more than TensorFlow's pool when cores are shared)")
    parser.add_argument("--limit-s", type=float, default=240.0,
                        help="per shape, keep running rounds up to this long to collect "
                             "--rounds quiet ones")
    parser.add_argument("--thp", action="store_true",
                        help="set THP_MEM_ALLOC_ENABLE=1 (PyTorch's huge-page allocator option)")
    return parser.parse_args()


ARGS = parse_args()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if ARGS.thp:  # read by PyTorch's CPU allocator at import
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torchnce  # noqa: E402

torch.set_num_threads(THREADS)
tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)

Step = Callable[[], Any]


# ------------------------------------------------------------------------------------------------
# The steps


def torch_nce_step(shape: tuple[int, ...], data: dict[str, np.ndarray], *, sparse: bool) -> Step:
    batch, _, num_classes, num_sampled, num_true = shape
    weights = torch.tensor(data["weights"], requires_grad=True)
    biases = torch.tensor(data["biases"], requires_grad=True)
    inputs = torch.tensor(data["inputs"], requires_grad=True)  # a leaf, never updated
    labels = torch.tensor(data["labels"])
    generator = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD([weights, biases], lr=LR)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        inputs.grad = None
        loss = torchnce.nce_loss(weights, biases, labels, inputs, num_sampled, num_classes,
                                 num_true, generator=generator, sparse_grad=sparse).mean()
        loss.backward()
        opt.step()

    del batch
    return step


def torch_row_update_step(shape: tuple[int, ...], data: dict[str, np.ndarray], *,
                          update: str) -> Step:
    """``torchnce.NCELoss(..., update=RowUpdate(update, lr))``: the rows are updated inside the
    backward, no gradient tensor for the table is built. Same default sampler (log-uniform,
    unique); the layer's "mean" reduction is the other steps' ``.mean()``."""
    _, dim, num_classes, num_sampled, num_true = shape
    layer = torchnce.NCELoss(num_classes, dim, num_sampled, num_true=num_true,
                             update=torchnce.RowUpdate(update, lr=LR))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(data["weights"]))
        layer.bias.copy_(torch.from_numpy(data["biases"]))
    inputs = torch.tensor(data["inputs"], requires_grad=True)
    labels = torch.tensor(data["labels"])

    def step() -> None:
        inputs.grad = None
        layer(inputs, labels).backward()

    return step


def torch_seeded_dense_step(
    shape: tuple[int, ...], data: dict[str, np.ndarray], *, compiled: bool
) -> Step:
    """The dense-gradient step drawing with ``seed=``, eager or its loss compiled whole."""
    _, _, num_classes, num_sampled, num_true = shape
    weights = torch.tensor(data["weights"], requires_grad=True)
    biases = torch.tensor(data["biases"], requires_grad=True)
    inputs = torch.tensor(data["inputs"], requires_grad=True)
    labels = torch.tensor(data["labels"])
    opt = torch.optim.SGD([weights, biases], lr=LR)

    def loss_of(y: torch.Tensor) -> torch.Tensor:
        return torchnce.nce_loss(weights, biases, y, inputs, num_sampled, num_classes,
                                 num_true, seed=0).mean()

    # dynamic=False: each shape's num_classes stays a constant (dynamo would otherwise make it
    # symbolic on the second shape, and the unique plan needs it as a number).
    loss_fn = torch.compile(loss_of, fullgraph=True, dynamic=False) if compiled else loss_of

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        inputs.grad = None
        loss_fn(labels).backward()
        opt.step()

    if compiled:
        step()  # compile here, outside the timings
    return step


def torch_floor_step(shape: tuple[int, ...], data: dict[str, np.ndarray]) -> Step:
    """A lower bound for any eager PyTorch step of this shape, not a usable loss.

    No validation, a non-unique closed-form log-uniform draw, the true logits left out (only
    ``inputs @ W[sampled].T + b`` and its sigmoid loss), plain autograd, the same sparse SGD.
    Its time is what eager dispatch alone costs at this shape.
    """
    _, _, num_classes, num_sampled, _ = shape
    weights = torch.tensor(data["weights"], requires_grad=True)
    biases = torch.tensor(data["biases"], requires_grad=True)
    inputs = torch.tensor(data["inputs"], requires_grad=True)
    opt = torch.optim.SGD([weights, biases], lr=LR)
    log_range = math.log1p(num_classes)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        inputs.grad = None
        u = torch.rand(num_sampled, dtype=torch.float64)
        ids = torch.expm1(u.mul_(log_range)).long()
        rows = F.embedding(ids, weights, sparse=True)
        logits = torch.addmm(F.embedding(ids, biases.unsqueeze(1)).squeeze(1), inputs, rows.t())
        F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
        opt.step()

    return step


def torch_softmax_step(data: dict[str, np.ndarray], *, chunked: bool) -> Step:
    weights = torch.tensor(data["weights"], requires_grad=True)
    biases = torch.tensor(data["biases"], requires_grad=True)
    inputs = torch.tensor(data["inputs"], requires_grad=True)
    labels = torch.tensor(data["labels"][:, 0])
    opt = torch.optim.SGD([weights, biases], lr=LR)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=64)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        inputs.grad = None
        if chunked:
            loss = F.linear_cross_entropy(inputs, weights, labels, linear_bias=biases,
                                          options=options)
        else:
            loss = F.cross_entropy(inputs @ weights.T + biases, labels)
        loss.backward()
        opt.step()

    return step


def tf_nce_step(shape: tuple[int, ...], data: dict[str, np.ndarray], *, keras: bool) -> Step:
    _, _, num_classes, num_sampled, num_true = shape
    weights = tf.Variable(data["weights"])
    biases = tf.Variable(data["biases"])
    inputs = tf.Variable(data["inputs"])  # gradient computed and stored, never applied
    inputs_grad = tf.Variable(tf.zeros_like(inputs))
    labels = tf.constant(data["labels"])
    tf.random.set_seed(0)
    opt = tf.keras.optimizers.SGD(LR)
    if keras:
        opt.build([weights, biases])

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.compat.v1.nn.nce_loss(
                weights, biases, labels, inputs, num_sampled, num_classes, num_true))
        g_w, g_b, g_x = tape.gradient(loss, [weights, biases, inputs])
        if keras:
            opt.apply_gradients([(g_w, weights), (g_b, biases)])
        else:  # IndexedSlices: scatter_sub sums duplicate rows, as the gradient means
            weights.scatter_sub(tf.IndexedSlices(LR * g_w.values, g_w.indices))
            biases.scatter_sub(tf.IndexedSlices(LR * g_b.values, g_b.indices))
        inputs_grad.assign(g_x)  # keep the inputs gradient alive (else grappler prunes it)
        return loss

    return step


# ------------------------------------------------------------------------------------------------
# Timing


def make_data(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    batch, dim, num_classes, _, num_true = shape
    rng = np.random.default_rng(seed)
    return {
        "weights": (rng.standard_normal((num_classes, dim), dtype=np.float32) * 0.05),
        "biases": np.zeros(num_classes, np.float32),
        "inputs": rng.standard_normal((batch, dim), dtype=np.float32),
        "labels": rng.integers(0, num_classes, (batch, num_true), dtype=np.int64),
    }


def _cpu_busy_s() -> float:
    """Seconds of CPU time all processes have spent busy (from /proc/stat), or nan."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OthersLoad:
    """Fraction of the machine's cores that *other* processes kept busy over a window."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()

    def fraction(self) -> float:
        wall = time.perf_counter() - self.wall
        others = (_cpu_busy_s() - self.busy) - (_own_cpu_s() - self.own)
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def wait_until_quiet(limit_s: float, threshold: float = 0.1) -> float:
    """Wait (up to ``limit_s``) for a 1 s window where other processes use < threshold."""
    deadline = time.perf_counter() + limit_s
    while True:
        window = OthersLoad()
        time.sleep(1.0)
        load = window.fraction()
        if load < threshold or time.perf_counter() > deadline:
            return load


def time_steps(step: Step, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(
    steps: dict[str, Step], *, rounds: int, warmup: int, block_s: float, max_steps: int,
    limit_s: float, quiet: float = 0.1,
) -> tuple[dict[str, float], int, int]:
    """Median ms per step of each variant over interleaved rounds after warm-up.

    Each round runs every variant for about ``block_s``. A round counts as quiet when other
    processes kept less than ``quiet`` of the cores busy during it; rounds repeat until
    ``rounds`` quiet ones are collected or ``limit_s`` has passed, and the medians are taken over
    the quiet rounds (over all rounds if fewer than a third were quiet). Returns the medians,
    the number of quiet rounds and the number run.
    """
    per_block = {}
    for name, step in steps.items():
        warm = time_steps(step, warmup)
        per_block[name] = max(1, min(max_steps, round(block_s / statistics.median(warm))))
    quiet_samples: dict[str, list[float]] = {name: [] for name in steps}
    all_samples: dict[str, list[float]] = {name: [] for name in steps}
    kept = seen = 0
    deadline = time.perf_counter() + limit_s
    gc.collect()
    gc.disable()
    try:
        while kept < rounds and (seen < rounds or time.perf_counter() < deadline):
            window = OthersLoad()
            got = {name: time_steps(step, per_block[name]) for name, step in steps.items()}
            seen += 1
            is_quiet = window.fraction() < quiet
            kept += is_quiet
            for name, times in got.items():
                all_samples[name] += times
                if is_quiet:
                    quiet_samples[name] += times
    finally:
        gc.enable()
    use = quiet_samples if enough_quiet(kept, rounds) else all_samples
    return {name: 1e3 * statistics.median(s) for name, s in use.items()}, kept, seen


COMPUTE_BOUND = (1024, 256, 100_000, 1024, 1)


def sgemm_note(shape: tuple[int, ...], ms: dict[str, float]) -> str:
    """The compute-bound shape against this machine's sgemm rate, measured now: a step's three
    products (``x·W_sᵀ``, ``g·W_s``, ``gᵀ·x``) are ``6·B·S·D`` flops."""
    batch, dim, _, num_sampled, _ = shape
    a, b = torch.randn(batch, dim), torch.randn(num_sampled, dim)
    for _ in range(5):
        torch.mm(a, b.t())
    times = []
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b.t())
        times.append((time.perf_counter() - start) / 10)
    rate = 2 * batch * dim * num_sampled / statistics.median(times)
    flops = 6 * batch * dim * num_sampled
    parts = [f"{name} {flops / (ms[name] / 1e3) / rate:.0%}"
             for name in ("row sgd", "sparse", "tf keras SGD", "tf scatter_sub")]
    return (f"* {shape}: this machine's sgemm rate ({batch}×{dim}×{num_sampled}, {THREADS} "
            f"threads, measured in this run) {rate / 1e9:.0f} GFLOP/s; the step's 6·B·S·D = "
            f"{flops / 1e9:.2f} GFLOP of products at that rate take {flops / rate * 1e3:.2f} ms; "
            f"as a fraction of the sgemm rate (products' flops / step time / rate): "
            + ", ".join(parts))


def enough_quiet(kept: int, rounds: int) -> bool:
    return kept >= max(1, rounds // 3)


def profile_step(step: Step, label: str) -> None:
    for _ in range(5):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step()
    print(f"\n### torch.profiler, {label}, 20 steps\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


# ------------------------------------------------------------------------------------------------
# Report


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_info(load_at_start: str) -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"* CPU: {cpu} ({os.cpu_count()} logical cores visible; {THREADS} threads used)\n"
            f"* torch {torch.__version__}, TensorFlow {tf.__version__}, "
            f"Python {platform.python_version()}, numpy {np.__version__}\n"
            f"* THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}\n"
            f"* load average (1, 5, 15 min) at start: {load_at_start}; at end: {load_average()} "
            "(anything well above 0 means other processes shared the cores: compare ratios "
            "from one run only)\n"
            f"* date: {now}")


def main() -> None:
    quick = ARGS.quick
    load_at_start = load_average()
    rounds = 2 if quick else ARGS.rounds
    warmup, max_steps = (2, 3) if quick else (5, 40)
    block_s = ARGS.block_ms / 1e3
    indices = ARGS.shapes if ARGS.shapes else range(len(SHAPES))
    header = ("| shape (B, D, C, S, T) | torchnce sparse ms | torchnce dense ms | TF ms "
              "| ratio torchnce-sparse/TF | RowUpdate sgd ms | sgd/TF | RowUpdate adagrad ms "
              "| adagrad/TF | full softmax ms | dense seed= eager ms "
              "| dense seed= compiled ms | compiled/eager |")
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    print(header, "\n" + rows[1], flush=True)
    for i in indices:
        shape = SHAPES[i]
        data = make_data(shape)
        steps: dict[str, Step] = {
            "sparse": torch_nce_step(shape, data, sparse=True),
            "dense": torch_nce_step(shape, data, sparse=False),
            "row sgd": torch_row_update_step(shape, data, update="sgd"),
            "row adagrad": torch_row_update_step(shape, data, update="adagrad"),
            "tf keras SGD": tf_nce_step(shape, data, keras=True),
            "tf scatter_sub": tf_nce_step(shape, data, keras=False),
            "dense seed eager": torch_seeded_dense_step(shape, data, compiled=False),
            "dense seed compiled": torch_seeded_dense_step(shape, data, compiled=True),
        }
        if i == 0:
            steps["eager floor"] = torch_floor_step(shape, data)
            steps["softmax cross_entropy"] = torch_softmax_step(data, chunked=False)
            steps["softmax linear_cross_entropy"] = torch_softmax_step(data, chunked=True)
        before = wait_until_quiet(0.0 if quick else ARGS.wait_quiet)
        window = OthersLoad()
        ms, kept, seen = measure(steps, rounds=rounds, warmup=warmup, block_s=block_s,
                                 max_steps=max_steps, limit_s=0.0 if quick else ARGS.limit_s)
        others = window.fraction()
        tf_name = min(("tf keras SGD", "tf scatter_sub"), key=ms.__getitem__)
        softmax = [k for k in ms if k.startswith("softmax")]
        full = f"{min(ms[k] for k in softmax):.2f}" if softmax else "–"
        row = (f"| {shape} | {ms['sparse']:.3f} | {ms['dense']:.2f} | {ms[tf_name]:.3f} "
               f"| {ms['sparse'] / ms[tf_name]:.2f} | {ms['row sgd']:.3f} "
               f"| {ms['row sgd'] / ms[tf_name]:.2f} | {ms['row adagrad']:.3f} "
               f"| {ms['row adagrad'] / ms[tf_name]:.2f} | {full} | {ms['dense seed eager']:.2f} "
               f"| {ms['dense seed compiled']:.2f} "
               f"| {ms['dense seed compiled'] / ms['dense seed eager']:.2f} |")
        rows.append(row)
        print(row, flush=True)
        detail = ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
        over = (f"the {kept} quiet rounds of {seen}" if enough_quiet(kept, rounds)
                else f"all {seen} rounds (only {kept} quiet: NOT representative)")
        notes.append(f"* {shape}: {detail}; TF column = {tf_name}; medians over {over}; other "
                     f"processes used {others:.0%} of the cores over all rounds "
                     f"({before:.0%} just before)")
        if shape == COMPUTE_BOUND:
            notes.append(sgemm_note(shape, ms))
        if ARGS.profile:
            profile_step(steps["sparse"], f"torchnce sparse step at {shape}")
        del steps
        gc.collect()
    print("\n" + "\n".join(notes))
    output = ARGS.output or (None if quick else Path(__file__).with_name("results_nce.md"))
    if output is not None:
        text = ("# torchnce.nce_loss vs tf.compat.v1.nn.nce_loss: one training step\n\n"
                "Forward + backward + SGD(lr=0.1) on weights and biases; inputs a leaf with a "
                "gradient, not updated;\nlog-uniform unique sampling inside the step on both "
                "sides; median ms per step over interleaved\nrounds after warm-up "
                f"({rounds} rounds). Produced by `python benchmarks/bench_nce.py`"
                f"{' --quick' if quick else ''}.\n\n"
                + machine_info(load_at_start) + "\n\n" + "\n".join(rows)
                + "\n\nAll variants (median ms):\n\n"
                + "\n".join(notes) + "\n\nFull softmax: the faster of `F.cross_entropy(inputs @ "
                "W.T + b, labels)` and `F.linear_cross_entropy(..., batch_chunk_size=64)`, "
                "dense SGD, smallest shape only. `eager floor` (smallest shape only): no "
                "validation, a non-unique closed-form draw, no true logits, plain autograd, "
                "the same sparse SGD: what eager PyTorch dispatch alone costs at that shape. "
                "`dense seed=`: the dense-gradient step drawing with `seed=0`, eager and with "
                "its loss under `torch.compile(fullgraph=True)` (inductor; compile time not "
                "counted; the SGD update eager in both). `RowUpdate`: "
                "`NCELoss(..., update=RowUpdate(name, lr=0.1))`, the optimizer applied to the "
                "touched rows inside backward (no gradient tensor for the table).\n")
        output.write_text(text)
        print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
