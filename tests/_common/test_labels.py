"""Variable numbers of true labels: a mask, a padding id, or ragged rows.

The oracle is the definition: row ``b`` equals the TensorFlow-semantics result computed alone
with ``num_true = n_b`` (its real labels, their expected counts, the same candidates), from the
float64 oracles of ``reference.sampled``; a row without labels gets the documented result (the
negatives' sigmoid loss for NCE / NEG, 0 for sampled softmax). Gradients are checked against
the same computation done row by row with torchnce's shared, fixed-T functions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchnce
from reference import sampled as ref

LOSSES = {
    "nce": torchnce.nce_loss,
    "softmax": torchnce.sampled_softmax_loss,
    "neg": torchnce.negative_sampling_loss,
}
C, D, S = 11, 3, 4
ROWS = [[3, 1, 4], [], [1], [5, 9], [2, 6, 2]]  # a row without labels; a repeated label
B, T = len(ROWS), 3
MASK = torch.tensor([[i < len(r) for i in range(T)] for r in ROWS])
# Padded slots hold ids that are candidates (7, 8), so they would be hits if they counted.
GARBAGE = [[0, 0, 0], [7, 99, -7], [0, 7, 8], [0, 0, 7], [0, 0, 0]]
CANDS = np.array([1, 7, 2, 8])  # hits of real labels: 1 (rows 0, 2), 2 (row 4, once)
FORMS = ["mask", "padding_id", "ragged"]


def data(seed: int = 0):
    rng = np.random.RandomState(seed)
    w, b, x = rng.randn(C, D), rng.randn(C), rng.randn(B, D)
    tc = rng.uniform(0.1, 1.0, (B, T))
    tc[1, 0], tc[1, 1] = 0.0, np.nan  # padding's counts never matter
    sc = rng.uniform(0.1, 1.0, S)
    return w, b, x, tc, sc


def labels_of(form: str):
    """``(labels, keyword arguments)`` of one form."""
    if form == "ragged":
        return [torch.tensor(r, dtype=torch.long) for r in ROWS], {}
    if form == "padding_id":
        return torch.tensor([r + [-1] * (T - len(r)) for r in ROWS]), {"padding_id": -1}
    garbage = torch.tensor(GARBAGE)
    padded = torch.where(MASK, torch.tensor([r + [0] * (T - len(r)) for r in ROWS]), garbage)
    return padded, {"label_mask": MASK}


def real_counts(tc):
    return [list(tc[b, : len(r)]) for b, r in enumerate(ROWS)]


def tensors(*arrays):
    return [torch.from_numpy(np.array(a)) for a in arrays]


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("hits", [False, True])
def test_losses_equal_each_row_alone(loss, form, hits):
    w, b, x, tc, sc = data()
    labels, extra = labels_of(form)
    got = LOSSES[loss](*tensors(w, b), labels, torch.from_numpy(x), S, C, T,
                       tuple(tensors(CANDS, tc, sc)), remove_accidental_hits=hits, **extra)
    expected = ref.variable_labels_oracle(loss, w, b, ROWS, x, CANDS, real_counts(tc), sc, S,
                                          remove_accidental_hits=hits)
    assert got.shape == (B,)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_sharded_with_per_example_negatives(loss, strategy):
    w, b, x, tc, _ = data(1)
    rng = np.random.RandomState(2)
    cands = rng.randint(0, C, (B, S))
    cands[0, 3], cands[2, 1] = 1, 7  # a real label's hit (row 0), a padded id (row 2)
    sc = rng.uniform(0.1, 1.0, (B, S))
    split = ref.split_mod if strategy == "mod" else ref.split_div
    w_s, b_s = ([torch.from_numpy(s.copy()) for s in split(t, 3)] for t in (w, b))
    labels, extra = labels_of("mask")
    got = LOSSES[loss](w_s, b_s, labels, torch.from_numpy(x), S, C, T,
                       tuple(tensors(cands, tc, sc)), remove_accidental_hits=True,
                       partition_strategy=strategy, **extra)
    expected = ref.variable_labels_oracle(loss, w, b, ROWS, x, cands, real_counts(tc), sc, S,
                                          remove_accidental_hits=True)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


def rows_alone(loss, w, b, x, tc, sc, hits):
    """The same computation row by row with torchnce's fixed-T functions (autograd)."""
    out = []
    for i, row in enumerate(ROWS):
        if row:
            values = (torch.from_numpy(CANDS), tc[i : i + 1, : len(row)], sc)
            out.append(LOSSES[loss](w, b, torch.tensor([row]), x[i : i + 1], S, C, len(row),
                                    values, remove_accidental_hits=hits))
        elif loss == "softmax":
            out.append(x[i : i + 1, 0] * 0.0)
        else:  # the negatives alone: any label, its column dropped (and no hit removal)
            values = (torch.from_numpy(CANDS), tc[:1, :1].new_ones(1, 1), sc)
            logits, _ = torchnce.compute_sampled_logits(
                w, b, torch.tensor([[0]]), x[i : i + 1], S, C, 1, values,
                subtract_log_q=loss == "nce")
            out.append(F.softplus(logits[:, 1:]).sum(dim=1))
    return torch.cat(out)


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("hits", [False, True])
def test_gradients_equal_each_row_alone(loss, form, hits):
    w, b, x, tc, sc = (t.requires_grad_() if i < 3 else t
                       for i, t in enumerate(tensors(*data(3))))
    labels, extra = labels_of(form)
    got = LOSSES[loss](w, b, labels, x, S, C, T, (torch.from_numpy(CANDS), tc, sc),
                       remove_accidental_hits=hits, **extra)
    expected = rows_alone(loss, w, b, x, tc, sc, hits)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got.sum(), (w, b, x))
    expected_grads = torch.autograd.grad(expected.sum(), (w, b, x))
    for g, e in zip(grads, expected_grads, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
@pytest.mark.parametrize("per_example", [False, True])
def test_gradcheck(loss, per_example):
    w, b, x, tc, sc = tensors(*data(4))
    cands = torch.from_numpy(CANDS)
    if per_example:
        cands, sc = torch.stack([cands.roll(i) for i in range(B)]), sc.expand(B, S)
    labels, extra = labels_of("padding_id")

    def fn(x, w, b):
        return LOSSES[loss](w, b, labels, x, S, C, T, (cands, tc, sc),
                            remove_accidental_hits=True, **extra)

    assert torch.autograd.gradcheck(fn, tuple(t.requires_grad_() for t in (x, w, b)))


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
def test_sparse_gradients_equal_dense(loss):
    labels, extra = labels_of("ragged")
    grads = []
    for sparse in (False, True):
        w, b, x, tc, sc = tensors(*data(4))
        w.requires_grad_(), b.requires_grad_()
        out = LOSSES[loss](w, b, labels, x, S, C, T, (torch.from_numpy(CANDS), tc, sc),
                           sparse_grad=sparse, **extra)
        grads.append([g.to_dense() for g in torch.autograd.grad(out.sum(), (w, b))])
    for dense, sparse in zip(*grads, strict=True):
        torch.testing.assert_close(sparse, dense)


@pytest.mark.parametrize("form", FORMS)
def test_compute_sampled_logits(form):
    w, b, x, tc, sc = data(5)
    labels, extra = labels_of(form)
    args = (*tensors(w, b), labels, torch.from_numpy(x), S, C, T, tuple(tensors(CANDS, tc, sc)))
    logits, targets = torchnce.compute_sampled_logits(*args, remove_accidental_hits=True,
                                                      **extra)
    assert logits.shape == targets.shape == (B, T + S) and not logits.isnan().any()
    for i, row in enumerate(ROWS):
        n = len(row)
        assert (logits[i, n:T] == -ref.FLT_MAX).all() and (targets[i, n:T] == 0).all()
        if n:
            values = (CANDS, tc[i : i + 1, :n], sc)
            exp_logits, exp_targets = ref.sampled_logits(w, b, [row], x[i : i + 1], values, S,
                                                         remove_accidental_hits=True)
            kept = [*range(n), *range(T, T + S)]
            torch.testing.assert_close(logits[i, kept], torch.from_numpy(exp_logits[0]))
            torch.testing.assert_close(targets[i, kept], torch.from_numpy(exp_targets[0]))
    # Standard cross entropies of these logits and targets are the losses (no NaN).
    nce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1)
    torch.testing.assert_close(nce, torchnce.nce_loss(*args, remove_accidental_hits=True,
                                                      **extra))
    softmax = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(softmax, torchnce.sampled_softmax_loss(*args, **extra))


