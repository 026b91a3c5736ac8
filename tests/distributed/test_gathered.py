"""GatheredNegatives on real gloo process groups of 2 and 3 local processes.

Oracle: the single-process ``info_nce_loss`` / ``mixed_negatives_loss`` on the concatenated
global batch (and the concatenated sampled keys), in float64: every rank checks its rows'
losses, the sum of the ranks' scalar losses, and the gradients of its own queries, keys and
sampled keys, which must be the single-process gradients of the global loss (each key is a
negative of every rank's rows). Bytes sent per step are checked against the formula of the
class docstring. Each group is spawned once and runs every check; a failing rank exits at
once so its peers fail fast, and the parent kills whatever outlives the deadline.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from test_distributed import _launch

import torchnce
from torchnce.distributed import CollectiveError, GatheredNegatives

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

B, M, H, D = 3, 2, 2, 4  # rows and sampled keys per rank
DEADLINE = 60.0  # seconds for one spawned group, start-up included
INFO_CASES = [
    ({}, "mean"),
    ({"ids": True, "log_q": True}, "sum"),
    ({"hard": 2, "weight": True, "clip": True, "log_q": True}, "mean"),
    ({"mask": True, "ids": True}, "none"),
    ({"heads": True, "hard": 3}, "mean"),
    ({"symmetric": True, "ids": True}, "none"),
    ({"symmetric": True, "heads": True, "hard": 1}, "sum"),
]
MIXED_CASES = [
    ({}, "mean"),
    ({"ids": True}, "sum"),
    ({"hard": 3, "weight": True, "mask": True, "clip": True, "ids": True}, "none"),
]


def _problem(world: int, seed: int) -> dict[str, torch.Tensor]:
    """The global batch (``world·B`` rows, ``world·M`` sampled keys) and its options."""
    g = torch.Generator().manual_seed(seed)
    rows, sampled = world * B, world * M

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    lq = torch.rand(rows + sampled, generator=g, dtype=torch.float64).log()
    lq[1] = -math.inf  # an item never seen: only valid with the clip
    return {
        "q": randn(rows, D), "qh": randn(rows, H, D), "k": randn(rows, D), "n": randn(sampled, D),
        "qids": torch.randint(0, rows, (rows,), generator=g),
        "kids": torch.randint(0, rows, (rows,), generator=g),
        "sids": torch.randint(0, rows, (sampled,), generator=g),
        "lq": lq, "w": torch.rand(rows, generator=g, dtype=torch.float64) * 2,
        "mask": torch.rand(rows, rows + sampled, generator=g) < 0.7,
        "u": randn(rows),
    }


def _options(p: dict[str, torch.Tensor], case: dict[str, Any], rows: Any, cols: Any,
             mixed: bool) -> dict[str, Any]:
    """The keyword arguments of ``case`` for rows ``rows`` (a slice or everything)."""
    out: dict[str, Any] = {"num_hard_negatives": case.get("hard")}
    if case.get("ids"):
        out["key_ids"] = p["kids"][rows]
        if mixed:
            out["sampled_ids"] = p["sids"][cols]
        else:
            out["query_ids"] = p["qids"][rows]
    if case.get("log_q") and not mixed:
        out["log_q"] = p["lq"][: len(p["k"])][rows].clone()
        if not case.get("clip"):
            out["log_q"][out["log_q"] == -math.inf] = -3.0
    if case.get("clip"):
        out["min_probability"] = 1e-3
    if case.get("weight"):
        out["sample_weight"] = p["w"][rows]
    if case.get("symmetric"):
        out["symmetric"] = True
    return out


def _check(rank: int, world: int, case: dict[str, Any], reduction: str, mixed: bool,
           gathered: GatheredNegatives, seed: int) -> None:
    """Loss and gradients of this rank's inputs against the global single-process loss."""
    p = _problem(world, seed)
    rows, cols = slice(rank * B, rank * B + B), slice(rank * M, rank * M + M)
    total = world * B
    qname = "qh" if case.get("heads") else "q"
    full = {name: p[name].clone().requires_grad_() for name in (qname, "k", "n")}
    mine = {name: p[name][rows if name != "n" else cols].clone().requires_grad_()
            for name in (qname, "k", "n")}
    blq, slq = p["lq"][:total].clone(), p["lq"][total:]
    if not case.get("clip"):
        blq[blq == -math.inf] = -3.0
    if mixed:  # the global score mask: every rank's keys, then every rank's sampled keys
        order = torch.cat([torch.arange(total), total + torch.arange(world * M)])
        mask = p["mask"][:, order]
    else:
        mask = p["mask"][:, :total]
    common = {"temperature": 0.5, "reduction": reduction}
    if case.get("mask"):
        common_full, common_mine = {"score_mask": mask}, {"score_mask": mask[rows]}
    else:
        common_full, common_mine = {}, {}
    if mixed:
        want = torchnce.mixed_negatives_loss(
            full[qname], full["k"], full["n"], batch_log_q=blq, sampled_log_q=slq,
            **common, **common_full, **_options(p, case, slice(None), slice(None), True))
        got = gathered.mixed_negatives_loss(
            mine[qname], mine["k"], mine["n"], batch_log_q=blq[rows],
            sampled_log_q=slq[cols], **common, **common_mine, **_options(p, case, rows, cols,
                                                                          True))
    else:
        want = torchnce.info_nce_loss(full[qname], full["k"], **common, **common_full,
                                      **_options(p, case, slice(None), slice(None), False))
        got = gathered.info_nce_loss(mine[qname], mine["k"], **common, **common_mine,
                                     **_options(p, case, rows, cols, False))
    if reduction == "none":
        torch.testing.assert_close(got, want[rows])
        (want * p["u"]).sum().backward()
        (got * p["u"][rows]).sum().backward()
    else:
        summed = got.detach().clone()
        dist.all_reduce(summed)  # the ranks' shares add up to the single-process loss
        torch.testing.assert_close(summed, want)
        want.backward()
        got.backward()
    for name in (qname, "k") + (("n",) if mixed else ()):
        part = cols if name == "n" else rows
        torch.testing.assert_close(mine[name].grad, full[name].grad[part],
                                   msg=lambda m, name=name: f"{name} of {case}: {m}")


