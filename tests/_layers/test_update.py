"""RowUpdate: optimizer in backward for the output layers.

Oracles: ``sparse_grad=True`` with ``torch.optim.SGD`` (bit-equal) and ``torch.optim.Adagrad``
(float32 tolerance), a float64 reference for row-wise Adagrad, and the ordinary path for the
inputs' gradient. The candidates repeat ids and hit the labels, so duplicate rows are covered.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from tests.test_host_reads import host_reads

import torchnce
import torchnce._common.checks

C, D, B, S = 40, 6, 8, 7
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]
OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}


def batches(steps: int, num_true: int = 1, per_example: bool = False, seed: int = 0
            ) -> list[tuple[Any, ...]]:
    """Inputs, labels and sampled values with repeated ids (C is small, labels repeat) and
    accidental hits (candidates drawn from the labels' range)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        x = torch.randn(B, D, generator=gen)
        y = torch.randint(12, (B, num_true), generator=gen)
        shape = (B, S) if per_example else (S,)
        sampled = torch.randint(16, shape, generator=gen)
        values = (sampled, torch.rand(B, num_true, generator=gen) + 0.1,
                  torch.rand(shape, generator=gen) + 0.1)
        out.append((x, y, values))
    return out


def pair(cls: type, update: torchnce.RowUpdate, **kwargs: Any) -> tuple[Any, Any]:
    """A layer with ``update`` and an identical one with sparse gradients."""
    torch.manual_seed(1)
    with_update = cls(C, D, S, update=update, **kwargs)
    plain = cls(C, D, S, sparse_grad=True, **kwargs)
    plain.load_state_dict({k: v for k, v in with_update.state_dict().items()
                           if not k.startswith("update.")})
    with torch.no_grad():  # nonzero biases, so that their gradients matter
        for p, q in zip(with_update.parameters(), plain.parameters(), strict=True):
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
                q.copy_(p)
    return with_update, plain


def run(layer: Any, data: list[tuple[Any, ...]], optimizer: Any = None) -> list[torch.Tensor]:
    """Train on ``data``; the inputs' gradients of every step."""
    grads = []
    for x, y, values in data:
        x = x.clone().requires_grad_()
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        layer(x, y, sampled_values=values).backward()
        if optimizer is not None:
            optimizer.step()
        grads.append(x.grad)
    return grads


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("config", [
    {}, {"num_true": 3}, {"per_example_negatives": True}, {"num_shards": 3},
    {"num_shards": 3, "partition_strategy": "div"}, {"reduction": "sum"}, {"bias": False},
    {"remove_accidental_hits": True},
])
def test_sgd_equals_sparse_sgd_exactly(cls: type, config: dict[str, Any]) -> None:
    num_true = config.get("num_true", 1)
    data = batches(3, num_true, config.get("per_example_negatives", False))
    with_update, plain = pair(cls, torchnce.RowUpdate("sgd", lr=0.3), **config)
    got = run(with_update, data)
    want = run(plain, data, torch.optim.SGD(plain.parameters(), lr=0.3))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    for name, p in plain.named_parameters():
        q = with_update.get_parameter(name)
        assert q.grad is None
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("config", [{}, {"num_true": 2}, {"per_example_negatives": True},
                                    {"num_shards": 2}, {"reduction": "sum"}])
def test_adagrad_equals_torch_adagrad(cls: type, config: dict[str, Any]) -> None:
    data = batches(4, config.get("num_true", 1), config.get("per_example_negatives", False))
    update = torchnce.RowUpdate("adagrad", lr=0.2, eps=1e-8, initial_accumulator_value=0.1)
    with_update, plain = pair(cls, update, **config)
    run(with_update, data)
    run(plain, data, torch.optim.Adagrad(plain.parameters(), lr=0.2, eps=1e-8,
                                         initial_accumulator_value=0.1))
    for name, p in plain.named_parameters():
        torch.testing.assert_close(with_update.get_parameter(name), p, rtol=1e-6, atol=1e-6,
                                   msg=name)


def rowwise_reference(layer: Any, data: list[tuple[Any, ...]], lr: float, eps: float
                      ) -> dict[str, torch.Tensor]:
    """Row-wise Adagrad in float64 on the dense gradients of the ordinary layer."""
    ref = copy.deepcopy(layer).double()
    ref.update = None
    states = {n: torch.zeros(p.shape[0], dtype=torch.float64) for n, p in ref.named_parameters()}
    for x, y, values in data:
        values = tuple(v.double() if v.is_floating_point() else v for v in values)
        ref.zero_grad(set_to_none=True)
        ref(x.double(), y, sampled_values=values).backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                g = p.grad
                square = g * g if g.dim() == 1 else (g * g).mean(dim=1)
                touched = (g != 0) if g.dim() == 1 else (g != 0).any(dim=1)
                states[n] += torch.where(touched, square, 0)
                std = states[n].sqrt() + eps
                p -= lr * g / (std if g.dim() == 1 else std.unsqueeze(1))
    return {n: p.detach() for n, p in ref.named_parameters()}


@pytest.mark.parametrize("cls", MODULES)
@pytest.mark.parametrize("config", [{}, {"num_true": 2}, {"num_shards": 2}])
def test_rowwise_adagrad_equals_float64_reference(cls: type, config: dict[str, Any]) -> None:
    data = batches(4, config.get("num_true", 1))
    torch.manual_seed(2)
    layer = cls(C, D, S, update=torchnce.RowUpdate("rowwise_adagrad", lr=0.1, eps=1e-6),
                **config)
    want = rowwise_reference(layer, data, 0.1, 1e-6)
    run(layer, data)
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.double(), want[name], rtol=1e-5, atol=1e-6, msg=name)
    states = dict(layer.update.named_buffers())
    assert states["weight_state" if "num_shards" not in config else "weight_state_0"].dim() == 1


