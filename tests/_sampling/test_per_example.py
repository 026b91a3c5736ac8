"""Per-example negatives: candidates ``[B, S]``, one set per row.

The oracle is the definition: row ``b`` equals the shared-negatives computation of that row
alone with ``sampled_values = (cands[b], true_count[b], sampled_count[b])`` — the float64
oracles of ``reference.py`` for values, torchnce's own (TF-parity-tested) shared path in a
Python loop for gradients. The default per-row sampler is checked against TensorFlow's
rejection loop on recorded streams (through ``_sampling.per_example``, since the losses do not
return their draws) and, in distribution, against the shared unique sampler.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnce
from reference import sampled as ref
from torchnce._sampled.fused import Workspace, sampled_loss_grads
from torchnce._sampled.problem import prepare
from torchnce._sampled.spec import SPECS
from torchnce._sampling import per_example as _per_example
from torchnce._sampling.draw import SeedStream

LOSSES = {
    "nce": torchnce.nce_loss,
    "softmax": torchnce.sampled_softmax_loss,
    "neg": torchnce.negative_sampling_loss,
}
ORACLES = {
    "nce": ref.nce_loss,
    "softmax": ref.sampled_softmax_loss,
    "neg": ref.negative_sampling_loss,
}
C, D, B, S = 11, 3, 5, 4


def case(num_true: int, seed: int = 0):
    """float64 data; every row's first candidate is a hit, row 1 holds its label twice."""
    rng = np.random.RandomState(seed)
    w, b, x = rng.randn(C, D), rng.randn(C), rng.randn(B, D)
    labels = rng.randint(0, C, (B, num_true))
    cands = rng.randint(0, C, (B, S))
    cands[:, 0] = labels[:, 0]
    cands[1, 2] = labels[1, 0]
    tc, sc = rng.uniform(0.1, 1.0, (B, num_true)), rng.uniform(0.1, 1.0, (B, S))
    return w, b, labels, x, (cands, tc, sc)


def tensors(*arrays):
    return [torch.from_numpy(np.array(a)) for a in arrays]


def shards(table, num_shards, strategy):
    split = ref.split_mod if strategy == "mod" else ref.split_div
    return [torch.from_numpy(s.copy()).requires_grad_() for s in split(table, num_shards)]


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("hits", [False, True])
def test_loss_matches_row_oracle(loss, num_true, hits):
    w, b, labels, x, sv = case(num_true)
    got = LOSSES[loss](*tensors(w, b, labels, x), S, C, num_true, tuple(tensors(*sv)),
                       remove_accidental_hits=hits)
    expected = ref.per_example_oracle(ORACLES[loss], w, b, labels, x, sv, S,
                                      remove_accidental_hits=hits)
    assert got.shape == (B,)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("subtract_log_q", [False, True])
@pytest.mark.parametrize("hits", [False, True])
def test_compute_sampled_logits_matches_row_oracle(subtract_log_q, hits):
    w, b, labels, x, sv = case(2)
    logits, targets = torchnce.compute_sampled_logits(
        *tensors(w, b, labels, x), S, C, 2, tuple(tensors(*sv)), subtract_log_q=subtract_log_q,
        remove_accidental_hits=hits)
    exp_logits, exp_targets = ref.per_example_oracle(
        ref.sampled_logits, w, b, labels, x, sv, S, subtract_log_q=subtract_log_q,
        remove_accidental_hits=hits)
    assert logits.shape == targets.shape == (B, 2 + S)
    torch.testing.assert_close(logits, ref.expected_like(exp_logits, logits))
    torch.testing.assert_close(targets, ref.expected_like(exp_targets, targets))


