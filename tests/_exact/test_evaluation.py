"""Exact evaluation: full_logits, nce_eval_loss, sampled_softmax_eval_loss and top_k.

Oracles: the float64 loops of ``reference.sampled`` (TensorFlow's documented evaluation recipe:
matmul, bias, one-hot scaled by 1/T, sigmoid or softmax cross entropy, row sum), the same
recipe as dense torch float64 autograd for gradients, and the sampled losses themselves
through the all-candidate identities.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchnce
from reference import sampled as ref

EVAL = {"nce": torchnce.nce_eval_loss, "softmax": torchnce.sampled_softmax_eval_loss}
ORACLES = {"nce": ref.nce_eval_loss, "softmax": ref.sampled_softmax_eval_loss}
SAMPLED = {"nce": torchnce.nce_loss, "softmax": torchnce.sampled_softmax_loss}
C, D, B = 13, 3, 4  # chunk sizes 2, 5 and 8 do not divide C nor the shard sizes


def split(table: torch.Tensor, num_shards: int, strategy: str) -> torch.Tensor | list:
    """Shards as views of ``table`` (gradients flow back to it), laid out by ``strategy``."""
    if num_shards == 1:
        return table
    if strategy == "mod":
        return [table[p::num_shards] for p in range(num_shards)]
    return list(torch.tensor_split(table, num_shards))


def case(num_true: int, dtype=torch.float64, seed: int = 0, num_classes: int = C):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num_classes, D, generator=g, dtype=dtype)
    b = torch.randn(num_classes, generator=g, dtype=dtype)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    labels = torch.randint(0, num_classes, (B, num_true), generator=g)
    if num_true > 1:
        labels[0, 1] = labels[0, 0]  # a repeated true class counts twice: target 2/T
    return w, b, labels, x


def dense_recipe(loss: str, w, b, labels, x) -> torch.Tensor:
    """TensorFlow's documented evaluation as dense torch ops (for autograd)."""
    logits = x @ w.t() + b
    z = torch.zeros_like(logits).scatter_add_(
        1, labels, torch.full(labels.shape, 1.0 / labels.shape[1], dtype=logits.dtype))
    if loss == "nce":
        return F.binary_cross_entropy_with_logits(logits, z, reduction="none").sum(dim=1)
    return -(z * torch.log_softmax(logits, dim=1)).sum(dim=1)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_true", [1, 2, 3, 4])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 5, 64, None])
def test_eval_loss_matches_recipe(loss, num_true, strategy, num_shards, chunk_size):
    w, b, labels, x = case(num_true)
    ws, bs = split(w, num_shards, strategy), split(b, num_shards, strategy)
    out = EVAL[loss](ws, bs, labels, x, C, num_true, strategy, chunk_size=chunk_size)
    expected = ORACLES[loss](ref.f64(w), ref.f64(b), labels, x)  # global order: unsharded
    torch.testing.assert_close(out, ref.expected_like(expected, out))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 3])
def test_eval_loss_gradients_match_recipe(loss, num_true, strategy, num_shards):
    w, b, labels, x = (t.requires_grad_() if t.is_floating_point() else t
                       for t in case(num_true, seed=1))
    weighting = torch.arange(1.0, B + 1, dtype=torch.float64)  # distinct upstream gradients
    out = EVAL[loss](split(w, num_shards, strategy), split(b, num_shards, strategy), labels, x,
                     C, num_true, strategy, chunk_size=2)
    grads = torch.autograd.grad((out * weighting).sum(), (w, b, x))
    expected = torch.autograd.grad((dense_recipe(loss, w, b, labels, x) * weighting).sum(),
                                   (w, b, x))
    for actual, wanted in zip(grads, expected, strict=True):
        torch.testing.assert_close(actual, wanted)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_shards", [1, 2])
def test_eval_loss_gradcheck(loss, num_shards):
    w, b, labels, x = case(2, num_classes=5)

    def f(w, b, x):
        return EVAL[loss](split(w, num_shards, "mod"), split(b, num_shards, "mod"), labels, x, 5,
                          2, chunk_size=2)

    assert torch.autograd.gradcheck(f, (w.requires_grad_(), b.requires_grad_(),
                                        x.requires_grad_()))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_biases_sharded_unlike_weights(loss, strategy):
    # weights in 3 shards, biases in 2 (or 1): each table is addressed by its own layout.
    w, b, labels, x = (t.requires_grad_() if t.is_floating_point() else t
                       for t in case(2, seed=10))
    expected = dense_recipe(loss, w, b, labels, x)
    for bias_shards in (1, 2):
        out = EVAL[loss](split(w, 3, strategy), split(b, bias_shards, strategy), labels, x, C,
                         2, strategy, chunk_size=4)
        torch.testing.assert_close(out, expected)
        for grad, wanted in zip(torch.autograd.grad(out.sum(), (w, b, x)),
                                torch.autograd.grad(expected.sum(), (w, b, x), retain_graph=True),
                                strict=True):
            torch.testing.assert_close(grad, wanted)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 3])
