"""embedding_lookup: TF's EmbeddingLookupTest (docs/tf-semantics.md §8.4) ported, plus round trips.

Lookups are pure copies, so sharded results are compared bit for bit (``torch.equal``) with the
float64 oracle in ``reference.sampled``; only ``max_norm`` (a reduction and a division) uses
``assert_close``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchnce
from reference import sampled as ref


def embedding_params(num_shards: int, vocab: int, trailing: tuple[int, ...] = (10,), seed: int = 0):
    """TF's ``_EmbeddingParams``: shard i has vocab//P rows (+1 if i < vocab % P), values rand+1."""
    rng = np.random.RandomState(seed)
    shards = []
    for i in range(num_shards):
        rows = vocab // num_shards + (1 if i < vocab % num_shards else 0)
        shards.append(torch.from_numpy(rng.rand(rows, *trailing).astype(np.float32) + 1))
    return shards


def test_simple_sharded():
    # testSimpleSharded: 2 shards, vocab 4, ids [0, 0], default ("mod") strategy.
    params = embedding_params(2, 4)
    ids = torch.tensor([0, 0], dtype=torch.int32)
    got = torchnce.embedding_lookup(params, ids)
    assert got.shape == (2, 10)
    assert torch.equal(got, ref.expected_like(ref.embedding_lookup(params, ids), got))


@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_sharded_partitioning(strategy, id_dtype):
    # testSharded{Mod,Div}Partitioning{Int32,Int64}Ids: 5 uneven shards over vocab 13
    # (3, 3, 3, 2, 2 rows), 30 random ids so that some repeat.
    params = embedding_params(5, 13)
    ids = torch.from_numpy(np.random.RandomState(1).randint(13, size=30)).to(id_dtype)
    got = torchnce.embedding_lookup(params, ids, partition_strategy=strategy)
    assert got.shape == (30, 10)
    assert got.dtype == torch.float32
    assert torch.equal(got, ref.expected_like(ref.embedding_lookup(params, ids, strategy), got))


@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_strategies_address_different_rows(strategy):
    # Guards against a swapped mod/div: over 2 shards of 2 rows, id 1 is row 0 of shard 1 under
    # "mod" (1 % 2 = 1, 1 // 2 = 0) but row 1 of shard 0 under "div" (contiguous [0, 1], [2, 3]).
    params = [torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]])]
    got = torchnce.embedding_lookup(params, torch.tensor([1]), partition_strategy=strategy)
    expected = {"mod": 2.0, "div": 1.0}[strategy]
    assert got.tolist() == [[expected]]


def test_default_strategy_is_mod():
    params = embedding_params(3, 7)
    ids = torch.arange(7)
    assert torch.equal(
        torchnce.embedding_lookup(params, ids),
        torchnce.embedding_lookup(params, ids, partition_strategy="mod"),
    )


def test_unsharded_tensor_and_one_shard_list_equal_gather():
    table = embedding_params(1, 9)[0]
    ids = torch.tensor([[3, 0], [8, 3]])
    assert torch.equal(torchnce.embedding_lookup(table, ids), table[ids])
    assert torch.equal(torchnce.embedding_lookup([table], ids), table[ids])


def test_max_norm():
    # testMaxNorm: ‖[2]‖ = 2 > 1, so the row becomes (2·1)/max(2, 1) = 1 exactly.
    got = torchnce.embedding_lookup([torch.tensor([[2.0]])], torch.tensor([0]), max_norm=1.0)
    assert got.tolist() == [[1.0]]


def test_max_norm_nontrivial():
    # testMaxNormNontrivial: both rows have norm > 2 (√20, √10), so each becomes 2·row/‖row‖.
    table = torch.tensor([[2.0, 4.0], [3.0, 1.0]])
    got = torchnce.embedding_lookup([table], torch.tensor([0, 1]), max_norm=2.0)
    torch.testing.assert_close(got, 2 * table / table.norm(dim=1, keepdim=True))
    torch.testing.assert_close(
        got, ref.expected_like(ref.embedding_lookup(table, [0, 1], max_norm=2.0), got)
    )


def test_max_norm_leaves_short_rows():
    # ‖[0.3, 0.4]‖ = 0.5 < 1: (e·1)/max(0.5, 1) = e; a zero row stays zero (norm taken as 0).
    table = torch.tensor([[0.3, 0.4], [0.0, 0.0], [3.0, 4.0]])
    got = torchnce.embedding_lookup(table, torch.tensor([0, 1, 2]), max_norm=1.0)
    torch.testing.assert_close(got, torch.tensor([[0.3, 0.4], [0.0, 0.0], [0.6, 0.8]]))


