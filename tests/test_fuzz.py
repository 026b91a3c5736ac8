"""A bounded, seeded fuzzer over the public API: random valid calls and calls broken in one place.

Valid calls must give results of the documented shape that are finite where the docs promise
it (losses, gradients, logits, expected counts, looked-up rows); an invalid call must raise a
``TypeError`` or ``ValueError`` whose message starts with the name of the argument that was
broken, and a module call that fails must leave the module's state (parameters, buffers, a
learned sampler's counts) as it was. ``derandomize=True`` makes every run draw the same
examples; the sizes are tiny so that the whole file runs in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import torchnce

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOSSES = {
    "nce_loss": torchnce.nce_loss,
    "sampled_softmax_loss": torchnce.sampled_softmax_loss,
    "negative_sampling_loss": torchnce.negative_sampling_loss,
    "compute_sampled_logits": torchnce.compute_sampled_logits,
}
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]


def shard(table: torch.Tensor, num_shards: int, strategy: str) -> torch.Tensor | list[torch.Tensor]:
    """``table`` split into TensorFlow's canonical layout of ``num_shards`` shards."""
    if num_shards == 1:
        return table
    if strategy == "mod":
        return [table[p::num_shards] for p in range(num_shards)]
    ipp, extras = divmod(table.shape[0], num_shards)
    return list(torch.split(table, [ipp + 1 if p < extras else ipp for p in range(num_shards)]))


def raises_naming(name: str, fn: Callable[[], Any]) -> None:
    """``fn()`` raises a TypeError or ValueError whose message starts with ``name``."""
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    assert str(info.value).startswith(name), (name, str(info.value))


def finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


# --- the sampled losses ----------------------------------------------------------------------