def grads_of(loss_value, params):
    grads = torch.autograd.grad(loss_value.sum(), params)
    return [g.to_dense() if g.is_sparse else g for g in grads]


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("hits", [False, True])
def test_gradients_match_row_loop(loss, num_true, hits):
    w, b, labels, x, sv = case(num_true, seed=1)
    w_t, b_t, x_t = (t.requires_grad_() for t in tensors(w, b, x))
    labels_t, sv_t = torch.from_numpy(labels), tuple(tensors(*sv))
    got = LOSSES[loss](w_t, b_t, labels_t, x_t, S, C, num_true, sv_t,
                       remove_accidental_hits=hits)
    expected = ref.per_example_torch(LOSSES[loss], w_t, b_t, labels_t, x_t, sv_t, S, C,
                                     remove_accidental_hits=hits)
    torch.testing.assert_close(got, expected)
    params = (w_t, b_t, x_t)
    for g, e in zip(grads_of(got, params), grads_of(expected, params), strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("sparse_grad", [False, True])
@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_sharded_tables_and_sparse_gradients(strategy, sparse_grad, loss):
    # 11 rows in 3 shards (uneven under both layouts); gradients against the unsharded loop.
    w, b, labels, x, sv = case(2, seed=2)
    w_s, b_s = shards(w, 3, strategy), shards(b, 3, strategy)
    x_t = torch.from_numpy(x).requires_grad_()
    labels_t, sv_t = torch.from_numpy(labels), tuple(tensors(*sv))
    got = LOSSES[loss](w_s, b_s, labels_t, x_t, S, C, 2, sv_t, partition_strategy=strategy,
                       sparse_grad=sparse_grad)
    expected = ref.per_example_oracle(ORACLES[loss], w, b, labels, x, sv, S,
                                      partition_strategy="mod",
                                      remove_accidental_hits=loss == "softmax")
    torch.testing.assert_close(got, ref.expected_like(expected, got))
    grads = torch.autograd.grad(got.sum(), (*w_s, *b_s, x_t))
    assert all(g.is_sparse == sparse_grad for g in grads[:6])
    w_d, b_d, x_d = (t.requires_grad_() for t in tensors(w, b, x))
    dense = ref.per_example_torch(LOSSES[loss], w_d, b_d, labels_t, x_d, sv_t, S, C)
    g_w, g_b, g_x = grads_of(dense, (w_d, b_d, x_d))
    split = ref.split_mod if strategy == "mod" else ref.split_div
    expected_grads = [*split(g_w.numpy(), 3), *split(g_b.numpy(), 3), g_x.numpy()]
    for g, e in zip(grads, expected_grads, strict=True):
        g = g.to_dense() if g.is_sparse else g
        torch.testing.assert_close(g, torch.from_numpy(np.ascontiguousarray(e)))


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("hits", [False, True])
def test_gradcheck(loss, num_shards, strategy, hits):
    w, b, labels, x, sv = case(2, seed=3)
    w_s, b_s = shards(w, num_shards, strategy), shards(b, num_shards, strategy)
    x_t = torch.from_numpy(x).requires_grad_()
    labels_t, sv_t = torch.from_numpy(labels), tuple(tensors(*sv))

    def fn(x, *params):
        return LOSSES[loss](list(params[:num_shards]), list(params[num_shards:]), labels_t, x,
                            S, C, 2, sv_t, remove_accidental_hits=hits,
                            partition_strategy=strategy)

    assert torch.autograd.gradcheck(fn, (x_t, *w_s, *b_s))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_no_bias_and_compute_sampled_logits_gradients(loss):
    # Without biases, and through the autograd path of compute_sampled_logits (gradcheck).
    w, _, labels, x, sv = case(1, seed=4)
    w_t, x_t = (t.requires_grad_() for t in tensors(w, x))
    labels_t, sv_t = torch.from_numpy(labels), tuple(tensors(*sv))
    got = LOSSES[loss](w_t, None, labels_t, x_t, S, C, 1, sv_t)
    expected = ref.per_example_torch(LOSSES[loss], w_t, None, labels_t, x_t, sv_t, S, C)
    torch.testing.assert_close(got, expected)

    def logits(x, w):  # (a removed hit's logit of -FLT_MAX defeats finite differences)
        return torchnce.compute_sampled_logits(w, None, labels_t, x, S, C, 1, sv_t)[0]

    assert torch.autograd.gradcheck(logits, (x_t, w_t))


@pytest.mark.parametrize("true_shape", [(B, 2), (B, 1), (1, 1)])
@pytest.mark.parametrize("sampled_shape", [(B, S), (1, S), (S,), (B, 1)])
def test_expected_counts_broadcast(true_shape, sampled_shape):
    w, b, labels, x, (cands, _, _) = case(2, seed=5)
    tc = np.random.RandomState(0).uniform(0.1, 1, true_shape)
    sc = np.random.RandomState(1).uniform(0.1, 1, sampled_shape)
    got = torchnce.nce_loss(*tensors(w, b, labels, x), S, C, 2, tuple(tensors(cands, tc, sc)))
    full = (cands, np.broadcast_to(tc, (B, 2)), np.broadcast_to(sc, (B, S)))
    expected = torchnce.nce_loss(*tensors(w, b, labels, x), S, C, 2, tuple(tensors(*full)))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
def test_same_candidates_in_every_row_equal_shared_negatives(loss):
    w, b, labels, x, (cands, tc, sc) = case(2, seed=6)
    shared = LOSSES[loss](*tensors(w, b, labels, x), S, C, 2, tuple(tensors(cands[0], tc, sc[0])))
    rows = (np.tile(cands[0], (B, 1)), tc, np.tile(sc[0], (B, 1)))
    per_row = LOSSES[loss](*tensors(w, b, labels, x), S, C, 2, tuple(tensors(*rows)))
    torch.testing.assert_close(per_row, shared)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_low_precision_with_hits_is_finite_and_close(dtype, loss):
    w, b, labels, x, sv = case(2, seed=7)
    w_t, b_t, x_t = (t.to(dtype).requires_grad_() for t in tensors(w, b, x))
    got = LOSSES[loss](w_t, b_t, torch.from_numpy(labels), x_t, S, C, 2, tuple(tensors(*sv)),
                       remove_accidental_hits=True)
    got.sum().backward()
    assert got.dtype == dtype and torch.isfinite(w_t.grad).all() and torch.isfinite(x_t.grad).all()
    expected = ref.per_example_oracle(ORACLES[loss], w_t, b_t, labels, x_t, sv, S,
                                      remove_accidental_hits=True)
    # The oracle sees the rounded parameters; 16-bit results are rounded once more at the end.
    tol = {} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(got, ref.expected_like(expected, got), **tol)


def test_empty_batch():
    got = torchnce.nce_loss(torch.randn(C, D), torch.zeros(C), torch.zeros(0, 1, dtype=torch.long),
                            torch.randn(0, D), S, C,
                            sampled_values=(torch.zeros(0, S, dtype=torch.long),
                                            torch.ones(0, 1), torch.ones(0, S)))
    assert got.shape == (0,)


# --- The default sampler, per row -------------------------------------------------------------


def default_args(dtype=torch.float64):
    w, b, labels, x, _ = case(2, seed=8)
    return (*tensors(w, b, labels), torch.from_numpy(x).to(dtype))


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
def test_default_per_example_sampler_is_log_uniform_rows(loss):
    # per_example_negatives=True with seed s draws log_uniform_rows from the stream of seed s.
    w, b, labels, x = default_args()
    implicit = LOSSES[loss](w, b, labels, x, S, C, 2, seed=11, per_example_negatives=True)
    values = _per_example.log_uniform_rows(labels, S, C, SeedStream(11))
    explicit = LOSSES[loss](w, b, labels, x, S, C, 2, values)
    torch.testing.assert_close(implicit, explicit)
    assert values.sampled_candidates.shape == (B, S)
    assert values.true_expected_count.shape == (B, 2)
    assert values.sampled_expected_count.shape == (B, S)


def test_default_per_example_candidates_are_unique_per_row_and_seeded():
    labels = torch.zeros(200, 1, dtype=torch.long)
    first = _per_example.log_uniform_rows(labels, 8, 20, torch.Generator().manual_seed(0))
    again = _per_example.log_uniform_rows(labels, 8, 20, torch.Generator().manual_seed(0))
    cands = first.sampled_candidates
    assert torch.equal(cands, again.sampled_candidates)
    assert all(len(set(row)) == 8 for row in cands.tolist())
    assert int(cands.min()) >= 0 and int(cands.max()) < 20
    assert len({tuple(row) for row in cands.tolist()}) > 100  # rows are drawn independently
    assert first.true_expected_count.dtype == torch.float32


def row_streams(calls, batch, num_sampled):
    """Each row's stream from the recorded draws: the first block, then the extra blocks of the
    rows still short of ``num_sampled`` distinct ids, in row order."""
    streams = [list(r) for r in calls[0].view(batch, -1).tolist()]
    for extra in calls[1:]:
        short = [i for i in range(batch) if len(set(streams[i])) < num_sampled]
        for i, part in zip(short, extra.view(len(short), -1).tolist(), strict=True):
            streams[i] += part
    return streams


def recorder(sample):
    """A ``draw`` that records its i.i.d. draws ``sample(n)``."""
    calls = []

    def draw(n):
        calls.append(torch.from_numpy(sample(n)))
        return calls[-1]

    return draw, calls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_follow_tensorflows_rejection_loop(seed):
    # 6 ids, 5 wanted, a first block of 5: most rows need extra draws.
    rng = np.random.RandomState(seed)
    draw, calls = recorder(lambda n: rng.randint(0, 6, n))
    cands, tries = _per_example.draw_unique_rows(draw, 40, 5, 5)
    assert len(calls) >= 2
    for i, stream in enumerate(row_streams(calls, 40, 5)):
        picked, num_tries = ref.unique_rejection_loop(stream, 5)
        assert cands[i].tolist() == picked
        assert int(tries[i]) == num_tries


def test_row_expected_counts_follow_tensorflows_formula():
    # Counts of row i: §6.4 with that row's own num_tries, for its true and sampled classes.
    labels = torch.randint(0, 50, (30, 3), generator=torch.Generator().manual_seed(0))
    rng = np.random.RandomState(1)  # a skewed stream, so that rows need different tries
    draw, calls = recorder(lambda n: np.minimum(rng.geometric(0.15, n) - 1, 49))
    probability = torchnce.LogUniformSampler(50).probability
    values = _per_example.rows_values(labels, 6, draw, probability, 6)
    all_tries = set()
    for i, stream in enumerate(row_streams(calls, 30, 6)):
        picked, num_tries = ref.unique_rejection_loop(stream, 6)
        all_tries.add(num_tries)
        assert values.sampled_candidates[i].tolist() == picked
        for counts, ids in ((values.true_expected_count[i], labels[i]),
                            (values.sampled_expected_count[i], picked)):
            p = ref.log_uniform_p(ids, 50)
            expected = torch.from_numpy(ref.expected_count_f32(p, num_tries, 6))
            torch.testing.assert_close(counts, expected)
    assert len(all_tries) > 3  # rows really had their own num_tries


def test_rows_are_distributed_as_the_shared_unique_sampler():
    # Per class, how often it is among a row's 10 candidates (4000 rows) against how often it
    # is among the shared sampler's 10 (4000 calls): two binomial frequencies of the same p,
    # compared at 5 standard deviations of their difference (deterministic seeds).
    n, num_sampled, range_max = 4000, 10, 30
    labels = torch.zeros(n, 1, dtype=torch.long)
    rows = _per_example.log_uniform_rows(labels, num_sampled, range_max,
                                         torch.Generator().manual_seed(0))
    per_row = torch.bincount(rows.sampled_candidates.reshape(-1), minlength=range_max) / n
    gen = torch.Generator().manual_seed(1)
    shared = torch.zeros(range_max)
    for _ in range(n):
        sv = torchnce.log_uniform_candidate_sampler(labels[:1], 1, num_sampled, True, range_max,
                                                    generator=gen)
        shared[sv.sampled_candidates] += 1.0 / n
    p = (per_row + shared).double() / 2
    bound = 5 * torch.sqrt(2 * p * (1 - p) / n) + 1e-9
    assert bool(((per_row - shared).abs().double() <= bound).all())
    # TensorFlow's "Unique" test: the mean observed count is within 0.2 of the expected count
    # (every class is a true class of every row here, so each row has all C expected counts).
    every = torch.arange(range_max).expand(n, range_max)
    counts = _per_example.log_uniform_rows(every, num_sampled, range_max,
                                           torch.Generator().manual_seed(0))
    mean_count = counts.true_expected_count.mean(dim=0)
    torch.testing.assert_close(per_row, mean_count, rtol=0.2, atol=0.0)


# --- Modules -----------------------------------------------------------------------------------

MODULES = {
    "nce": torchnce.NCELoss,
    "softmax": torchnce.SampledSoftmaxLoss,
    "neg": torchnce.NegativeSamplingLoss,
}


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
def test_module_per_example_negatives(loss):
    torch.manual_seed(0)
    layer = MODULES[loss](C, D, S, per_example_negatives=True, reduction="none",
                          dtype=torch.float64)
    assert "per_example_negatives=True" in repr(layer)
    x, y = torch.randn(B, D, dtype=torch.float64), torch.randint(0, C, (B,))
    out = layer(x, y)
    out.sum().backward()
    assert out.shape == (B,) and torch.isfinite(layer.weight.grad).all()
    # Given per-example values, the module is the functional loss with them.
    values = _per_example.log_uniform_rows(y[:, None], S, C, torch.Generator().manual_seed(0))
    expected = LOSSES[loss](layer.weight, layer.bias, y, x, S, C, 1, values,
                            remove_accidental_hits=loss == "softmax")
    torch.testing.assert_close(layer(x, y, sampled_values=values), expected)


def test_module_per_example_draws_with_its_sampler():
    unigrams = [0.0, 1.0, 2.0, 0.0, 3.0, 1.0, 1.0, 2.0]  # classes 0 and 3 are never drawn
    sampler = torchnce.FixedUnigramSampler(8, unigrams=unigrams)
    labels = torch.randint(0, 8, (300, 1), generator=torch.Generator().manual_seed(0))
    values = _per_example.sampler_rows(sampler, labels, 4)
    cands = values.sampled_candidates
    assert cands.shape == (300, 4)
    assert all(len(set(row)) == 4 for row in cands.tolist())
    assert not bool(torch.isin(cands, torch.tensor([0, 3])).any())
    # Expected counts: §6.4 per row with the sampler's own P (num_tries recovered from the
    # first candidate's count, then checked against the rest of the row).
    p = sampler.probability(cands)
    for i in range(300):
        counts = values.sampled_expected_count[i]
        tries = next(n for n in range(4, 2000) if np.array_equal(
            ref.expected_count_f32(p[i, :1].numpy(), n, 4), counts[:1].numpy()))
        torch.testing.assert_close(counts, torch.from_numpy(
            ref.expected_count_f32(p[i].numpy(), tries, 4)))


def test_module_per_example_updates_a_learned_sampler_once():
    labels = torch.tensor([[1], [1], [2]])
    shared, per_row = torchnce.LearnedUnigramSampler(5), torchnce.LearnedUnigramSampler(5)
    shared.sample(labels, 3)
    _per_example.sampler_rows(per_row, labels, 3)
    assert torch.equal(per_row.counts, shared.counts)
    assert per_row.counts.tolist() == [1, 3, 2, 1, 1]


def test_module_per_example_rejects_too_many_candidates():
    sampler = torchnce.UniformSampler(3)
    with pytest.raises(ValueError, match=r"^num_sampled must be <= range_max \(3\)"):
        _per_example.sampler_rows(sampler, torch.zeros(2, 1, dtype=torch.long), 4)


# --- Errors ------------------------------------------------------------------------------------


def error_args(cands, tc=None, sc=None):
    w, b, labels, x, _ = case(1)
    tc = torch.ones(B, 1) if tc is None else tc
    sc = torch.ones(cands.shape) if sc is None else sc
    return (*tensors(w, b, labels, x), S, C, 1, (cands, tc, sc))


def test_error_batch_size_mismatch():
    with pytest.raises(ValueError, match=r"^sampled_values must hold per-example sampled_"
                                         r"candidates \[batch_size=5, num_sampled\], "
                                         r"got shape \(4, 4\)"):
        torchnce.nce_loss(*error_args(torch.zeros(4, S, dtype=torch.long)))


def test_error_candidates_of_rank_three():
    with pytest.raises(ValueError, match=r"^sampled_values must hold 1-D .* or 2-D"):
        torchnce.sampled_softmax_loss(*error_args(torch.zeros(B, S, 1, dtype=torch.long)))


def test_error_counts_not_broadcastable_to_rows():
    cands = torch.zeros(B, S, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^sampled_values must hold a sampled_expected_count "
                                         r"broadcastable to \[5, 4\], got shape \(3, 4\)"):
        torchnce.nce_loss(*error_args(cands, sc=torch.ones(3, S)))
    with pytest.raises(ValueError, match=r"^sampled_values must hold a true_expected_count"):
        torchnce.nce_loss(*error_args(cands, tc=torch.ones(2, 1)))


def test_error_candidates_out_of_range():
    with pytest.raises(ValueError, match=r"^sampled_values must hold ids in \[0, 11\)"):
        torchnce.nce_loss(*error_args(torch.full((B, S), 11)))


def test_error_hits_with_wrong_number_of_candidates():
    args = error_args(torch.zeros(B, S + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^sampled_values must hold num_sampled=4 candidates"):
        torchnce.sampled_softmax_loss(*args)


def test_error_per_example_negatives_not_a_bool():
    w, b, labels, x = default_args()
    with pytest.raises(TypeError, match=r"^per_example_negatives must be a bool"):
        torchnce.nce_loss(w, b, labels[:, :1], x, S, C, per_example_negatives="yes")
    with pytest.raises(TypeError, match=r"^per_example_negatives must be a bool"):
        torchnce.NCELoss(C, D, S, per_example_negatives=1)


def test_error_per_example_default_sampler_range_too_small():
    w, b, labels, x = default_args()
    with pytest.raises(ValueError, match=r"^num_sampled must .*Sampler's range is too small"):
        torchnce.nce_loss(w, b, labels[:, :1], x, C + 1, C, per_example_negatives=True)


@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("loss", ["nce", "sampled_softmax"])
def test_loss_grads_without_a_graph_equal_autograd(per_example, loss):
    """``sampled_loss_grads`` (word2vec's graph-free step) against autograd through the public
    losses, with biases, log-Q and accidental hits, shared or per-example candidates."""
    gen = torch.Generator().manual_seed(5)
    batch, dim, classes, sampled = 6, 4, 9, 3
    weights = torch.randn(classes, dim, dtype=torch.float64, generator=gen)
    biases = torch.randn(classes, dtype=torch.float64, generator=gen)
    inputs = torch.randn(batch, dim, dtype=torch.float64, generator=gen)
    labels = torch.randint(classes, (batch, 2), generator=gen)
    shape = (batch, sampled) if per_example else (sampled,)
    values = (torch.randint(classes, shape, generator=gen),
              torch.rand(batch, 2, dtype=torch.float64, generator=gen) + 0.1,
              torch.rand(shape, dtype=torch.float64, generator=gen) + 0.1)
    hits = loss == "sampled_softmax"
    problem = prepare(weights, biases, labels, inputs, sampled, classes, 2, values, hits,
                      "mod", seed=None, generator=None, sparse_grad=False)
    fn = torchnce.nce_loss if loss == "nce" else torchnce.sampled_softmax_loss
    got = sampled_loss_grads(problem.inputs, weights, biases, problem.classes,
                             SPECS[fn.__name__], scale=-0.5, workspace=Workspace())
    w, b, x = (t.clone().requires_grad_() for t in (weights, biases, inputs))
    expected = fn(w, b, labels, x, sampled, classes, 2, sampled_values=values,
                  remove_accidental_hits=hits)
    expected.sum().backward()
    torch.testing.assert_close(got.loss, expected.detach())
    torch.testing.assert_close(got.inputs, -0.5 * x.grad)
    torch.testing.assert_close(torch.zeros_like(weights).index_add_(0, got.ids, got.rows),
                               -0.5 * w.grad)
    torch.testing.assert_close(torch.zeros_like(biases).index_add_(0, got.ids, got.bias_rows),
                               -0.5 * b.grad)
