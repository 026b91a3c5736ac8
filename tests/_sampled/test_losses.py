"""nce_loss and sampled_softmax_loss (docs/tf-semantics.md §3, §8.1), against the float64 oracles.

TF compares with hand-written numpy at rtol 1e-4; ours are the exact formulas of §3.1 and §3.3
in ``reference.sampled``, compared at torch's per-dtype default tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import torchnce
from reference import sampled as ref

LOSSES = {"nce": torchnce.nce_loss, "softmax": torchnce.sampled_softmax_loss}
ORACLES = {"nce": ref.nce_loss, "softmax": ref.sampled_softmax_loss}
C, B = ref.TF_NUM_CLASSES, ref.TF_BATCH
S = len(ref.TF_SAMPLED)


def oracle(loss, *args, **kwargs):
    """The oracle for ``loss``; hit removal defaults as in TF (NCE off, softmax on)."""
    kwargs.setdefault("remove_accidental_hits", loss == "softmax")
    return ORACLES[loss](*args, **kwargs)


def shards(table: np.ndarray, num_shards: int, strategy: str) -> list[torch.Tensor]:
    split = ref.split_mod if strategy == "mod" else ref.split_div
    return [torch.from_numpy(s.copy()) for s in split(table, num_shards)]


# --- Ports of TF's testNCELoss / testSampledSoftmaxLoss ---------------------------------------


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("sharded", [False, True])
def test_tf2_loss(loss, sharded):
    # nce_loss_v2 / sampled_softmax_loss_v2: "div", int32 labels of shape (3, 1), num_sampled 4,
    # unsharded and with weights and biases in 3 contiguous shards; no hit removal.
    weights, biases, labels, hidden, sv = ref.tf_loss_case()
    w = shards(weights, 3, "div") if sharded else torch.from_numpy(weights)
    b = shards(biases, 3, "div") if sharded else torch.from_numpy(biases)
    got = LOSSES[loss](
        w,
        b,
        torch.from_numpy(labels).int(),
        torch.from_numpy(hidden),
        S,
        C,
        1,
        sv,
        remove_accidental_hits=False,
        partition_strategy="div",
    )
    assert got.shape == (B,)
    expected = oracle(
        loss,
        weights,
        biases,
        labels,
        hidden,
        sv,
        S,
        remove_accidental_hits=False,
        partition_strategy="div",
    )
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("sharded", [False, True])
def test_tf1_loss_default_mod_and_num_sampled_1(loss, sharded):
    # The TF1 variant: default partition_strategy ("mod"), weights mod-sharded, biases not, and
    # num_sampled=1 while 4 sampled ids are supplied (num_sampled is unused without hit removal).
    weights, biases, labels, hidden, sv = ref.tf_loss_case()
    w = shards(weights, 3, "mod") if sharded else torch.from_numpy(weights)
    got = LOSSES[loss](
        w,
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(hidden),
        num_sampled=1,
        num_classes=C,
        num_true=1,
        sampled_values=sv,
        remove_accidental_hits=False,
    )
    expected = oracle(loss, weights, biases, labels, hidden, sv, 1, remove_accidental_hits=False)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("sharded", [False, True])
def test_sampled_softmax_loss_bf16(sharded):
    # testSampledSoftmaxLossBf16: weights, biases, inputs and expected counts (0.5) in bfloat16.
    # TF also passes bfloat16 labels; float labels are a TypeError here, so they stay integers.
    weights, biases, labels, hidden, (sampled, _, _) = ref.tf_loss_case()
    bf16 = torch.bfloat16
    w = [s.to(bf16) for s in shards(weights, 3, "div")] if sharded else torch.from_numpy(weights)
    b = [s.to(bf16) for s in shards(biases, 3, "div")] if sharded else torch.from_numpy(biases)
    if not sharded:
        w, b = w.to(bf16), b.to(bf16)
    sv = (sampled, torch.full((B, 1), 0.5, dtype=bf16), torch.full((S,), 0.5, dtype=bf16))
    got = torchnce.sampled_softmax_loss(
        w,
        b,
        torch.from_numpy(labels),
        torch.from_numpy(hidden).to(bf16),
        S,
        C,
        1,
        sv,
        remove_accidental_hits=False,
        partition_strategy="div",
    )
    assert got.dtype == bf16
    # The oracle sees the bf16-rounded values; the loss itself is accumulated in bf16 (8-bit
    # mantissa), hence TF's own bf16 tolerance, rtol 1e-1 (atol: TF's default 1e-6).
    expected = ref.sampled_softmax_loss(
        w,
        b,
        labels,
        torch.from_numpy(hidden).to(bf16),
        sv,
        S,
        remove_accidental_hits=False,
        partition_strategy="div",
    )
    torch.testing.assert_close(
        got.float(), torch.from_numpy(expected).float(), rtol=1e-1, atol=1e-6
    )


# --- Random cases against the oracle ---------------------------------------------------------


def random_case(num_true, num_classes=11, batch=3, dim=4, num_sampled=5, seed=0, scale=1.0):
    """Random float64 data whose first sampled id is a label of row 0 (so hits occur)."""
    rng = np.random.RandomState(seed)
    weights = rng.randn(num_classes, dim) * scale
    biases = rng.randn(num_classes) * scale
    labels = rng.randint(0, num_classes, size=(batch, num_true))
    inputs = rng.randn(batch, dim) * scale
    sampled = np.concatenate([labels[0, :1], rng.randint(0, num_classes, size=num_sampled - 1)])
    counts = (sampled, rng.uniform(0.1, 1.0, (batch, num_true)), rng.uniform(0.1, 1.0, num_sampled))
    return weights, biases, labels, inputs, counts


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 4])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_random_float64(loss, num_true, strategy, num_shards, remove_accidental_hits):
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(num_true)
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    got = LOSSES[loss](
        shards(weights, num_shards, strategy),
        shards(biases, num_shards, strategy),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        len(sampled),
        11,
        num_true,
        sv,
        remove_accidental_hits=remove_accidental_hits,
        partition_strategy=strategy,
    )
    assert got.shape == (3,)
    assert got.dtype == torch.float64
    expected = oracle(
        loss,
        weights,
        biases,
        labels,
        inputs,
        sv,
        len(sampled),
        remove_accidental_hits=remove_accidental_hits,
        partition_strategy=strategy,
    )
    torch.testing.assert_close(got, torch.from_numpy(expected))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_random_float32(loss, remove_accidental_hits):
    weights, biases, labels, inputs, sv = random_case(2, seed=1)
    f32 = [torch.from_numpy(a).float() for a in (weights, biases, inputs)]
    got = LOSSES[loss](
        f32[0],
        f32[1],
        torch.from_numpy(labels),
        f32[2],
        5,
        11,
        2,
        sv,
        remove_accidental_hits=remove_accidental_hits,
    )
    assert got.dtype == torch.float32
    expected = oracle(
        loss, *f32[:2], labels, f32[2], sv, 5, remove_accidental_hits=remove_accidental_hits
    )
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_default_hit_removal(loss):
    # TF's defaults: nce_loss keeps hits (False), sampled_softmax_loss removes them (True).
    weights, biases, labels, inputs, sv = random_case(2)
    args = (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        5,
        11,
        2,
        sv,
    )
    explicit = LOSSES[loss](*args, remove_accidental_hits=(loss == "softmax"))
    other = LOSSES[loss](*args, remove_accidental_hits=(loss != "softmax"))
    assert torch.equal(LOSSES[loss](*args), explicit)
    assert not torch.equal(explicit, other)  # row 0 has a hit, so the flag matters


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_default_partition_strategy_is_mod(loss):
    weights, biases, labels, inputs, sv = random_case(1)
    w, b = shards(weights, 3, "mod"), shards(biases, 3, "mod")
    args = (torch.from_numpy(labels), torch.from_numpy(inputs), 5, 11, 1, sv)
    assert torch.equal(
        LOSSES[loss](w, b, *args), LOSSES[loss](w, b, *args, partition_strategy="mod")
    )
    expected = oracle(loss, weights, biases, labels, inputs, sv, 5)
    torch.testing.assert_close(LOSSES[loss](w, b, *args), torch.from_numpy(expected))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_rank_1_labels_int32_labels_and_name(loss):
    weights, biases, labels, inputs, sv = random_case(1)
    w, b, x = torch.from_numpy(weights), torch.from_numpy(biases), torch.from_numpy(inputs)
    expected = LOSSES[loss](w, b, torch.from_numpy(labels), x, 5, 11, 1, sv)
    for lab in [torch.from_numpy(labels).reshape(-1), torch.from_numpy(labels).int()]:
        torch.testing.assert_close(LOSSES[loss](w, b, lab, x, 5, 11, 1, sv, name="loss"), expected)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_sampled_values_as_lists_and_arrays(loss):
    # Multiples of 1/8 are exact in float32, so Python float lists give identical counts.
    weights, biases, labels, inputs, (sampled, _, _) = random_case(2)
    tc, sc = np.full((3, 2), 0.5), np.array([0.25, 0.5, 0.75, 1.0, 0.125])
    args = (
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        5,
        11,
        2,
    )
    expected = LOSSES[loss](
        *args, (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    )
    for sv in [(sampled.tolist(), tc.tolist(), sc.tolist()), (sampled, tc, sc)]:
        torch.testing.assert_close(LOSSES[loss](*args, sv), expected)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_expected_counts_cast_to_inputs_dtype(loss, dtype):
    # float32 counts (what the sampler returns) with other input dtypes: TF raises, we cast.
    weights, biases, labels, inputs, (sampled, _, _) = random_case(1, scale=0.5)
    sv = (sampled, torch.full((3, 1), 0.5), torch.full((5,), 0.25))
    params = [torch.from_numpy(a).to(dtype) for a in (weights, biases, inputs)]
    got = LOSSES[loss](params[0], params[1], torch.from_numpy(labels), params[2], 5, 11, 1, sv)
    assert got.dtype == dtype
    expected = oracle(loss, params[0], params[1], labels, params[2], sv, 5)
    torch.testing.assert_close(got, ref.expected_like(expected, got), **half_tolerance(dtype))


def half_tolerance(dtype):
    """f16/bf16 accumulate D products and T+S loss terms in 11/8-bit mantissas: TF's 1e-1 for
    bfloat16 (its bf16 test), 1e-2 for float16; other dtypes keep torch's defaults."""
    return {
        torch.float16: {"rtol": 1e-2, "atol": 1e-3},
        torch.bfloat16: {"rtol": 1e-1, "atol": 1e-2},
    }.get(dtype, {})