def test_all_candidate_identity(loss, strategy, num_shards):
    # Every class sampled once with expected count 1 (log Q = 0) and the true class's own
    # candidate removed as a hit: the sampled logits are all C logits, the true one once.
    w, b, labels, x = case(1, seed=2)
    ws, bs = split(w, num_shards, strategy), split(b, num_shards, strategy)
    values = torchnce.AllCandidateSampler().sample(labels, C)
    sampled = SAMPLED[loss](ws, bs, labels, x, C, C, sampled_values=values,
                            remove_accidental_hits=True, partition_strategy=strategy)
    full = EVAL[loss](ws, bs, labels, x, C, partition_strategy=strategy, chunk_size=4)
    torch.testing.assert_close(sampled, full)


@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_full_logits_in_global_order(strategy, num_shards, bias):
    w, b, _, x = case(1, seed=3)
    bs = split(b, num_shards, strategy) if bias else None
    out = torchnce.full_logits(split(w, num_shards, strategy), bs, x, strategy)
    expected = ref.full_logits(ref.f64(w), ref.f64(b) if bias else None, x)
    torch.testing.assert_close(out, ref.expected_like(expected, out))


def test_full_logits_gradcheck_and_mixed_sharding():
    w, b, _, x = case(1, num_classes=5)
    args = (w.requires_grad_(), b.requires_grad_(), x.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda w, b, x: torchnce.full_logits(split(w, 2, "mod"), b, x), args)
    # biases unsharded while the weights are sharded: still global order
    torch.testing.assert_close(torchnce.full_logits(split(w, 2, "mod"), b, x), x @ w.t() + b)


@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("k", [1, 4, C])
def test_top_k_matches_dense(strategy, num_shards, chunk_size, k):
    w, b, _, x = case(1, dtype=torch.float32, seed=4)
    scores, ids = torchnce.top_k(split(w, num_shards, strategy), split(b, num_shards, strategy),
                                 x, k, strategy, chunk_size=chunk_size)
    expected_scores, expected_ids = (x @ w.t() + b).topk(k, dim=1)
    torch.testing.assert_close(scores, expected_scores)
    assert torch.equal(ids, expected_ids)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_float32_matches_float64_recipe(loss):
    w, b, labels, x = case(3, dtype=torch.float32, seed=5, num_classes=300)
    out = EVAL[loss](w, b, labels, x, 300, 3, chunk_size=7)
    expected = ORACLES[loss](ref.f64(w), ref.f64(b), labels, x)
    torch.testing.assert_close(out, ref.expected_like(expected, out))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("chunk_size", [7, 4096])
def test_float32_many_small_terms(loss, chunk_size):
    # 20,000 logits near -10 (each softplus ≈ e^-10 ≈ 4.5e-5, together ≈ 0.9) and true classes
    # near 0: the small terms must all be kept, and thousands of chunks must add no rounding.
    g = torch.Generator().manual_seed(11)
    w = torch.randn(20_000, D, generator=g) * 0.1
    labels = torch.randint(0, 20_000, (B, 1), generator=g)
    b = torch.full((20_000,), -10.0).index_fill_(0, labels[:, 0], 0.0)
    x = torch.randn(B, D, generator=g)
    out = EVAL[loss](w, b, labels, x, 20_000, chunk_size=chunk_size)
    expected = EVAL[loss](w.double(), b.double(), labels, x.double(), 20_000)
    torch.testing.assert_close(out, expected.float())


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(loss, dtype):
    w, b, labels, x = (t.to(dtype) if t.is_floating_point() else t for t in case(2, seed=6))
    out = EVAL[loss](w, b, labels, x, C, 2, chunk_size=3)
    upcast = EVAL[loss](w.float(), b.float(), labels, x.float(), C, 2)
    assert out.dtype == dtype
    torch.testing.assert_close(out, upcast.to(dtype))


@pytest.mark.parametrize("bias", [True, False])
def test_single_target_softmax_equals_torch_linear_cross_entropy(bias):
    w, b, labels, x = case(1, seed=7)
    b = b if bias else None
    out = torchnce.sampled_softmax_eval_loss(w, b, labels, x, C, chunk_size=4)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)  # never the auto chunking
    expected = F.linear_cross_entropy(x, w, labels[:, 0], linear_bias=b, reduction="none",
                                      options=options)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_no_bias(loss):
    w, _, labels, x = case(2, seed=8)
    out = EVAL[loss](split(w, 2, "div"), None, labels, x, C, 2, "div", chunk_size=3)
    torch.testing.assert_close(out, ref.expected_like(ORACLES[loss](ref.f64(w), None, labels, x),
                                                      out))


