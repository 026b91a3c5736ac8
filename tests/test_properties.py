"""Properties that every public loss of torchnce keeps, over one registry of cases.

``CASES`` holds every public loss called one way: the sampled-loss functions (with given
candidates, and with the default sampler and ``seed=``), the exact evaluation losses, the
contrastive losses, the three output-layer modules and the two sharded modules (in a gloo
process group of one process, built once for this file). Each property test is parametrized
over the cases it applies to: reductions, dtypes, half precision, gradcheck, and for the
modules ``state_dict``, ``.to()``, ``extra_repr``, the two modes and equality with their
functions.

Oracles: the definitions of the reductions, the float64 result (against float32) and the
float32 result on the same rounded values (against float16/bfloat16), finite differences
(gradcheck), and the functional layer (a module equals its function on its own parameters,
a sharded module of one rank equals its single-process module).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import torchnce
import torchnce.distributed as tnd

C, D, S, B = 7, 3, 3, 4
F32, F64 = torch.float32, torch.float64
REDUCTIONS = ("none", "sum", "mean")
Floats = dict[str, torch.Tensor]

LABELS = {
    1: torch.tensor([[4], [0], [6], [2]]),
    2: torch.tensor([[4, 1], [0, 3], [6, 6], [2, 5]]),  # row 2 repeats its label
}
# Shared candidates hit label 4 of row 0 (and with T = 2 also 1 of row 0 and 5 of row 3).
CANDIDATES = torch.tensor([1, 4, 5])
# Per-example candidates [B, S]: every row holds its first label among its own candidates.
PER_ROW = torch.tensor([[1, 4, 5], [0, 2, 3], [5, 6, 0], [2, 3, 4]])
KEY_IDS = torch.tensor([3, 8, 3, 5])  # rows 0 and 2 hold the same item: a false negative


def sampled_values(num_true: int, per_example: bool = False) -> tuple[torch.Tensor, ...]:
    """Fixed ``(candidates, true_expected_count, sampled_expected_count)`` in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(1)
    candidates = PER_ROW if per_example else CANDIDATES
    return (candidates, torch.rand(B, num_true, generator=g) + 0.5,
            torch.rand(candidates.shape, generator=g) + 0.5)


