"""The native fused sampled-loss kernels against the pure-PyTorch path (the reference).

Every public loss, shared and per-example candidates, T = 1 and T > 1, label masks, hits,
log-Q, biases or none, shards: the loss and every gradient equal to float32 tolerance. The
pure path itself is checked against float64 autograd by gradcheck in tests/_sampled.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torchnce
from torchnce._native import sampled as native
from torchnce._native.build import load_ops

pytestmark = pytest.mark.skipif(not load_ops().available,
                                reason="the native operators are not built")

LOSSES = [torchnce.nce_loss, torchnce.sampled_softmax_loss, torchnce.negative_sampling_loss]


def problem(seed: int, *, num_true: int, per_example: bool, bias: bool, shards: int,
            batch: int = 9, dim: int = 21, classes: int = 50, sampled: int = 11
            ) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, dim, generator=gen) * 0.3
    b = torch.randn(classes, generator=gen) if bias else None
    shape = (batch, sampled) if per_example else (sampled,)
    values = (torch.randint(classes, shape, generator=gen),
              torch.rand(batch, num_true, generator=gen) + 0.05,
              torch.rand(shape, generator=gen) + 0.05)
    weights: Any = w
    biases: Any = b
    if shards > 1:
        weights = [w[p::shards].clone() for p in range(shards)]
        biases = None if b is None else [b[p::shards].clone() for p in range(shards)]
    return {"weights": weights, "biases": biases,
            "labels": torch.randint(classes // 2, (batch, num_true), generator=gen),
            "inputs": torch.randn(batch, dim, generator=gen), "num_sampled": sampled,
            "num_classes": classes, "num_true": num_true, "sampled_values": values}


def leaves(args: dict[str, Any]) -> list[torch.Tensor]:
    out = [args["inputs"]]
    for key in ("weights", "biases"):
        value = args[key]
        if value is not None:
            out.extend(value if isinstance(value, list) else [value])
    return out


def run(loss_fn: Any, args: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, list[Any]]:
    args = {k: ([t.clone().requires_grad_() for t in v] if isinstance(v, list) else
                v.clone().requires_grad_() if k in ("weights", "biases", "inputs") and
                v is not None else v) for k, v in args.items()}
    loss = loss_fn(**args, **kwargs)
    (loss * torch.linspace(0.5, 1.5, loss.shape[0])).sum().backward()
    grads = [t.grad.to_dense() if t.grad is not None and t.grad.is_sparse else t.grad
             for t in leaves(args)]
    return loss.detach(), grads


def compare(loss_fn: Any, args: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
            **kwargs: Any) -> None:
    got = run(loss_fn, args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(native, "usable", lambda *a: False)
        want = run(loss_fn, args, **kwargs)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hits", [False, True])
def test_native_equals_pure(loss_fn: Any, num_true: int, per_example: bool, bias: bool,
                            hits: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    args = problem(num_true + 2 * per_example, num_true=num_true, per_example=per_example,
                   bias=bias, shards=1)
    compare(loss_fn, args, monkeypatch, remove_accidental_hits=hits)


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("per_example", [False, True])
def test_native_equals_pure_with_label_masks(loss_fn: Any, per_example: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    args = problem(7, num_true=4, per_example=per_example, bias=True, shards=1)
    mask = torch.rand(args["labels"].shape, generator=torch.Generator().manual_seed(3)) < 0.6
    mask[0] = False  # a row without labels
    mask[1, 0] = True
    compare(loss_fn, args, monkeypatch, label_mask=mask, remove_accidental_hits=True)


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_native_equals_pure_sharded_and_sparse(loss_fn: Any, strategy: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    args = problem(11, num_true=2, per_example=False, bias=True, shards=3)
    if strategy == "div":
        full = torch.cat([s for s in args["weights"]])  # any split of the right sizes
        sizes = [17, 17, 16]
        args["weights"] = list(torch.split(full, sizes))
        args["biases"] = list(torch.split(torch.cat(args["biases"]), sizes))
    compare(loss_fn, args, monkeypatch, partition_strategy=strategy, sparse_grad=True)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_native_equals_pure_at_large_width(loss_fn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many logits per row (the lanes' products of 1 + e are flushed every 960), extreme
    logits (exp underflows, saturated sigmoids), a row dimension with a masked tail."""
    args = problem(5, num_true=2, per_example=False, bias=True, shards=1, batch=3, dim=37,
                   classes=3000, sampled=2500)
    args["inputs"] = args["inputs"] * 8
    compare(loss_fn, args, monkeypatch, remove_accidental_hits=True)