@pytest.mark.parametrize("loss", ["nce", "softmax"])
def test_empty_batch_and_rank_1_labels(loss):
    w, b, labels, x = case(1)
    empty = EVAL[loss](w.requires_grad_(), b, labels[:0], x[:0], C)
    assert empty.shape == (0,)
    empty.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))
    torch.testing.assert_close(EVAL[loss](w, b, labels[:, 0], x, C),
                               EVAL[loss](w, b, labels, x, C))


def test_chunks_do_not_change_the_loss_much_at_scale():
    # 1e4 classes in float32: different chunkings agree to float32 summation error.
    w, b, labels, x = case(1, dtype=torch.float32, seed=8, num_classes=10_000)
    losses = [torchnce.nce_eval_loss(w, b, labels, x, 10_000, chunk_size=c) for c in (97, 4096)]
    torch.testing.assert_close(losses[0], losses[1])
    assert np.isfinite(losses[0].numpy()).all()


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_bad_chunk_size(chunk_size):
    w, b, labels, x = case(1)
    with pytest.raises(ValueError, match=r"^chunk_size must be >= 1"):
        torchnce.nce_eval_loss(w, b, labels, x, C, chunk_size=chunk_size)
    with pytest.raises(ValueError, match=r"^chunk_size must be >= 1"):
        torchnce.top_k(w, b, x, 2, chunk_size=chunk_size)


def test_bad_chunk_size_type():
    w, b, labels, x = case(1)
    with pytest.raises(TypeError, match=r"^chunk_size must be an int"):
        torchnce.sampled_softmax_eval_loss(w, b, labels, x, C, chunk_size=2.5)


@pytest.mark.parametrize("k", [0, C + 1])
def test_bad_k(k):
    w, b, _, x = case(1)
    with pytest.raises(ValueError, match=r"^k must"):
        torchnce.top_k(w, b, x, k)


def test_bad_eval_arguments():
    w, b, labels, x = case(2)
    with pytest.raises(ValueError, match=r"^labels must have shape"):
        torchnce.nce_eval_loss(w, b, labels, x, C)  # num_true defaults to 1
    with pytest.raises(ValueError, match=r"^labels must hold ids in \[0, 13\)"):
        torchnce.nce_eval_loss(w, b, labels + C, x, C, 2)
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        torchnce.nce_eval_loss(w, b, labels.double(), x, C, 2)
    with pytest.raises(ValueError, match=r"^weights must have num_classes=12 rows"):
        torchnce.sampled_softmax_eval_loss(w, b, labels, x, C - 1, 2)
    with pytest.raises(ValueError, match=r"^inputs must have dim"):
        torchnce.full_logits(w, b, x[:, :2])
    with pytest.raises(ValueError, match=r"^partition_strategy must be one of"):
        torchnce.top_k(w, b, x, 1, "modulo")
    with pytest.raises(ValueError, match=r"^weights must be split"):
        torchnce.full_logits([w[:4], w[4:]], None, x, "div")
    with pytest.raises(TypeError, match=r"^inputs must be a floating tensor"):
        torchnce.nce_eval_loss(w, b, labels, x.long(), C, 2)


@pytest.mark.parametrize("loss", ["nce", "softmax"])
@pytest.mark.parametrize("num_true", [1, 3])
def test_tensorflow_recipe_parity(loss, num_true):
    # The recipe of TensorFlow 2.21's nce_loss docstring, run by TensorFlow itself (float32;
    # reductions are not bit-reproducible across Eigen and BLAS: rtol 1e-5 / 1e-4 for gradients,
    # as in test_parity_tf.py).
    tf = pytest.importorskip("tensorflow")
    w, b, labels, x = case(num_true, dtype=torch.float32, seed=9, num_classes=50)
    tw, tb, tx = (tf.Variable(t.numpy()) for t in (w, b, x))
    with tf.GradientTape() as tape:
        logits = tf.nn.bias_add(tf.matmul(tx, tw, transpose_b=True), tb)
        z = tf.reduce_sum(tf.one_hot(labels.numpy(), 50), axis=1) / num_true
        if loss == "nce":
            tf_loss = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=z, logits=logits), axis=1)
        else:
            tf_loss = tf.nn.softmax_cross_entropy_with_logits(labels=z, logits=logits)
    tf_grads = tape.gradient(tf_loss, [tw, tb, tx])
    params = [t.requires_grad_() for t in (w, b, x)]
    out = EVAL[loss](w, b, labels, x, 50, num_true, chunk_size=16)
    torch.testing.assert_close(out, torch.from_numpy(tf_loss.numpy()), rtol=1e-5, atol=1e-5)
    for grad, tf_grad in zip(torch.autograd.grad(out.sum(), params), tf_grads, strict=True):
        torch.testing.assert_close(grad, torch.from_numpy(tf_grad.numpy()), rtol=1e-4, atol=1e-5)