def mod_split(params: torch.Tensor, procs: int) -> list[torch.Tensor]:
    """TF's testHigherRank split: shard p gathers rows p, p+procs, ... (the "mod" layout)."""
    return [params[p::procs] for p in range(procs)]


@pytest.mark.parametrize("params_shape", [(12,), (6, 3)])
@pytest.mark.parametrize("ids_shape", [(3, 2), (4, 3)])
@pytest.mark.parametrize("procs", [1, 2, 3])
def test_higher_rank(params_shape, ids_shape, procs):
    # testHigherRank: unsharded equals gather; mod-sharded equals unsharded, bit for bit.
    rng = np.random.RandomState(8)
    params = torch.from_numpy(rng.randn(*params_shape))
    ids = torch.from_numpy(rng.randint(params_shape[0], size=ids_shape))
    simple = torchnce.embedding_lookup(params, ids)
    assert torch.equal(simple, params[ids])
    assert torch.equal(torchnce.embedding_lookup(mod_split(params, procs), ids), simple)


@pytest.mark.parametrize("params_shape", [(12,), (6, 3), (6, 2, 3)])
@pytest.mark.parametrize("ids_shape", [(), (3,), (4, 3), (2, 3, 4)])
@pytest.mark.parametrize("procs", [1, 2, 3])
def test_higher_rank_max_norm(params_shape, ids_shape, procs):
    # testHigherRankMaxNorm: params 2·ones, max_norm 1 clips every element to params/‖·‖ over
    # its embedding axes (rank 0, 1 or 2); the sharded result equals the unsharded one exactly.
    params = 2 * np.ones(params_shape)
    axes = tuple(range(1, params.ndim))  # numpy, not torch: torch's sum(dim=()) sums everything
    params_norm = torch.from_numpy(params / np.sqrt(np.sum(params**2, axis=axes, keepdims=True)))
    params = torch.from_numpy(params)
    ids = torch.from_numpy(np.random.RandomState(8).randint(params_shape[0], size=ids_shape))
    simple = torchnce.embedding_lookup(params, ids, max_norm=1.0)
    assert simple.shape == ids.shape + params.shape[1:]
    torch.testing.assert_close(simple, params_norm[ids])
    sharded = torchnce.embedding_lookup(mod_split(params, procs), ids, max_norm=1.0)
    assert torch.equal(sharded, simple)


@pytest.mark.parametrize("strategy", ["mod", "div"])
@pytest.mark.parametrize("num_shards", [2, 3, 5])
def test_max_norm_sharded_matches_reference(strategy, num_shards):
    params = embedding_params(num_shards, 13, trailing=(4,))
    ids = torch.tensor([[0, 12, 5], [7, 7, 3]])
    got = torchnce.embedding_lookup(params, ids, partition_strategy=strategy, max_norm=1.5)
    expected = ref.embedding_lookup(params, ids, strategy, max_norm=1.5)
    torch.testing.assert_close(got, ref.expected_like(expected, got))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_output_keeps_params_dtype(dtype):
    params = [s.to(dtype) for s in embedding_params(3, 7)]
    got = torchnce.embedding_lookup(params, torch.tensor([6, 0]), partition_strategy="div")
    assert got.dtype == dtype
    assert torch.equal(got, torch.stack([params[2][1], params[0][0]]))  # div: [3, 2, 2] rows


@pytest.mark.parametrize("ids_shape", [(10,), (2, 5)])
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("strategy", ["mod", "div"])
def test_gradients(ids_shape, num_shards, strategy):
    # testGradientsEmbeddingLookup: vocab 9, 10 ids, trailing shape [2].
    params = [s.double().requires_grad_() for s in embedding_params(num_shards, 9, trailing=(2,))]
    ids = torch.from_numpy(np.random.RandomState(2).randint(9, size=ids_shape))

    def fn(*shards):
        return torchnce.embedding_lookup(list(shards), ids, partition_strategy=strategy)

    assert torch.autograd.gradcheck(fn, params)


@pytest.mark.parametrize("num_shards", [1, 3])
def test_gradients_with_computed_params(num_shards):
    # testGradientsEmbeddingLookupWithComputedParams: params squared before the lookup.
    params = [s.double().requires_grad_() for s in embedding_params(num_shards, 9, trailing=(2,))]
    ids = torch.tensor([4, 0, 8, 4, 2])

    def fn(*shards):
        return torchnce.embedding_lookup([s * s for s in shards], ids)

    assert torch.autograd.gradcheck(fn, params)


