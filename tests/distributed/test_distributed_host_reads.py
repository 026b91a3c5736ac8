"""The sharded layers' training step reads nothing back from the device, on real gloo groups.

The counters are those of ``tests/test_host_reads.py`` (a ``TorchDispatchMode`` counting
``_local_scalar_dense``, ``nonzero``, ``masked_select``, ``unique*`` and boolean indexing, a
``TorchFunctionMode`` counting ``tolist``), run on every rank of spawned groups of 2 and 3
processes (``test_distributed.py``'s launcher, uneven batches and problems) with the checks on
the device path (``HOST_READS_ON_CPU`` off, as on an accelerator). The collectives themselves
read no tensor through the dispatcher; only what the modes see is counted. After a warming
step (which agrees the batch capacity and plans the sampler) a step of the padded exchange
counts 0; the variable exchange still reads, which shows that the counters see the sharded
step. The padded exchange is also checked against the variable one (the same loss bit for
bit, the same gradients) and its byte count against the formula of docs/distributed.md, and
a batch beyond its capacity or disagreeing candidates fail every rank together.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from test_distributed import BATCHES, LOSSES, C, D, S, _cases, _close, _launch, _layer, _problem

import torchnce._common.checks
from test_host_reads import DispatchReads, FunctionReads, host_reads
from torchnce.distributed import ShardedNCELoss, ShardedOutputLayer

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def _indices(rank: int, world: int, keep: int | None = None) -> list[int]:
    """This rank's rows of the concatenated batch (the first ``keep`` of them)."""
    start = sum(BATCHES[world][:rank])
    return list(range(start, start + BATCHES[world][rank]))[:keep]


def _step(layer: ShardedOutputLayer, p: dict[str, torch.Tensor], rows: list[int],
          given: bool) -> Callable[[], torch.Tensor]:
    """One training step of ``layer`` on ``rows`` of the problem (its candidates given, or
    drawn by the layer's seeded sampler)."""
    x = p["inputs"][rows].clone().requires_grad_()
    values = (p["sampled"], p["true_count"][rows], p["sampled_count"]) if given else None
    return lambda: layer(x, p["labels"][rows], sampled_values=values)


def _device_path(on: bool) -> None:
    torchnce._common.checks.HOST_READS_ON_CPU = not on


def _check_no_reads(rank: int, world: int) -> None:
    _device_path(True)
    p, rows = _problem(world, 2), _indices(rank, world)
    for kind, strategy, given, reduction in itertools.product(
            ("nce", "softmax"), ("mod", "div"), (False, True), ("mean", "none")):
        layer = _layer(kind, strategy, 2, True, rank, world, p, reduction=reduction)
        counts = host_reads(_step(layer, p, rows, given))
        assert counts == {}, f"{kind} {strategy} given={given} {reduction}: {counts}"
    # With max_batch_size given there is nothing to agree: even the first step reads nothing.
    layer = _layer("nce", "mod", 2, True, rank, world, p, max_batch_size=max(BATCHES[world]))
    step = _step(layer, p, rows, True)
    with FunctionReads() as functions, DispatchReads() as dispatch:
        step().backward()
    assert dict(functions.counts + dispatch.counts) == {}
    # The variable exchange reads its split sizes: the counters do see the sharded step.
    layer = _layer("nce", "mod", 2, True, rank, world, p, exchange="variable")
    assert host_reads(_step(layer, p, rows, True)).get("tolist", 0) >= 2
    _device_path(False)


def _padded_bytes(world: int, num_true: int) -> int:
    """Bytes one rank sends in its first step: the capacity ``m`` agreed (``P`` batch sizes to
    each peer), the requests (``2 + m·T`` int64), the label rows both ways (``m·T`` rows of
    ``D + 1`` float64 to each peer) and the candidates' all-reduce both ways (a ring's
    ``2·(P−1)/P`` of ``S·(D + 1)`` float64), as docs/distributed.md counts them."""
    peers, slots = world - 1, max(BATCHES[world]) * num_true
    agree, requests = peers * world * 8, peers * (2 + slots) * 8
    label_rows = 2 * peers * slots * (D + 1) * 8
    candidates = 2 * round(2 * peers / world * S * (D + 1) * 8)
    return agree + requests + label_rows + candidates


