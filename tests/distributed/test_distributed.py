"""torchnce.distributed on real gloo process groups of 2 and 3 local processes.

Oracle: the single-process functions (``nce_loss``, ``sampled_softmax_loss``, their eval
losses, ``top_k``) on the concatenated batch and the full tables, in float64; the training
steps take the default exchange (padded with dense gradients, variable with sparse ones;
``test_distributed_host_reads.py`` compares the two on every case). Each group is
spawned once and runs many checks (spawning costs seconds); every rank checks its own shard,
batch slice and gradients and reports to a file. A failing rank exits at once, so its peers
fail fast too, and the parent kills whatever outlives the deadline.
"""

from __future__ import annotations

import datetime
import itertools
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

import torchnce
from torchnce.distributed import (
    CollectiveError,
    ShardedNCELoss,
    ShardedOutputLayer,
    ShardedSampledSoftmaxLoss,
    gather_state_dict,
    shard_ids,
    shard_state_dict,
)

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

C, D, S, K = 11, 3, 6, 5  # 11 classes: uneven shards for 2 and 3 ranks under both strategies
BATCHES = {2: [3, 2], 3: [2, 4, 3]}  # uneven batches too
LAYERS = {"nce": ShardedNCELoss, "softmax": ShardedSampledSoftmaxLoss}
LOSSES = {"nce": torchnce.nce_loss, "softmax": torchnce.sampled_softmax_loss}
EVALS = {"nce": torchnce.nce_eval_loss, "softmax": torchnce.sampled_softmax_eval_loss}
DEADLINE = 45.0  # seconds for one spawned group, start-up included
LR = 0.5


def _launch(worker: Callable[..., None], world: int, tmp: Path, *args: Any,
            limit_s: float = DEADLINE) -> list[str]:
    """Run ``worker(rank, world, tmp, *args)`` on ``world`` spawned gloo ranks; each rank's
    report (``ok`` or a traceback); ranks alive after ``limit_s`` seconds are killed. (The
    other distributed test files launch their groups with it too.)"""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(worker, rank, world, str(tmp), args), daemon=True)
             for rank in range(world)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + limit_s
    try:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
    return [_report(tmp, rank, proc.exitcode) for rank, proc in enumerate(procs)]


def _report(tmp: Path, rank: int, code: int | None) -> str:
    path = tmp / f"rank{rank}.out"
    return path.read_text() if path.exists() else f"no report (exit code {code})"


def _entry(worker: Callable[..., None], rank: int, world: int, tmp: str, args: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=30))
    out = Path(tmp) / f"rank{rank}.out"
    try:
        worker(rank, world, Path(tmp), *args)
    except BaseException:
        out.write_text(traceback.format_exc())
        os._exit(1)  # peers blocked in a collective fail at once instead of at the timeout
    out.write_text("ok")
    dist.destroy_process_group()