# --- Half precision with hit removal (TF gives NaN; we must not) -----------------------------


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("num_shards", [1, 2])
def test_half_precision_hit_removal_is_finite(loss, dtype, num_shards):
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(2, scale=0.5)
    w = [s.to(dtype).requires_grad_() for s in shards(weights, num_shards, "div")]
    b = [s.to(dtype).requires_grad_() for s in shards(biases, num_shards, "div")]
    x = torch.from_numpy(inputs).to(dtype).requires_grad_()
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc).to(dtype), torch.from_numpy(sc).to(dtype))
    got = LOSSES[loss](
        w,
        b,
        torch.from_numpy(labels),
        x,
        5,
        11,
        2,
        sv,
        remove_accidental_hits=True,
        partition_strategy="div",
    )
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    got.sum().backward()
    for p in [x, *w, *b]:
        assert torch.isfinite(p.grad.to_dense()).all()
    # Masked logits contribute exactly 0, so the values are the oracle's (computed on the same
    # rounded inputs and counts, where masking is -FLT_MAX in float64).
    expected = ORACLES[loss](
        w, b, labels, x, sv, 5, remove_accidental_hits=True, partition_strategy="div"
    )
    torch.testing.assert_close(got, ref.expected_like(expected, got), **half_tolerance(dtype))