def test_full_mask_and_absent_padding_id_equal_fixed_labels():
    w, b, x, tc, sc = data(6)
    tc[1] = 0.5  # every slot is real here
    labels = torch.tensor([[3, 1, 4], [0, 5, 5], [1, 2, 3], [5, 9, 9], [2, 6, 2]])
    args = (*tensors(w, b), labels, torch.from_numpy(x), S, C, T, tuple(tensors(CANDS, tc, sc)))
    plain = torchnce.nce_loss(*args)
    torch.testing.assert_close(torchnce.nce_loss(*args, label_mask=torch.ones(B, T).bool()),
                               plain)
    torch.testing.assert_close(torchnce.nce_loss(*args, padding_id=10), plain)
    ragged = [torch.tensor(r) for r in labels.tolist()]
    torch.testing.assert_close(torchnce.nce_loss(*args[:2], ragged, *args[3:]), plain)


@pytest.mark.parametrize("loss", ["nce", "softmax", "neg"])
def test_default_sampler_ignores_padding(loss):
    # The draw does not depend on the true classes; padded slots' counts are ignored, so the
    # default sampler equals an explicit sample drawn for the labels with padding set to 0.
    w, b, x, _, _ = tensors(*data(7))
    labels, extra = labels_of("padding_id")
    implicit = LOSSES[loss](w, b, labels, x, S, C, T, seed=3, **extra)
    sanitized = labels.clamp_min(0)
    sv = torchnce.log_uniform_candidate_sampler(sanitized, T, S, True, C, seed=3)
    explicit = LOSSES[loss](w, b, labels, x, S, C, T, sv, **extra)
    torch.testing.assert_close(implicit, explicit)
    per_row = LOSSES[loss](w, b, labels, x, S, C, T, seed=3, per_example_negatives=True,
                           **extra)
    assert torch.isfinite(per_row).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_with_padding_and_hits_is_finite(dtype):
    w, b, x, tc, sc = (t.to(dtype) for t in tensors(*data(8)))
    w.requires_grad_()
    labels, extra = labels_of("mask")
    for loss in LOSSES.values():
        out = loss(w, b, labels, x, S, C, T, (torch.from_numpy(CANDS), tc, sc),
                   remove_accidental_hits=True, **extra)
        (grad,) = torch.autograd.grad(out.sum(), w)
        assert out.dtype == dtype and torch.isfinite(out).all() and torch.isfinite(grad).all()


