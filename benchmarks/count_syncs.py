"""Count the host reads of one training step, per module and function, with ``sampled_values``
given and with the default sampler (and a few samplers, shards and the contrastive losses).

A read is what would stall a CUDA stream: a ``TorchDispatchMode`` counts
``aten._local_scalar_dense`` (``.item()``, ``int(t)``, ``bool(t)``), ``nonzero``,
``masked_select``, ``unique*`` and indexing with a boolean mask; a ``TorchFunctionMode`` counts
``tolist`` (which copies without dispatching). Two columns: the eager CPU path (value checks
read the ids on the host, which on CPU stalls nothing) and the path of every other device
(device-side assertions), which this script runs on CPU by switching
``torchnce._common.checks.HOST_READS_ON_CPU`` off.

Run: ``python benchmarks/count_syncs.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import torchnce
import torchnce._common.checks

SIZED = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique",
         "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
         "aten::unique_dim_consecutive"}
INDEXING = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
C, D, B, S = 1000, 16, 32, 8


class HostReads(TorchDispatchMode):
    """Counts the dispatcher calls whose result the host reads."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        masked = name in INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
        self.count += name in SIZED or masked
        return func(*args, **(kwargs or {}))


class Tolist(TorchFunctionMode):
    """Counts ``Tensor.tolist`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += func is torch.Tensor.tolist
        return func(*args, **(kwargs or {}))


def count(step: Callable[[], torch.Tensor], host: bool) -> int:
    """The reads of the second step (the first also plans the unique sampler)."""
    torchnce._common.checks.HOST_READS_ON_CPU = host
    try:
        step().sum().backward()
        with Tolist() as lists, HostReads() as reads:
            step().sum().backward()
    finally:
        torchnce._common.checks.HOST_READS_ON_CPU = True
    return lists.count + reads.count


def steps() -> list[tuple[str, str, Callable[[], torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, D, generator=gen, requires_grad=True)
    y = torch.randint(C, (B,), generator=gen)
    values = (torch.randint(C, (S,), generator=gen), torch.ones(B, 1), torch.ones(S))
    rows = (torch.randint(C, (B, S), generator=gen), torch.ones(B, 1), torch.ones(B, S))
    w, b = torch.randn(C, D, requires_grad=True), torch.zeros(C, requires_grad=True)
    shards = [torch.randn(n, D, requires_grad=True) for n in (334, 333, 333)]
    out: list[tuple[str, str, Callable[[], torch.Tensor]]] = []
    for cls in (torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss):
        for per_example in (False, True):
            layer = cls(C, D, S, per_example_negatives=per_example)
            name = f"{cls.__name__}(per_example_negatives={per_example})"
            given = rows if per_example else values
            out.append((name, "given", lambda m=layer, v=given: m(x, y, sampled_values=v)))
            out.append((name, "default", lambda m=layer: m(x, y)))
    for sampler in (torchnce.LearnedUnigramSampler(C), torchnce.UniformSampler(C)):
        for per_example in (False, True):
            layer = torchnce.NCELoss(C, D, S, sampler=sampler, per_example_negatives=per_example)
            out.append((f"NCELoss({type(sampler).__name__}, per_example_negatives={per_example})",
                        "sampler", lambda m=layer: m(x, y)))
    for fn in (torchnce.nce_loss, torchnce.sampled_softmax_loss, torchnce.negative_sampling_loss):
        out.append((fn.__name__, "given", lambda f=fn: f(w, b, y, x, S, C, sampled_values=values)))
        out.append((fn.__name__, "default", lambda f=fn: f(w, b, y, x, S, C, seed=1)))
    out.append(("sampled_softmax_loss, 3 shards", "default",
                lambda: torchnce.sampled_softmax_loss(shards, None, y, x, S, C, seed=1)))
    log_q = torch.full((B,), -math.log(C))
    out.append(("info_nce_loss(log_q=...)", "-",
                lambda: torchnce.info_nce_loss(x, x * 2, log_q=log_q, key_ids=y)))
    out.append(("mixed_negatives_loss", "-", lambda: torchnce.mixed_negatives_loss(
        x, x * 2, w[:S], batch_log_q=log_q, sampled_log_q=log_q[:S], key_ids=y,
        sampled_ids=y[:S])))
    return out


def main() -> None:
    print("| call | sampled_values | eager CPU (host checks) | other devices |\n|---|---|---|---|")
    for name, how, step in steps():
        try:
            device = str(count(step, host=False))
        except AttributeError:  # a torchnce without the switch: no device path
            device = "-"
        print(f"| {name} | {how} | {count(step, host=True)} | {device} |")


if __name__ == "__main__":
    main()