# --- Gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_gradcheck(loss, num_shards, strategy, remove_accidental_hits):
    # Gradients for inputs, every weight shard and every bias shard (7 rows: uneven shards).
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(2, num_classes=7, dim=3)
    w = [s.requires_grad_() for s in shards(weights, num_shards, strategy)]
    b = [s.requires_grad_() for s in shards(biases, num_shards, strategy)]
    x = torch.from_numpy(inputs).requires_grad_()
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))

    def fn(x, *params):
        return LOSSES[loss](
            list(params[:num_shards]),
            list(params[num_shards:]),
            torch.from_numpy(labels),
            x,
            5,
            7,
            2,
            sv,
            remove_accidental_hits=remove_accidental_hits,
            partition_strategy=strategy,
        )

    assert torch.autograd.gradcheck(fn, (x, *w, *b))


def looked_up_rows(ids, num_rows, num_shards, strategy):
    """Per shard, the set of local rows that the global ``ids`` address (§5)."""
    rows = [set() for _ in range(num_shards)]
    for i in ids:
        if num_shards == 1:
            p, r = 0, i
        elif strategy == "mod":
            p, r = ref.mod_shard_and_row(i, num_shards)
        else:
            p, r = ref.div_shard_and_row(i, num_rows, num_shards)
        rows[p].add(r)
    return rows


