"""compute_accidental_hits (docs/tf-semantics.md §6.10, §8.2) and the hit masking of §2 step 12."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchnce
from reference import sampled as ref

# TF's candidate_sampler_ops_test constants (§8.2).
TRUE_LABELS = [[1, 2], [0, 4], [3, 3]]


def test_semantics_example():
    # §6.10, verified on TF: value → last position {3: 2, 1: 1, 0: 3}; rows scanned row-major,
    # so (0, label 1 → 1), (1, label 0 → 3), (2, label 3 → 2) twice (the duplicate label).
    indices, ids, weights = torchnce.compute_accidental_hits(
        torch.tensor(TRUE_LABELS), torch.tensor([3, 1, 3, 0]), num_true=2
    )
    assert indices.tolist() == [0, 1, 2, 2]
    assert ids.tolist() == [1, 3, 2, 2]
    assert weights.tolist() == [-ref.FLT_MAX] * 4


def test_output_dtypes_and_ranks():
    indices, ids, weights = torchnce.compute_accidental_hits(
        torch.tensor(TRUE_LABELS), torch.tensor([3, 1, 3, 0]), 2
    )
    assert (indices.dtype, ids.dtype, weights.dtype) == (torch.int32, torch.int64, torch.float32)
    assert indices.dim() == ids.dim() == weights.dim() == 1


def test_accidental_hits_all_sampler():
    # testAccidentalHits: the all sampler draws [0, ..., RANGE-1] (RANGE = 5), so position ==
    # value and every triple's id must be one of its row's labels, with weight < -1e37.
    sampled = torch.arange(5)
    indices, ids, weights = torchnce.compute_accidental_hits(torch.tensor(TRUE_LABELS), sampled, 2)
    assert indices.dim() == ids.dim() == weights.dim() == 1
    assert len(indices) == len(ids) == len(weights) == 6  # every one of the 6 labels is in [0, 5)
    for index, position, weight in zip(
        indices.tolist(), ids.tolist(), weights.tolist(), strict=True
    ):
        assert position in TRUE_LABELS[index]
        assert weight < -1e37


def test_no_hits_gives_empty_outputs():
    indices, ids, weights = torchnce.compute_accidental_hits(
        torch.tensor([[5, 6]]), torch.tensor([0, 1, 2]), 2
    )
    assert indices.shape == ids.shape == weights.shape == (0,)
    assert (indices.dtype, ids.dtype, weights.dtype) == (torch.int32, torch.int64, torch.float32)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_dtypes_accepted(dtype):
    indices, ids, _ = torchnce.compute_accidental_hits(
        torch.tensor(TRUE_LABELS, dtype=dtype), torch.tensor([3, 1, 3, 0], dtype=dtype), 2
    )
    assert indices.tolist() == [0, 1, 2, 2]
    assert ids.tolist() == [1, 3, 2, 2]


def test_seed_and_name_are_accepted_and_unused():
    args = (torch.tensor(TRUE_LABELS), torch.tensor([3, 1, 3, 0]), 2)
    plain = torchnce.compute_accidental_hits(*args)
    seeded = torchnce.compute_accidental_hits(*args, seed=123, name="hits")
    assert all(torch.equal(a, b) for a, b in zip(plain, seeded, strict=True))


ids_strategy = st.integers(0, 7)  # a small class range so that hits and duplicates are common


@settings(max_examples=80, deadline=None)
@given(
    true_classes=st.integers(1, 4).flatmap(
        lambda t: st.lists(st.lists(ids_strategy, min_size=t, max_size=t), min_size=1, max_size=5)
    ),
    sampled=st.lists(ids_strategy, min_size=1, max_size=8),
)
def test_hits_match_reference(true_classes, sampled):
    # Random labels and samples with duplicates on both sides: triples, their order (row-major)
    # and the last-duplicate rule all match the oracle exactly.
    num_true = len(true_classes[0])
    indices, ids, weights = torchnce.compute_accidental_hits(
        torch.tensor(true_classes), torch.tensor(sampled), num_true
    )
    exp_indices, exp_ids, exp_weights = ref.accidental_hits(true_classes, sampled)
    assert indices.tolist() == exp_indices
    assert ids.tolist() == exp_ids
    assert weights.tolist() == exp_weights


@settings(max_examples=60, deadline=None)
@given(
    num_true=st.integers(1, 3),
    batch=st.integers(1, 4),
    num_classes=st.integers(2, 8),
    data=st.data(),
)
def test_hit_masking_rule(num_true, batch, num_classes, data):
    # §2 step 12: exactly the (row, last-duplicate position) pairs of §6.10 become -FLT_MAX
    # (x - FLT_MAX rounds to -FLT_MAX in float32 for moderate x, and so does a further - log q);
    # every other sampled logit and every true logit is unchanged.
    ids = st.integers(0, num_classes - 1)
    labels = data.draw(
        st.lists(
            st.lists(ids, min_size=num_true, max_size=num_true), min_size=batch, max_size=batch
        )
    )
    sampled = data.draw(st.lists(ids, min_size=1, max_size=6))
    gen = torch.Generator().manual_seed(len(sampled) * 100 + num_classes)
    weights = torch.randn(num_classes, 3, generator=gen)
    biases = torch.randn(num_classes, generator=gen)
    inputs = torch.randn(batch, 3, generator=gen)
    counts = (
        torch.tensor(sampled),
        torch.full((batch, num_true), 0.5),
        torch.full((len(sampled),), 0.25),
    )
    args = (
        weights,
        biases,
        torch.tensor(labels),
        inputs,
        len(sampled),
        num_classes,
        num_true,
        counts,
    )
    masked, _ = torchnce.compute_sampled_logits(*args, remove_accidental_hits=True)
    plain, _ = torchnce.compute_sampled_logits(*args, remove_accidental_hits=False)
    hit = torch.zeros(batch, len(sampled), dtype=torch.bool)
    for i, pos, _w in zip(*ref.accidental_hits(labels, sampled), strict=True):
        hit[i, pos] = True
    sampled_masked, sampled_plain = masked[:, num_true:], plain[:, num_true:]
    assert torch.equal(masked[:, :num_true], plain[:, :num_true])
    assert torch.all(sampled_masked[hit] == -ref.FLT_MAX)
    assert torch.equal(sampled_masked[~hit], sampled_plain[~hit])