@st.composite
def loss_calls(draw: st.DrawFn) -> dict[str, Any]:
    """A valid call of a sampled loss: shapes, shards, dtypes, counts and options at random."""
    num_classes = draw(st.integers(1, 40))
    dim, batch, num_true = draw(st.integers(1, 4)), draw(st.integers(0, 4)), draw(st.integers(1, 3))
    num_sampled = draw(st.integers(1, num_classes))
    dtype = draw(st.sampled_from(DTYPES))
    strategy = draw(st.sampled_from(["mod", "div"]))
    num_shards = draw(st.integers(1, min(3, num_classes)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    weights = torch.randn(num_classes, dim, generator=g).to(dtype)
    biases = torch.randn(num_classes, generator=g).to(dtype) if draw(st.booleans()) else None
    call: dict[str, Any] = {
        "weights": shard(weights, num_shards, strategy),
        "biases": None if biases is None else shard(biases, num_shards, strategy),
        "labels": torch.randint(0, num_classes, (batch, num_true), generator=g),
        "inputs": torch.randn(batch, dim, generator=g).to(dtype),
        "num_sampled": num_sampled, "num_classes": num_classes, "num_true": num_true,
        "partition_strategy": strategy,
        "remove_accidental_hits": draw(st.booleans()),
        "sparse_grad": draw(st.booleans()),
    }
    if draw(st.booleans()):  # given candidates, shared or per example, counts down to 1e-12
        shape = (batch, num_sampled) if draw(st.booleans()) else (num_sampled,)
        log10 = torch.empty(shape).uniform_(-12, 1, generator=g)
        call["sampled_values"] = (torch.randint(0, num_classes, shape, generator=g),
                                  torch.rand(batch, num_true, generator=g) + 0.01,
                                  torch.pow(10.0, log10))
    else:
        call["seed"] = draw(st.integers(0, 2**31))
        call["per_example_negatives"] = draw(st.booleans())
    if num_true > 1 and draw(st.booleans()):
        call["label_mask"] = torch.rand(batch, num_true, generator=g) < 0.6
    return call


@FUZZ
@given(call=loss_calls(), fn_name=st.sampled_from(list(LOSSES)))
def test_valid_loss_calls_are_finite(call, fn_name):
    inputs = call["inputs"].requires_grad_()
    tables = [t for t in (call["weights"], call["biases"]) if t is not None]
    params = [p.requires_grad_() for t in tables for p in (t if isinstance(t, list) else [t])]
    out = LOSSES[fn_name](**call)
    batch = inputs.shape[0]
    if fn_name == "compute_sampled_logits":  # a removed hit's -FLT_MAX is finite too
        width = call["num_true"] + call["num_sampled"]
        assert out[0].shape == out[1].shape == (batch, width)
        assert out[0].dtype == inputs.dtype and finite(out[0]) and finite(out[1])
        return
    loss = out
    assert loss.shape == (batch,) and loss.dtype == inputs.dtype
    assert finite(loss)
    loss.sum().backward()
    for p in [inputs, *params]:
        grad = p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad
        assert grad is None or finite(grad)


def _count(call: dict[str, Any], value: float) -> Any:
    if "sampled_values" not in call or call["inputs"].shape[0] == 0:
        return None
    cands, true_count, sampled_count = call["sampled_values"]
    return cands, true_count, sampled_count.clone().fill_(value)


LOSS_CORRUPTIONS: dict[str, list[Callable[[dict[str, Any]], Any]]] = {
    "num_sampled": [lambda c: 0, lambda c: -1, lambda c: 1.5, lambda c: "2", lambda c: True],
    "num_classes": [lambda c: 0, lambda c: 2.5, lambda c: "5", lambda c: None],
    "num_true": [lambda c: 0, lambda c: 1.0, lambda c: "1"],
    "partition_strategy": [lambda c: "MOD", lambda c: "", lambda c: None, lambda c: 0],
    "remove_accidental_hits": [lambda c: "yes", lambda c: None, lambda c: 2, lambda c: 0.5],
    "sparse_grad": [lambda c: "yes", lambda c: None, lambda c: 2, lambda c: 1],
    "per_example_negatives": [lambda c: "yes", lambda c: None, lambda c: 2],
    "seed": [lambda c: "1", lambda c: 1.5],
    "labels": [
        lambda c: c["labels"].float(),
        lambda c: c["labels"] + c["num_classes"] if c["labels"].numel() else None,
        lambda c: c["labels"] - c["num_classes"] if c["labels"].numel() else None,
        lambda c: c["labels"].unsqueeze(0),
    ],
    "inputs": [lambda c: c["inputs"].long(), lambda c: c["inputs"].tolist(),
               lambda c: c["inputs"].unsqueeze(0), lambda c: c["inputs"][:, :0]],
    "weights": [lambda c: None, lambda c: [], lambda c: torch.zeros(c["num_classes"], 1).long(),
                lambda c: torch.zeros(c["num_classes"] + 1, c["inputs"].shape[1])],
    "biases": [lambda c: torch.zeros(c["num_classes"] + 1),
               lambda c: torch.zeros(c["num_classes"], dtype=torch.long)],
    "sampled_values": [
        lambda c: "abc", lambda c: (1, 2),
        lambda c: _count(c, 0.0), lambda c: _count(c, math.nan), lambda c: _count(c, -1.0),
        lambda c: _count(c, math.inf),
    ],
    "label_mask": [lambda c: torch.ones_like(c["labels"]), lambda c: c["labels"][:, :0] > 0],
    "padding_id": [lambda c: "x", lambda c: 1.5],
}
CORRUPTIONS = [(name, i) for name, fns in LOSS_CORRUPTIONS.items() for i in range(len(fns))]


@FUZZ
@given(call=loss_calls(), fn_name=st.sampled_from(list(LOSSES)),
       corruption=st.sampled_from(CORRUPTIONS))
def test_invalid_loss_calls_name_the_argument(call, fn_name, corruption):
    name, index = corruption
    bad = LOSS_CORRUPTIONS[name][index](call)
    assume(bad is not None or name in ("weights", "num_classes"))
    uses_counts = fn_name != "negative_sampling_loss"
    if name == "sampled_values" and index >= 2:  # bad counts are refused only where logged
        assume(uses_counts)
    if name in ("per_example_negatives", "seed"):
        assume("sampled_values" not in call or name == "seed")
        call.pop("seed", None)
    if name == "biases":
        assume(call["biases"] is not None or index == 0)
    if name == "weights" and index == 3:
        assume(call["inputs"].shape[1] > 0)
    if name == "padding_id":
        call.pop("label_mask", None)
    raises_naming(name, lambda: LOSSES[fn_name](**{**call, name: bad}))


# --- the modules -----------------------------------------------------------------------------


@st.composite
def modules(draw: st.DrawFn) -> torch.nn.Module:
    num_classes = draw(st.integers(1, 30))
    cls = draw(st.sampled_from(MODULES))
    sampler = draw(st.sampled_from(["default", "learned", "fixed"]))
    given_sampler = {
        "default": None,
        "learned": torchnce.LearnedUnigramSampler(num_classes),
        "fixed": torchnce.FixedUnigramSampler(num_classes, unigrams=[1.0 + i % 3
                                                                     for i in range(num_classes)]),
    }[sampler]
    torch.manual_seed(draw(st.integers(0, 2**16)))
    num_shards = draw(st.integers(1, min(3, num_classes)))
    return cls(num_classes, draw(st.integers(1, 4)), draw(st.integers(1, num_classes)),
               num_true=draw(st.integers(1, 2)), sampler=given_sampler, num_shards=num_shards,
               partition_strategy=draw(st.sampled_from(["mod", "div"])),
               reduction=draw(st.sampled_from(["mean", "sum", "none"])),
               per_example_negatives=draw(st.booleans()),
               dtype=draw(st.sampled_from([torch.float32, torch.float64])))


def module_batch(
    layer: torch.nn.Module, batch: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dtype = next(layer.parameters()).dtype
    return (torch.randn(batch, layer.embedding_dim, generator=g, dtype=dtype),
            torch.randint(0, layer.num_classes, (batch, layer.num_true), generator=g))


def snapshot(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
    if isinstance(layer.sampler, torchnce.LearnedUnigramSampler):
        state["sampler recent"] = layer.sampler.get_extra_state()["recent"].clone()
    return state


@FUZZ
@given(layer=modules(), batch=st.integers(1, 4), seed=st.integers(0, 2**16),
       mode=st.sampled_from([None, "sampled", "full"]))
def test_valid_module_calls_are_finite(layer, batch, seed, mode):
    x, y = module_batch(layer, batch, seed)
    loss = layer(x, y, mode=mode)
    assert loss.shape == ((batch,) if layer.reduction == "none" else ())
    assert finite(loss)
    loss.sum().backward()
    assert all(finite(p.grad) for p in layer.parameters() if p.grad is not None)


MODULE_CORRUPTIONS: dict[str, list[Callable[[torch.Tensor, torch.Tensor, int], Any]]] = {
    "inputs": [lambda x, y, c: x.to("meta"), lambda x, y, c: x[:, :0], lambda x, y, c: x.long(),
               lambda x, y, c: x.tolist(), lambda x, y, c: x[0]],
    "labels": [lambda x, y, c: y + c, lambda x, y, c: y - c, lambda x, y, c: y.float(),
               lambda x, y, c: y[:0], lambda x, y, c: "3"],
    "sampled_values": [lambda x, y, c: "abc",
                       lambda x, y, c: (torch.tensor([c]), torch.ones(y.shape), torch.ones(1)),
                       lambda x, y, c: (torch.tensor([0]), torch.ones(y.shape), torch.zeros(1))],
    "mode": [lambda x, y, c: "eval", lambda x, y, c: 1],
}
MODULE_CASES = [(name, i) for name, fns in MODULE_CORRUPTIONS.items() for i in range(len(fns))]


@FUZZ
@given(layer=modules(), batch=st.integers(1, 4), seed=st.integers(0, 2**16),
       corruption=st.sampled_from(MODULE_CASES))
def test_failed_module_calls_change_nothing(layer, batch, seed, corruption):
    name, index = corruption
    x, y = module_batch(layer, batch, seed)
    if name == "sampled_values" and index == 2:  # a zero count is refused only where logged
        assume(not isinstance(layer, torchnce.NegativeSamplingLoss))
        assume(not layer.remove_accidental_hits or layer.num_sampled == 1)
    bad = MODULE_CORRUPTIONS[name][index](x, y, layer.num_classes)
    args: dict[str, Any] = {"inputs": x, "labels": y, "sampled_values": None, "mode": "sampled"}
    before = snapshot(layer)
    raises_naming(name, lambda: layer(**{**args, name: bad}))
    after = snapshot(layer)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), name


MODULE_SETTINGS: dict[str, list[Any]] = {
    "num_classes": [0, 2.0, "3"], "embedding_dim": [0, None], "num_sampled": [0, 4.0],
    "num_true": [0, "1"], "remove_accidental_hits": ["yes", 2], "bias": [None, "no"],
    "num_shards": [0, 9], "partition_strategy": ["x"], "sparse_grad": [None, 1],
    "reduction": ["avg"], "per_example_negatives": ["yes"], "sampler": ["log_uniform", 3],
    "dtype": [torch.int64],
}


@FUZZ
@given(cls=st.sampled_from(MODULES), setting=st.sampled_from(
    [(name, value) for name, values in MODULE_SETTINGS.items() for value in values]))
def test_invalid_module_settings_name_the_argument(cls, setting):
    name, value = setting
    config: dict[str, Any] = {"num_classes": 8, "embedding_dim": 3, "num_sampled": 2,
                              name: value}
    raises_naming(name, lambda: cls(**config))


# --- the candidate samplers ------------------------------------------------------------------


def sampler_call(kind: str, tc: Any, num_true: int, num_sampled: int, unique: bool,
                 range_max: int, seed: int) -> torchnce.SampledValues:
    if kind == "uniform":
        return torchnce.uniform_candidate_sampler(tc, num_true, num_sampled, unique, range_max,
                                                  seed=seed)
    if kind == "log_uniform":
        return torchnce.log_uniform_candidate_sampler(tc, num_true, num_sampled, unique,
                                                      range_max, seed=seed)
    if kind == "learned":
        return torchnce.learned_unigram_candidate_sampler(
            tc, num_true, num_sampled, unique, range_max, seed=seed,
            sampler=torchnce.LearnedUnigramSampler(range_max))
    size = range_max if isinstance(range_max, int) and range_max > 0 else 5
    unigrams = [float(1 + (7 * i) % 5) for i in range(size)]
    return torchnce.fixed_unigram_candidate_sampler(tc, num_true, num_sampled, unique, range_max,
                                                    unigrams=unigrams, seed=seed)


SAMPLER_KINDS = ["uniform", "log_uniform", "learned", "fixed"]


@FUZZ
@given(kind=st.sampled_from(SAMPLER_KINDS), range_max=st.integers(1, 60),
       batch=st.integers(0, 4), num_true=st.integers(1, 3), unique=st.booleans(),
       data=st.data())
def test_valid_sampler_calls(kind, range_max, batch, num_true, unique, data):
    num_sampled = data.draw(st.integers(1, range_max if unique else 80))
    seed = data.draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    tc = torch.randint(0, range_max, (batch, num_true), generator=g)
    cands, true_count, sampled_count = sampler_call(kind, tc, num_true, num_sampled, unique,
                                                    range_max, seed)
    assert cands.shape == (num_sampled,) and cands.dtype == torch.int64
    assert bool(((cands >= 0) & (cands < range_max)).all())
    if unique:
        assert cands.unique().numel() == num_sampled
    assert true_count.shape == (batch, num_true) and sampled_count.shape == (num_sampled,)
    for count in (true_count, sampled_count):  # every class here has a positive probability
        assert finite(count) and bool((count > 0).all())


SAMPLER_CORRUPTIONS: dict[str, list[Any]] = {
    "num_true": [0, 1.0, "1"], "num_sampled": [0, -2, "1", None], "unique": ["yes", None, 2],
    "range_max": [0, -1, "5", 5.0], "true_classes": ["ids", [[0.5]], [1, 2]],
    "seed": ["1", 2.5],
}


@FUZZ
@given(kind=st.sampled_from(SAMPLER_KINDS), corruption=st.sampled_from(
    [(name, value) for name, values in SAMPLER_CORRUPTIONS.items() for value in values]))
def test_invalid_sampler_calls_name_the_argument(kind, corruption):
    name, value = corruption
    args: dict[str, Any] = {"tc": torch.tensor([[1]]), "num_true": 1, "num_sampled": 2,
                            "unique": True, "range_max": 5, "seed": 0}
    key = {"true_classes": "tc"}.get(name, name)
    raises_naming(name, lambda: sampler_call(kind, **{**args, key: value}))


# --- embedding_lookup and info_nce_loss ------------------------------------------------------


@FUZZ
@given(rows=st.integers(1, 20), num_shards=st.integers(1, 3), dtype=st.sampled_from(DTYPES),
       strategy=st.sampled_from(["mod", "div"]), id_shape=st.lists(st.integers(0, 3), max_size=2),
       max_norm=st.one_of(st.none(), st.floats(1e-3, 1e3), st.sampled_from([math.inf, 1e6, 1e40])),
       seed=st.integers(0, 2**16))
def test_valid_embedding_lookups(rows, num_shards, dtype, strategy, id_shape, max_norm, seed):
    assume(num_shards <= rows)
    g = torch.Generator().manual_seed(seed)
    table = (torch.randn(rows, 3, generator=g) * 100).to(dtype)
    ids = torch.randint(0, rows, tuple(id_shape), generator=g)
    got = torchnce.embedding_lookup(shard(table, num_shards, strategy), ids, strategy,
                                    max_norm=max_norm)
    assert got.shape == (*id_shape, 3) and finite(got)
    if max_norm is not None and got.numel():
        norms = got.float().norm(dim=-1)
        assert bool((norms <= max_norm * 1.01 + 1e-3).all())


LOOKUP_CORRUPTIONS: dict[str, list[Any]] = {
    "ids": [torch.tensor([0.5]), torch.tensor([9]), torch.tensor([-1]), "0"],
    "max_norm": [0.0, -1.0, math.nan, "1", True], "partition_strategy": ["x", None],
    "sparse_grad": ["yes", None, 2], "params": [None, [], [torch.zeros(2, 2), torch.zeros(1, 3)]],
}


@FUZZ
@given(corruption=st.sampled_from(
    [(name, value) for name, values in LOOKUP_CORRUPTIONS.items() for value in values]))
def test_invalid_embedding_lookups_name_the_argument(corruption):
    name, value = corruption
    args = {"params": torch.randn(4, 3), "ids": torch.tensor([1, 3]), name: value}
    raises_naming(name, lambda: torchnce.embedding_lookup(**args))


@FUZZ
@given(batch=st.integers(1, 5), dim=st.integers(1, 4), dtype=st.sampled_from(DTYPES[:3]),
       negatives=st.sampled_from([None, "unpaired", "paired"]), normalize=st.booleans(),
       temperature=st.floats(0.05, 10.0), zero_rows=st.integers(0, 2), seed=st.integers(0, 999))
def test_valid_info_nce_calls_are_finite(batch, dim, dtype, negatives, normalize, temperature,
                                         zero_rows, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, dim, generator=g).to(dtype)
    q[:zero_rows] = 0  # all-zero rows: cosine similarity 0, never 0/0
    k = torch.randn(batch, dim, generator=g).to(dtype)
    extra: dict[str, Any] = {}
    if negatives == "unpaired":
        extra = {"negative_keys": torch.randn(3, dim, generator=g).to(dtype)}
    elif negatives == "paired":
        extra = {"negative_keys": torch.randn(batch, 2, dim, generator=g).to(dtype),
                 "negative_mode": "paired"}
    loss = torchnce.info_nce_loss(q, k, temperature=temperature, normalize=normalize,
                                  reduction="none", **extra)
    assert loss.shape == (batch,) and finite(loss)


INFO_NCE_CORRUPTIONS: dict[str, list[Any]] = {
    "temperature": [0.0, -1.0, math.inf, "0.1", torch.tensor([1, 2])],
    "reduction": ["avg", None], "negative_mode": ["both"], "normalize": ["yes", 2],
    "symmetric": [None, 1], "query": [torch.ones(3, 2, dtype=torch.long), "q"],
    "positive_key": [torch.ones(3, 3), torch.ones(3, 2).double()],
    "key_ids": [torch.ones(2, dtype=torch.long), torch.ones(3)],
    "log_q": [torch.ones(3), torch.full((3,), math.nan), torch.zeros(2)],
}


@FUZZ
@given(corruption=st.sampled_from(
    [(name, value) for name, values in INFO_NCE_CORRUPTIONS.items() for value in values]))
def test_invalid_info_nce_calls_name_the_argument(corruption):
    name, value = corruption
    args = {"query": torch.randn(3, 2), "positive_key": torch.randn(3, 2), name: value}
    raises_naming(name, lambda: torchnce.info_nce_loss(**args))