# --- The exact evaluation losses ---------------------------------------------------------------

EVAL = {"nce": torchnce.nce_eval_loss, "softmax": torchnce.sampled_softmax_eval_loss}
EVAL_ORACLES = {"nce": ref.nce_eval_loss, "softmax": ref.sampled_softmax_eval_loss}


@pytest.mark.parametrize("kind", ["nce", "softmax"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_eval_losses_equal_each_row_alone(kind, form, strategy):
    # Row b alone with num_true = n_b is the oracle with 1/n_b per label (ragged targets); a
    # row without labels: Σ_c softplus(ℓ_c) (NCE), 0 (softmax). Three chunks of classes.
    w, b, x, _, _ = data(9)
    split = ref.split_mod if strategy == "mod" else ref.split_div
    w_s, b_s = ([torch.from_numpy(s.copy()) for s in split(t, 3)] for t in (w, b))
    labels, extra = labels_of(form)
    got = EVAL[kind](w_s, b_s, labels, torch.from_numpy(x), C, T, strategy, chunk_size=2,
                     **extra)
    expected = EVAL_ORACLES[kind](w, b, ROWS, x)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("kind", ["nce", "softmax"])
def test_eval_gradients(kind):
    w, b, x, _, _ = (t.requires_grad_() for t in tensors(*data(10)))
    labels, extra = labels_of("mask")

    def fn(x, w, b):
        return EVAL[kind](w, b, labels, x, C, T, chunk_size=4, **extra)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    got = fn(x, w, b)
    logits = x @ w.T + b
    targets = torch.from_numpy(ref.scaled_one_hot(ROWS, C))
    if kind == "nce":
        expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    else:
        expected = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    torch.testing.assert_close(got, expected)
    for g, e in zip(torch.autograd.grad(got.sum(), (x, w, b)),
                    torch.autograd.grad(expected.sum(), (x, w, b)), strict=True):
        torch.testing.assert_close(g, e)


# --- Errors ------------------------------------------------------------------------------------

ALL = [*LOSSES.values(), torchnce.compute_sampled_logits]


def call(fn, labels, **kwargs):
    w, b, x, tc, sc = tensors(*data())
    if fn in EVAL.values():
        return fn(w, b, labels, x, C, T, **kwargs)
    return fn(w, b, labels, x, S, C, T, (torch.from_numpy(CANDS), tc, sc), **kwargs)


FNS = [*ALL, *EVAL.values()]


@pytest.mark.parametrize("fn", FNS)
def test_error_mask_dtype(fn):
    labels, _ = labels_of("mask")
    with pytest.raises(TypeError, match=r"^label_mask must be a bool tensor .*got torch.int64"):
        call(fn, labels, label_mask=MASK.long())


@pytest.mark.parametrize("fn", FNS)
def test_error_mask_shape(fn):
    labels, _ = labels_of("mask")
    with pytest.raises(ValueError, match=r"^label_mask must have the shape of labels \[5, 3\], "
                                         r"got \(5, 2\)"):
        call(fn, labels, label_mask=MASK[:, :2])


@pytest.mark.parametrize("fn", FNS)
def test_error_ragged_row_out_of_range(fn):
    rows = [torch.tensor(r) for r in ROWS]
    rows[3] = torch.tensor([5, 11])
    with pytest.raises(ValueError, match=r"^labels must hold ids in \[0, 11\).*out of range"):
        call(fn, rows)


def test_error_real_label_out_of_range_with_mask():
    labels, extra = labels_of("mask")
    labels[0, 0] = -2
    with pytest.raises(ValueError, match=r"^labels must hold ids in \[0, 11\)"):
        call(torchnce.nce_loss, labels, **extra)


def test_error_ragged_row_count_and_types():
    rows = [torch.tensor(r) for r in ROWS]
    with pytest.raises(ValueError, match=r"^labels must hold batch_size=5 rows when ragged"):
        call(torchnce.nce_loss, rows[:4])
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        call(torchnce.nce_loss, [r.float() for r in rows])
    with pytest.raises(ValueError, match=r"^labels must be a padded \[batch_size, num_true\]"):
        call(torchnce.nce_loss, rows, padding_id=-1)


def test_error_mask_and_padding_id_together():
    labels, _ = labels_of("mask")
    with pytest.raises(ValueError, match=r"^label_mask and padding_id must not both be given"):
        call(torchnce.sampled_softmax_loss, labels, label_mask=MASK, padding_id=-1)


def test_error_padding_id_not_an_int():
    labels, _ = labels_of("padding_id")
    with pytest.raises(TypeError, match=r"^padding_id must be an int"):
        call(torchnce.nce_eval_loss, labels, padding_id=-1.0)
