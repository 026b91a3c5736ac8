"""Exact evaluation over all classes: full logits, the full sigmoid and softmax losses, top-k.

These are the evaluations TensorFlow's documentation pairs with ``nce_loss`` and
``sampled_softmax_loss``, in global class order for sharded tables under either partition
strategy, and in memory bounded by a chunk of classes (see ``_chunked``).
"""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import check_choice, check_ids_in_range, check_int
from torchnce._common.labels import TrueLabels, true_labels, true_targets
from torchnce._common.lookup import as_shards, check_layout
from torchnce._common.types import STRATEGIES, LossKind, PartitionStrategy, Table
from torchnce._exact.chunked import (
    Layout,
    align_biases,
    chunked_loss,
    chunked_top_k,
    default_chunk_size,
)
from torchnce._sampled.logits import linear_logits, work_dtype
from torchnce._sampled.problem import check_inputs, check_table


def _check_tables(
    weights: Any, biases: Any, inputs: Any, strategy: Any, num_classes: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor] | None, Layout]:
    """Validated ``(inputs, weight shards, bias shards split like them, layout)``."""
    strategy = check_choice("partition_strategy", strategy, STRATEGIES)
    inputs = check_inputs(inputs)
    if num_classes is None:
        num_classes = check_layout("weights", as_shards("weights", weights, matrix=True), strategy)
    w = check_table("weights", weights, num_classes, strategy, inputs)
    if w[0].shape[1] != inputs.shape[1]:
        raise ValueError(f"inputs must have dim = the weights' row width {w[0].shape[1]}, "
                         f"got shape {tuple(inputs.shape)}")
    layout = Layout.of(w, strategy)
    if biases is None:
        return inputs, w, None, layout
    b = check_table("biases", biases, num_classes, strategy, inputs)
    return inputs, w, align_biases(b, layout, inputs.device), layout


def _check_chunk_size(chunk_size: Any, batch: int) -> int:
    if chunk_size is None:
        return default_chunk_size(batch)
    return check_int("chunk_size", chunk_size, minimum=1)


def full_logits(
    weights: Table,
    biases: Table | None,
    inputs: torch.Tensor,
    partition_strategy: PartitionStrategy = "mod",
) -> torch.Tensor:
    r"""All ``[B, C]`` logits, in global class order, for a table or a list of shards.

    .. math::

        \ell_{ic} = x_i \cdot W_c + b_c, \qquad c = 0, \dots, C - 1

    where row ``c`` of ``W`` is found in the shards as :func:`embedding_lookup` finds it, so
    the columns are in global class order under "mod" as well as "div".

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias.
        inputs: ``[B, D]`` floating; its dtype is the compute dtype.
        partition_strategy: ``"mod"`` or ``"div"``.

    Returns:
        ``[B, C]`` logits in the dtype of ``inputs``, differentiable.

    Raises:
        TypeError: non-floating inputs or tables.
        ValueError: inconsistent shapes, shards off the layout, an unknown strategy.

    Note:
        Unlike TensorFlow's recipe ``matmul(inputs, transpose(weights))``, which only agrees
        with a sharded training loss under "div", the columns here follow the global ids
        under both strategies. This materialises ``[B, C]``; for losses and top-k at large C
        use :func:`nce_eval_loss`, :func:`sampled_softmax_eval_loss` and :func:`top_k`.

    Examples:
        >>> import torch, torchnce
        >>> shards = [torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]])]  # "mod": ids 0, 2 | 1
        >>> torchnce.full_logits(shards, None, torch.ones(1, 1)).tolist()
        [[0.0, 1.0, 2.0]]
    """
    inputs, w, b, layout = _check_tables(weights, biases, inputs, partition_strategy)
    dtype = inputs.dtype
    parts = [
        linear_logits(inputs, shard.to(dtype), None if b is None else b[p].to(dtype))
        for p, shard in enumerate(w)
    ]
    if len(parts) == 1:
        return parts[0]
    logits = torch.cat(parts, dim=1)
    if layout.strategy == "div":
        return logits
    return logits.index_select(1, layout.positions(inputs.device))


def _eval_loss(
    kind: LossKind,
    weights: Any,
    biases: Any,
    labels: Any,
    inputs: Any,
    num_classes: Any,
    num_true: Any,
    partition_strategy: Any,
    chunk_size: Any,
    label_mask: Any,
    padding_id: Any,
) -> torch.Tensor:
    """Validate a full-loss call (one range check of the labels), then :func:`exact_loss`."""
    num_classes = check_int("num_classes", num_classes, minimum=1)
    num_true = check_int("num_true", num_true, minimum=1)
    inputs, w, b, layout = _check_tables(weights, biases, inputs, partition_strategy,
                                         num_classes)
    true = true_labels(labels, num_true, inputs, label_mask=label_mask, padding_id=padding_id)
    check_ids_in_range("labels", true.ids, num_classes)
    chunk = _check_chunk_size(chunk_size, inputs.shape[0])
    return exact_loss(kind, inputs, true, w, b, layout, chunk)


