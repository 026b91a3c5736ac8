"""The output layers' validation runs once per step: one read of the device for the ids.

A ``TorchDispatchMode`` counts the host reads of a training step (``aten._local_scalar_dense``,
what ``int(t)`` and ``.item()`` dispatch to, and ``aten.nonzero``, whose output size is read
back): with ``sampled_values`` given, a step reads the device once, one ``aminmax`` over the
labels and the candidates together, i.e. two scalars. Also: errors still name the argument at
fault, and a call that fails validation leaves a stateful sampler alone.
"""

from __future__ import annotations

import collections
import socket
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

import torchnce
from torchnce.distributed import ShardedNCELoss, ShardedSampledSoftmaxLoss

C, D, B, S = 50, 4, 6, 5
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]
READS = ("aten._local_scalar_dense.default", "aten.nonzero.default")


class HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if str(func) in READS:
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def reads(step: Any) -> collections.Counter[str]:
    """Host reads of one forward and backward (after a first, warming step)."""
    step().backward()
    with HostReads() as mode:
        step().backward()
    return mode.counts


def batch(num_true: int, per_example: bool, gen: torch.Generator) -> tuple[Any, ...]:
    x = torch.randn(B, D, generator=gen, requires_grad=True)
    y = torch.randint(C, (B, num_true), generator=gen)
    shape = (B, S) if per_example else (S,)
    values = (torch.randint(C, shape, generator=gen), torch.rand(B, num_true, generator=gen),
              torch.rand(shape, generator=gen))
    return x, y, values


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("num_true", [1, 2])
def test_a_step_with_sampled_values_reads_the_device_once(module, per_example, num_true, gen):
    layer = module(C, D, S, num_true=num_true, remove_accidental_hits=True)
    x, y, values = batch(num_true, per_example, gen)
    counts = reads(lambda: layer(x, y, sampled_values=values))
    assert counts["aten._local_scalar_dense.default"] <= 2  # one aminmax: its min and max
    assert counts["aten.nonzero.default"] == 0


@pytest.mark.parametrize("module", MODULES)
def test_a_full_loss_step_reads_the_ids_once(module, gen):
    layer = module(C, D, S).eval()
    x, y, _ = batch(1, False, gen)
    counts = reads(lambda: layer(x, y))
    assert counts["aten._local_scalar_dense.default"] <= 2  # the chunked walk reads no scalar


@pytest.mark.parametrize("loss", [torchnce.nce_loss, torchnce.sampled_softmax_loss,
                                  torchnce.negative_sampling_loss])
def test_a_function_call_with_sampled_values_reads_the_device_once(loss, gen):
    w = torch.randn(C, D, requires_grad=True)
    x, y, values = batch(2, False, gen)
    counts = reads(lambda: loss(w, None, y, x, S, C, 2, sampled_values=values).sum())
    assert counts["aten._local_scalar_dense.default"] <= 2
    assert counts["aten.nonzero.default"] == 0


@pytest.mark.parametrize("culprit", ["labels", "sampled_values"])
def test_the_joint_range_check_names_the_argument_at_fault(culprit, gen):
    layer = torchnce.NCELoss(C, D, S)
    x, y, (cands, true_count, sampled_count) = batch(1, False, gen)
    if culprit == "labels":
        y = y.clone()
        y[3, 0] = C
    else:
        cands = cands.clone()
        cands[1] = -1
    with pytest.raises(ValueError, match=rf"^{culprit} must hold ids in \[0, {C}\), got"):
        layer(x, y, sampled_values=(cands, true_count, sampled_count))


@pytest.mark.parametrize("per_example", [False, True])
def test_a_failed_call_leaves_a_learned_sampler_alone(per_example, gen):
    sampler = torchnce.LearnedUnigramSampler(C)
    layer = torchnce.NCELoss(C, D, S, sampler=sampler, per_example_negatives=per_example)
    x, y, _ = batch(1, False, gen)
    before, total = sampler.counts.clone(), sampler.total
    bad_labels = torch.full_like(y, C)
    for bad_call in (lambda: layer(x, bad_labels), lambda: layer(x[:, :2], y),
                     lambda: layer(x.double().int(), y)):
        with pytest.raises((TypeError, ValueError)):
            bad_call()
    assert torch.equal(sampler.counts, before) and sampler.total == total
    layer(x, y)  # a valid call does learn
    assert sampler.total == total + B


