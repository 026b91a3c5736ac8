"""Argument descriptions shared by several docstrings, written once.

A docstring line ``name: {key}`` (alone on its line) is filled in with ``ARGS[key]`` by
:func:`fill_args`, wrapped and indented like the line (``torch.nn.functional`` shares its
argument text the same way). Braces that are not a whole line's ``{key}`` are left alone, so
LaTeX in ``.. math::`` blocks is safe.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=Callable[..., object])

ARGS: dict[str, str] = {
    # The TensorFlow-shaped sampled losses.
    "weights": "``[C, D]`` tensor or a Python list of shards laid out by "
               "``partition_strategy``.",
    "biases": "``[C]`` tensor or list of shards; None for no bias (a PyTorch extension).",
    "labels": "integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1), ids in ``[0, C)``; or "
              "ragged: a Python list of B 1-D integer tensors, row ``b`` holding its ``n_b`` "
              "labels (then T is the longest row and ``num_true`` is ignored).",
    "inputs": "``[B, D]`` floating; its dtype is the compute dtype.",
    "num_classes": "C.",
    "num_true": "T, true classes per example.",
    "sampled_values": "a ``(sampled_candidates, true_expected_count, sampled_expected_count)`` "
                      "triple of tensors, lists or arrays; None draws "
                      "``log_uniform_candidate_sampler(labels, T, S, unique=True, "
                      "range_max=C)``. Candidates ``[B, S]`` (counts broadcastable to "
                      "``[B, T]`` and ``[B, S]``) are per-example negatives: row ``i`` is "
                      "scored against its own ``S`` candidates.",
    "partition_strategy": "``\"mod\"`` or ``\"div\"``, the shard layout of weights and biases.",
    "name": "accepted for TensorFlow compatibility and ignored.",
    "seed": "seed of the default sampler; the same seed draws the same candidates, eager and "
            "under ``torch.compile`` (a counter-based stream, docs/gpu-and-compile.md).",
    "generator": "a ``torch.Generator`` for the default sampler (exclusive with ``seed``); "
                 "torch 2.13's ``torch.compile`` cannot trace it (``fullgraph=True`` fails).",
    "sparse_grad": "sparse gradients for weights and biases over the looked-up rows only "
                   "(TensorFlow's IndexedSlices); works with ``torch.optim.SGD``, "
                   "``Adagrad`` and ``SparseAdam``.",
    "per_example_negatives": "the default sampler draws ``S`` unique candidates for every row "
                             "independently, each row as TensorFlow's sampler would for that "
                             "row alone.",
    "label_mask": "bool ``[B, T]``, True on the real labels of padded ``labels``: row ``b`` is "
                  "computed as if alone with its ``n_b`` real labels (targets ``1/n_b``).",
    "padding_id": "the id marking padding in ``labels`` (any int, e.g. -1); exclusive with "
                  "``label_mask``.",
    # The output-layer modules.
    "layer_num_classes": "C.",
    "embedding_dim": "D, the width of ``inputs``.",
    "layer_num_sampled": "S, candidates drawn per batch (shared by its rows) or per row.",
    "layer_num_true": "T, true classes per example.",
    "sampler": "a :class:`torchnce.CandidateSampler` over ``[0, C)``; None builds "
               "``LogUniformSampler(num_classes)``. Samples are drawn with ``unique=True``. "
               "Its state (e.g. a learned sampler's counts) is part of ``state_dict`` and it "
               "moves with ``.to()`` (and to ``device`` when given: a sampler passed in is "
               "moved in place).",
    "bias": "learn a bias per class (initialised to zero).",
    "num_shards": "P, split ``weight`` and ``bias`` into a ``ParameterList`` of P shards laid "
                  "out as TensorFlow's partitioned variables.",
    "layer_partition_strategy": "``\"mod\"`` or ``\"div\"``, the shard layout.",
    "layer_sparse_grad": "sparse gradients for the sampled loss (the full loss is always "
                         "dense).",
    "reduction": "``\"mean\"`` (default), ``\"sum\"`` or ``\"none\"`` over the batch.",
    "device": "where to create the parameters (and to move the sampler).",
    "dtype": "their floating dtype.",
    "update": "a :class:`torchnce.RowUpdate` (``\"sgd\"``, ``\"adagrad\"``, "
              "``\"rowwise_adagrad\"``) applied to the touched weight and bias rows inside each "
              "sampled backward (optimizer in backward: no ``weight.grad``/``bias.grad`` is "
              "built); None (default) leaves the parameters to an optimizer.",
    "layer_per_example_negatives": "draw ``S`` unique candidates for every row independently "
                                   "(each row as the sampler's unique draw for that row "
                                   "alone) instead of once per batch.",
}

_SLOT = re.compile(r"^(?P<indent>[ ]*)(?P<name>\w+): \{(?P<key>\w+)\}$", re.M)
_WIDTH = 96


def fill_args(obj: T) -> T:
    """Fill the ``name: {key}`` lines of ``obj``'s docstring from :data:`ARGS`."""
    doc = obj.__doc__ or ""

    def fill(match: re.Match[str]) -> str:
        indent, name = match["indent"], match["name"]
        return textwrap.fill(f"{name}: {ARGS[match['key']]}", _WIDTH, initial_indent=indent,
                             subsequent_indent=indent + "    ", break_on_hyphens=False)

    obj.__doc__ = _SLOT.sub(fill, doc)
    return obj
