"""Every row of the error table in docs/core-api.md, with the start of its message pinned.

``pytest.raises(ValueError)`` / ``(TypeError)`` also proves the error does not surface as an
IndexError or RuntimeError from inside torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchnce

C, D, B, T, S = 6, 3, 2, 2, 3
LOSS_FUNCTIONS = {
    "nce_loss": torchnce.nce_loss,
    "sampled_softmax_loss": torchnce.sampled_softmax_loss,
    "compute_sampled_logits": torchnce.compute_sampled_logits,
}


def good():
    """A valid call's arguments, as a dict that each test breaks in one place."""
    return {
        "weights": torch.randn(C, D),
        "biases": torch.randn(C),
        "labels": torch.tensor([[0, 1], [2, 5]]),
        "inputs": torch.randn(B, D),
        "num_sampled": S,
        "num_classes": C,
        "num_true": T,
        "sampled_values": (torch.tensor([1, 3, 4]), torch.full((B, T), 0.5), torch.full((S,), 0.5)),
    }


def call(fn_name, **overrides):
    return LOSS_FUNCTIONS[fn_name](**{**good(), **overrides})


fn_names = pytest.mark.parametrize("fn_name", list(LOSS_FUNCTIONS))


@fn_names
def test_good_call_passes(fn_name):
    # The baseline every other test breaks in exactly one place.
    call(fn_name)
    call(fn_name, sampled_values=None)


# --- labels ---------------------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_float_labels(fn_name, dtype):
    with pytest.raises(TypeError, match=r"^labels must be an integer tensor"):
        call(fn_name, labels=torch.tensor([[0, 1], [2, 5]], dtype=dtype))


@fn_names
@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([[0, 1, 2], [2, 5, 0]]),  # T + 1 columns
        torch.tensor([[0], [2]]),  # T - 1 columns
        torch.tensor([[0, 1], [2, 5], [3, 3]]),  # batch 3 against inputs' 2
        torch.tensor([0, 1]),  # rank 1 while num_true is 2
        torch.tensor([[[0, 1], [2, 5]]]),  # rank 3
        torch.tensor(1),  # rank 0
    ],
)
def test_labels_wrong_shape(fn_name, labels):
    with pytest.raises(ValueError, match=r"^labels must"):
        call(fn_name, labels=labels)


@fn_names
def test_rank_1_labels_wrong_batch(fn_name):
    with pytest.raises(ValueError, match=r"^labels must"):
        call(
            fn_name,
            labels=torch.tensor([0, 1, 2]),
            num_true=1,
            sampled_values=(
                torch.tensor([1, 3, 4]),
                torch.full((B, 1), 0.5),
                torch.full((S,), 0.5),
            ),
        )


@fn_names
@pytest.mark.parametrize("bad", [C, C + 10, -1])
@pytest.mark.parametrize("sampler", ["explicit", "default"])
def test_labels_out_of_range(fn_name, bad, sampler):
    extra = {"sampled_values": None} if sampler == "default" else {}
    with pytest.raises(ValueError, match=rf"^labels must hold ids in \[0, {C}\)") as info:
        call(fn_name, labels=torch.tensor([[0, 1], [2, bad]]), **extra)
    assert "out of range" in str(info.value)


# --- inputs ---------------------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize(
    "inputs", [torch.ones(B, D, dtype=torch.int64), torch.ones(B, D, dtype=torch.bool)]
)
def test_inputs_not_floating(fn_name, inputs):
    with pytest.raises(TypeError, match=r"^inputs must"):
        call(fn_name, inputs=inputs)


@fn_names
def test_inputs_not_a_tensor(fn_name):
    with pytest.raises(TypeError, match=r"^inputs must"):
        call(fn_name, inputs="hidden")


@fn_names
@pytest.mark.parametrize("inputs", [torch.randn(D), torch.randn(B, 1, D), torch.tensor(1.0)])
def test_inputs_not_2d(fn_name, inputs):
    with pytest.raises(ValueError, match=r"^inputs must"):
        call(fn_name, inputs=inputs)


@fn_names
@pytest.mark.parametrize("sharded", [False, True])
def test_inputs_dim_differs_from_weights(fn_name, sharded):
    weights = [torch.randn(3, D), torch.randn(3, D)] if sharded else torch.randn(C, D)
    with pytest.raises(ValueError, match=r"^inputs must"):
        call(fn_name, weights=weights, inputs=torch.randn(B, D + 1))


# --- weights / params -----------------------------------------------------------------------


