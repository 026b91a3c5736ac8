"""Count the host reads of one training step: ``aten._local_scalar_dense`` (``.item()``,
``int(t)``) and ``aten.nonzero`` calls seen by a ``TorchDispatchMode``, per module and
function, with ``sampled_values`` given and with the default sampler.

Run: ``python benchmarks/count_syncs.py`` (CPU; the count is what a CUDA stream would stall on).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torchnce

READS = ("aten._local_scalar_dense.default", "aten.nonzero.default")
C, D, B, S = 1000, 16, 32, 8


class HostReads(TorchDispatchMode):
    """Counts the dispatcher calls that read device memory on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if str(func) in READS:
            self.counts[str(func).split(".")[1]] += 1
        return func(*args, **(kwargs or {}))


def count(step: Callable[[], torch.Tensor]) -> dict[str, int]:
    """The reads of the second step (the first also plans the unique sampler, once)."""
    step().sum().backward()
    with HostReads() as mode:
        step().sum().backward()
    return dict(mode.counts)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, D, generator=gen, requires_grad=True)
    y = torch.randint(C, (B,), generator=gen)
    values = (torch.randint(C, (S,), generator=gen), torch.ones(B, 1), torch.ones(S))
    w, b = torch.randn(C, D, requires_grad=True), torch.zeros(C, requires_grad=True)
    rows = []
    for cls in (torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss):
        for per_example in (False, True):
            layer = cls(C, D, S, per_example_negatives=per_example)
            name = f"{cls.__name__}(per_example_negatives={per_example})"
            rows.append((name, "given",
                         count(lambda m=layer: m(x, y, sampled_values=values))))
            rows.append((name, "default", count(lambda m=layer: m(x, y))))
    for fn in (torchnce.nce_loss, torchnce.sampled_softmax_loss):
        rows.append((fn.__name__, "given",
                     count(lambda f=fn: f(w, b, y, x, S, C, sampled_values=values))))
        rows.append((fn.__name__, "default", count(lambda f=fn: f(w, b, y, x, S, C, seed=1))))
    print("| call | sampled_values | _local_scalar_dense | nonzero |\n|---|---|---|---|")
    for name, how, c in rows:
        print(f"| {name} | {how} | {c.get('_local_scalar_dense', 0)} | {c.get('nonzero', 0)} |")


if __name__ == "__main__":
    main()