def sparse_and_dense_run(loss, num_shards, strategy, num_classes=40):
    """One backward with sparse_grad=True and one with dense grads, on fresh copies."""
    weights, biases, labels, inputs, sv = random_case(2, num_classes=num_classes)
    runs = {}
    for sparse in (True, False):
        w = [s.requires_grad_() for s in shards(weights, num_shards, strategy)]
        b = [s.requires_grad_() for s in shards(biases, num_shards, strategy)]
        x = torch.from_numpy(inputs).requires_grad_()
        LOSSES[loss](
            w,
            b,
            torch.from_numpy(labels),
            x,
            5,
            num_classes,
            2,
            sv,
            partition_strategy=strategy,
            sparse_grad=sparse,
        ).sum().backward()
        runs[sparse] = (w, b, x)
    ids = [*labels.reshape(-1).tolist(), *sv[0].tolist()]
    return runs, looked_up_rows(ids, num_classes, num_shards, strategy)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_sparse_grad(loss, num_shards, strategy):
    # sparse_grad=True: COO gradients for every weight and bias shard, touching only rows that
    # were looked up (40 classes, at most 11 distinct ids), whose dense form is the dense grad.
    runs, rows = sparse_and_dense_run(loss, num_shards, strategy)
    (ws, bs, xs), (wd, bd, xd) = runs[True], runs[False]
    torch.testing.assert_close(xs.grad, xd.grad)
    assert xs.grad.layout == torch.strided
    for sparse_p, dense_p, touched in zip([*ws, *bs], [*wd, *bd], rows + rows, strict=True):
        grad = sparse_p.grad
        assert grad.layout == torch.sparse_coo
        assert grad.shape == sparse_p.shape
        assert set(grad.coalesce().indices()[0].tolist()) <= touched
        torch.testing.assert_close(grad.to_dense(), dense_p.grad)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
def test_sparse_grad_sgd_step(loss, num_shards):
    # SGD on sparse grads: p ← p − lr·g, the same as on the dense grads; untouched rows unchanged.
    runs, _ = sparse_and_dense_run(loss, num_shards, "div")
    sparse_params = [*runs[True][0], *runs[True][1]]
    dense_params = [*runs[False][0], *runs[False][1]]
    before = [p.detach().clone() for p in sparse_params]
    torch.optim.SGD(sparse_params, lr=0.1).step()
    torch.optim.SGD(dense_params, lr=0.1).step()
    for s, d, old in zip(sparse_params, dense_params, before, strict=True):
        torch.testing.assert_close(s, d)
        torch.testing.assert_close(s.detach(), old - 0.1 * d.grad)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 3])
def test_sparse_grad_sparse_adam_step(loss, num_shards):
    # Oracle: the same SparseAdam step driven by the dense gradient turned into row-sparse COO
    # (``to_sparse(sparse_dim=1)``); rows that were never looked up stay bit for bit unchanged.
    runs, rows = sparse_and_dense_run(loss, num_shards, "mod")
    sparse_params = [*runs[True][0], *runs[True][1]]
    oracle_params = [*runs[False][0], *runs[False][1]]
    for p in oracle_params:
        p.grad = p.grad.to_sparse(sparse_dim=1)
    before = [p.detach().clone() for p in sparse_params]
    torch.optim.SparseAdam(sparse_params, lr=0.01).step()
    torch.optim.SparseAdam(oracle_params, lr=0.01).step()
    for s, o, old, touched in zip(sparse_params, oracle_params, before, rows + rows, strict=True):
        torch.testing.assert_close(s, o)
        assert not torch.equal(s.detach(), old)
        untouched = [r for r in range(len(old)) if r not in touched]
        assert torch.equal(s.detach()[untouched], old[untouched])


# --- The default sampler --------------------------------------------------------------------