@pytest.mark.parametrize("num_shards", [1, 2])
def test_gradients_max_norm(num_shards):
    # Rows of norm ≈ 1.4–3.5 against max_norm 2: some are clipped, some pass through unchanged.
    rng = np.random.RandomState(3)
    table = torch.from_numpy(rng.rand(6, 3) * 2 + 0.5)
    params = [s.clone().requires_grad_() for s in mod_split(table, num_shards)]
    ids = torch.tensor([[0, 1, 5], [2, 2, 4]])

    def fn(*shards):
        return torchnce.embedding_lookup(list(shards), ids, max_norm=2.0)

    assert torch.autograd.gradcheck(fn, params)


@settings(max_examples=60, deadline=None)
@given(
    num_rows=st.integers(1, 40),
    num_shards=st.integers(1, 8),
    strategy=st.sampled_from(["mod", "div"]),
    data=st.data(),
)
def test_shard_round_trip(num_rows, num_shards, strategy, data):
    # Splitting a table into P shards of the strategy's layout and looking every id up through
    # the shards gives the table's own rows back, bit for bit ("div" needs N ≥ P).
    num_shards = min(num_shards, num_rows)
    table = torch.arange(num_rows * 2, dtype=torch.float32).reshape(num_rows, 2)
    split = ref.split_mod if strategy == "mod" else ref.split_div
    shards = split(table, num_shards)
    ids = torch.tensor(data.draw(st.lists(st.integers(0, num_rows - 1), min_size=1, max_size=20)))
    got = torchnce.embedding_lookup(shards, ids, partition_strategy=strategy)
    assert torch.equal(got, table[ids])
    assert torch.equal(got, ref.expected_like(ref.embedding_lookup(shards, ids, strategy), got))


@settings(max_examples=60, deadline=None)
@given(num_rows=st.integers(1, 60), num_shards=st.integers(1, 9))
def test_div_formula_matches_contiguous_layout(num_rows, num_shards):
    # The reference's two "div" descriptions agree: TF's threshold formula addresses exactly the
    # contiguous layout whose first N % P shards hold one extra row (and so does "mod").
    num_shards = min(num_shards, num_rows)
    rows = np.arange(num_rows)
    for i in range(num_rows):
        p, r = ref.div_shard_and_row(i, num_rows, num_shards)
        assert ref.split_div(rows, num_shards)[p][r] == i
        p, r = ref.mod_shard_and_row(i, num_shards)
        assert ref.split_mod(rows, num_shards)[p][r] == i


@pytest.mark.parametrize("num_shards", [1, 2])
def test_scalar_ids_into_rank_1_params(num_shards):
    # ids of rank 0 and params of rank 1: the result is a scalar (TF: lookup(arange(12.), 3) = 3).
    params = mod_split(torch.arange(12.0), num_shards)
    got = torchnce.embedding_lookup(params, torch.tensor(3))
    assert got.shape == ()
    assert got.item() == 3.0


@pytest.mark.parametrize("id_shape", [(0,), (0, 2)])
@pytest.mark.parametrize("num_shards", [1, 2])
def test_empty_ids(id_shape, num_shards):
    params = mod_split(torch.randn(6, 3), num_shards)
    got = torchnce.embedding_lookup(params, torch.zeros(id_shape, dtype=torch.int64))
    assert got.shape == (*id_shape, 3)


# --- fuzzing regressions ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("max_norm", [math.inf, 1e6, 1e40, 1e300])
def test_max_norm_beyond_every_row_leaves_rows(dtype, max_norm):
    # e·c / max(‖e‖, c) = e when ‖e‖ <= c: inf gave inf/inf = NaN rows, and a c outside the
    # dtype's range raised a RuntimeError from torch's clamp.
    params = torch.randn(5, 3).to(dtype)
    got = torchnce.embedding_lookup(params, torch.tensor([0, 4]), max_norm=max_norm)
    torch.testing.assert_close(got, params[[0, 4]])  # exact beyond the dtype's range


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_max_norm_low_precision_large_rows(dtype):
    # ‖e‖² of a float16 row of 300s (3.6e5) overflows float16: the norm is taken in float32,
    # so the row is clipped to norm 2 as in float32 instead of becoming 0.
    params = torch.full((2, 4), 300.0, dtype=dtype)
    got = torchnce.embedding_lookup(params, torch.tensor([1]), max_norm=2.0)
    want = torchnce.embedding_lookup(params.float(), torch.tensor([1]), max_norm=2.0)
    torch.testing.assert_close(got, want.to(dtype))
