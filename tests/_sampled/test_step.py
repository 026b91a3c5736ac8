"""GraphFreeStep, the app's entry point to the graph-free step: it validates labels and
negatives once per chunk, and equals the public losses (the oracle, through autograd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnce
from torchnce._sampled.step import GraphFreeStep

C, D, N, K = 9, 3, 6, 2


def values(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randint(C, (N, K), generator=gen), torch.rand(N, 1, generator=gen) + 0.1,
            torch.rand(N, K, generator=gen) + 0.1)


@pytest.mark.parametrize("loss", ["nce_loss", "sampled_softmax_loss", "negative_sampling_loss"])
def test_the_step_equals_the_public_loss_and_its_gradients(loss, gen):
    weights = torch.randn(C, D, generator=gen)
    labels, inputs = torch.randint(C, (N,), generator=gen), torch.randn(N, D, generator=gen)
    negatives = values(gen)
    step = GraphFreeStep(loss, weights)
    got = step(inputs, step.classes(labels, negatives).rows(slice(0, N)), scale=-0.5)
    w, x = weights.clone().requires_grad_(), inputs.clone().requires_grad_()
    expected = getattr(torchnce, loss)(w, None, labels, x, K, C, sampled_values=negatives)
    expected.sum().backward()
    torch.testing.assert_close(got.loss, expected.detach())
    torch.testing.assert_close(got.inputs, -0.5 * x.grad)
    torch.testing.assert_close(torch.zeros(C, D).index_add_(0, got.ids, got.rows), -0.5 * w.grad)


@pytest.mark.parametrize(("args", "error", "match"), [
    (("nce", torch.zeros(C, D)), ValueError, r"^loss must be one of 'nce_loss'"),
    (("nce_loss", [[0.0]]), TypeError, r"^weights must be a floating \[num_classes, dim\] tensor"),
    (("nce_loss", torch.zeros(C, D, dtype=torch.int64)), TypeError, r"^weights must be a floating"),
    (("nce_loss", torch.zeros(C)), ValueError, r"^weights must be a \[num_classes, dim\] tensor"),
])
def test_bad_construction(args, error, match):
    with pytest.raises(error, match=match):
        GraphFreeStep(*args)


def test_bad_chunks_and_batches(gen):
    step = GraphFreeStep("nce_loss", torch.zeros(C, D))
    labels, negatives = torch.randint(C, (N,), generator=gen), values(gen)
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        step.classes(labels.float(), negatives)
    with pytest.raises(ValueError, match=r"^labels must hold ids in \[0, 9\)"):
        step.classes(labels + C, negatives)
    with pytest.raises(ValueError, match=r"^sampled_values must hold per-example candidates"):
        step.classes(labels, (negatives[0][0], negatives[1], negatives[2][0]))
    classes = step.classes(labels, negatives)
    with pytest.raises(ValueError, match=r"^inputs must have one row per label \(6\), got 5"):
        step(torch.zeros(N - 1, D), classes, scale=1.0)
    with pytest.raises(ValueError, match=r"^inputs must have shape \[batch_size, embedding_dim="):
        step(torch.zeros(N, D + 1), classes, scale=1.0)


@pytest.mark.parametrize("flag", [1, 0, np.bool_(True)])
def test_tensorflow_style_truthy_hit_flags_are_accepted(flag, gen):
    weights, labels = torch.randn(C, D, generator=gen), torch.randint(C, (N,), generator=gen)
    negatives = (torch.randint(C, (K,), generator=gen), torch.ones(N, 1), torch.ones(K))
    inputs = torch.randn(N, D, generator=gen)
    loss = torchnce.nce_loss(weights, None, labels, inputs, K, C, sampled_values=negatives,
                             remove_accidental_hits=flag)
    expected = torchnce.nce_loss(weights, None, labels, inputs, K, C, sampled_values=negatives,
                                 remove_accidental_hits=bool(flag))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("flag", ["yes", None, 2])
def test_other_hit_flags_are_refused(flag, gen):
    weights, labels = torch.randn(C, D, generator=gen), torch.randint(C, (N,), generator=gen)
    negatives = (torch.randint(C, (K,), generator=gen), torch.ones(N, 1), torch.ones(K))
    with pytest.raises(TypeError, match=r"^remove_accidental_hits must be a bool"):
        torchnce.nce_loss(weights, None, labels, torch.randn(N, D), K, C,
                          sampled_values=negatives, remove_accidental_hits=flag)