@fn_names
def test_shards_with_different_dims(fn_name):
    with pytest.raises(ValueError, match=r"^weights must"):
        call(fn_name, weights=[torch.randn(3, D), torch.randn(3, D + 1)])


@fn_names
def test_shards_with_different_dtypes(fn_name):
    with pytest.raises(TypeError, match=r"^weights must"):
        call(fn_name, weights=[torch.randn(3, D), torch.randn(3, D, dtype=torch.float64)])


@fn_names
def test_empty_shard_list(fn_name):
    with pytest.raises(ValueError, match=r"^weights must"):
        call(fn_name, weights=[])


@fn_names
@pytest.mark.parametrize(
    "weights",
    [
        torch.randn(C - 1, D),
        torch.randn(C + 1, D),
        [torch.randn(3, D), torch.randn(2, D)],
        [torch.randn(3, D), torch.randn(3, D), torch.randn(1, D)],
    ],
)
def test_weight_rows_differ_from_num_classes(fn_name, weights):
    with pytest.raises(ValueError, match=r"^weights must"):
        call(fn_name, weights=weights)


@fn_names
def test_div_with_fewer_rows_than_shards(fn_name):
    # 2 classes over 3 shards: N // P = 0 rows per shard, TF's "Integer division by zero".
    sv = (torch.tensor([0]), torch.full((B, 1), 0.5), torch.full((1,), 0.5))
    with pytest.raises(ValueError, match=r"^weights must"):
        call(
            fn_name,
            weights=[torch.randn(1, D), torch.randn(1, D), torch.randn(0, D)],
            biases=[torch.randn(1), torch.randn(1), torch.randn(0)],
            labels=torch.tensor([[0], [1]]),
            num_true=1,
            num_classes=2,
            num_sampled=1,
            sampled_values=sv,
            partition_strategy="div",
        )


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ([], ValueError),
        ([torch.randn(3, 2), torch.randn(3, 3)], ValueError),
        ([torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64)], TypeError),
    ],
)
def test_embedding_lookup_bad_params(params, error):
    with pytest.raises(error, match=r"^params must"):
        torchnce.embedding_lookup(params, torch.tensor([0, 1]))


def test_embedding_lookup_params_none():
    # TF: ValueError "params must be specified".
    with pytest.raises(ValueError, match=r"^params must"):
        torchnce.embedding_lookup(None, torch.tensor([0]))


def test_embedding_lookup_div_with_fewer_rows_than_shards():
    with pytest.raises(ValueError, match=r"^params must"):
        torchnce.embedding_lookup(
            [torch.randn(1, 2), torch.randn(1, 2), torch.randn(0, 2)],
            torch.tensor([0]),
            partition_strategy="div",
        )


# --- biases ---------------------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize(
    "biases",
    [torch.randn(C - 1), torch.randn(C + 1), [torch.randn(3), torch.randn(2)]],
)
def test_bias_length_differs_from_num_classes(fn_name, biases):
    with pytest.raises(ValueError, match=r"^biases must"):
        call(fn_name, biases=biases)


# --- integer arguments ----------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize("value", [0, -1])
def test_num_sampled_below_1(fn_name, value):
    with pytest.raises(ValueError, match=r"^num_sampled must"):
        call(fn_name, num_sampled=value, sampled_values=None)


@fn_names
@pytest.mark.parametrize("value", [0, -1])
def test_num_classes_below_1(fn_name, value):
    with pytest.raises(ValueError, match=r"^num_classes must"):
        call(fn_name, num_classes=value)


@fn_names
@pytest.mark.parametrize("value", [0, -1])
def test_num_true_below_1(fn_name, value):
    with pytest.raises(ValueError, match=r"^num_true must"):
        call(fn_name, num_true=value)


@fn_names
def test_num_sampled_above_num_classes_with_default_sampler(fn_name):
    with pytest.raises(ValueError, match=r"^num_sampled must") as info:
        call(fn_name, num_sampled=C + 1, sampled_values=None)
    assert "Sampler's range is too small" in str(info.value)


def test_sampler_num_sampled_above_range_max():
    with pytest.raises(ValueError, match=r"^num_sampled must") as info:
        torchnce.log_uniform_candidate_sampler(torch.tensor([[0]]), 1, 5, True, 4)
    assert "Sampler's range is too small" in str(info.value)


# --- partition_strategy ---------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("strategy", ["MOD", "modulo", "", None])
def test_unknown_partition_strategy(fn_name, sharded, strategy):
    weights = [torch.randn(3, D), torch.randn(3, D)] if sharded else torch.randn(C, D)
    with pytest.raises(ValueError, match=r"^partition_strategy must be one of"):
        call(fn_name, weights=weights, partition_strategy=strategy)