def test_the_native_path_runs_for_float32_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = native.forward
    monkeypatch.setattr(native, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = problem(1, num_true=1, per_example=False, bias=True, shards=1)
    torchnce.nce_loss(**args)
    torchnce.nce_loss(**{**args, "inputs": args["inputs"].double(),
                         "weights": args["weights"].double(), "biases": args["biases"].double()})
    assert calls == [1]  # float64 stays on the pure path


def test_the_operators_refuse_an_id_out_of_range() -> None:
    table = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"^ids must be in \[0, 4\)"):
        native.forward(torch.zeros(1, 3), table, None, torch.tensor([0, 4]), None, None, None,
                       None, 1, 0, False)
    with pytest.raises(ValueError, match=r"^ids must be in \[0, 4\)"):
        native.row_update("sgd", table, torch.tensor([-1]), torch.zeros(1, 3), None, 0.1, 1e-10)
    rows, x, g = torch.ones(2, 3), torch.ones(1, 3), torch.ones(1, 2)
    with pytest.raises(ValueError, match=r"^ids must be in \[0, 4\)"):
        native.backward_update(g, torch.ones(1), 1, x, rows, torch.tensor([1, 9]), 1, 0, True,
                               table, None, None, None, "sgd", 0.1, 1e-10)
    assert not table.any()
    assert torch.equal(g, torch.ones(1, 2))  # refused before anything changed


@pytest.mark.parametrize("call", ["forward_dtype", "forward_shape", "backward_shape",
                                  "update_state", "update_kind"])
def test_the_operators_refuse_bad_arguments(call: str) -> None:
    """The operators check what Python checked before them: a ValueError naming the argument,
    never a read outside a tensor."""
    table, x = torch.zeros(6, 3), torch.zeros(2, 3)
    ops = torch.ops.torchnce_cpu
    cases = {
        "forward_dtype": (lambda: ops.sl_forward(x.double(), table, None, None, None, None, None,
                                                 None, None, 1, 0, False), "^inputs must be"),
        "forward_shape": (lambda: ops.sl_forward(x, table[:5], None, None, None, None, None,
                                                 None, None, 1, 4, False), "^weight's rows"),
        "backward_shape": (lambda: ops.sl_backward(torch.zeros(2, 4), None, 1, x, table, 1, 0,
                                                   True, True, True),
                           "^dlogits, x and rows"),
        "update_state": (lambda: ops.row_update(1, table, torch.tensor([1]), torch.zeros(1, 3),
                                                None, 0.1, 1e-10), "^state must be"),
        "update_kind": (lambda: ops.row_update(7, table, torch.tensor([1]), torch.zeros(1, 3),
                                               None, 0.1, 1e-10), "^kind must be"),
    }
    fn, message = cases[call]
    with pytest.raises(ValueError, match=message):
        fn()
    assert not table.any()