def test_inputs_get_the_gradient_of_the_ordinary_path() -> None:
    data = batches(1)
    with_update, plain = pair(torchnce.NCELoss, torchnce.RowUpdate("adagrad", lr=0.1))
    (got,), (want,) = run(with_update, data), run(plain, data)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adagrad", "rowwise_adagrad"])
def test_checkpoint_and_resume_give_the_same_next_step(name: str) -> None:
    data = batches(3)
    torch.manual_seed(0)
    layer = torchnce.SampledSoftmaxLoss(C, D, S, num_shards=2,
                                        update=torchnce.RowUpdate(name, lr=0.1))
    run(layer, data[:2])
    state = copy.deepcopy(layer.state_dict())
    assert {k for k in state if k.startswith("update.")} == {
        "update.weight_state_0", "update.weight_state_1", "update.bias_state_0",
        "update.bias_state_1"}
    resumed = torchnce.SampledSoftmaxLoss(C, D, S, num_shards=2,
                                          update=torchnce.RowUpdate(name, lr=0.1))
    resumed.load_state_dict(state)
    run(layer, data[2:])
    run(resumed, data[2:])
    for (n, p), q in zip(layer.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=n)


def test_lr_schedule_matches_the_optimizer_s() -> None:
    data = batches(4)
    with_update, plain = pair(torchnce.NegativeSamplingLoss, torchnce.RowUpdate("sgd", lr=0.5))
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.5)
    for step, batch in enumerate(data):
        with_update.update.lr = optimizer.param_groups[0]["lr"] = 0.5 / (step + 1)
        run(with_update, [batch])
        run(plain, [batch], optimizer)
    for name, p in plain.named_parameters():
        torch.testing.assert_close(with_update.get_parameter(name), p, rtol=0, atol=0)


def test_default_sampler_and_eval_mode() -> None:
    layer = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate("sgd", lr=0.1))
    before = layer.weight.detach().clone()
    layer(torch.randn(B, D), torch.randint(C, (B,))).backward()
    assert layer.weight.grad is None and not torch.equal(layer.weight, before)
    layer.eval()
    with torch.no_grad():
        assert math.isfinite(float(layer(torch.randn(B, D), torch.randint(C, (B,)))))


def test_no_host_reads_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchnce._common.checks, "HOST_READS_ON_CPU", False)
    for name in ("sgd", "adagrad", "rowwise_adagrad"):
        layer = torchnce.NCELoss(C, D, S, num_shards=2, update=torchnce.RowUpdate(name, lr=0.1))
        x, y = torch.randn(B, D, requires_grad=True), torch.randint(C, (B,))
        assert host_reads(lambda layer=layer, x=x, y=y: layer(x, y)) == {}, name


def test_meta_device() -> None:
    layer = torchnce.NCELoss(C, D, S, device="meta",
                             update=torchnce.RowUpdate("rowwise_adagrad", lr=0.1))
    x = torch.randn(B, D, device="meta", requires_grad=True)
    y = torch.randint(C, (B,), device="meta")
    values = (torch.randint(C, (S,), device="meta"), torch.ones(B, 1, device="meta"),
              torch.ones(S, device="meta"))
    layer(x, y, sampled_values=values).backward()
    assert x.grad.shape == (B, D) and layer.weight.grad is None


# Bad input.

@pytest.mark.parametrize(("kwargs", "error", "start"), [
    ({"name": "adam", "lr": 0.1}, ValueError, "name must be one of"),
    ({"name": "sgd", "lr": 0}, ValueError, "lr must be a finite number > 0"),
    ({"name": "sgd", "lr": -1.0}, ValueError, "lr must be a finite number > 0"),
    ({"name": "sgd", "lr": float("nan")}, ValueError, "lr must be a finite number > 0"),
    ({"name": "sgd", "lr": float("inf")}, ValueError, "lr must be a finite number > 0"),
    ({"name": "sgd", "lr": "0.1"}, TypeError, "lr must be a number"),
    ({"name": "sgd", "lr": True}, TypeError, "lr must be a number"),
    ({"name": "adagrad", "lr": 0.1, "eps": 0.0}, ValueError, "eps must be a finite number > 0"),
    ({"name": "adagrad", "lr": 0.1, "eps": -1e-8}, ValueError, "eps must be"),
    ({"name": "adagrad", "lr": 0.1, "initial_accumulator_value": -1.0}, ValueError,
     "initial_accumulator_value must be finite and >= 0"),
])
def test_bad_arguments(kwargs: dict[str, Any], error: type, start: str) -> None:
    with pytest.raises(error) as info:
        torchnce.RowUpdate(**kwargs)
    assert str(info.value).startswith(start)