def _check_padded_equals_variable(rank: int, world: int) -> None:
    """Loss, input, shard and bias gradients of the two exchanges, every layer option."""
    for kind, strategy, num_true, hits in _cases():
        p, rows = _problem(world, num_true), _indices(rank, world)
        runs = []
        for exchange in ("padded", "variable"):
            layer = _layer(kind, strategy, num_true, hits, rank, world, p, reduction="none",
                           exchange=exchange)
            x = p["inputs"][rows].clone().requires_grad_()
            values = (p["sampled"], p["true_count"][rows], p["sampled_count"])
            loss = layer(x, p["labels"][rows], sampled_values=values)
            (loss * p["upstream"][rows]).sum().backward()
            runs.append((loss, x.grad, layer.weight.grad, layer.bias.grad, layer.bytes_sent))
        (padded, *padded_grads, sent), (variable, *variable_grads, _) = runs
        case = f"{kind} {strategy} T={num_true} hits={hits}"
        assert torch.equal(padded, variable), case  # the same rows: the same loss, bit for bit
        for a, b in zip(padded_grads, variable_grads, strict=True):
            _close(case)(a, b)  # summed in another order: equal to rounding
        assert sent == _padded_bytes(world, num_true), case


def _check_capacity_and_candidates(rank: int, world: int) -> None:
    """Smaller batches than the agreed capacity are exact; a larger one, or candidates that
    differ, raise on every rank (on CPU and on the device path), and the group goes on."""
    p = _problem(world, 1)
    w, b, xs = (p[k].clone().requires_grad_() for k in ("weight", "bias", "inputs"))
    values = (p["sampled"], p["true_count"], p["sampled_count"])
    expected = LOSSES["softmax"](w, b, p["labels"], xs, S, C, 1, values,
                                 remove_accidental_hits=True)
    layer = _layer("softmax", "mod", 1, True, rank, world, p, reduction="none")
    for keep in (None, 1):  # the whole batch (which agrees the capacity), then one row
        rows = _indices(rank, world, keep)
        _close(f"batch {len(rows)}")(_step(layer, p, rows, True)(), expected[rows].detach())
    capacity = max(BATCHES[world])
    rows = list(range(capacity + 1)) if rank == 0 else _indices(rank, world)
    too_large = rf"^inputs must have at most {capacity} rows \(max_batch_size\) on every rank"
    with pytest.raises(ValueError, match=too_large + rf' with exchange="padded", got '
                                                     rf"{capacity + 1} on rank 0; pass"):
        _step(layer, p, rows, True)()
    _device_path(True)
    with pytest.raises(RuntimeError, match=too_large):
        _step(layer, p, rows, True)()
    other = (p["sampled"].roll(rank), p["true_count"][:1], p["sampled_count"])
    with pytest.raises(RuntimeError, match=r"^sampled_values must hold the same candidates"):
        layer(p["inputs"][:1], p["labels"][:1], sampled_values=other)
    _device_path(False)
    rows = _indices(rank, world)
    _close("after the errors")(_step(layer, p, rows, True)(), expected[rows].detach())


def _worker(rank: int, world: int, tmp: Path) -> None:
    _check_no_reads(rank, world)
    _check_padded_equals_variable(rank, world)
    _check_capacity_and_candidates(rank, world)


@pytest.mark.parametrize("world", [2, 3])
def test_padded_step_reads_nothing_and_equals_the_variable_exchange(world: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reports = _launch(_worker, world, Path(tmp))
    assert reports == ["ok"] * world, "\n".join(reports)


def test_exchange_errors() -> None:
    # Checked before the process group is looked up, so these need none.
    with pytest.raises(ValueError, match=r"^exchange must be one of 'padded', 'variable'"):
        ShardedNCELoss(C, D, S, exchange="fixed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'^exchange must be "variable" with sparse_grad=True'):
        ShardedNCELoss(C, D, S, sparse_grad=True, exchange="padded")
    with pytest.raises(ValueError, match=r'^max_batch_size must be None with exchange="variable"'):
        ShardedNCELoss(C, D, S, sparse_grad=True, max_batch_size=8)
    with pytest.raises(ValueError, match=r"^max_batch_size must be >= 1"):
        ShardedNCELoss(C, D, S, max_batch_size=0)
    with pytest.raises(TypeError, match=r"^max_batch_size must be an int"):
        ShardedNCELoss(C, D, S, max_batch_size=2.0)  # type: ignore[arg-type]