def exact_loss(
    kind: LossKind,
    inputs: torch.Tensor,
    true: TrueLabels,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor] | None,
    layout: Layout,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``[B]`` full loss ``partition − mean_t ℓ_{y_t}`` of validated arguments (biases split
    like the weights), in the dtype of ``inputs``: both full losses share this shape."""
    chunk = default_chunk_size(inputs.shape[0]) if chunk_size is None else chunk_size
    targets = None if true.mask is None else true_targets(true.mask, work_dtype(inputs.dtype))
    loss = chunked_loss(kind, inputs, true.ids, weights, biases, layout, chunk, targets)
    return loss.to(inputs.dtype)


def nce_eval_loss(
    weights: Table,
    biases: Table | None,
    labels: Any,
    inputs: torch.Tensor,
    num_classes: int,
    num_true: int = 1,
    partition_strategy: PartitionStrategy = "mod",
    *,
    chunk_size: int | None = None,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> torch.Tensor:
    r"""The full sigmoid loss over all classes, TensorFlow's documented evaluation of NCE.

    TensorFlow's ``nce_loss`` docstring evaluates with ``logits = matmul(inputs, Wᵀ) + b``,
    one-hot labels and ``sigmoid_cross_entropy_with_logits`` summed over the classes. With
    targets scaled like the training targets (``1/T`` per true class,
    :math:`z_{ic} = \#\{t : y_{it} = c\} / T`):

    .. math::

        L_i = \sum_{c=0}^{C-1} \log(1 + e^{\ell_{ic}}) - \ell_{ic} z_{ic}
            = \sum_{c=0}^{C-1} \operatorname{softplus}(\ell_{ic})
              - \frac{1}{T} \sum_{t=1}^{T} \ell_{i y_{it}}

    computed over chunks of ``chunk_size`` classes whose softplus sums add, so ``[B, C]`` is
    never held; the backward recomputes each chunk.

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias.
        labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1), ids in ``[0, C)``; or
            ragged: a Python list of B 1-D integer tensors, row ``b`` holding its ``n_b``
            labels (then T is the longest row and ``num_true`` is ignored).
        inputs: ``[B, D]`` floating.
        num_classes: C.
        num_true: T.
        partition_strategy: ``"mod"`` or ``"div"``.
        chunk_size: classes per chunk; memory beyond the parameters is about
            ``B·chunk_size`` elements. None picks ``max(1, 2²¹ // B)`` (8 MiB of float32).
        label_mask: bool ``[B, T]``, True on the real labels of padded ``labels``: row ``b``
            is computed as if alone with its ``n_b`` real labels (targets ``1/n_b``).
        padding_id: the id marking padding in ``labels`` (any int, e.g. -1); exclusive with
            ``label_mask``.

    Returns:
        ``[B]`` losses in the dtype of ``inputs``, differentiable (dense gradients).

    Raises:
        TypeError: non-integer labels, non-floating inputs or tables.
        ValueError: inconsistent shapes, ids out of range (one device synchronisation reads
            the labels), ``chunk_size`` < 1, an unknown strategy.

    Note:
        Unlike TensorFlow's recipe, which only matches a sharded training loss under "div",
        classes are found by their global ids under both strategies. float16/bfloat16 are
        computed in float32 and cast back. With the all-candidate sampler (every class
        sampled once, expected counts 1) and hit removal, ``nce_loss`` equals this loss.
        A row without labels (variable labels) gets ``Σ_c softplus(ℓ_c)``.

    Examples:
        >>> import torch, torchnce
        >>> w, b = torch.zeros(4, 2), torch.zeros(4)
        >>> loss = torchnce.nce_eval_loss(w, b, torch.tensor([0]), torch.ones(1, 2), 4)
        >>> round(loss.item(), 4)  # four logits of 0: 4·log 2 − 0
        2.7726
    """
    return _eval_loss("sigmoid", weights, biases, labels, inputs, num_classes, num_true,
                      partition_strategy, chunk_size, label_mask, padding_id)


def sampled_softmax_eval_loss(
    weights: Table,
    biases: Table | None,
    labels: Any,
    inputs: torch.Tensor,
    num_classes: int,
    num_true: int = 1,
    partition_strategy: PartitionStrategy = "mod",
    *,
    chunk_size: int | None = None,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> torch.Tensor:
    r"""The full softmax cross entropy over all classes, the evaluation of sampled softmax.

    With ``ℓ = x Wᵀ + b`` over all C classes and targets ``1/T`` per true class:

    .. math::

        L_i = -\sum_{c=0}^{C-1} z_{ic} \log \frac{e^{\ell_{ic}}}{\sum_k e^{\ell_{ik}}}
            = \log \sum_{c=0}^{C-1} e^{\ell_{ic}} - \frac{1}{T} \sum_{t=1}^{T} \ell_{i y_{it}}

    computed over chunks of ``chunk_size`` classes whose log-sum-exps are merged online
    (:math:`\operatorname{lse}(a \cup b) = \operatorname{logaddexp}(\operatorname{lse} a,
    \operatorname{lse} b)`); the backward recomputes each chunk.

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias.
        labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1), ids in ``[0, C)``; or
            ragged: a Python list of B 1-D integer tensors, row ``b`` holding its ``n_b``
            labels (then T is the longest row and ``num_true`` is ignored).
        inputs: ``[B, D]`` floating.
        num_classes: C.
        num_true: T.
        partition_strategy: ``"mod"`` or ``"div"``.
        chunk_size: classes per chunk; memory beyond the parameters is about
            ``B·chunk_size`` elements. None picks ``max(1, 2²¹ // B)`` (8 MiB of float32).
        label_mask: bool ``[B, T]``, True on the real labels of padded ``labels``: row ``b``
            is computed as if alone with its ``n_b`` real labels (targets ``1/n_b``).
        padding_id: the id marking padding in ``labels`` (any int, e.g. -1); exclusive with
            ``label_mask``.

    Returns:
        ``[B]`` losses in the dtype of ``inputs``, differentiable (dense gradients).

    Raises:
        TypeError: non-integer labels, non-floating inputs or tables.
        ValueError: inconsistent shapes, ids out of range (one device synchronisation reads
            the labels), ``chunk_size`` < 1, an unknown strategy.

    Note:
        Classes are found by their global ids under both strategies. float16/bfloat16 are
        computed in float32 and cast back. With the all-candidate sampler and hit removal,
        ``sampled_softmax_loss`` equals this loss; a row without labels gets 0. For one
        true class this is
        ``F.linear_cross_entropy``; the class chunks here are faster at large C (see
        benchmarks/results_evaluation.md).

    Examples:
        >>> import torch, torchnce
        >>> w, b = torch.zeros(4, 2), torch.zeros(4)
        >>> loss = torchnce.sampled_softmax_eval_loss(w, b, torch.tensor([0]), torch.ones(1, 2), 4)
        >>> round(loss.item(), 4)  # four equal logits: log 4
        1.3863
    """
    return _eval_loss("softmax", weights, biases, labels, inputs, num_classes, num_true,
                      partition_strategy, chunk_size, label_mask, padding_id)


def top_k(
    weights: Table,
    biases: Table | None,
    inputs: torch.Tensor,
    k: int,
    partition_strategy: PartitionStrategy = "mod",
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The ``k`` best classes of every row by full logit, without holding ``[B, C]``.

    .. math::

        \operatorname{top}_k\, \{ (\ell_{ic}, c) : c = 0, \dots, C - 1 \}, \qquad
        \ell_{ic} = x_i \cdot W_c + b_c

    found chunk by chunk with a running top-k merge.

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias.
        inputs: ``[B, D]`` floating.
        k: how many classes per row, in ``[1, C]``.
        partition_strategy: ``"mod"`` or ``"div"``.
        chunk_size: classes per chunk, as in :func:`nce_eval_loss`.

    Returns:
        ``(scores, ids)``: ``[B, k]`` logits in the dtype of ``inputs``, best first, and their
        int64 global class ids.

    Raises:
        TypeError: non-floating inputs or tables, a non-int ``k``.
        ValueError: ``k`` outside ``[1, C]``, ``chunk_size`` < 1, inconsistent shapes.

    Note:
        The scores carry no gradient (use :func:`full_logits` or a lookup of the ids for
        that). Equal logits are returned in no particular order.

    Examples:
        >>> import torch, torchnce
        >>> w = torch.tensor([[1.0], [3.0], [2.0]])
        >>> scores, ids = torchnce.top_k(w, None, torch.ones(1, 1), 2)
        >>> scores.tolist(), ids.tolist()
        ([[3.0, 2.0]], [[1, 2]])
    """
    inputs, w, b, layout = _check_tables(weights, biases, inputs, partition_strategy)
    k = check_int("k", k, minimum=1)
    if k > layout.num_classes:
        raise ValueError(f"k must be in [1, num_classes={layout.num_classes}], got {k}")
    chunk = _check_chunk_size(chunk_size, inputs.shape[0])
    return chunked_top_k(inputs, w, b, layout, k, chunk)