@pytest.mark.parametrize("sharded", [False, True])
def test_embedding_lookup_unknown_partition_strategy(sharded):
    params = [torch.randn(3, 2), torch.randn(3, 2)] if sharded else torch.randn(6, 2)
    with pytest.raises(ValueError, match=r"^partition_strategy must be one of"):
        torchnce.embedding_lookup(params, torch.tensor([0]), partition_strategy="hash")


# --- sampled_values -------------------------------------------------------------------------


def counts(batch=B, num_true=T, num_sampled=S):
    return torch.full((batch, num_true), 0.5), torch.full((num_sampled,), 0.5)


MALFORMED = {
    "two items": lambda: (torch.tensor([1, 3, 4]), counts()[0]),
    "four items": lambda: (torch.tensor([1, 3, 4]), *counts(), torch.zeros(1)),
    "a tensor": lambda: torch.tensor([1, 3, 4]),
    "ids rank 2": lambda: (torch.tensor([[1, 3, 4]]), *counts()),
    "ids rank 0": lambda: (torch.tensor(1), counts()[0], torch.full((1,), 0.5)),
    "sampled count too short": lambda: (
        torch.tensor([1, 3, 4]),
        counts()[0],
        torch.full((2,), 0.5),
    ),
    "sampled count rank 2": lambda: (torch.tensor([1, 3, 4]), counts()[0], torch.full((1, 3), 0.5)),
    "true count wrong batch": lambda: (torch.tensor([1, 3, 4]), *counts(batch=B + 1)),
    "true count wrong num_true": lambda: (torch.tensor([1, 3, 4]), *counts(num_true=T + 1)),
    "id equal to num_classes": lambda: (torch.tensor([1, C, 4]), *counts()),
    "negative id": lambda: (torch.tensor([1, -1, 4]), *counts()),
}


@fn_names
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_sampled_values(fn_name, case):
    with pytest.raises((ValueError, TypeError), match=r"^sampled_values must"):
        call(fn_name, sampled_values=MALFORMED[case]())


@fn_names
def test_sampled_values_float_ids(fn_name):
    with pytest.raises(TypeError, match=r"^sampled_values must"):
        call(fn_name, sampled_values=(torch.tensor([1.0, 3.0, 4.0]), *counts()))


@fn_names
def test_hit_position_beyond_num_sampled(fn_name):
    # 4 ids while num_sampled is 3, with a hit at position 3: TF's SparseToDense raises
    # "Indices are not valid"; it must not be an IndexError from torch.
    sv = (torch.tensor([1, 3, 4, 0]), torch.full((B, T), 0.5), torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r"^(sampled_values|num_sampled) must"):
        call(fn_name, sampled_values=sv, remove_accidental_hits=True)


# --- seed / generator / max_norm ------------------------------------------------------------


@fn_names
def test_seed_and_generator_together(fn_name):
    with pytest.raises(ValueError, match=r"^seed and generator"):
        call(fn_name, sampled_values=None, seed=1, generator=torch.Generator().manual_seed(1))


def test_sampler_seed_and_generator_together():
    with pytest.raises(ValueError, match=r"^seed and generator"):
        torchnce.log_uniform_candidate_sampler(
            torch.tensor([[0]]), 1, 2, True, 4, seed=1, generator=torch.Generator()
        )


@pytest.mark.parametrize("max_norm", [0.0, -1.0, 0])
def test_max_norm_not_positive(max_norm):
    with pytest.raises(ValueError, match=r"^max_norm must"):
        torchnce.embedding_lookup(torch.randn(3, 2), torch.tensor([0]), max_norm=max_norm)


def test_numpy_sampled_values_with_bad_shape():
    # The same checks apply when sampled_values are numpy arrays rather than tensors.
    sv = (np.array([[1, 3, 4]]), np.full((B, T), 0.5), np.full((S,), 0.5))
    with pytest.raises(ValueError, match=r"^sampled_values must"):
        call("nce_loss", sampled_values=sv)


@fn_names
@pytest.mark.parametrize(
    ("strategy", "sizes"),
    [("div", [2, 4]), ("mod", [2, 4]), ("div", [2, 2, 2, 0]), ("mod", [1, 2, 3])],
)
def test_shards_off_the_canonical_layout(fn_name, strategy, sizes):
    # 6 rows over P shards must be split [ceil(6/P) ...] ("div") or ceil((6 - p)/P) ("mod");
    # TF silently mis-addresses rows or fails inside the gather here.
    weights = [torch.randn(n, D) for n in sizes]
    biases = [torch.randn(n) for n in sizes]
    with pytest.raises(ValueError, match=r"^weights must"):
        call(fn_name, weights=weights, biases=biases, partition_strategy=strategy)