def default_sampler_args(dtype=torch.float32, num_classes=50):
    weights, biases, labels, inputs, _ = random_case(2, num_classes=num_classes)
    return (
        torch.from_numpy(weights).to(dtype),
        torch.from_numpy(biases).to(dtype),
        torch.from_numpy(labels),
        torch.from_numpy(inputs).to(dtype),
        8,
        num_classes,
        2,
    )


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_default_sampler_same_seed_same_loss(loss):
    args = default_sampler_args()
    first = LOSSES[loss](*args, seed=7)
    assert torch.equal(LOSSES[loss](*args, seed=7), first)
    # 8 unique candidates out of 50: another seed drawing the identical sample is improbable,
    # and with fixed seeds the outcome is deterministic.
    assert not torch.equal(LOSSES[loss](*args, seed=8), first)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_default_sampler_generator_reproducible(loss):
    args = default_sampler_args()
    first = LOSSES[loss](*args, generator=torch.Generator().manual_seed(3))
    again = LOSSES[loss](*args, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    gen = torch.Generator().manual_seed(3)
    LOSSES[loss](*args, generator=gen)
    assert not torch.equal(LOSSES[loss](*args, generator=gen), first)  # the generator advanced


def test_default_sampler_is_log_uniform_unique():
    # The default is log_uniform_candidate_sampler(labels, T, S, unique=True, range_max=C) with
    # the same seed: passing its output explicitly gives the same logits.
    w, b, labels, x, num_sampled, num_classes, num_true = default_sampler_args()
    sv = torchnce.log_uniform_candidate_sampler(
        labels, num_true, num_sampled, True, num_classes, seed=11
    )
    assert len(set(sv.sampled_candidates.tolist())) == num_sampled
    implicit = torchnce.compute_sampled_logits(
        w, b, labels, x, num_sampled, num_classes, num_true, seed=11
    )
    explicit = torchnce.compute_sampled_logits(
        w, b, labels, x, num_sampled, num_classes, num_true, sv
    )
    torch.testing.assert_close(implicit, explicit)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_float64_end_to_end_with_default_sampler(loss):
    # TF raises here (float32 expected counts against float64 logits); we cast.
    w, b, labels, x, *rest = default_sampler_args(torch.float64)
    w.requires_grad_()
    b.requires_grad_()
    x.requires_grad_()
    got = LOSSES[loss](w, b, labels, x, *rest, seed=5)
    assert got.dtype == torch.float64
    assert torch.isfinite(got).all()
    got.sum().backward()
    assert all(p.grad.dtype == torch.float64 for p in (w, b, x))
    assert all(torch.isfinite(p.grad).all() for p in (w, b, x))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_large_logits_are_stable(loss, remove_accidental_hits):
    # Logits of a few hundred (inputs and weights scaled by 8): a naive log(1 + exp(x)) or an
    # unshifted softmax overflows; the oracle uses TF's stable forms.
    weights, biases, labels, inputs, sv = random_case(2, scale=8.0)
    got = LOSSES[loss](
        torch.from_numpy(weights),
        torch.from_numpy(biases),
        torch.from_numpy(labels),
        torch.from_numpy(inputs),
        5,
        11,
        2,
        sv,
        remove_accidental_hits=remove_accidental_hits,
    )
    assert torch.isfinite(got).all()
    expected = oracle(
        loss, weights, biases, labels, inputs, sv, 5, remove_accidental_hits=remove_accidental_hits
    )
    torch.testing.assert_close(got, torch.from_numpy(expected))


def loss_and_grads(loss, dtype, remove_accidental_hits, num_shards=2):
    """Loss and (inputs, weight shards, bias shards) gradients, computed in ``dtype``."""
    weights, biases, labels, inputs, (sampled, tc, sc) = random_case(2, scale=0.5)
    w = [s.to(dtype).requires_grad_() for s in shards(weights, num_shards, "mod")]
    b = [s.to(dtype).requires_grad_() for s in shards(biases, num_shards, "mod")]
    x = torch.from_numpy(inputs).to(dtype).requires_grad_()
    sv = (torch.from_numpy(sampled), torch.from_numpy(tc), torch.from_numpy(sc))
    out = LOSSES[loss](
        w,
        b,
        torch.from_numpy(labels),
        x,
        5,
        11,
        2,
        sv,
        remove_accidental_hits=remove_accidental_hits,
    )
    out.sum().backward()
    return out, [p.grad for p in (x, *w, *b)]


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_gradients_match_float64(loss, dtype, remove_accidental_hits):
    # float64 gradients are gradchecked above; lower precisions must agree with them (not just
    # be finite), at the per-dtype tolerance of half_tolerance.
    ref_out, ref_grads = loss_and_grads(loss, torch.float64, remove_accidental_hits)
    out, grads = loss_and_grads(loss, dtype, remove_accidental_hits)
    torch.testing.assert_close(out, ref_out.to(dtype), **half_tolerance(dtype))
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g, r.to(dtype), **half_tolerance(dtype))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_empty_batch(loss):
    # TF returns a loss of shape (0,) for a batch of 0 examples (checked on TF 2.21).
    sv = (torch.tensor([1, 3, 4]), torch.full((0, 2), 0.5), torch.full((3,), 0.5))
    got = LOSSES[loss](
        torch.randn(6, 3),
        torch.randn(6),
        torch.zeros(0, 2, dtype=torch.int64),
        torch.zeros(0, 3),
        3,
        6,
        2,
        sv,
    )
    assert got.shape == (0,)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_biases_none_means_zero_biases(loss):
    # A PyTorch extension (documented in compute_sampled_logits): no bias at all.
    weights, _, labels, inputs, sv = random_case(2)
    args = (torch.from_numpy(labels), torch.from_numpy(inputs), 5, 11, 2, sv)
    w = torch.from_numpy(weights)
    torch.testing.assert_close(
        LOSSES[loss](w, None, *args), LOSSES[loss](w, torch.zeros(11, dtype=torch.float64), *args)
    )


