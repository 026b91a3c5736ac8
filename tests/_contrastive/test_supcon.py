"""supervised_contrastive_loss: SupCon's L_out with its multi-positive mean.

Oracles: the float64 loop reference ``retrieval_oracle.supcon``; info_nce_loss where the
docstring states the exact relation (distinct labels); pytorch-metric-learning's
``SupConLoss`` (skipped when it is not installed).
"""

from __future__ import annotations

import math

import pytest
import retrieval_oracle as oracle
import torch

import torchnce
from reference.contrastive import embeddings

N, D = 10, 4


def labels(seed: int = 0, classes: int = 3) -> torch.Tensor:
    y = torch.randint(0, classes, (N,), generator=torch.Generator().manual_seed(seed))
    y[-1] = 99  # one anchor without positives
    return y


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
@pytest.mark.parametrize("refs", [False, True])
def test_against_oracle(normalize, temperature, refs):
    z, y = embeddings(N, D, seed=1), labels()
    kw = {}
    if refs:
        kw = {"ref_embeddings": embeddings(7, D, seed=2),
              "ref_labels": torch.tensor([0, 1, 2, 0, 1, 5, 5])}
    loss = torchnce.supervised_contrastive_loss(z, y, temperature=temperature,
                                                normalize=normalize, reduction="none", **kw)
    want = oracle.supcon(z, y, temperature=temperature, normalize=normalize,
                         ref=kw.get("ref_embeddings"), ref_labels=kw.get("ref_labels"))
    torch.testing.assert_close(loss, torch.tensor(want, dtype=torch.float64))


def test_mean_is_over_anchors_with_positives():
    z, y = embeddings(N, D, seed=1), labels()
    rows = torchnce.supervised_contrastive_loss(z, y, reduction="none")
    has = torch.tensor([(y == v).sum() > 1 for v in y])
    assert not has.all()  # the case that makes "mean" differ from rows.mean()
    torch.testing.assert_close(torchnce.supervised_contrastive_loss(z, y), rows[has].mean())
    torch.testing.assert_close(torchnce.supervised_contrastive_loss(z, y, reduction="sum"),
                               rows.sum())


def test_no_positive_anywhere_is_zero_not_nan():
    loss = torchnce.supervised_contrastive_loss(embeddings(4, D), torch.arange(4))
    assert loss.item() == 0.0


def test_distinct_labels_with_references_is_info_nce():
    """P(i) = {k_i}, A(i) = every key: each row is info_nce_loss's in-batch row."""
    q, k, ids = embeddings(N, D, seed=1), embeddings(N, D, seed=2), torch.randperm(N) + 10
    loss = torchnce.supervised_contrastive_loss(q, ids, ref_embeddings=k, ref_labels=ids,
                                                temperature=0.2, reduction="none")
    torch.testing.assert_close(loss, torchnce.info_nce_loss(q, k, temperature=0.2,
                                                            reduction="none"))


def test_two_views_with_distinct_labels_is_info_nce_with_masked_negatives():
    """NT-Xent: anchor q_i's candidates are k_i and every other q_j, k_j."""
    q, k, ids = embeddings(N, D, seed=1), embeddings(N, D, seed=2), torch.arange(N)
    loss = torchnce.supervised_contrastive_loss(torch.cat([q, k]), torch.cat([ids, ids]),
                                                temperature=0.2, reduction="none")
    both = torch.cat([ids, ids])
    first = torchnce.info_nce_loss(q, k, torch.cat([k, q]), key_ids=ids, negative_ids=both,
                                   temperature=0.2, reduction="none")
    second = torchnce.info_nce_loss(k, q, torch.cat([q, k]), key_ids=ids, negative_ids=both,
                                    temperature=0.2, reduction="none")
    torch.testing.assert_close(loss, torch.cat([first, second]))


def test_tensor_temperature_and_gradcheck():
    z = embeddings(6, 3, seed=3).requires_grad_()
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2, 0])
    assert torch.autograd.gradcheck(
        lambda z, tau: torchnce.supervised_contrastive_loss(z, y, temperature=tau), (z, tau))


@pytest.mark.parametrize("refs", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_pytorch_metric_learning_parity(refs, seed):
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(16, 8, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    kw, ours = {}, {}
    if refs:
        ref, ref_y = torch.randn(12, 8, generator=g), torch.randint(0, 4, (12,), generator=g)
        kw, ours = {"ref_emb": ref, "ref_labels": ref_y}, {"ref_embeddings": ref,
                                                          "ref_labels": ref_y}
    want = losses.SupConLoss(temperature=0.07)(z, y, **kw)
    got = torchnce.supervised_contrastive_loss(z, y, temperature=0.07, **ours)
    # PML adds a 1e-45-ish small_val to |P(i)| and subtracts the row max: float32 rounding
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(N,), (N, 2, D), (0, D)])
def test_embeddings_not_a_matrix(shape):
    with pytest.raises(ValueError, match=r"^embeddings must be a non-empty \[B, D\] matrix"):
        torchnce.supervised_contrastive_loss(torch.zeros(shape, dtype=torch.float64),
                                             torch.zeros(shape[0], dtype=torch.long))


def test_references_of_another_dtype():
    with pytest.raises(TypeError, match=r"^ref_embeddings must have embeddings' dtype"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), labels(),
                                             ref_embeddings=embeddings(3, D).float(),
                                             ref_labels=torch.arange(3))


def test_labels_wrong_shape():
    with pytest.raises(ValueError, match=rf"^labels must be \[N\] = \[{N}\]"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), torch.arange(N - 1))


def test_labels_not_integers():
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), torch.zeros(N))


def test_references_need_their_labels():
    with pytest.raises(ValueError, match=r"^ref_labels must be given with ref_embeddings"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), labels(),
                                             ref_embeddings=embeddings(3, D))
    with pytest.raises(ValueError, match=r"^ref_embeddings must be given with ref_labels"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), labels(),
                                             ref_labels=torch.arange(3))


def test_references_of_another_dim():
    with pytest.raises(ValueError, match=rf"^ref_embeddings must be \[R, D\] = \[R, {D}\]"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), labels(),
                                             ref_embeddings=embeddings(3, D + 1),
                                             ref_labels=torch.arange(3))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
def test_bad_temperature(bad):
    with pytest.raises(ValueError, match=r"^temperature must be > 0"):
        torchnce.supervised_contrastive_loss(embeddings(N, D), labels(), temperature=bad)