@pytest.fixture(scope="module")
def group():
    """A real gloo process group of one rank on localhost (created here unless one exists)."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("module", [ShardedNCELoss, ShardedSampledSoftmaxLoss])
def test_a_sharded_step_with_sampled_values_reads_the_ids_once(module, group, gen):
    layer = module(C, D, S)
    x, y, values = batch(1, False, gen)
    counts = reads(lambda: layer(x, y, sampled_values=values))
    # Two scalars for the ids' range, one for the exchange's check that every rank holds the
    # same candidates.
    assert counts["aten._local_scalar_dense.default"] <= 3
    assert counts["aten.nonzero.default"] == 0


@pytest.mark.parametrize("module", [ShardedNCELoss, ShardedSampledSoftmaxLoss])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("bad", [-1, C])
def test_a_sharded_full_loss_checks_the_labels(module, strategy, bad, group, gen):
    layer = module(C, D, S, partition_strategy=strategy).eval()
    x, y, _ = batch(1, False, gen)
    y[0, 0] = bad
    with pytest.raises(ValueError, match=rf"^labels must hold ids in \[0, {C}\)"):
        layer(x, y)


class _OwnSampler(torchnce.CandidateSampler):
    """A user's sampler whose draw is whatever the test says."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        super().__init__()
        self.range_max, self.values = C, values

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full(ids.shape, 1.0 / C)

    def _sample(self, tc: torch.Tensor, num_sampled: int, unique: bool,
                gen: torch.Generator | None) -> torchnce.SampledValues:
        return self.values  # type: ignore[return-value]


@pytest.mark.parametrize(("values", "error", "match"), [
    ((torch.tensor([0, 1, C]), torch.ones(B, 1), torch.ones(3)), ValueError,
     r"^sampler's sampled_candidates must hold ids in \[0, 50\)"),
    ((torch.tensor([0.0, 1.0, 2.0]), torch.ones(B, 1), torch.ones(3)), TypeError,
     r"^sampled_values must be an integer tensor"),
    ((torch.tensor([0, 1, 2]), torch.ones(B, 5), torch.ones(3)), ValueError,
     r"^sampled_values must hold a true_expected_count broadcastable to \[6, 1\]"),
    ((torch.tensor([0, 1, 2]), torch.ones(B, 1)), ValueError, r"^sampled_values must be a 3-tuple"),
])
def test_a_users_sampler_is_checked_like_given_sampled_values(values, error, match, gen):
    layer = torchnce.NCELoss(C, D, 3, sampler=_OwnSampler(values))
    x, y, _ = batch(1, False, gen)
    with pytest.raises(error, match=match):
        layer(x, y)


def test_a_users_sampler_that_draws_valid_values_trains(gen):
    values = (torch.tensor([4, 9, 2]), torch.ones(B, 1), torch.ones(3))
    layer = torchnce.NCELoss(C, D, 3, sampler=_OwnSampler(values))
    x, y, _ = batch(1, False, gen)
    torch.testing.assert_close(layer(x, y), layer(x, y, sampled_values=values))


def test_settings_changed_after_construction_are_checked_at_the_call(gen):
    layer = torchnce.NCELoss(C, D, S)
    x, y, _ = batch(1, False, gen)
    layer.num_sampled = C + 1
    with pytest.raises(ValueError, match=r"^num_sampled must be <= num_classes=50 .*"
                                         r"Sampler's range is too small"):
        layer(x, y)
    layer.num_sampled, layer.sampler = S, torchnce.UniformSampler(C + 10)
    with pytest.raises(ValueError, match=r"^sampler must have range_max = num_classes=50"):
        layer(x, y)