def test_native_equals_pure_on_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch large enough that the operators split it over torch's threads, and a row
    update large enough for the partitioned SGD: equal to the pure path (SGD bit-equal)."""
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing is split")
    args = problem(23, num_true=2, per_example=False, bias=True, shards=1, batch=300, dim=64,
                   classes=5000, sampled=900)
    compare(torchnce.nce_loss, args, monkeypatch, remove_accidental_hits=True)
    example = problem(24, num_true=1, per_example=True, bias=True, shards=1, batch=400, dim=64,
                      classes=5000, sampled=300)
    compare(torchnce.sampled_softmax_loss, example, monkeypatch)
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(300, (3000,), generator=gen)  # many repeats
    grads = torch.randn(3000, 64, generator=gen)
    start = torch.randn(300, 64, generator=gen)
    got = start.clone()
    native.row_update("sgd", got, ids, grads, None, 0.05, 1e-10)
    want = start.clone()
    want.add_(torch.sparse_coo_tensor(ids.unsqueeze(0), grads, want.shape, check_invariants=True),
              alpha=-0.05)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rowwise_adagrad"])
def test_row_update_equals_the_pure_update(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(6, (40,), generator=gen)
    grads = torch.randn(40, 5, generator=gen)
    tables = []
    for use_native in (True, False):
        update = torchnce.RowUpdate(kind, lr=0.3, initial_accumulator_value=0.2)
        table = torch.randn(10, 5, generator=torch.Generator().manual_seed(1))
        update.bind([table], None)
        with monkeypatch.context() as m:
            if not use_native:
                m.setattr(native, "usable", lambda *a: False)
            for _ in range(3):
                update.apply_rows([table], update.weight_states, ids, grads, "mod")
        tables.append((table, [getattr(update, n) for n in update.weight_states]))
    (got, got_state), (want, want_state) = tables
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for a, b in zip(got_state, want_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# The custom operators (torchnce._sampled.ops).

def op_args(dtype: torch.dtype, per_example: bool, given_rows: bool = False) -> tuple[Any, ...]:
    gen = torch.Generator().manual_seed(4)
    batch, dim, classes, num_true, sampled = 5, 7, 30, 2, 6
    x = torch.randn(batch, dim, generator=gen, dtype=dtype)
    w = torch.randn(classes, dim, generator=gen, dtype=dtype)
    b = torch.randn(classes, generator=gen, dtype=dtype)
    shape = (batch, num_true + sampled) if per_example else (batch * num_true + sampled,)
    ids = torch.randint(classes, shape, generator=gen).reshape(-1)
    lq_true = torch.rand(batch, num_true, generator=gen, dtype=dtype).log()
    lq_sampled = torch.rand((batch, sampled) if per_example else (sampled,), generator=gen,
                            dtype=dtype).log()
    hits = torch.rand(batch, sampled, generator=gen) < 0.2
    mask = torch.rand(batch, num_true, generator=gen) < 0.7
    width = num_true + sampled if per_example else 0
    if given_rows:
        return (x, w[ids].clone(), b[ids].clone(), None, None, lq_true, lq_sampled, hits, mask,
                num_true, width, False)
    return (x, w, b, ids, ids, lq_true, lq_sampled, hits, mask, num_true, width, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("given_rows", [False, True])
def test_the_ops_pass_opcheck(dtype: torch.dtype, per_example: bool, given_rows: bool) -> None:
    """Schema, fake implementation, no aliasing of inputs, dispatch: torch.library.opcheck."""
    args = op_args(dtype, per_example, given_rows)
    torch.library.opcheck(torch.ops.torchnce.fused_forward.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    _, dlogits, rows = torch.ops.torchnce.fused_forward(*args)
    x, num_true, width = args[0], args[9], args[10]
    for need in ((True, True, True), (False, True, False)):
        torch.library.opcheck(torch.ops.torchnce.fused_backward.default,
                              (dlogits, x, rows, num_true, width, *need),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("per_example", [False, True])
def test_the_native_operators_pass_the_schema_check(per_example: bool) -> None:
    """The mutation annotations of the native operators hold (torch.library.opcheck's schema
    test: what a call changes is what its schema says)."""
    args = op_args(torch.float32, per_example)
    ops = torch.ops.torchnce_cpu
    lq = args[5:7]
    fwd = (*args[:5], *lq, *args[7:])
    torch.library.opcheck(ops.sl_forward.default, fwd, test_utils=("test_schema",))
    _, dlogits, rows = ops.sl_forward(*fwd)
    x, ids, num_true, width = args[0], args[3], args[9], args[10]
    torch.library.opcheck(ops.sl_backward.default,
                          (dlogits, torch.rand(x.shape[0]), 2, x, rows, num_true, width, True,
                           True, True), test_utils=("test_schema",))
    torch.library.opcheck(ops.sl_backward.default,
                          (dlogits, None, 1, x, rows, num_true, width, True, True, True),
                          test_utils=("test_schema",))
    for kind, state in ((0, None), (1, torch.zeros_like(args[1]))):
        torch.library.opcheck(ops.sl_backward_update.default,
                              (dlogits.clone(), torch.tensor(0.5), 3, x, rows, ids, num_true,
                               width, True, args[1].clone(), None, state, None, kind, 0.1,
                               1e-10), test_utils=("test_schema",))


def test_torch_compile_sees_each_op_as_one_node() -> None:
    graphs = []

    def backend(gm: torch.fx.GraphModule, example: Any) -> Any:
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    w = torch.randn(40, 8, requires_grad=True)
    x = torch.randn(6, 8, requires_grad=True)
    values = (torch.randint(40, (5,)), torch.rand(6, 1) + 0.1, torch.rand(5) + 0.1)

    def step(y: torch.Tensor) -> torch.Tensor:
        return torchnce.nce_loss(w, None, y, x, 5, 40, sampled_values=values).sum()

    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified

    def aot(gm: torch.fx.GraphModule, example: Any) -> Any:
        return aot_module_simplified(gm, example, fw_compiler=backend, bw_compiler=backend)

    compiled = torch.compile(step, fullgraph=True, backend=aot)
    y = torch.randint(40, (6, 1))
    loss = compiled(y)
    loss.backward()
    names = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert "torchnce.fused_forward.default" in names
    assert "torchnce.fused_backward.default" in names
    assert not any(name.startswith(("aten.mm", "aten.addmm", "aten.sigmoid")) for name in names)
    eager = torchnce.nce_loss(w, None, y, x, 5, 40, sampled_values=values).sum()
    torch.testing.assert_close(loss, eager)


@pytest.mark.parametrize("loss_fn", [torchnce.nce_loss, torchnce.sampled_softmax_loss])
@pytest.mark.parametrize("shapes", [((), ()), ((1, 1), (11,)), ((3,), (1,)), ((9, 3), ())])
def test_broadcast_expected_counts(loss_fn: Any, shapes: tuple[tuple[int, ...], ...],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Expected counts of any broadcastable shape (and float64) reach the kernel by strides."""
    args = problem(17, num_true=3, per_example=False, bias=True, shards=1)
    gen = torch.Generator().manual_seed(2)
    true_shape, sampled_shape = shapes
    args["sampled_values"] = (args["sampled_values"][0],
                              torch.rand(true_shape, generator=gen, dtype=torch.float64) + 0.1,
                              torch.rand(sampled_shape, generator=gen) + 0.1)
    compare(loss_fn, args, monkeypatch)


def test_a_transposed_table_takes_the_native_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table whose rows are not unit-stride (the transpose of a [D, C] tensor) is copied once
    by the operator, never refused: the pure path's numbers."""
    args = problem(31, num_true=2, per_example=False, bias=True, shards=1)
    args["weights"] = args["weights"].t().contiguous().t()
    assert args["weights"].stride(1) != 1
    compare(torchnce.nce_loss, args, monkeypatch)


def test_a_refused_update_changes_nothing() -> None:
    """sl_backward_update checks every table and accumulator before it scales the gradient
    or touches a row."""
    table, bias = torch.randn(6, 3), torch.randn(6)
    before = (table.clone(), bias.clone())
    g = torch.ones(1, 2)
    with pytest.raises(ValueError, match=r"^state must be"):
        native.backward_update(g, torch.ones(1), 1, torch.ones(1, 3), torch.ones(2, 3),
                               torch.tensor([1, 2]), 1, 0, True, table, bias,
                               torch.zeros(6, 3), torch.zeros(5), "adagrad", 0.1, 1e-10)
    assert torch.equal(table, before[0]) and torch.equal(bias, before[1])
    assert torch.equal(g, torch.ones(1, 2))