def _problem(world: int, num_true: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full tables, the concatenated batch, shared candidates with hits, and loss weights."""
    g = torch.Generator().manual_seed(seed)
    batch = sum(BATCHES[world])
    labels = torch.randint(0, C, (batch, num_true), generator=g)
    sampled = torch.randperm(C, generator=g)[:S]
    sampled[0] = labels[0, 0]  # at least one accidental hit
    return {
        "weight": torch.randn(C, D, generator=g, dtype=torch.float64),
        "bias": torch.randn(C, generator=g, dtype=torch.float64),
        "inputs": torch.randn(batch, D, generator=g, dtype=torch.float64),
        "labels": labels,
        "sampled": sampled,
        "true_count": torch.rand(batch, num_true, generator=g, dtype=torch.float64) + 0.5,
        "sampled_count": torch.rand(S, generator=g, dtype=torch.float64) + 0.5,
        "upstream": torch.randn(batch, generator=g, dtype=torch.float64),
    }


def _rows(rank: int, world: int) -> slice:
    start = sum(BATCHES[world][:rank])
    return slice(start, start + BATCHES[world][rank])


def _layer(kind: str, strategy: str, num_true: int, hits: bool, rank: int, world: int,
           full: dict[str, torch.Tensor], **kwargs: Any) -> ShardedOutputLayer:
    """A sharded layer loaded with its shard of a single-process module's state dict."""
    bias = kwargs.pop("bias", True)
    reference = torchnce.NCELoss(C, D, S, dtype=torch.float64, bias=bias)
    reference.load_state_dict({k: full[k] for k in ("weight", "bias")[: 1 + bias]})
    layer = LAYERS[kind](C, D, S, num_true=num_true, remove_accidental_hits=hits, bias=bias,
                         partition_strategy=strategy, dtype=torch.float64, **kwargs)
    layer.load_state_dict(shard_state_dict(reference.state_dict(), rank, world, strategy))
    return layer


def _cases() -> Iterator[tuple[str, str, int, bool]]:
    return itertools.product(("nce", "softmax"), ("mod", "div"), (1, 3), (False, True))


def _check_step(rank: int, world: int, kind: str, strategy: str, num_true: int,
                hits: bool) -> None:
    """Loss and gradients of the shard, the bias shard and the inputs, any upstream gradient."""
    p, rows = _problem(world, num_true), _rows(rank, world)
    layer = _layer(kind, strategy, num_true, hits, rank, world, p, reduction="none")
    x = p["inputs"][rows].clone().requires_grad_()
    values = (p["sampled"], p["true_count"][rows], p["sampled_count"])
    loss = layer(x, p["labels"][rows], sampled_values=values)
    (loss * p["upstream"][rows]).sum().backward()
    w, b, xs = (p[k].clone().requires_grad_() for k in ("weight", "bias", "inputs"))
    expected = LOSSES[kind](w, b, p["labels"], xs, S, C, num_true,
                            (p["sampled"], p["true_count"], p["sampled_count"]),
                            remove_accidental_hits=hits, partition_strategy=strategy)
    (expected * p["upstream"]).sum().backward()
    ids, close = layer.shard_ids(), _close(f"{kind} {strategy} T={num_true} hits={hits}")
    close(loss, expected[rows])
    close(x.grad, xs.grad[rows])
    close(layer.weight.grad, w.grad[ids])
    close(layer.bias.grad, b.grad[ids])


def _close(case: str) -> Callable[[Any, Any], None]:
    def check(actual: Any, expected: Any) -> None:
        # relative 1e-6, as docs/distributed.md states; atol for gradients that cancel to ~0
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-9,
                                   msg=lambda m: f"{case}: {m}")
    return check


def _check_eval(rank: int, world: int, kind: str, strategy: str) -> None:
    """The exact full loss with its gradients, and top_k, of every rank's rows (two true
    classes, small chunks; no bias under "div")."""
    p, rows, bias = _problem(world, 2), _rows(rank, world), strategy == "mod"
    layer = _layer(kind, strategy, 2, False, rank, world, p, reduction="none", bias=bias).eval()
    x, y = p["inputs"][rows].clone().requires_grad_(), p["labels"][rows]
    loss = layer(x, y)
    (loss * p["upstream"][rows]).sum().backward()
    w, xs = p["weight"].clone().requires_grad_(), p["inputs"].clone().requires_grad_()
    b = p["bias"].clone().requires_grad_() if bias else None
    expected_loss = EVALS[kind](w, b, p["labels"], xs, C, 2)
    (expected_loss * p["upstream"]).sum().backward()
    ids, close = layer.shard_ids(), _close(f"eval {kind} {strategy}")
    close(loss, expected_loss[rows])
    close(x.grad, xs.grad[rows])
    close(layer.weight.grad, w.grad[ids])
    if b is not None:
        close(layer.bias.grad, b.grad[ids])
    scores, ids = layer.top_k(x, K, chunk_size=2)  # K = 5 > the 3 or 4 rows of a shard
    expected = torchnce.top_k(p["weight"], b, p["inputs"], K)
    close(scores, expected[0][rows])
    assert ids.tolist() == expected[1][rows].tolist()


def _check_mean_with_sampler(rank: int, world: int, sparse_grad: bool) -> None:
    """Default sampler under a shared seed, reduction="mean" over the global batch, summed
    over ranks; sparse shard gradients without a bias, or dense ones with one."""
    p, rows = _problem(world, 1), _rows(rank, world)
    layer = _layer("softmax", "mod", 1, True, rank, world, p, seed=5, sparse_grad=sparse_grad,
                   bias=not sparse_grad)
    x = p["inputs"][rows].clone().requires_grad_()
    loss = layer(x, p["labels"][rows])
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    values = torchnce.LogUniformSampler(C).sample(p["labels"], S,
                                                  generator=torch.Generator().manual_seed(5))
    w, xs = p["weight"].clone().requires_grad_(), p["inputs"].clone().requires_grad_()
    bias = None if sparse_grad else p["bias"]
    expected = torchnce.sampled_softmax_loss(w, bias, p["labels"], xs, S, C,
                                             sampled_values=values).mean()
    expected.backward()
    close, grad = _close(f"mean sparse={sparse_grad}"), layer.weight.grad
    assert grad is not None and grad.is_sparse == sparse_grad
    close(total, expected.detach())
    close(x.grad, xs.grad[rows])
    close(grad.to_dense(), w.grad[layer.shard_ids()])