# --- fuzzing regressions: low-precision log expected counts ----------------------------------


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_tiny_expected_counts(loss, dtype):
    # Counts of 1e-9 underflow to 0 in float16 (smallest subnormal 6e-8): cast before the log,
    # log Q was -inf and the loss inf/NaN. The log is taken in float32, so the low-precision
    # loss is the float32 loss of the same (exactly representable) values, rounded.
    w, x = torch.randn(6, 3).to(dtype), torch.randn(2, 3).to(dtype)
    b, y = torch.zeros(6, dtype=dtype), torch.tensor([[0], [1]])
    sv = (torch.tensor([2, 3]), torch.full((2, 1), 1e-9), torch.tensor([1e-9, 3e-8]))
    got = LOSSES[loss](w, b, y, x, 2, 6, sampled_values=sv)
    want = LOSSES[loss](w.float(), b.float(), y, x.float(), 2, 6, sampled_values=sv)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want.to(dtype), **half_tolerance(dtype))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_float16_large_vocabulary_default_sampler(loss):
    # C = 10⁷ and S = 1: the log-uniform expected counts of most ids are below float16's
    # range (P(k) ≈ 1 / (k ln C)); the loss was [nan, inf, nan] before the log moved to float32.
    num_classes = 10**7
    w = torch.zeros(num_classes, 1, dtype=torch.float16)
    b = torch.zeros(num_classes, dtype=torch.float16)
    y = torch.tensor([[0], [5], [num_classes - 1]])
    got = LOSSES[loss](w, b, y, torch.ones(3, 1, dtype=torch.float16), 1, num_classes, seed=0)
    assert torch.isfinite(got).all()


def test_float16_row_without_labels_is_finite():
    # nce_loss documents a label-less row's loss as Σ_s softplus(ℓ_s), finite; with float16
    # inputs and small counts it was NaN (log of a count cast to 0).
    w, b = torch.zeros(10, 2, dtype=torch.float16), torch.zeros(10, dtype=torch.float16)
    sv = ([3, 4], [[1e-8, 1e-8]], [1e-8, 1e-8])
    got = torchnce.nce_loss(w, b, torch.tensor([[0, 1], [1, 1]]),
                            torch.ones(2, 2, dtype=torch.float16), 2, 10, num_true=2,
                            padding_id=1, sampled_values=sv)
    # Row 1 has no labels: two logits 0 − log(1e-8) = 18.42..., each softplus(ℓ) ≈ ℓ.
    expected = 2 * torch.nn.functional.softplus(-torch.tensor(1e-8).log())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[1], expected.half(), **half_tolerance(torch.float16))


def test_float16_compute_sampled_logits_tiny_counts():
    # The logits come back in float16 with log Q taken in float32 first: 0 − log(1e-9).
    w, x = torch.zeros(4, 2, dtype=torch.float16), torch.ones(1, 2, dtype=torch.float16)
    logits, _ = torchnce.compute_sampled_logits(
        w, None, torch.tensor([[0]]), x, 1, 4, sampled_values=([1], [[1e-9]], [1e-9]))
    assert logits.dtype == torch.float16
    expected = torch.full((1, 2), -math.log(1e-9)).half()
    torch.testing.assert_close(logits, expected)