def _check_bytes(rank: int, world: int, gathered: GatheredNegatives) -> None:
    """One step's bytes against the class docstring's formula (float64: e = 8)."""
    p, rows, cols = _problem(world, 0), slice(rank * B, rank * B + B), slice(rank * M,
                                                                           rank * M + M)
    q, k, n = (p[name][part].clone().requires_grad_()
               for name, part in (("q", rows), ("k", rows), ("n", cols)))
    lq = p["lq"][rows].clamp(min=-3.0)
    before = gathered.bytes_sent
    gathered.info_nce_loss(q, k, key_ids=p["kids"][rows], log_q=lq).backward()
    agree = (world - 1) * 8 * 8
    assert gathered.bytes_sent - before == agree + (world - 1) * (2 * B * D * 8 + B * 8 + B * 8)
    before = gathered.bytes_sent
    gathered.mixed_negatives_loss(q, k, n, batch_log_q=lq, sampled_log_q=p["lq"][cols].clamp(
        min=-3.0), key_ids=p["kids"][rows], sampled_ids=p["sids"][cols]).backward()
    expected = agree + (world - 1) * (2 * (B + M) * D * 8 + (B + M) * 8 + (B + M) * 8)
    assert gathered.bytes_sent - before == expected


def _check_mismatch(rank: int, world: int, gathered: GatheredNegatives) -> None:
    """Different batch sizes or options: the same ValueError on every rank, no hang."""
    p = _problem(world, 0)
    size = B + 1 if rank == 0 else B
    sizes = ", ".join(str(B + 1 if r == 0 else B) for r in range(world))
    with pytest.raises(ValueError, match=rf"^query \(its batch size B\) must be the same on "
                                         rf"every rank, got \[{sizes}\]"):
        gathered.info_nce_loss(p["q"][:size], p["k"][:size])
    ids = p["kids"][:B] if rank == 0 else None
    with pytest.raises(ValueError, match=r"^key_ids must be the same on every rank"):
        gathered.info_nce_loss(p["q"][:B], p["k"][:B], key_ids=ids)
    with pytest.raises(ValueError, match=rf"^num_hard_negatives must be in \[1, {world * B - 1}"):
        gathered.info_nce_loss(p["q"][:B], p["k"][:B], num_hard_negatives=world * B)
    with pytest.raises(ValueError, match=rf"^score_mask must be \[B, PB\] = \[{B}, {world * B}"):
        gathered.info_nce_loss(p["q"][:B], p["k"][:B], score_mask=torch.ones(B, B).bool())


def _worker_checks(rank: int, world: int, tmp: Path) -> None:
    gathered = GatheredNegatives(timeout=20.0)
    assert (gathered.rank, gathered.world_size) == (rank, world)
    for seed, (case, reduction) in enumerate(INFO_CASES):
        _check(rank, world, case, reduction, False, gathered, seed)
    for seed, (case, reduction) in enumerate(MIXED_CASES):
        _check(rank, world, case, reduction, True, gathered, seed)
    _check_bytes(rank, world, gathered)
    _check_mismatch(rank, world, gathered)


@pytest.mark.parametrize("world", [2, 3])
def test_gathered_losses_and_gradients_equal_the_global_batch(world: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reports = _launch(_worker_checks, world, Path(tmp), limit_s=DEADLINE)
    assert reports == ["ok"] * world, "\n".join(reports)


def _worker_peer_lost(rank: int, world: int, tmp: Path, how: str) -> None:
    """The last rank dies (or hangs) before the step; the others must raise."""
    gathered = GatheredNegatives(timeout=2.0)
    dist.barrier()  # every rank has joined the group before the last one goes
    if rank == world - 1:
        if how == "dies":
            os._exit(17)
        for _ in range(300):  # hang until the others are done (the parent kills at the end)
            if (tmp / "done").exists():
                os._exit(0)
            time.sleep(0.1)
        os._exit(0)
    q = torch.randn(B, D, dtype=torch.float64)
    with pytest.raises(CollectiveError, match=rf"^all_to_all_single of split sizes failed on "
                                              rf"rank {rank} of {world} \(gloo, timeout 2 s\)"):
        gathered.info_nce_loss(q, q)
    (tmp / "done").touch()
    (tmp / f"rank{rank}.out").write_text("ok")
    os._exit(0)  # the group is broken: no orderly teardown


@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_lost_rank_fails_the_others_with_collective_error(how: str) -> None:
    world = 3 if how == "dies" else 2
    with tempfile.TemporaryDirectory() as tmp:
        reports = _launch(_worker_peer_lost, world, Path(tmp), how, limit_s=DEADLINE)
    assert reports[:-1] == ["ok"] * (world - 1), "\n".join(reports)


def test_needs_a_process_group() -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match=r"^torchnce.distributed needs an initialised"):
        GatheredNegatives()
