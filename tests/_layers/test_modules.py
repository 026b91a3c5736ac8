"""NCELoss and SampledSoftmaxLoss: the modules equal the functions they delegate to.

Oracles: the functional layer (itself tested against TensorFlow's formulas), given the same
parameters and sampled values; the truncated normal's known moments for the initialisation.
"""

from __future__ import annotations

import math

import pytest
import torch

import torchnce

MODULES = {"nce": torchnce.NCELoss, "softmax": torchnce.SampledSoftmaxLoss}
SAMPLED = {"nce": torchnce.nce_loss, "softmax": torchnce.sampled_softmax_loss}
EVAL = {"nce": torchnce.nce_eval_loss, "softmax": torchnce.sampled_softmax_eval_loss}
HITS = {"nce": False, "softmax": True}  # TensorFlow's defaults
C, D, S, B = 30, 4, 6, 5


def tables(layer):
    """The module's parameters as the functional layer takes them."""
    if isinstance(layer.weight, torch.nn.ParameterList):
        return list(layer.weight), None if layer.bias is None else list(layer.bias)
    return layer.weight, layer.bias


def batch(num_true=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=dtype),
            torch.randint(0, C, (B, num_true), generator=g))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_true", [1, 2])
def test_module_equals_function(loss, num_shards, strategy, num_true):
    layer = MODULES[loss](C, D, S, num_true=num_true, num_shards=num_shards,
                          partition_strategy=strategy, reduction="none")
    x, y = batch(num_true)
    values = layer.sampler.sample(y, S, generator=torch.Generator().manual_seed(1))
    w, b = tables(layer)
    expected = SAMPLED[loss](w, b, y, x, S, C, num_true, sampled_values=values,
                             remove_accidental_hits=HITS[loss], partition_strategy=strategy)
    torch.testing.assert_close(layer(x, y, sampled_values=values), expected)
    layer.eval()
    torch.testing.assert_close(layer(x, y), EVAL[loss](w, b, y, x, C, num_true, strategy))
    torch.testing.assert_close(layer.logits(x), torchnce.full_logits(w, b, x, strategy))
    scores, ids = layer.top_k(x, 3, chunk_size=7)
    expected_scores, expected_ids = torchnce.top_k(w, b, x, 3, strategy)
    torch.testing.assert_close(scores, expected_scores)
    assert torch.equal(ids, expected_ids)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_forward_samples_from_its_sampler(loss):
    sampler = torchnce.UniformSampler(C)
    layer = MODULES[loss](C, D, S, sampler=sampler, reduction="sum")
    x, y = batch()
    torch.manual_seed(3)
    actual = layer(x, y[:, 0])
    torch.manual_seed(3)
    values = sampler.sample(y, S)
    expected = SAMPLED[loss](layer.weight, layer.bias, y, x, S, C, sampled_values=values,
                             remove_accidental_hits=HITS[loss]).sum()
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_train_eval_switch_and_forced_mode(loss):
    layer = MODULES[loss](C, D, S, reduction="none")
    x, y = batch()
    full = EVAL[loss](layer.weight, layer.bias, y, x, C)
    values = layer.sampler.sample(y, S, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(layer(x, y, mode="full"), full)  # training mode, forced
    assert not torch.allclose(layer(x, y), full)  # training mode: a sample of 6 of 30
    layer.eval()
    torch.testing.assert_close(layer(x, y), full)
    sampled = layer(x, y, mode="sampled", sampled_values=values)
    expected = SAMPLED[loss](layer.weight, layer.bias, y, x, S, C, sampled_values=values,
                             remove_accidental_hits=HITS[loss])
    torch.testing.assert_close(sampled, expected)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction(reduction):
    layer = torchnce.NCELoss(C, D, S, reduction=reduction).eval()
    x, y = batch()
    per_example = torchnce.nce_eval_loss(layer.weight, layer.bias, y, x, C)
    expected = {"none": per_example, "mean": per_example.mean(), "sum": per_example.sum()}
    torch.testing.assert_close(layer(x, y), expected[reduction])


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
def test_state_dict_round_trip(loss, num_shards):
    layer = MODULES[loss](C, D, S, num_shards=num_shards)
    copy = MODULES[loss](C, D, S, num_shards=num_shards)
    copy.load_state_dict(layer.state_dict())
    for a, b in zip(layer.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)
    keys = {"weight", "bias"} if num_shards == 1 else {
        f"{name}.{p}" for name in ("weight", "bias") for p in range(num_shards)}
    assert set(layer.state_dict()) == keys


def test_stateful_sampler_state_round_trips():
    layer = torchnce.NCELoss(C, D, S, sampler=torchnce.LearnedUnigramSampler(C))
    x, y = batch()
    for seed in range(3):  # training steps teach the sampler the true classes
        torch.manual_seed(seed)
        layer(x, y)
    resumed = torchnce.NCELoss(C, D, S, sampler=torchnce.LearnedUnigramSampler(C))
    resumed.load_state_dict(layer.state_dict())
    assert any(key.startswith("sampler.") for key in layer.state_dict())
    ids = torch.arange(C)
    assert torch.equal(resumed.sampler.probability(ids), layer.sampler.probability(ids))
    torch.manual_seed(9)
    expected = layer(x, y)
    torch.manual_seed(9)
    torch.testing.assert_close(resumed(x, y), expected)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_to_float64(loss):
    layer = MODULES[loss](C, D, S, num_shards=2, reduction="none").to(torch.float64)
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    x, y = batch(dtype=torch.float64)
    values = layer.sampler.sample(y, S, generator=torch.Generator().manual_seed(0))
    out = layer(x, y, sampled_values=values)
    w, b = tables(layer)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, SAMPLED[loss](w, b, y, x, S, C, sampled_values=values,
                                                  remove_accidental_hits=HITS[loss]))
    assert layer.eval()(x, y).dtype == torch.float64


