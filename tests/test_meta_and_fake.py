"""Shape propagation without data: every loss, sampler, lookup and evaluation function runs on
the ``meta`` device and under ``FakeTensorMode`` (docs/gpu-and-compile.md §3).

Nothing reads a value: the value checks are device-side assertions there, unique sampling is a
fixed-shape block and its plan is computed in Python floats. ``compute_accidental_hits``
returns as many hits as there are, a size that depends on the values: it needs a
``FakeTensorMode`` with a ``ShapeEnv``, where its size is an unbacked symbol; on ``meta`` it
raises torch's ``NotImplementedError`` for ``nonzero``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import torchnce

C, D, B, S, T = 50, 4, 6, 5, 2
LOSSES = [torchnce.nce_loss, torchnce.sampled_softmax_loss, torchnce.negative_sampling_loss]
MODULES = [torchnce.NCELoss, torchnce.SampledSoftmaxLoss, torchnce.NegativeSamplingLoss]
SAMPLER_FUNCTIONS = ["uniform_candidate_sampler", "log_uniform_candidate_sampler",
                     "learned_unigram_candidate_sampler"]


def inputs(device: str) -> dict[str, Any]:
    w = torch.randn(C, D, device=device, requires_grad=True)
    return {
        "w": w, "b": torch.zeros(C, device=device, requires_grad=True),
        "x": torch.randn(B, D, device=device, requires_grad=True),
        "y": torch.randint(C, (B, T), device=device),
        "values": (torch.randint(C, (S,), device=device), torch.rand(B, T, device=device) + 0.1,
                   torch.rand(S, device=device) + 0.1),
        "log_q": torch.full((B,), -1.0, device=device),
    }


def calls() -> dict[str, tuple[Callable[[dict[str, Any]], torch.Tensor], tuple[int, ...]]]:
    """Each call and the shape it must give."""
    out: dict[str, tuple[Callable[[dict[str, Any]], torch.Tensor], tuple[int, ...]]] = {}
    for fn, how in itertools.product(LOSSES, ["default", "per_example", "given"]):
        kwargs = {"default": {}, "per_example": {"per_example_negatives": True},
                  "given": {}}[how]

        def loss(t: dict[str, Any], fn: Any = fn, how: str = how, kw: Any = kwargs) -> Any:
            values = t["values"] if how == "given" else None
            return fn(t["w"], t["b"], t["y"], t["x"], S, C, T, values, **kw)

        out[f"{fn.__name__}-{how}"] = (loss, (B,))
    for name in SAMPLER_FUNCTIONS:
        out[name] = (lambda t, n=name: getattr(torchnce, n)(t["y"], T, S, True, C)[0], (S,))
    out["fixed_unigram_candidate_sampler"] = (lambda t: torchnce.fixed_unigram_candidate_sampler(
        t["y"], T, S, True, C, unigrams=[1.0] * C)[0], (S,))
    out["all_candidate_sampler"] = (
        lambda t: torchnce.all_candidate_sampler(t["y"], T, S, True)[0], (S,))
    for cls in (torchnce.UniformSampler, torchnce.LogUniformSampler):
        out[cls.__name__] = (lambda t, c=cls: c(C).sample(t["y"], S)[0], (S,))
    out["info_nce_loss"] = (lambda t: torchnce.info_nce_loss(t["x"], t["x"], log_q=t["log_q"]),
                            ())
    out["mixed_negatives_loss"] = (lambda t: torchnce.mixed_negatives_loss(
        t["x"], t["x"], t["w"][:S], batch_log_q=t["log_q"], sampled_log_q=t["log_q"][:S]), ())
    out["embedding_lookup"] = (lambda t: torchnce.embedding_lookup(t["w"], t["y"]), (B, T, D))
    out["embedding_lookup-shards"] = (lambda t: torchnce.embedding_lookup(
        [t["w"][:25], t["w"][25:]], t["y"], partition_strategy="div"), (B, T, D))
    out["nce_eval_loss"] = (lambda t: torchnce.nce_eval_loss(t["w"], t["b"], t["y"], t["x"], C, T),
                            (B,))
    out["sampled_softmax_eval_loss"] = (lambda t: torchnce.sampled_softmax_eval_loss(
        t["w"], t["b"], t["y"], t["x"], C, T), (B,))
    out["full_logits"] = (lambda t: torchnce.full_logits(t["w"], t["b"], t["x"]), (B, C))
    out["top_k"] = (lambda t: torchnce.top_k(t["w"], t["b"], t["x"], 3)[0], (B, 3))
    return out


CALLS = calls()


@pytest.mark.parametrize("name", list(CALLS))
def test_meta_propagates_shapes(name):
    call, shape = CALLS[name]
    out = call(inputs("meta"))
    assert out.device.type == "meta" and tuple(out.shape) == shape


@pytest.mark.parametrize("name", list(CALLS))
def test_fake_tensors_propagate_shapes(name):
    call, shape = CALLS[name]
    with FakeTensorMode(shape_env=ShapeEnv()):
        out = call(inputs("cpu"))
    assert tuple(out.shape) == shape


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("sampler", [None, "learned", "fixed"])
@pytest.mark.parametrize("per_example", [False, True])
def test_a_module_step_propagates_shapes_on_meta_and_fake(module, sampler, per_example):
    make = {None: lambda: None, "learned": lambda: torchnce.LearnedUnigramSampler(C),
            "fixed": lambda: torchnce.FixedUnigramSampler(C, unigrams=[1.0] * C)}[sampler]
    layer = module(C, D, S, num_true=T, sampler=make(), per_example_negatives=per_example)
    meta = inputs("meta")
    assert layer.to("meta")(meta["x"], meta["y"]).shape == ()
    layer = module(C, D, S, num_true=T, sampler=make(), per_example_negatives=per_example)
    mode = FakeTensorMode(shape_env=ShapeEnv())
    with mode:
        state = {k: mode.from_tensor(v)
                 for k, v in itertools.chain(layer.named_parameters(), layer.named_buffers())}
        t = inputs("cpu")
        out = torch.func.functional_call(layer, state, (t["x"], t["y"]))
    assert out.shape == ()


def test_accidental_hits_have_an_unbacked_size_under_fake_tensors():
    with FakeTensorMode(shape_env=ShapeEnv()):
        t = inputs("cpu")
        indices, ids, weights = torchnce.compute_accidental_hits(t["y"], t["values"][0], T)
    assert isinstance(indices.shape[0], torch.SymInt)  # as many as there are hits
    assert ids.shape == indices.shape and weights.shape == indices.shape


def test_accidental_hits_need_a_shape_env():
    t = inputs("meta")
    with pytest.raises(NotImplementedError):
        torchnce.compute_accidental_hits(t["y"], t["values"][0], T)