def test_bad_lr_set_later_leaves_the_old_one() -> None:
    update = torchnce.RowUpdate("sgd", lr=0.1)
    with pytest.raises(ValueError, match=r"^lr must be"):
        update.lr = 0.0
    assert update.lr == 0.1


def test_refused_with_sparse_grad() -> None:
    with pytest.raises(ValueError, match=r"^update cannot be combined with sparse_grad=True"):
        torchnce.NCELoss(C, D, S, sparse_grad=True, update=torchnce.RowUpdate("sgd", lr=0.1))
    layer = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate("sgd", lr=0.1))
    layer.sparse_grad = True
    with pytest.raises(ValueError, match=r"^update cannot be combined"):
        layer(torch.randn(B, D), torch.randint(C, (B,)))


def test_refused_with_a_frozen_parameter() -> None:
    layer = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate("adagrad", lr=0.1))
    layer.bias.requires_grad_(False)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"^update needs every weight and bias to require grad"):
        layer(torch.randn(B, D), torch.randint(C, (B,)))
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])


def test_not_a_row_update() -> None:
    with pytest.raises(TypeError, match=r"^update must be a torchnce.RowUpdate"):
        torchnce.NCELoss(C, D, S, update="sgd")


def test_one_update_serves_one_layer() -> None:
    update = torchnce.RowUpdate("adagrad", lr=0.1)
    torchnce.NCELoss(C, D, S, update=update)
    with pytest.raises(ValueError, match=r"^update must be a RowUpdate of its own"):
        torchnce.NCELoss(C + 1, D, S, update=update)


def test_second_backward_of_the_same_graph_raises() -> None:
    layer = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate("sgd", lr=0.1))
    loss = layer(torch.randn(B, D, requires_grad=True), torch.randint(C, (B,)))
    loss.backward(retain_graph=True)
    after_one = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"^update: this step's rows were already updated"):
        loss.backward()
    assert torch.equal(layer.weight, after_one)


def test_under_torch_compile_the_update_runs_eagerly() -> None:
    """A graph break (not fullgraph): the compiled module steps equal the eager ones."""
    data = batches(3)
    layers = []
    for compiled in (False, True):
        torch.manual_seed(3)
        layer = torchnce.NCELoss(C, D, S, update=torchnce.RowUpdate("adagrad", lr=0.1))
        call = torch.compile(layer, backend="aot_eager") if compiled else layer
        for x, y, values in data:
            call(x, y, sampled_values=values).backward()
        layers.append(layer)
    for (name, p), q in zip(layers[0].state_dict().items(), layers[1].state_dict().values(),
                            strict=True):
        torch.testing.assert_close(q, p, msg=name)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad"])
@pytest.mark.parametrize("config", [{}, {"num_true": 3, "reduction": "none"},
                                    {"per_example_negatives": True, "reduction": "sum"},
                                    {"bias": False, "remove_accidental_hits": True}])
@pytest.mark.parametrize("inputs_grad", [True, False])
def test_the_native_node_equals_the_python_node(name: str, config: dict[str, Any],
                                                inputs_grad: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On float32 CPU a RowUpdate step is one autograd node in C++ (ops.cpp's UpdateLoss); it
    takes the same steps as the Python node over the same kernels (SGD bit for bit), and
    updates the rows even when the inputs need no gradient."""
    import torchnce._sampled.fused as fused
    from torchnce._native.build import load_ops

    if not load_ops().available:
        pytest.skip("the native operators are not built")
    per_example = config.get("per_example_negatives", False)
    data = batches(3, config.get("num_true", 1), per_example)
    results = []
    for native_node in (True, False):
        monkeypatch.setattr(fused, "NATIVE_NODE", native_node)
        torch.manual_seed(2)
        layer = torchnce.SampledSoftmaxLoss(C, D, S, update=torchnce.RowUpdate(name, lr=0.2),
                                            **config)
        grads = []
        for x, y, values in data:
            x = x.clone().requires_grad_(inputs_grad)
            loss = layer(x, y, sampled_values=values)
            assert (type(loss.grad_fn).__name__ == "CppFunction") == native_node
            (loss.sum() if loss.dim() else loss).backward()
            grads.append(x.grad)
        results.append((layer.state_dict(), grads))
    (cpp_state, cpp_grads), (py_state, py_grads) = results
    for key, value in cpp_state.items():
        if name == "sgd":
            assert torch.equal(value, py_state[key]), key
        torch.testing.assert_close(value, py_state[key], rtol=1e-6, atol=1e-6, msg=key)
    for a, b in zip(cpp_grads, py_grads, strict=True):
        assert (a is None) == (b is None) == (not inputs_grad)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