def test_factory_dtype_and_no_bias():
    layer = torchnce.SampledSoftmaxLoss(C, D, S, bias=False, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.bias is None
    x, y = batch(dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x, y), torchnce.sampled_softmax_eval_loss(
        layer.weight, None, y, x, C).mean())


def test_initialisation_is_tf_word2vec():
    # Normal(0, σ = 1/√D) truncated at ±2σ: variance σ²·(1 − 4φ(2)/(2Φ(2) − 1)) ≈ (0.8796σ)².
    layer = torchnce.NCELoss(2000, 64, S, num_shards=2)
    w = torch.cat(list(layer.weight))
    sigma = 1 / math.sqrt(64)
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    std = sigma * math.sqrt(1 - 4 * phi2 / (2 * big_phi - 1))
    assert w.abs().max() <= 2 * sigma
    assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel())
    assert abs(w.std().item() / std - 1) < 0.02  # 128,000 draws: relative s.e. ≈ 0.2 %
    assert all(torch.equal(b, torch.zeros_like(b)) for b in layer.bias)


@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_shard_layout(strategy):
    # TensorFlow's partitioned layout: 10 rows over 4 shards hold 3, 3, 2, 2 rows under both
    # strategies; only which global ids they hold differs, and logits follow the global ids.
    layer = torchnce.NCELoss(10, D, S, num_shards=4, partition_strategy=strategy)
    assert [p.shape[0] for p in layer.weight] == [3, 3, 2, 2]
    x, _ = batch()
    rows = torchnce.embedding_lookup(list(layer.weight), torch.arange(10), strategy)
    torch.testing.assert_close(layer.logits(x), x @ rows.t())


def test_sparse_grad():
    layer = torchnce.NCELoss(C, D, S, sparse_grad=True)
    x, y = batch()
    layer(x, y).backward()
    assert layer.weight.grad.is_sparse and layer.bias.grad.is_sparse


def test_extra_repr():
    text = repr(torchnce.SampledSoftmaxLoss(C, D, S, num_shards=2, partition_strategy="div"))
    assert ("num_classes=30, embedding_dim=4, num_sampled=6, num_true=1, "
            "remove_accidental_hits=True, bias=True, num_shards=2, partition_strategy='div', "
            "sparse_grad=False, reduction='mean'") in text
    assert "(sampler): LogUniformSampler(range_max=30)" in text


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_torch_compile_sampled_loss_given_sampled_values(loss):
    layer = MODULES[loss](C, D, S, reduction="sum")
    x, y = batch()
    values = layer.sampler.sample(y, S, generator=torch.Generator().manual_seed(0))

    def step(x, y, candidates, true_count, sampled_count):
        return layer(x, y, sampled_values=(candidates, true_count, sampled_count))

    # aot_eager traces forward and backward like inductor, without compiling C++ (fast).
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    actual, expected = compiled(x, y, *values), step(x, y, *values)
    torch.testing.assert_close(actual, expected)
    for a, e in zip(torch.autograd.grad(actual, list(layer.parameters())),
                    torch.autograd.grad(expected, list(layer.parameters())), strict=True):
        torch.testing.assert_close(a, e)