@pytest.mark.parametrize("strategy", ["div", "mod"])
def test_embedding_lookup_shards_off_the_canonical_layout(strategy):
    with pytest.raises(ValueError, match=r"^params must"):
        torchnce.embedding_lookup(
            [torch.randn(2, 2), torch.randn(4, 2)], torch.tensor([5]), partition_strategy=strategy
        )


# --- fuzzing regressions ---------------------------------------------------------------------


@fn_names
@pytest.mark.parametrize("which", ["true", "sampled"])
@pytest.mark.parametrize("count", [0.0, -0.5, float("nan"), float("inf")])
def test_unusable_expected_counts(fn_name, which, count):
    # log Q of such a count is -inf, NaN or +inf: the loss was NaN/inf, or a silent 0.
    labels, true_count, sampled_count = good()["sampled_values"]
    if which == "true":
        true_count = true_count.clone().index_fill_(1, torch.tensor([1]), count)
    else:
        sampled_count = sampled_count.clone().index_fill_(0, torch.tensor([2]), count)
    with pytest.raises(ValueError, match=r"^sampled_values must hold finite, positive expected "
                                         rf"counts \({which}_expected_count\)"):
        call(fn_name, sampled_values=(labels, true_count, sampled_count))


def test_expected_counts_not_used_are_not_read():
    # negative_sampling_loss and subtract_log_q=False take no log of the counts: a count of 0
    # (e.g. a reserved id's) is fine there.
    sv = (torch.tensor([1, 3, 4]), torch.zeros(B, T), torch.zeros(S))
    args = {k: v for k, v in good().items() if k != "sampled_values"}
    assert torch.isfinite(torchnce.negative_sampling_loss(**args, sampled_values=sv)).all()
    logits, _ = torchnce.compute_sampled_logits(**args, sampled_values=sv, subtract_log_q=False)
    assert torch.isfinite(logits).all()


def test_padded_label_counts_are_not_read():
    # A padded slot's column is replaced whatever its count: a 0 there is not an error.
    args = {**good(), "labels": torch.tensor([[0, -1], [2, 5]]), "padding_id": -1}
    labels, true_count, sampled_count = args.pop("sampled_values")
    true_count = torch.tensor([[0.5, 0.0], [0.5, 0.5]])
    loss = torchnce.nce_loss(**args, sampled_values=(labels, true_count, sampled_count))
    assert torch.isfinite(loss).all()


BAD_BOOLS = pytest.mark.parametrize("value", ["yes", None, 2, 0.0])


@fn_names
@pytest.mark.parametrize("arg", ["remove_accidental_hits", "sparse_grad"])
@BAD_BOOLS
def test_bool_arguments_refuse_non_bools(fn_name, arg, value):
    with pytest.raises(TypeError, match=rf"^{arg} must be a bool"):
        call(fn_name, **{arg: value})


@BAD_BOOLS
def test_subtract_log_q_refuses_non_bools(value):
    with pytest.raises(TypeError, match=r"^subtract_log_q must be a bool"):
        call("compute_sampled_logits", subtract_log_q=value)


@BAD_BOOLS
def test_embedding_lookup_sparse_grad_refuses_non_bools(value):
    with pytest.raises(TypeError, match=r"^sparse_grad must be a bool"):
        torchnce.embedding_lookup(torch.randn(4, 2), torch.tensor([1]), sparse_grad=value)


@pytest.mark.parametrize("max_norm", ["1", True, [1.0]])
def test_embedding_lookup_max_norm_type(max_norm):
    with pytest.raises(TypeError, match=r"^max_norm must be a positive number or None"):
        torchnce.embedding_lookup(torch.randn(4, 2), torch.tensor([1]), max_norm=max_norm)


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("nan"), float("-inf")])
def test_embedding_lookup_max_norm_value(max_norm):
    with pytest.raises(ValueError, match=r"^max_norm must be a positive number or None"):
        torchnce.embedding_lookup(torch.randn(4, 2), torch.tensor([1]), max_norm=max_norm)


@fn_names
@pytest.mark.parametrize("seed", ["1", 1.5])
def test_seed_checked_with_given_sampled_values(fn_name, seed):
    # The default sampler is not called, but a bad seed is still an error, not ignored.
    with pytest.raises(TypeError, match=r"^seed must be an int"):
        call(fn_name, seed=seed)
