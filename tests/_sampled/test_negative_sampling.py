"""negative_sampling_loss and NegativeSamplingLoss: word2vec's NEG.

The oracle is ``reference.sampled.negative_sampling_loss``: docs/tf-semantics.md §2's logits
without the log-q step, then §3.1's sigmoid cross entropy summed per row, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchnce
from reference import sampled as ref

C, D, B, S = 9, 4, 6, 5


def case(num_true: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    w, b, x = rng.randn(C, D), rng.randn(C), rng.randn(B, D)
    labels = rng.randint(0, C, (B, num_true))
    sampled = rng.permutation(C)[:S]
    sampled[0] = labels[0, 0]  # row 0 has an accidental hit
    tc, sc = rng.uniform(0.05, 1, (B, num_true)), rng.uniform(0.05, 1, S)
    return w, b, labels, x, (sampled, tc, sc)


def tensors(*arrays):
    return [torch.from_numpy(np.array(a)) for a in arrays]


def shards(table, num_shards, strategy):
    split = ref.split_mod if strategy == "mod" else ref.split_div
    return [torch.from_numpy(s.copy()).requires_grad_() for s in split(table, num_shards)]


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("hits", [False, True])
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_matches_oracle(num_true, hits, strategy):
    w, b, labels, x, sv = case(num_true)
    w_s, b_s = shards(w, 3, strategy), shards(b, 3, strategy)
    got = torchnce.negative_sampling_loss(
        w_s, b_s, torch.from_numpy(labels), torch.from_numpy(x), S, C, num_true,
        tuple(tensors(*sv)), remove_accidental_hits=hits, partition_strategy=strategy)
    expected = ref.negative_sampling_loss(w, b, labels, x, sv, S, remove_accidental_hits=hits)
    assert got.shape == (B,)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


def test_tf_fixture():
    # TensorFlow's testNCELoss data (§8.1), scored without log-q.
    weights, biases, labels, hidden, sv = ref.tf_loss_case()
    got = torchnce.negative_sampling_loss(*tensors(weights, biases, labels, hidden), 4, 5,
                                          sampled_values=sv)
    expected = ref.negative_sampling_loss(weights, biases, labels, hidden, sv, 4)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


def test_word2vec_form():
    # T = 1, no bias: L = −log σ(x·w_y) − Σ_s log σ(−x·w_s) (Mikolov et al. 2013, eq. 4).
    w, _, labels, x, sv = case(1, seed=1)
    w_t, x_t = tensors(w, x)
    got = torchnce.negative_sampling_loss(w_t, None, torch.from_numpy(labels), x_t, S, C,
                                          sampled_values=tuple(tensors(*sv)))
    positive = (x_t * w_t[labels[:, 0]]).sum(1)
    negative = x_t @ w_t[sv[0]].T
    expected = -F.logsigmoid(positive) - F.logsigmoid(-negative).sum(1)
    torch.testing.assert_close(got, expected)


def test_equals_nce_when_expected_counts_are_one():
    # Dyer 2014: NEG is NCE with k·q = 1, i.e. log Q = 0.
    w, b, labels, x, (sampled, _, _) = case(2, seed=2)
    ones = (sampled, np.ones((B, 2)), np.ones(S))
    args = (*tensors(w, b, labels, x), S, C, 2, tuple(tensors(*ones)))
    torch.testing.assert_close(torchnce.negative_sampling_loss(*args), torchnce.nce_loss(*args))


def test_differs_from_nce_otherwise_and_ignores_counts():
    w, b, labels, x, (sampled, tc, sc) = case(1, seed=3)
    base = (*tensors(w, b, labels, x), S, C, 1)
    neg = torchnce.negative_sampling_loss(*base, tuple(tensors(sampled, tc, sc)))
    other = torchnce.negative_sampling_loss(*base, tuple(tensors(sampled, tc * 3, sc / 7)))
    torch.testing.assert_close(neg, other)
    nce = torchnce.nce_loss(*base, tuple(tensors(sampled, tc, sc)))
    assert not torch.allclose(neg, nce)


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("per_example", [False, True])
def test_gradcheck(num_shards, strategy, per_example):
    w, b, labels, x, (sampled, tc, sc) = case(2, seed=4)
    if per_example:
        sampled = np.stack([np.roll(sampled, i) for i in range(B)])
        sc = np.tile(sc, (B, 1))
    w_s, b_s = shards(w, num_shards, strategy), shards(b, num_shards, strategy)
    x_t = torch.from_numpy(x).requires_grad_()
    labels_t, sv = torch.from_numpy(labels), tuple(tensors(sampled, tc, sc))

    def fn(x, *params):
        return torchnce.negative_sampling_loss(
            list(params[:num_shards]), list(params[num_shards:]), labels_t, x, S, C, 2, sv,
            remove_accidental_hits=True, partition_strategy=strategy)

    assert torch.autograd.gradcheck(fn, (x_t, *w_s, *b_s))


@pytest.mark.parametrize("per_example", [False, True])
def test_sparse_gradients_equal_dense(per_example):
    w, b, labels, x, _ = case(1, seed=5)
    grads = []
    for sparse in (False, True):
        w_t, b_t = (t.requires_grad_() for t in tensors(w, b))
        loss = torchnce.negative_sampling_loss(w_t, b_t, torch.from_numpy(labels),
                                               torch.from_numpy(x), S, C, seed=3,
                                               sparse_grad=sparse,
                                               per_example_negatives=per_example)
        loss.sum().backward()
        assert w_t.grad.is_sparse == sparse
        grads.append([w_t.grad.to_dense(), b_t.grad.to_dense()])
    for dense, sparse in zip(*grads, strict=True):
        torch.testing.assert_close(sparse, dense)


def test_per_example_matches_row_oracle():
    w, b, labels, x, (sampled, tc, sc) = case(2, seed=6)
    rows = np.stack([np.roll(sampled, i) for i in range(B)])
    sv = (rows, tc, np.tile(sc, (B, 1)))
    got = torchnce.negative_sampling_loss(*tensors(w, b, labels, x), S, C, 2,
                                          tuple(tensors(*sv)), remove_accidental_hits=True)
    expected = ref.per_example_oracle(ref.negative_sampling_loss, w, b, labels, x, sv, S,
                                      remove_accidental_hits=True)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


def test_default_sampler_with_seed():
    w, b, labels, x, _ = case(1, seed=7)
    args = (*tensors(w, b, labels, x), S, C)
    first = torchnce.negative_sampling_loss(*args, seed=5)
    torch.testing.assert_close(torchnce.negative_sampling_loss(*args, seed=5), first)
    sv = torchnce.log_uniform_candidate_sampler(torch.from_numpy(labels), 1, S, True, C, seed=5)
    torch.testing.assert_close(torchnce.negative_sampling_loss(*args, sampled_values=sv), first)


def test_errors_are_those_of_nce_loss():
    w, b, labels, x, sv = case(1)
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        torchnce.negative_sampling_loss(*tensors(w, b), torch.zeros(B, 1), torch.from_numpy(x),
                                        S, C, sampled_values=sv)
    with pytest.raises(ValueError, match=r"^sampled_values must hold per-example"):
        torchnce.negative_sampling_loss(*tensors(w, b, labels, x), S, C, 1,
                                        (torch.zeros(B + 1, S, dtype=torch.long), sv[1], sv[2]))


# --- The module ---------------------------------------------------------------------------------


def test_module_training_and_eval():
    torch.manual_seed(0)
    layer = torchnce.NegativeSamplingLoss(C, D, S, reduction="none", dtype=torch.float64)
    x, y = torch.randn(B, D, dtype=torch.float64), torch.randint(0, C, (B,))
    _, _, _, _, sv = case(1)
    values = tuple(tensors(*sv))
    expected = torchnce.negative_sampling_loss(layer.weight, layer.bias, y, x, S, C,
                                               sampled_values=values)
    torch.testing.assert_close(layer(x, y, sampled_values=values), expected)
    full = torchnce.nce_eval_loss(layer.weight, layer.bias, y, x, C)
    torch.testing.assert_close(layer.eval()(x, y), full)


def test_module_repr_state_dict_and_word2vec_configuration():
    unigrams = list(range(1, C + 1))
    sampler = torchnce.FixedUnigramSampler(C, unigrams=unigrams, distortion=0.75)
    layer = torchnce.NegativeSamplingLoss(C, D, S, sampler=sampler, bias=False,
                                          per_example_negatives=True, sparse_grad=True)
    assert "per_example_negatives=True" in repr(layer) and "FixedUnigramSampler" in repr(layer)
    assert set(layer.state_dict()) == {"weight"}
    x, y = torch.randn(B, D), torch.randint(0, C, (B,))
    layer(x, y).backward()
    assert layer.weight.grad.is_sparse