def test_bad_configuration():
    with pytest.raises(ValueError, match=r"^num_shards must be >= 1"):
        torchnce.NCELoss(C, D, S, num_shards=0)
    with pytest.raises(ValueError, match=r"^num_shards must be in \[1, num_classes=30\]"):
        torchnce.NCELoss(C, D, S, num_shards=31)
    with pytest.raises(ValueError, match=r"^sampler must have range_max = num_classes=30"):
        torchnce.NCELoss(C, D, S, sampler=torchnce.LogUniformSampler(C + 1))
    with pytest.raises(TypeError, match=r"^sampler must be a torchnce.CandidateSampler"):
        torchnce.NCELoss(C, D, S, sampler=torchnce.log_uniform_candidate_sampler)
    with pytest.raises(ValueError, match=r"^num_sampled must be <= num_classes=30.*range is too"):
        torchnce.SampledSoftmaxLoss(C, D, C + 1)
    with pytest.raises(ValueError, match=r"^reduction must be one of"):
        torchnce.NCELoss(C, D, S, reduction="avg")
    with pytest.raises(ValueError, match=r"^partition_strategy must be one of"):
        torchnce.NCELoss(C, D, S, partition_strategy="round-robin")
    with pytest.raises(ValueError, match=r"^embedding_dim must be >= 1"):
        torchnce.NCELoss(C, 0, S)
    with pytest.raises(TypeError, match=r"^num_classes must be an int"):
        torchnce.NCELoss(30.0, D, S)
    with pytest.raises(TypeError, match=r"^dtype must be a floating dtype"):
        torchnce.NCELoss(C, D, S, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"^bias must be a bool"):
        torchnce.NCELoss(C, D, S, bias=None)


def test_bad_call():
    layer = torchnce.NCELoss(C, D, S, num_true=2)
    x, y = batch(num_true=2)
    with pytest.raises(ValueError, match=r"^inputs must have shape \[batch_size, embedding_dim=4"):
        layer(x[:, :3], y)
    with pytest.raises(TypeError, match=r"^inputs must be a floating tensor"):
        layer(x.long(), y)
    with pytest.raises(ValueError, match=r"^labels must have shape \[batch_size=5, num_true=2\]"):
        layer(x, y[:, 0])
    with pytest.raises(ValueError, match=r"^labels must hold ids in \[0, 30\)"):
        layer(x, y + C)
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        layer(x, y.float())
    with pytest.raises(ValueError, match=r"^mode must be one of 'sampled', 'full'"):
        layer(x, y, mode="eval")
    with pytest.raises(ValueError, match=r"^k must be in \[1, num_classes=30\]"):
        layer.top_k(x, 31)


# --- fuzzing regressions ---------------------------------------------------------------------


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def _bad_calls():
    x, y = batch()
    good_sv = (torch.tensor([1, 2, 3, 4, 5, 6]), torch.ones(B, 1), torch.ones(S))
    return {
        "inputs on another device": lambda m: m(x.to("meta"), y),
        "inputs of another width": lambda m: m(x[:, :3], y),
        "integer inputs": lambda m: m(x.long(), y),
        "labels out of range": lambda m: m(x, y + C),
        "labels of another batch": lambda m: m(x, y[:3]),
        "float labels": lambda m: m(x, y.float()),
        "unknown mode": lambda m: m(x, y, mode="eval"),
        "sampled_values with a zero count": lambda m: m(
            x, y, sampled_values=(good_sv[0], good_sv[1], torch.zeros(S))),
    }


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("case", list(_bad_calls()))
def test_failed_call_leaves_the_learned_sampler(loss, per_example, case):
    # A call rejected by validation must not have fed its labels to the sampler first (before
    # the device check moved up, inputs on another device failed after the draw).
    layer = MODULES[loss](C, D, S, sampler=torchnce.LearnedUnigramSampler(C),
                          per_example_negatives=per_example)
    before = _state(layer)
    with pytest.raises((TypeError, ValueError)):
        _bad_calls()[case](layer)
    after = _state(layer)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert layer.sampler.get_extra_state()["recent"].numel() == 0
    x, y = batch()
    layer(x, y)  # and a good call does learn
    assert layer.sampler.total == C + B


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("sampler", ["fixed", "learned"])
def test_device_moves_a_given_sampler(loss, sampler):
    # device= creates the parameters there; a sampler passed in stayed behind, so the first
    # call failed on the device check ("meta" stands in for an accelerator here).
    given = (torchnce.FixedUnigramSampler(C, unigrams=[1.0] * C) if sampler == "fixed"
             else torchnce.LearnedUnigramSampler(C))
    layer = MODULES[loss](C, D, S, sampler=given, device="meta")
    assert layer.sampler is given
    assert {t.device.type for t in given.buffers()} == {"meta"}
    assert layer.weight.device.type == "meta"


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("count", [0.0, -1.0, math.nan, math.inf])
def test_module_refuses_unusable_expected_counts(loss, count):
    layer = MODULES[loss](C, D, S)
    x, y = batch()
    sv = (torch.tensor([1, 2, 3, 4, 5, 6]), torch.ones(B, 1), torch.full((S,), count))
    with pytest.raises(ValueError, match=r"^sampled_values must hold finite, positive "
                                         r"expected counts"):
        layer(x, y, sampled_values=sv)