def randn(seed: int = 0, **shapes: tuple[int, ...]) -> Floats:
    """float64 standard normals of the given shapes, the same every run."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g, dtype=F64) for name, shape in shapes.items()}


def cast(floats: Floats, dtype: torch.dtype) -> Floats:
    return {name: t.to(dtype) for name, t in floats.items()}


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """The definition of the reductions over the batch."""
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def table_floats(num_shards: int, strategy: str, bias: bool) -> Floats:
    """Weights ``[C, D]`` (or ``num_shards`` shards ``weights.p`` laid out by ``strategy``),
    biases ``[C]`` (or shards ``biases.p``) and inputs ``[B, D]``."""
    sizes = [tnd.shard_ids(C, p, num_shards, strategy).numel() for p in range(num_shards)]
    names = ["weights"] if num_shards == 1 else [f"weights.{p}" for p in range(num_shards)]
    shapes = {name: (n, D) for name, n in zip(names, sizes, strict=True)}
    if bias:
        bnames = ["biases"] if num_shards == 1 else [f"biases.{p}" for p in range(num_shards)]
        shapes |= {name: (n,) for name, n in zip(bnames, sizes, strict=True)}
    return randn(**shapes, inputs=(B, D))


def tables(floats: Floats) -> tuple[Any, Any]:
    """``(weights, biases)`` as the functional layer takes them: a tensor or a list of shards."""

    def table(prefix: str) -> Any:
        if prefix in floats:
            return floats[prefix]
        shards = sorted(k for k in floats if k.startswith(f"{prefix}."))
        return [floats[k] for k in shards] or None

    return table("weights"), table("biases")


@dataclass(frozen=True, eq=False)
class SampledCall:
    """A call of ``nce_loss``, ``sampled_softmax_loss`` or ``negative_sampling_loss``."""

    function: Callable[..., torch.Tensor]
    num_true: int = 1
    bias: bool = True
    num_shards: int = 1
    strategy: str = "mod"
    hits: bool | None = None  # None: the function's default
    per_example: bool = False
    seed: int | None = None  # the default sampler's seed; None: given sampled_values

    def floats(self) -> Floats:
        return table_floats(self.num_shards, self.strategy, self.bias)

    def __call__(self, floats: Floats, values: Any = None) -> torch.Tensor:
        if values is None and self.seed is None:
            values = sampled_values(self.num_true, self.per_example)
        options: dict[str, Any] = {"partition_strategy": self.strategy}
        if self.hits is not None:
            options["remove_accidental_hits"] = self.hits
        if values is None:
            options |= {"seed": self.seed, "per_example_negatives": self.per_example}
        w, b = tables(floats)
        return self.function(w, b, LABELS[self.num_true], floats["inputs"], S, C,
                             self.num_true, sampled_values=values, **options)


@dataclass(frozen=True, eq=False)
class ModuleSpec:
    """An output-layer module, its constructor settings and the functions it delegates to."""

    cls: type[nn.Module]
    function: Callable[..., torch.Tensor]
    eval_function: Callable[..., torch.Tensor]
    settings: dict[str, Any] = field(default_factory=dict)
    single: type[nn.Module] | None = None  # the single-process module a sharded one equals

    def setting(self, name: str) -> Any:
        """The value of a constructor setting: given, or the constructor's default (where that
        is None, the default of the function the module computes, as TensorFlow's)."""
        if name in self.settings:
            return self.settings[name]
        default = inspect.signature(self.cls).parameters[name].default
        function = inspect.signature(self.function).parameters
        return function[name].default if default is None and name in function else default

    @property
    def num_true(self) -> int:
        return int(self.setting("num_true"))

    @property
    def per_example(self) -> bool:
        return bool(self.settings.get("per_example_negatives", False))

    def build(self, dtype: torch.dtype = F32, reduction: str = "none") -> nn.Module:
        settings = {k: copy.deepcopy(v) for k, v in self.settings.items()}  # a sampler each
        return self.cls(C, D, S, **settings, reduction=reduction, dtype=dtype)

    def values(self) -> tuple[torch.Tensor, ...]:
        return sampled_values(self.num_true, self.per_example)

    def floats(self) -> Floats:
        """Random parameters under the module's own names, and inputs."""
        shapes = {name: tuple(p.shape) for name, p in self.build(F64).named_parameters()}
        return randn(**shapes, inputs=(B, D))

    def loaded(self, floats: Floats, reduction: str = "none") -> nn.Module:
        """A module in the dtype of ``floats`` holding their parameters."""
        layer = self.build(floats["inputs"].dtype, reduction)
        with torch.no_grad():
            for name, p in layer.named_parameters():
                p.copy_(floats[name])
        return layer

    def functional(self, layer: nn.Module, x: torch.Tensor, values: Any) -> torch.Tensor:
        """The sampled function on the module's own parameters, ``[B]``."""
        w, b = module_tables(layer)
        return self.function(w, b, LABELS[self.num_true], x, S, C, self.num_true,
                             sampled_values=values,
                             remove_accidental_hits=self.setting("remove_accidental_hits"),
                             partition_strategy=self.setting("partition_strategy"))

    def full(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The exact evaluation function on the module's own parameters, ``[B]``."""
        w, b = module_tables(layer)
        return self.eval_function(w, b, LABELS[self.num_true], x, C, self.num_true,
                                  self.setting("partition_strategy"))


def module_tables(layer: nn.Module) -> tuple[Any, Any]:
    """A module's parameters as the functional layer takes them."""

    def table(p: Any) -> Any:
        return list(p) if isinstance(p, nn.ParameterList) else p

    return table(layer.weight), table(layer.bias)


@dataclass(frozen=True, eq=False)
class Case:
    """One public loss called one way, on differentiable float tensors."""

    name: str
    floats: Callable[[], Floats]  # float64 tensors, all differentiable
    loss: Callable[[Floats, str], torch.Tensor]  # their loss under a reduction
    reductions: bool = False  # takes reduction=; else always returns [B]
    half: bool = False  # promised finite in float16/bfloat16
    sampled: SampledCall | None = None
    module: ModuleSpec | None = None

    def __str__(self) -> str:
        return self.name


def sampled_case(name: str, call: SampledCall) -> Case:
    return Case(name, call.floats, lambda f, r: call(f), half=True, sampled=call)


def eval_case(name: str, function: Callable[..., torch.Tensor], *, num_true: int = 1,
              bias: bool = True, num_shards: int = 1, strategy: str = "mod",
              chunk_size: int | None = None) -> Case:
    def loss(f: Floats, reduction: str) -> torch.Tensor:
        w, b = tables(f)
        return function(w, b, LABELS[num_true], f["inputs"], C, num_true, strategy,
                        chunk_size=chunk_size)

    return Case(name, lambda: table_floats(num_shards, strategy, bias), loss, half=True)


def contrastive_case(name: str, function: Callable[..., torch.Tensor],
                     floats: Callable[[], Floats], **options: Any) -> Case:
    def loss(f: Floats, reduction: str) -> torch.Tensor:
        tensors, settings = dict(f), dict(options)
        if "temperature" in tensors:
            settings["temperature"] = tensors.pop("temperature")
        keys = [tensors.pop(k) for k in ("query", "positive_key")]
        return function(*keys, *tensors.values(), reduction=reduction, **settings)

    return Case(name, floats, loss, reductions=True)


def module_case(name: str, spec: ModuleSpec) -> Case:
    def loss(f: Floats, reduction: str) -> torch.Tensor:
        layer = spec.build(f["inputs"].dtype, reduction)
        params = {k: v for k, v in f.items() if k != "inputs"}
        return torch.func.functional_call(layer, params, (f["inputs"], LABELS[spec.num_true]),
                                          {"sampled_values": spec.values()})

    return Case(name, spec.floats, loss, reductions=True, half=True, module=spec)


def log_probs(*probs: float) -> torch.Tensor:
    return torch.tensor(probs).log()


CASES = [
    sampled_case("nce_loss", SampledCall(torchnce.nce_loss)),
    sampled_case("nce_loss[T=2,hits,nobias]",
                 SampledCall(torchnce.nce_loss, num_true=2, hits=True, bias=False)),
    sampled_case("nce_loss[seed]", SampledCall(torchnce.nce_loss, seed=3)),
    sampled_case("sampled_softmax_loss", SampledCall(torchnce.sampled_softmax_loss)),
    sampled_case("sampled_softmax_loss[T=2,shards=2,div]",
                 SampledCall(torchnce.sampled_softmax_loss, num_true=2, num_shards=2,
                             strategy="div")),
    sampled_case("sampled_softmax_loss[per_example,nohits]",
                 SampledCall(torchnce.sampled_softmax_loss, per_example=True, hits=False)),
    sampled_case("sampled_softmax_loss[seed,T=2]",
                 SampledCall(torchnce.sampled_softmax_loss, num_true=2, seed=5)),
    sampled_case("negative_sampling_loss", SampledCall(torchnce.negative_sampling_loss)),
    sampled_case("negative_sampling_loss[T=2,hits,shards=3,mod]",
                 SampledCall(torchnce.negative_sampling_loss, num_true=2, hits=True,
                             num_shards=3)),
    sampled_case("negative_sampling_loss[seed]",
                 SampledCall(torchnce.negative_sampling_loss, seed=0)),
    sampled_case("negative_sampling_loss[seed,per_example,nobias]",
                 SampledCall(torchnce.negative_sampling_loss, seed=2, per_example=True,
                             bias=False)),
    eval_case("nce_eval_loss", torchnce.nce_eval_loss),
    eval_case("nce_eval_loss[T=2,shards=2,mod,chunk=2]", torchnce.nce_eval_loss, num_true=2,
              num_shards=2, chunk_size=2),
    eval_case("sampled_softmax_eval_loss", torchnce.sampled_softmax_eval_loss),
    eval_case("sampled_softmax_eval_loss[T=2,nobias,shards=3,div,chunk=3]",
              torchnce.sampled_softmax_eval_loss, num_true=2, bias=False, num_shards=3,
              strategy="div", chunk_size=3),
    contrastive_case("info_nce_loss[in-batch]", torchnce.info_nce_loss,
                     lambda: randn(query=(B, D), positive_key=(B, D)), temperature=0.5,
                     key_ids=KEY_IDS, log_q=log_probs(0.5, 0.25, 0.5, 0.125)),
    contrastive_case("info_nce_loss[symmetric,query_ids,tensor-temperature]",
                     torchnce.info_nce_loss,
                     lambda: randn(query=(B, D), positive_key=(B, D))
                     | {"temperature": torch.tensor(0.7, dtype=F64)},
                     symmetric=True, query_ids=torch.tensor([0, 1, 1, 2])),
    contrastive_case("info_nce_loss[unpaired,dot]", torchnce.info_nce_loss,
                     lambda: randn(query=(B, D), positive_key=(B, D), negative_keys=(S, D)),
                     temperature=2.0, normalize=False, key_ids=KEY_IDS,
                     negative_ids=torch.tensor([8, 1, 5]),
                     log_q=log_probs(0.5, 0.25, 0.5, 0.125),
                     negative_log_q=log_probs(0.1, 0.2, 0.3)),
    contrastive_case("info_nce_loss[paired]", torchnce.info_nce_loss,
                     lambda: randn(query=(B, D), positive_key=(B, D), negative_keys=(B, S, D)),
                     negative_mode="paired", key_ids=KEY_IDS, negative_ids=PER_ROW),
    contrastive_case("mixed_negatives_loss", torchnce.mixed_negatives_loss,
                     lambda: randn(query=(B, D), positive_key=(B, D), sampled_keys=(S, D)),
                     batch_log_q=log_probs(0.5, 0.25, 0.5, 0.125),
                     sampled_log_q=log_probs(0.1, 0.2, 0.3), temperature=0.5,
                     query_ids=torch.tensor([0, 1, 1, 2]), key_ids=KEY_IDS,
                     sampled_ids=torch.tensor([8, 1, 5])),
    module_case("NCELoss", ModuleSpec(torchnce.NCELoss, torchnce.nce_loss,
                                      torchnce.nce_eval_loss)),
    module_case("NCELoss[T=2,shards=3,div,nobias,hits,learned]",
                ModuleSpec(torchnce.NCELoss, torchnce.nce_loss, torchnce.nce_eval_loss,
                           {"num_true": 2, "num_shards": 3, "partition_strategy": "div",
                            "bias": False, "remove_accidental_hits": True,
                            "sampler": torchnce.LearnedUnigramSampler(C)})),
    module_case("SampledSoftmaxLoss",
                ModuleSpec(torchnce.SampledSoftmaxLoss, torchnce.sampled_softmax_loss,
                           torchnce.sampled_softmax_eval_loss)),
    module_case("SampledSoftmaxLoss[T=2,shards=2,mod,per_example]",
                ModuleSpec(torchnce.SampledSoftmaxLoss, torchnce.sampled_softmax_loss,
                           torchnce.sampled_softmax_eval_loss,
                           {"num_true": 2, "num_shards": 2, "per_example_negatives": True})),
    module_case("NegativeSamplingLoss",
                ModuleSpec(torchnce.NegativeSamplingLoss, torchnce.negative_sampling_loss,
                           torchnce.nce_eval_loss)),
    module_case("NegativeSamplingLoss[T=2,shards=2,div,hits,nobias,per_example,uniform]",
                ModuleSpec(torchnce.NegativeSamplingLoss, torchnce.negative_sampling_loss,
                           torchnce.nce_eval_loss,
                           {"num_true": 2, "num_shards": 2, "partition_strategy": "div",
                            "remove_accidental_hits": True, "bias": False,
                            "per_example_negatives": True,
                            "sampler": torchnce.UniformSampler(C)})),
    module_case("NegativeSamplingLoss[sparse_grad,shards=3,mod]",
                ModuleSpec(torchnce.NegativeSamplingLoss, torchnce.negative_sampling_loss,
                           torchnce.nce_eval_loss, {"sparse_grad": True, "num_shards": 3})),
    module_case("ShardedNCELoss",
                ModuleSpec(tnd.ShardedNCELoss, torchnce.nce_loss, torchnce.nce_eval_loss,
                           single=torchnce.NCELoss)),
    module_case("ShardedNCELoss[T=2,div,hits,nobias]",
                ModuleSpec(tnd.ShardedNCELoss, torchnce.nce_loss, torchnce.nce_eval_loss,
                           {"num_true": 2, "partition_strategy": "div",
                            "remove_accidental_hits": True, "bias": False},
                           single=torchnce.NCELoss)),
    module_case("ShardedSampledSoftmaxLoss",
                ModuleSpec(tnd.ShardedSampledSoftmaxLoss, torchnce.sampled_softmax_loss,
                           torchnce.sampled_softmax_eval_loss, single=torchnce.SampledSoftmaxLoss)),
    module_case("ShardedSampledSoftmaxLoss[T=2,div,seed=4,uniform]",
                ModuleSpec(tnd.ShardedSampledSoftmaxLoss, torchnce.sampled_softmax_loss,
                           torchnce.sampled_softmax_eval_loss,
                           {"num_true": 2, "partition_strategy": "div", "seed": 4,
                            "sampler": torchnce.UniformSampler(C)},
                           single=torchnce.SampledSoftmaxLoss)),
]

REDUCING = [c for c in CASES if c.reductions]
HALF = [c for c in CASES if c.half]
SEEDED = [c for c in CASES  # shared candidates: the per-example draw has no such oracle
          if c.sampled is not None and c.sampled.seed is not None and not c.sampled.per_example]
MODULES = [c for c in CASES if c.module is not None]
SHARDED = [c for c in MODULES if c.module is not None and c.module.single is not None]
SPARSE = [c for c in MODULES if c.module is not None and c.module.settings.get("sparse_grad")]
DENSE = [c for c in CASES if c not in SPARSE]  # gradcheck wants gradients of the inputs' layout


def spec_of(case: Case) -> ModuleSpec:
    assert case.module is not None
    return case.module


def cases(selection: list[Case]) -> Any:
    return pytest.mark.parametrize("case", selection, ids=str)


# --- the process group of the sharded cases ------------------------------------------------


@pytest.fixture(scope="module")
def gloo_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A default gloo group of one process for this file's sharded cases; an existing group
    of world size 1 is used as it is and left in place."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            pytest.skip("a process group of world size > 1 already exists")
        yield
        return
    store = tmp_path_factory.mktemp("gloo") / "store"  # a file store: no port to race for
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture(autouse=True)
def _group_for_sharded_cases(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    case = None if callspec is None else callspec.params.get("case")
    if isinstance(case, Case) and case in SHARDED:
        request.getfixturevalue("gloo_group")


# --- every loss ----------------------------------------------------------------------------


@cases(CASES)
def test_unreduced_loss_is_per_example(case):
    assert case.loss(cast(case.floats(), F32), "none").shape == (B,)


@cases(REDUCING)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reduction(case, reduction):
    f = cast(case.floats(), F32)
    loss = case.loss(f, reduction)
    assert loss.shape == ()
    torch.testing.assert_close(loss, reduce(case.loss(f, "none"), reduction))


@cases(CASES)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_output_keeps_the_input_dtype(case, dtype):
    assert case.loss(cast(case.floats(), dtype), "none").dtype == dtype


@cases(CASES)
def test_float64_agrees_with_float32(case):
    f = case.floats()
    single = case.loss(cast(f, F32), "none")
    torch.testing.assert_close(single, case.loss(f, "none").to(F32))


@cases(HALF)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_rounds_the_float32_loss(case, dtype):
    f = {k: t.detach().requires_grad_() for k, t in cast(case.floats(), dtype).items()}
    loss = case.loss(f, "none")
    assert loss.dtype == dtype
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert all(torch.isfinite(t.grad.to_dense()).all() for t in f.values())
    # Oracle: the float32 loss of the same rounded values, cast to the dtype (its tolerance).
    expected = case.loss(cast(f, F32), "none").to(dtype)
    torch.testing.assert_close(loss.detach(), expected)


@cases(DENSE)
def test_gradcheck(case):
    f = {k: t.requires_grad_() for k, t in case.floats().items()}

    def loss(*tensors: torch.Tensor) -> torch.Tensor:
        return case.loss(dict(zip(f, tensors, strict=True)), "none")

    assert torch.autograd.gradcheck(loss, tuple(f.values()))


# --- the default sampler of the functions --------------------------------------------------


@cases(SEEDED)
def test_seeded_default_sampler_is_the_unique_log_uniform_sampler(case):
    call = case.sampled
    f = cast(case.floats(), F32)
    values = torchnce.log_uniform_candidate_sampler(LABELS[call.num_true], call.num_true, S,
                                                    True, C, seed=call.seed)
    torch.testing.assert_close(case.loss(f, "none"), call(f, values))


# --- the modules ---------------------------------------------------------------------------


@cases(MODULES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_equals_its_function(case, reduction):
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    layer = spec.loaded(f, reduction)
    values = spec.values()
    expected = reduce(spec.functional(layer, f["inputs"], values), reduction)
    torch.testing.assert_close(layer(f["inputs"], LABELS[spec.num_true], sampled_values=values),
                               expected)


@cases(MODULES)
def test_full_mode_and_training_mode(case):
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    layer, x, y, values = spec.loaded(f), f["inputs"], LABELS[spec.num_true], spec.values()
    full, sampled = spec.full(layer, x), spec.functional(layer, x, values)
    assert layer.training
    torch.testing.assert_close(layer(x, y, sampled_values=values), sampled)
    torch.testing.assert_close(layer(x, y, mode="full"), full)
    layer.eval()
    torch.testing.assert_close(layer(x, y), full)
    torch.testing.assert_close(layer(x, y, mode="sampled", sampled_values=values), sampled)


@cases(MODULES)
def test_full_mode_gradcheck(case):
    spec = spec_of(case)
    f = {k: t.requires_grad_() for k, t in case.floats().items()}
    layer = spec.build(F64)

    def loss(*tensors: torch.Tensor) -> torch.Tensor:
        params = dict(zip(f, tensors, strict=True))
        x = params.pop("inputs")
        return torch.func.functional_call(layer, params, (x, LABELS[spec.num_true]),
                                          {"mode": "full"})

    assert torch.autograd.gradcheck(loss, tuple(f.values()))


@cases(SPARSE)
def test_sparse_grad_equals_the_dense_gradient(case):
    spec = spec_of(case)
    f = cast(case.floats(), F64)
    dense = ModuleSpec(spec.cls, spec.function, spec.eval_function,
                       {**spec.settings, "sparse_grad": False}, spec.single)
    grads = []
    for layer in (spec.loaded(f, "sum"), dense.loaded(f, "sum")):
        layer(f["inputs"], LABELS[spec.num_true], sampled_values=spec.values()).backward()
        grads.append([p.grad for p in layer.parameters()])
    assert all(g.layout == torch.sparse_coo for g in grads[0])
    for sparse, expected in zip(*grads, strict=True):
        torch.testing.assert_close(sparse.to_dense(), expected)


@cases(MODULES)
def test_state_dict_round_trip(case):
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    x, y, values = f["inputs"], LABELS[spec.num_true], spec.values()
    trained, fresh = spec.loaded(f), spec.build()
    trained(x, y)  # a step with its own draw: a learned sampler counts the labels
    assert not torch.equal(fresh(x, y, sampled_values=values), trained(x, y, sampled_values=values))
    state = trained.state_dict()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.state_dict(), state)  # the sampler's state included
    for mode in ("sampled", "full"):
        torch.testing.assert_close(fresh(x, y, sampled_values=values, mode=mode),
                                   trained(x, y, sampled_values=values, mode=mode))
    draws = [layer.sampler.sample(y, S, generator=torch.Generator().manual_seed(0))
             for layer in (fresh, trained)]
    for fresh_part, trained_part in zip(*draws, strict=True):
        torch.testing.assert_close(fresh_part, trained_part)


@cases(MODULES)
def test_to_float64_moves_the_parameters_and_the_output_follows(case):
    spec = spec_of(case)
    f = case.floats()
    x, y, values = f["inputs"], LABELS[spec.num_true], spec.values()
    layer = spec.loaded(cast(f, F32))
    single = layer(x.to(F32), y, sampled_values=values)
    assert layer.to(F64) is layer
    assert all(p.dtype == F64 for p in layer.parameters())
    double = layer(x, y, sampled_values=values)
    assert double.dtype == F64
    torch.testing.assert_close(double, spec.functional(layer, x, values))
    torch.testing.assert_close(single, double.to(F32))


@cases(MODULES)
def test_extra_repr_shows_every_constructor_setting(case):
    spec = spec_of(case)
    layer = spec.build(reduction="sum")
    given = {"num_classes": C, "embedding_dim": D, "num_sampled": S, "reduction": "sum"}
    not_settings = ("sampler", "update", "group", "timeout", "device", "dtype")  # objects
    for name in inspect.signature(spec.cls).parameters:
        if name not in not_settings:
            value = given[name] if name in given else spec.setting(name)
            assert f"{name}={value!r}" in layer.extra_repr(), name
    assert repr(layer.sampler) in repr(layer)
    if "sampler" in spec.settings:
        assert repr(layer.sampler) == repr(spec.settings["sampler"])


# --- NegativeSamplingLoss ------------------------------------------------------------------

NEG = [c for c in MODULES if spec_of(c).cls is torchnce.NegativeSamplingLoss]


@cases(NEG)
def test_negative_sampling_ignores_the_expected_counts(case):
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    layer, x, y = spec.loaded(f), f["inputs"], LABELS[spec.num_true]
    candidates, true_count, sampled_count = spec.values()
    torch.testing.assert_close(
        layer(x, y, sampled_values=(candidates, true_count, sampled_count)),
        layer(x, y, sampled_values=(candidates, 2 * true_count, sampled_count / 3)))


@cases(NEG)
def test_negative_sampling_is_nce_with_expected_counts_of_one(case):
    # log Q = log 1 = 0: NCE's logits are NEG's (the docstring of negative_sampling_loss).
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    layer, x, y = spec.loaded(f), f["inputs"], LABELS[spec.num_true]
    candidates = spec.values()[0]
    ones = (candidates, torch.ones(B, spec.num_true), torch.ones(candidates.shape))
    nce = ModuleSpec(torchnce.NCELoss, torchnce.nce_loss, torchnce.nce_eval_loss,
                     {k: v for k, v in spec.settings.items() if k != "sampler"})
    torch.testing.assert_close(layer(x, y, sampled_values=ones),
                               nce.loaded(f)(x, y, sampled_values=ones))


# --- the sharded modules in a group of one rank ----------------------------------------------


@cases(SHARDED)
def test_shard_of_one_rank_is_the_whole_table(case):
    spec = spec_of(case)
    layer = spec.build()
    expected = torch.arange(C)
    assert torch.equal(layer.shard_ids(), expected)
    assert torch.equal(tnd.shard_ids(C, 0, 1, spec.setting("partition_strategy")), expected)
    assert (layer.rank, layer.world_size) == (0, 1)
    assert layer.weight.shape == (C, D)


@cases(SHARDED)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sharded_module_equals_the_single_process_module(case, reduction):
    spec = spec_of(case)
    assert torch.equal(spec.build().shard_ids(), torch.arange(C))  # so the shard is the table
    f = cast(case.floats(), F64)
    settings = {k: v for k, v in spec.settings.items() if k != "seed"}
    single = ModuleSpec(spec.single, spec.function, spec.eval_function, settings)
    y, values = LABELS[spec.num_true], spec.values()
    for mode in ("sampled", "full"):
        losses, grads = [], []
        for layer in (spec.loaded(f, reduction), single.loaded(f, reduction)):
            x = f["inputs"].clone().requires_grad_()
            loss = layer(x, y, sampled_values=values, mode=mode)
            loss.sum().backward()
            losses.append(loss)
            grads.append([x.grad, *(p.grad for p in layer.parameters())])
        torch.testing.assert_close(*losses)
        for sharded, expected in zip(*grads, strict=True):
            torch.testing.assert_close(sharded, expected)


@cases(SHARDED)
def test_sharded_default_draw_is_the_samplers_seeded_stream(case):
    spec = spec_of(case)
    f = cast(case.floats(), F32)
    layer, x, y = spec.loaded(f), f["inputs"], LABELS[spec.num_true]
    stream = torch.Generator().manual_seed(spec.setting("seed"))
    for _ in range(2):  # the generator is shared across steps: the second draw is the next one
        values = layer.sampler.sample(y, S, generator=stream)
        torch.testing.assert_close(layer(x, y), spec.functional(layer, x, values))
