"""Whole-graph ``torch.compile`` of a training step (docs/gpu-and-compile.md §2).

Every loss and module compiles with ``fullgraph=True`` (one graph, no break) with the default
sampler, seeded by ``seed=`` for the functions (a :class:`SeedStream`, integer tensor ops) and
by torch's default generator for the modules; 20 steps with fresh labels compile once
(``error_on_recompile``); loss and gradients equal eager's. The ``aot_eager`` backend runs
the traced graph with eager kernels (inductor's C++ build takes too long for most cases on a
2-core machine); one test builds with inductor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch._dynamo

import torchnce

C, D, B, S = 60, 4, 5, 6
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]
LOSSES = [torchnce.nce_loss, torchnce.sampled_softmax_loss, torchnce.negative_sampling_loss]


def labels(step: int, num_true: int = 1) -> torch.Tensor:
    return torch.randint(C, (B, num_true), generator=torch.Generator().manual_seed(100 + step))


def compiled_equals_eager(step: Callable[[torch.Tensor], torch.Tensor],
                          params: list[torch.Tensor], *, backend: str = "aot_eager",
                          steps: int = 20, seeded: bool = False) -> None:
    """Run ``step`` compiled and eager on the same labels: equal losses and gradients, and
    one compilation for all ``steps`` (a recompile raises)."""
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for i in range(steps):
        y = labels(i)
        results = []
        for fn in (step, compiled):
            if seeded:
                torch.manual_seed(i)
            for p in params:
                p.grad = None
            with torch._dynamo.config.patch(error_on_recompile=i > 0):
                loss = fn(y)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in params]))
        (eager, eager_grads), (got, got_grads) = results
        torch.testing.assert_close(got, eager)
        for g_got, g_eager in zip(got_grads, eager_grads, strict=True):
            torch.testing.assert_close(g_got, g_eager)


def tensors(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(C, D, generator=gen).requires_grad_()
    b = torch.randn(C, generator=gen).requires_grad_()
    x = torch.randn(B, D, generator=gen).requires_grad_()
    return w, b, x


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("per_example", [False, True])
def test_a_seeded_function_step_compiles_to_one_graph(loss, per_example):
    w, b, x = tensors()
    step = lambda y: loss(w, b, y, x, S, C, seed=3,  # noqa: E731
                          per_example_negatives=per_example).sum()
    compiled_equals_eager(step, [w, b, x])


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("per_example", [False, True])
def test_a_module_step_compiles_to_one_graph(module, per_example):
    layer = module(C, D, S, per_example_negatives=per_example)
    x = torch.randn(B, D, requires_grad=True)
    compiled_equals_eager(lambda y: layer(x, y), [layer.weight, x], seeded=True)


def test_given_sampled_values_compile_to_one_graph():
    w, b, x = tensors()
    values = (torch.randint(C, (S,)), torch.rand(B, 1) + 0.1, torch.rand(S) + 0.1)
    step = lambda y: torchnce.sampled_softmax_loss(  # noqa: E731
        w, b, y, x, S, C, sampled_values=values).sum()
    compiled_equals_eager(step, [w, b, x])


def test_info_nce_with_log_q_compiles_to_one_graph():
    w, _, x = tensors()
    log_q = torch.full((B,), -math.log(C))

    def step(y: torch.Tensor) -> torch.Tensor:
        ids = y[:, 0]
        return torchnce.info_nce_loss(x, w[ids], log_q=log_q, key_ids=ids)

    compiled_equals_eager(step, [w, x])


def test_mixed_negatives_compile_to_one_graph():
    w, _, x = tensors()
    batch_log_q, sampled_log_q = torch.full((B,), -math.log(B)), torch.full((S,), -math.log(C))
    sampled = torch.arange(S)

    def step(y: torch.Tensor) -> torch.Tensor:
        ids = y[:, 0]
        return torchnce.mixed_negatives_loss(x, w[ids], w[sampled], batch_log_q=batch_log_q,
                                             sampled_log_q=sampled_log_q, key_ids=ids,
                                             sampled_ids=sampled)

    compiled_equals_eager(step, [w, x])


def test_an_inductor_build_of_a_seeded_step_equals_eager():
    # The seed's stream is integer arithmetic with wrapping int64 products: inductor's
    # vectorised C++ must give the same bits as eager (S = 40 of 60 classes: a block of some
    # hundred draws, past inductor's vector width; an earlier form of the stream crashed it).
    w, b, x = tensors()
    step = lambda y: torchnce.nce_loss(w, b, y, x, 40, C, seed=5).sum()  # noqa: E731
    compiled_equals_eager(step, [w, b, x], backend="inductor", steps=3)


def test_a_step_compiles_with_a_dynamic_batch():
    # dynamic=True: the batch is symbolic (it must not enter a message); num_classes and
    # num_sampled stay Python constants (the unique plan is a trace-time constant of them).
    w, b, _ = tensors()
    step = torch.compile(lambda y, x: torchnce.nce_loss(w, b, y, x, S, C, seed=1).sum(),
                         fullgraph=True, backend="aot_eager", dynamic=True)
    for batch in (5, 7):
        y, x = labels(batch)[:1].expand(batch, 1).contiguous(), torch.randn(batch, D)
        torch.testing.assert_close(step(y, x), torchnce.nce_loss(w, b, y, x, S, C, seed=1).sum())


def test_a_bad_label_fails_the_compiled_step():
    w, b, x = tensors()
    step = torch.compile(lambda y: torchnce.nce_loss(w, b, y, x, S, C, seed=1).sum(),
                         fullgraph=True, backend="aot_eager")
    step(labels(0))
    with pytest.raises(RuntimeError, match=r"labels must hold ids in \[0, the number of classes\)"):
        step(torch.full((B, 1), C))


def test_sparse_gradients_do_not_compile_to_one_graph():
    # Documented: sparse_grad=True builds a sparse COO gradient in a custom backward, which
    # dynamo does not trace in torch 2.13; compile such steps without fullgraph.
    w, b, x = tensors()
    step = torch.compile(lambda y: torchnce.nce_loss(w, b, y, x, S, C, seed=1,
                                                     sparse_grad=True).sum(),
                         fullgraph=True, backend="aot_eager")
    with pytest.raises(torch._dynamo.exc.Unsupported):
        step(labels(0)).backward()


def test_import_does_not_load_dynamo():
    """``import torch._dynamo`` costs ~0.8 s: torchnce leaves it to whoever compiles."""
    import subprocess
    import sys

    code = "import sys, torchnce; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_constant_under_compile_marks_as_dynamo_does():
    import torch._dynamo

    from torchnce._common.compile import constant_under_compile

    def ours():
        return 0

    def theirs():
        return 0

    constant_under_compile(ours)
    torch._dynamo.assume_constant_result(theirs)
    marks = {k for k in vars(theirs) if k.startswith("_dynamo")}
    assert marks and {k: vars(ours)[k] for k in marks} == {k: vars(theirs)[k] for k in marks}