def _check_candidates_must_agree(rank: int, world: int) -> None:
    p, rows = _problem(world, 1), _rows(rank, world)
    layer = _layer("nce", "mod", 1, False, rank, world, p)
    sampled = p["sampled"].roll(rank)  # a different order on every rank
    values = (sampled, p["true_count"][rows], p["sampled_count"])
    with pytest.raises(ValueError, match=r"^sampled_values must hold the same candidates"):
        layer(p["inputs"][rows], p["labels"][rows], sampled_values=values)


def _train_and_save(rank: int, world: int, tmp: Path) -> None:
    """One SGD step of a "div" layer, then each rank saves its shard."""
    p, rows = _problem(world, 1), _rows(rank, world)
    layer = _layer("nce", "div", 1, False, rank, world, p, reduction="sum")
    values = (p["sampled"], p["true_count"][rows], p["sampled_count"])
    layer(p["inputs"][rows], p["labels"][rows], sampled_values=values).backward()
    torch.optim.SGD(layer.parameters(), lr=LR).step()
    torch.save(layer.state_dict(), tmp / f"shard{rank}.pt")


def _check_resharded(rank: int, world: int, tmp: Path) -> None:
    """The 2-rank "div" checkpoint, gathered, equals the single-process step; re-sharded for
    this group under "mod" it evaluates as the single-process layer and gathers back."""
    p = _problem(2, 1)
    w, b = p["weight"].clone().requires_grad_(), p["bias"].clone().requires_grad_()
    torchnce.nce_loss(w, b, p["labels"], p["inputs"], S, C, 1,
                      (p["sampled"], p["true_count"], p["sampled_count"])).sum().backward()
    shards = [torch.load(tmp / f"shard{r}.pt") for r in range(2)]
    full = gather_state_dict(shards, "div")
    close = _close("resharded")
    close(full["weight"], (w - LR * w.grad).detach())
    close(full["bias"], (b - LR * b.grad).detach())
    q, rows = _problem(world, 1, seed=1), _rows(rank, world)
    layer = _layer("nce", "mod", 1, False, rank, world, full, reduction="none").eval()
    expected = torchnce.nce_eval_loss(full["weight"], full["bias"], q["labels"], q["inputs"], C)
    close(layer(q["inputs"][rows], q["labels"][rows]), expected[rows])
    states: list[Any] = [None] * world
    dist.all_gather_object(states, layer.state_dict())
    back = gather_state_dict(states, "mod")
    assert torch.equal(back["weight"], full["weight"]) and torch.equal(back["bias"], full["bias"])


def _worker_checks(rank: int, world: int, tmp: Path) -> None:
    for case in _cases():
        _check_step(rank, world, *case)
    for kind, strategy in itertools.product(("nce", "softmax"), ("mod", "div")):
        _check_eval(rank, world, kind, strategy)
    for sparse_grad in (False, True):
        _check_mean_with_sampler(rank, world, sparse_grad)
    _check_candidates_must_agree(rank, world)
    if world == 2:
        _train_and_save(rank, world, tmp)
    else:
        _check_resharded(rank, world, tmp)


