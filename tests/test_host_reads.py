"""A training step reads nothing back from the device.

Two modes count what would stall a CUDA stream: a ``TorchDispatchMode`` sees the ops whose
result the host must read (``_local_scalar_dense``, i.e. ``.item()``, ``int(t)``, ``bool(t)``;
``nonzero``, ``masked_select`` and ``unique*``, whose output size is data-dependent; indexing
with a boolean mask), and a ``TorchFunctionMode`` sees ``tolist``, which copies without
dispatching. On CPU the value checks read the values on the host (a CPU read stalls nothing);
the tests switch that off (``HOST_READS_ON_CPU``) to run the path every other device takes:
device-side assertions, fixed-shape unique sampling. Every count is 0 after a warming step.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import torchnce
import torchnce._common.checks

C, D, B, S = 200, 8, 16, 10
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]
LOSSES = [torchnce.nce_loss, torchnce.sampled_softmax_loss, torchnce.negative_sampling_loss]
SIZED = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique",
         "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
         "aten::unique_dim_consecutive"}
INDEXING = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


class DispatchReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        if name in SIZED:
            self.counts[name] += 1
        elif name in INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                      for i in args[1] or ()):
            self.counts["boolean indexing"] += 1
        return func(*args, **(kwargs or {}))


class FunctionReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.tolist:
            self.counts["tolist"] += 1
        return func(*args, **(kwargs or {}))


def host_reads(step: Callable[[], torch.Tensor]) -> dict[str, int]:
    """The reads of one forward and backward, after a warming step (which plans samplers)."""
    step().sum().backward()
    with FunctionReads() as functions, DispatchReads() as dispatch:
        step().sum().backward()
    return dict(functions.counts + dispatch.counts)


@pytest.fixture(autouse=True)
def device_path(monkeypatch):
    monkeypatch.setattr(torchnce._common.checks, "HOST_READS_ON_CPU", False)


def data(num_true: int, per_example: bool, seed: int = 0) -> tuple[Any, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=gen, requires_grad=True)
    y = torch.randint(C, (B, num_true), generator=gen)
    shape = (B, S) if per_example else (S,)
    values = (torch.randint(C, shape, generator=gen), torch.rand(B, num_true, generator=gen),
              torch.rand(shape, generator=gen))
    return x, y, values


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("given", [False, True])
def test_a_module_step_reads_nothing(module, per_example, given):
    layer = module(C, D, S, num_true=2, remove_accidental_hits=True,
                   per_example_negatives=per_example)
    x, y, values = data(2, per_example)
    kwargs = {"sampled_values": values} if given else {}
    assert host_reads(lambda: layer(x, y, **kwargs)) == {}


@pytest.mark.parametrize("sampler", ["learned", "fixed", "uniform"])
@pytest.mark.parametrize("per_example", [False, True])
def test_a_step_with_a_sampler_reads_nothing(sampler, per_example):
    make = {"learned": lambda: torchnce.LearnedUnigramSampler(C),
            "fixed": lambda: torchnce.FixedUnigramSampler(C, unigrams=torch.arange(1.0, C + 1)),
            "uniform": lambda: torchnce.UniformSampler(C)}[sampler]
    layer = torchnce.NCELoss(C, D, S, sampler=make(), per_example_negatives=per_example)
    x, y, _ = data(1, per_example)
    assert host_reads(lambda: layer(x, y)) == {}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("given", [False, True])
def test_a_function_step_reads_nothing(loss, given):
    w = torch.randn(C, D, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    x, y, values = data(2, False)
    kwargs: dict[str, Any] = {"sampled_values": values} if given else {"seed": 1}
    assert host_reads(lambda: loss(w, b, y, x, S, C, 2, **kwargs)) == {}


@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_a_sharded_function_step_reads_nothing(strategy):
    shards = [torch.randn(n, D, requires_grad=True) for n in (67, 67, 66)]
    x, y, _ = data(1, False)
    step = lambda: torchnce.sampled_softmax_loss(  # noqa: E731
        shards, None, y, x, S, C, partition_strategy=strategy, seed=1)
    assert host_reads(step) == {}


@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_a_sharded_lookup_reads_nothing(strategy):
    shards = [torch.randn(n, D, requires_grad=True) for n in (67, 67, 66)]
    ids = torch.randint(C, (B, 3), generator=torch.Generator().manual_seed(0))
    rows = lambda: torchnce.embedding_lookup(shards, ids, partition_strategy=strategy)  # noqa: E731
    assert host_reads(rows) == {}


def test_info_nce_with_log_q_reads_nothing():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, D, generator=gen, requires_grad=True)
    k = torch.randn(B, D, generator=gen, requires_grad=True)
    log_q = torch.rand(B, generator=gen).clamp(min=0.01).log()
    ids = torch.randint(5, (B,), generator=gen)
    step = lambda: torchnce.info_nce_loss(q, k, log_q=log_q, key_ids=ids)  # noqa: E731
    assert host_reads(step) == {}


def test_mixed_negatives_reads_nothing():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, D, generator=gen, requires_grad=True)
    k = torch.randn(B, D, generator=gen, requires_grad=True)
    n = torch.randn(S, D, generator=gen, requires_grad=True)
    step = lambda: torchnce.mixed_negatives_loss(  # noqa: E731
        q, k, n, batch_log_q=torch.full((B,), -math.log(B)),
        sampled_log_q=torch.full((S,), -math.log(C)), key_ids=torch.arange(B),
        sampled_ids=torch.randint(C, (S,), generator=gen))
    assert host_reads(step) == {}


def test_the_counter_sees_a_read():
    # The instruments themselves: a mask index (forward, and its backward's index_put), a
    # nonzero and a tolist are each counted.
    t = torch.arange(5.0, requires_grad=True)
    counts = host_reads(lambda: t[t > 2].sum() + float(len(torch.nonzero(t).tolist())))
    assert counts == {"boolean indexing": 2, "aten::nonzero": 1, "tolist": 1}


def test_a_bad_label_raises_on_the_device_path():
    layer = torchnce.NCELoss(C, D, S)
    x, y, _ = data(1, False)
    with pytest.raises(RuntimeError, match=rf"^labels must hold ids in \[0, {C}\)"):
        layer(x, torch.full_like(y, C))