@pytest.fixture(scope="module")
def checkpoint_dir() -> Iterator[Path]:
    """The 2-rank group's checks; its trained shards are the 3-rank group's checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        reports = _launch(_worker_checks, 2, Path(tmp))
        assert reports == ["ok", "ok"], "\n".join(reports)
        yield Path(tmp)


def test_two_ranks_match_single_process(checkpoint_dir: Path) -> None:
    assert (checkpoint_dir / "shard0.pt").exists() and (checkpoint_dir / "shard1.pt").exists()


def test_three_ranks_match_single_process_and_reshard(checkpoint_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("shard0.pt", "shard1.pt"):
            (Path(tmp) / name).write_bytes((checkpoint_dir / name).read_bytes())
        reports = _launch(_worker_checks, 3, Path(tmp))
    assert reports == ["ok", "ok", "ok"], "\n".join(reports)


def _worker_peer_lost(rank: int, world: int, tmp: Path, how: str) -> None:
    """The last rank dies (or hangs) at the first step; the others must raise."""
    layer = ShardedNCELoss(C, D, S, timeout=2.0, dtype=torch.float64)
    dist.barrier()  # every rank has connected the layer's group before the last one goes
    if rank == world - 1:
        if how == "dies":
            os._exit(17)
        for _ in range(300):  # hang until the others are done (the parent kills at the end)
            if (tmp / "done").exists():
                os._exit(0)
            time.sleep(0.1)
        os._exit(0)
    p, rows = _problem(world, 1), _rows(rank, world)
    with pytest.raises(CollectiveError, match=rf"^all_to_all_single of .* failed on rank "
                                              rf"{rank} of {world} \(gloo, timeout 2 s\)"):
        layer(p["inputs"][rows], p["labels"][rows])
    (tmp / "done").touch()
    (tmp / f"rank{rank}.out").write_text("ok")
    os._exit(0)  # the group is broken: no orderly teardown


@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_lost_rank_fails_the_others_with_a_clear_error(how: str) -> None:
    world = 3 if how == "dies" else 2
    with tempfile.TemporaryDirectory() as tmp:
        reports = _launch(_worker_peer_lost, world, Path(tmp), how)
    assert reports[:-1] == ["ok"] * (world - 1), "\n".join(reports)


def test_shard_ids_partition_the_classes() -> None:
    for world, strategy in itertools.product((1, 2, 3, 11), ("mod", "div")):
        ids = torch.cat([shard_ids(C, r, world, strategy) for r in range(world)])
        assert sorted(ids.tolist()) == list(range(C))
        lookup = torchnce.embedding_lookup(
            [torch.arange(C)[shard_ids(C, r, world, strategy)].double().unsqueeze(1)
             for r in range(world)], torch.arange(C), strategy)
        assert lookup.flatten().tolist() == list(range(C))  # TensorFlow's layout


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_shards_match_tensorflow_layout_any_size(num_classes: int, data: st.DataObject) -> None:
    world = data.draw(st.integers(1, num_classes))
    strategy = data.draw(st.sampled_from(["mod", "div"]))
    table = torch.arange(num_classes, dtype=torch.float64).unsqueeze(1)
    shards = [shard_state_dict({"weight": table}, r, world, strategy)["weight"]
              for r in range(world)]
    found = torchnce.embedding_lookup(shards, torch.arange(num_classes), strategy)
    torch.testing.assert_close(found, table)  # the rows are where TensorFlow looks for them
    torch.testing.assert_close(gather_state_dict([{"weight": w} for w in shards],
                                                 strategy)["weight"], table)


def test_state_dict_round_trip_between_world_sizes() -> None:
    full = {"weight": torch.randn(C, D), "bias": torch.randn(C), "sampler.x": torch.ones(1)}
    for old, new in itertools.product(("mod", "div"), ("mod", "div")):
        shards = [shard_state_dict(full, r, 2, old) for r in range(2)]
        merged = gather_state_dict(shards, old)
        again = gather_state_dict([shard_state_dict(merged, r, 3, new) for r in range(3)], new)
        for key in full:
            assert torch.equal(again[key], full[key])


def test_shard_state_dict_accepts_a_sharded_single_process_module() -> None:
    layer = torchnce.NCELoss(C, D, S, num_shards=3, partition_strategy="div")
    merged = torch.cat([shard_state_dict(layer.state_dict(), r, 2, "div")["weight"]
                        for r in range(2)])
    torch.testing.assert_close(merged, torch.cat(list(layer.weight)))


@pytest.mark.parametrize("name", ["adagrad", "rowwise_adagrad"])
def test_row_update_accumulators_reshard_with_the_rows(name: str) -> None:
    """A RowUpdate's accumulators (one row per class) move between world sizes and strategies
    with the weights, from a single table or a num_shards > 1 layer."""
    for shards in (1, 3):
        layer = torchnce.NCELoss(C, D, S, num_shards=shards, partition_strategy="div",
                                 update=torchnce.RowUpdate(name, lr=0.3))
        x = torch.randn(7, D, requires_grad=True)
        layer(x, torch.randint(C, (7,))).backward()
        state = layer.state_dict()
        full_w = torch.cat([state[k] for k in sorted(state) if k.startswith(
            "update.weight_state")]) if shards > 1 else state["update.weight_state"]
        assert full_w.abs().sum() > 0  # the step touched some rows
        # (the shards of a num_shards > 1 layer are read in the new shards' strategy)
        parts = [shard_state_dict(state, r, 2, "div") for r in range(2)]
        for r, part in enumerate(parts):
            ids = shard_ids(C, r, 2, "div")
            assert torch.equal(part["update.weight_state"], full_w[ids])
            assert part["update.bias_state"].shape == (len(ids),)
        merged = gather_state_dict(parts, "div")
        assert torch.equal(merged["update.weight_state"], full_w)
        mod = [shard_state_dict(merged, r, 3, "mod") for r in range(3)]
        assert torch.equal(gather_state_dict(mod, "mod")["update.weight_state"], full_w)
        single = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate(name, lr=0.3))
        single(x.detach(), torch.randint(C, (7,)))  # binds the accumulators
        single.load_state_dict(merged)
        assert torch.equal(single.update.weight_state, full_w)
    with pytest.raises(ValueError, match=r"^state_dict must hold an update.weight_state of"):
        shard_state_dict({"weight": torch.zeros(C, D),
                          "update.weight_state": torch.zeros(C - 1)}, 0, 2)


def test_errors_without_a_process_group_or_with_bad_arguments() -> None:
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match=r"^torchnce.distributed needs an initialised"):
            ShardedNCELoss(C, D, S)
    with pytest.raises(ValueError, match=r"^timeout must be positive"):
        ShardedNCELoss(C, D, S, timeout=0)
    with pytest.raises(TypeError, match=r"^timeout must be a number"):
        ShardedNCELoss(C, D, S, timeout="5")
    with pytest.raises(ValueError, match=r"^partition_strategy must be one of"):
        ShardedSampledSoftmaxLoss(C, D, S, partition_strategy="sharded")
    with pytest.raises(ValueError, match=r"^rank must be in"):
        shard_ids(C, 3, 3)
    with pytest.raises(ValueError, match=r"^world_size must be at most"):
        shard_ids(C, 0, 12)
    with pytest.raises(ValueError, match=r"^shard_state_dicts must hold weight shards"):
        gather_state_dict([{"weight": torch.zeros(2, 1)}, {"weight": torch.zeros(4, 1)}], "div")
    with pytest.raises(ValueError, match=r"^state_dict must hold a 'weight'"):
        shard_state_dict({"bias": torch.zeros(3)}, 0, 2)


def _check_row_update(rank: int, world: int, tmp: Path) -> None:
    """A sharded layer with ``update=RowUpdate`` takes the single-process layer's steps."""
    del tmp
    for name, exchange, strategy in (("sgd", "padded", "mod"), ("adagrad", "padded", "div"),
                                     ("rowwise_adagrad", "variable", "mod")):
        p, rows = _problem(world, 2), _rows(rank, world)
        layer = ShardedSampledSoftmaxLoss(C, D, S, num_true=2, partition_strategy=strategy,
                                          dtype=torch.float64, exchange=exchange,
                                          update=torchnce.RowUpdate(name, lr=LR))
        full = {"weight": p["weight"], "bias": p["bias"]}
        layer.load_state_dict(shard_state_dict(full, rank, world, strategy), strict=False)
        reference = torchnce.SampledSoftmaxLoss(C, D, S, num_true=2, dtype=torch.float64,
                                                partition_strategy=strategy,
                                                update=torchnce.RowUpdate(name, lr=LR))
        reference.load_state_dict({"weight": p["weight"], "bias": p["bias"]}, strict=False)
        values = (p["sampled"], p["true_count"], p["sampled_count"])
        for _ in range(2):
            x = p["inputs"][rows].clone().requires_grad_()
            layer(x, p["labels"][rows], sampled_values=(values[0], values[1][rows], values[2])
                  ).backward()
            reference(p["inputs"], p["labels"], sampled_values=values).backward()
        ids, close = layer.shard_ids(), _close(f"RowUpdate {name} {exchange} {strategy}")
        assert layer.weight.grad is None
        close(layer.weight.detach(), reference.weight.detach()[ids])
        close(layer.bias.detach(), reference.bias.detach()[ids])
        if name != "sgd":  # the accumulators reshard with the rows
            mine = shard_state_dict(reference.state_dict(), rank, world, strategy)
            for key in ("update.weight_state", "update.bias_state"):
                close(layer.state_dict()[key], mine[key])


def test_row_update_on_two_ranks_matches_single_process(checkpoint_dir: Path) -> None:
    reports = _launch(_check_row_update, 2, checkpoint_dir)
    assert reports == ["ok", "ok"], "\n".join(reports)


def test_row_update_refused_with_sparse_grad() -> None:
    with pytest.raises(ValueError, match=r"^update cannot be combined with sparse_grad=True"):
        ShardedNCELoss(C, D, S, sparse_grad=True, update=torchnce.RowUpdate("sgd", lr=0.1))
