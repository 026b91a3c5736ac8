"""Sampled logits: the one place where TensorFlow's ``_compute_sampled_logits`` maths lives."""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import check_bool
from torchnce._common.docs import fill_args
from torchnce._common.labels import true_targets
from torchnce._common.lookup import lookup
from torchnce._common.types import PartitionStrategy, Table
from torchnce._sampled.hits import FLT_MAX
from torchnce._sampled.problem import Classes, Problem, prepare

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losses are computed in: float32 for float16/bfloat16, else ``dtype``."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def masked_logit(dtype: torch.dtype) -> float:
    """What a removed accidental hit adds to its logit: TensorFlow's ``-FLT_MAX``.

    For float16/bfloat16 (where TensorFlow's cast gives -inf, hence NaN losses) it is half the
    most negative finite value, so that adding it to any logit of magnitude below that stays
    finite.
    """
    return float(torch.finfo(dtype).min) / 2 if dtype in _LOW_PRECISION else -FLT_MAX


def linear_logits(
    inputs: torch.Tensor,
    rows: torch.Tensor,
    bias_rows: torch.Tensor | None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, N]`` logits ``inputs @ rows.T + bias_rows`` of N classes for every row (no log-Q).

    ``rows`` is ``[N, D]`` and ``bias_rows`` ``[N]``, in the dtype of ``inputs``; ``out``
    receives the result when given (a contiguous ``[B, N]`` buffer).
    """
    if bias_rows is None:
        return torch.mm(inputs, rows.t(), out=out)
    return torch.addmm(bias_rows, inputs, rows.t(), out=out)


def example_logits(
    inputs: torch.Tensor, rows: torch.Tensor, bias_rows: torch.Tensor | None
) -> torch.Tensor:
    """``[B, K]`` logits of each row's own K classes, one batched matmul: ``rows`` is
    ``[B, K, D]`` and ``bias_rows`` ``[B, K]``.

    Computed as ``[1, D] × [D, K]`` per row: on CPU that batched product is 2–6× faster than
    the equal ``[K, D] × [D, 1]`` one (measured at K = 6 and 65 on the project's 2-vCPU
    machine, torch 2.13.0, November 2026).
    """
    x, rows_t = inputs.unsqueeze(1), rows.transpose(1, 2)
    if bias_rows is None:
        return torch.bmm(x, rows_t).squeeze(1)
    return torch.baddbmm(bias_rows.unsqueeze(1), x, rows_t).squeeze(1)


def compose_logits(
    inputs: torch.Tensor,
    rows: torch.Tensor,
    bias_rows: torch.Tensor | None,
    log_q: tuple[torch.Tensor, torch.Tensor] | None,
    hits: torch.Tensor | None,
    num_true: int,
    label_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, T + S]`` logits from the looked-up rows of the true ids (first) and sampled ids.

    ``rows`` is ``[B·T + S, D]`` (all true rows, then the shared candidates) or, for
    per-example candidates, ``[B, T + S, D]`` (row ``b``'s T true rows, then its own S);
    ``bias_rows`` is ``[B·T + S]`` or ``[B, T + S]`` alike; both in the dtype of ``inputs``.
    ``log_q`` is ``(log Q(true) [B, T]-broadcastable, log Q(sampled) [B, S]-broadcastable)``.
    TensorFlow's order: dots, bias, hit masking (adding ``-FLT_MAX``, so the gradient
    still flows through a masked logit, as in TensorFlow), log-Q. Last, the padded true
    columns (False in ``label_mask``) are *replaced* by the removed-hit value, so that they
    contribute nothing to a sigmoid or softmax cross entropy whatever their counts.
    """
    if rows.dim() == 3:
        logits = example_logits(inputs, rows, bias_rows)
        if hits is None and log_q is None and label_mask is None:
            return logits  # negative sampling's per-example logits: nothing to compose
        true_logits, sampled_logits = logits[:, :num_true], logits[:, num_true:]
    else:
        true_logits, sampled_logits = _shared_logits(inputs, rows, bias_rows, num_true)
    if hits is not None:
        mask = hits.to(sampled_logits.dtype)
        sampled_logits = sampled_logits.add(mask, alpha=masked_logit(inputs.dtype))
    if log_q is not None:
        true_logits = true_logits - log_q[0]
        sampled_logits = sampled_logits - log_q[1]
    if label_mask is not None:
        true_logits = torch.where(label_mask, true_logits, masked_logit(inputs.dtype))
    return torch.cat([true_logits, sampled_logits], dim=1)


def _shared_logits(
    inputs: torch.Tensor, rows: torch.Tensor, bias_rows: torch.Tensor | None, num_true: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """TensorFlow's true logits (row-wise dots) and sampled logits (one matmul)."""
    batch = inputs.shape[0]
    n_true = batch * num_true
    true_w, sampled_w = rows[:n_true].view(batch, num_true, rows.shape[1]), rows[n_true:]
    true_logits = (true_w * inputs.unsqueeze(1)).sum(dim=2)
    if bias_rows is not None:
        true_logits = true_logits + bias_rows[:n_true].view(batch, num_true)
    sampled_bias = None if bias_rows is None else bias_rows[n_true:]
    return true_logits, linear_logits(inputs, sampled_w, sampled_bias)


def all_ids(classes: Classes) -> torch.Tensor:
    """The ids looked up once for a step: the flattened true classes, then the candidates;
    per-example, row by row (each row's true classes, then its candidates)."""
    if classes.per_example:
        return torch.cat([classes.labels, classes.sampled], dim=1).reshape(-1)
    return torch.cat([classes.labels.reshape(-1), classes.sampled])


def per_row(classes: Classes, looked_up: torch.Tensor) -> torch.Tensor:
    """Per-example, the rows or biases of :func:`all_ids` as ``[B, T + S, ...]``."""
    if not classes.per_example:
        return looked_up
    batch, width = classes.labels.shape[0], classes.num_true + classes.sampled.shape[1]
    return looked_up.view(batch, width, *looked_up.shape[1:])


def log_q(classes: Classes, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log Q(true), log Q(sampled))`` for inputs of ``dtype``, in its work dtype: the
    expected counts cast to ``dtype`` (as TensorFlow casts them), then their logs, except that
    for float16/bfloat16 the counts are cast to float32 instead (a count below float16's
    smallest value, e.g. of a rare class among 10⁷, would become 0 and its log -inf)."""
    return log_of_counts((classes.true_count, classes.sampled_count), dtype)


def log_of_counts(counts: tuple[torch.Tensor, torch.Tensor], dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log_q` of the expected counts ``(true, sampled)``."""
    work = work_dtype(dtype)
    return counts[0].to(work).log(), counts[1].to(work).log()


def logits_of(problem: Problem, *, subtract_log_q: bool) -> torch.Tensor:
    """``[B, T + S]`` logits of the true classes, then the sampled ones, with autograd."""
    classes, dtype = problem.classes, problem.inputs.dtype
    lookup_args = (all_ids(classes), problem.num_classes, problem.partition_strategy)
    rows = lookup(problem.weights, *lookup_args, sparse_grad=problem.sparse_grad).to(dtype)
    bias_rows = None
    if problem.biases is not None:
        bias_rows = lookup(problem.biases, *lookup_args, sparse_grad=problem.sparse_grad)
        bias_rows = per_row(classes, bias_rows.to(dtype))
    log_qs = None
    if subtract_log_q:  # taken in float32 for float16/bfloat16, then cast to the logits' dtype
        true_log_q, sampled_log_q = log_q(classes, dtype)
        log_qs = (true_log_q.to(dtype), sampled_log_q.to(dtype))
    return compose_logits(problem.inputs, per_row(classes, rows), bias_rows, log_qs,
                          classes.hits, classes.num_true, classes.label_mask)


def targets_of(problem: Problem) -> torch.Tensor:
    """``[B, T + S]`` targets: ``1/T`` for each true column (``1/n_b`` on a row's ``n_b``
    real labels and 0 on padding), 0 for each sampled one."""
    classes = problem.classes
    batch, num_true = classes.labels.shape
    dtype, device = problem.inputs.dtype, problem.inputs.device
    if classes.label_mask is None:
        true = torch.full((batch, num_true), 1.0 / num_true, dtype=dtype, device=device)
    else:
        true = true_targets(classes.label_mask, dtype)
    sampled = torch.zeros(batch, classes.sampled.shape[-1], dtype=dtype, device=device)
    return torch.cat([true, sampled], dim=1)


@fill_args
def compute_sampled_logits(
    weights: Table,
    biases: Table | None,
    labels: Any,
    inputs: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    num_true: int = 1,
    sampled_values: Any = None,
    subtract_log_q: bool = True,
    remove_accidental_hits: bool = False,
    partition_strategy: PartitionStrategy = "mod",
    name: str | None = None,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    sparse_grad: bool = False,
    per_example_negatives: bool = False,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Logits and targets of a sampled loss, as TensorFlow's ``_compute_sampled_logits``.

    With ``W`` the output embeddings, ``b`` the biases, ``x_i`` an input row, true classes
    ``y_{i1..iT}``, shared sampled candidates ``s_1..s_S`` and expected counts ``Q``:

    .. math::

        \ell_{it} = x_i \cdot W_{y_{it}} + b_{y_{it}} - \log Q(y_{it}), \qquad
        \ell_{i,T+j} = x_i \cdot W_{s_j} + b_{s_j} - \log Q(s_j)
        \;\; (-\text{FLT\_MAX if } s_j \text{ is a removed hit of row } i)

    and targets ``1/T`` for the ``T`` true columns, 0 for the ``S`` sampled ones. The log-Q
    terms are dropped when ``subtract_log_q`` is False.

    Args:
        weights: {weights}
        biases: {biases}
        labels: {labels}
        inputs: {inputs}
        num_sampled: S, the number of candidates drawn by the default sampler.
        num_classes: {num_classes}
        num_true: {num_true}
        sampled_values: {sampled_values}
        subtract_log_q: subtract the log expected counts (True for NCE and sampled softmax).
        remove_accidental_hits: give the sampled candidates equal to a row's true class the
            logit -FLT_MAX (last duplicate only, as TensorFlow).
        partition_strategy: {partition_strategy}
        name: {name}
        seed: {seed}
        generator: {generator}
        sparse_grad: {sparse_grad}
        per_example_negatives: {per_example_negatives}
        label_mask: {label_mask}
        padding_id: {padding_id}

    Returns:
        ``(logits, targets)``, both ``[B, T + S]`` in the dtype of ``inputs``. A padded
        label's column holds the removed-hit logit (-FLT_MAX) and the target 0, so that row
        sums of a sigmoid or softmax cross entropy equal the row computed alone.

    Raises:
        TypeError: non-integer labels or candidates, non-floating inputs or tables.
        ValueError: inconsistent shapes, ids out of range, bad counts or choices (the message
            names the argument).

    Note:
        Unlike TensorFlow, expected counts are cast to the dtype of ``inputs`` (float32 for
        float16/bfloat16 inputs, so that counts below float16's range keep a finite log) and
        must be finite and > 0 where their log is taken; in float16/bfloat16 a removed hit
        adds half the dtype's most negative finite value (TensorFlow's cast of -FLT_MAX gives
        -inf and NaN losses there); the total rows of ``weights`` and ``biases`` must equal
        ``num_classes``; with ``remove_accidental_hits`` the candidates must number exactly
        ``num_sampled`` (TensorFlow fails only when a hit lies beyond position
        ``num_sampled``).

    Examples:
        >>> import torch, torchnce
        >>> w, b = torch.eye(3), torch.zeros(3)
        >>> values = ([2], [[1.0]], [1.0])
        >>> logits, targets = torchnce.compute_sampled_logits(
        ...     w, b, torch.tensor([[0]]), torch.tensor([[1.0, 0.0, 0.0]]), 1, 3,
        ...     sampled_values=values)
        >>> logits.tolist(), targets.tolist()
        ([[1.0, 0.0]], [[1.0, 0.0]])
    """
    del name
    subtract = check_bool("subtract_log_q", subtract_log_q, truthy=True)
    problem = prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true,
                      sampled_values, remove_accidental_hits, partition_strategy,
                      seed=seed, generator=generator, sparse_grad=sparse_grad,
                      per_example_negatives=per_example_negatives, label_mask=label_mask,
                      padding_id=padding_id, log_counts=subtract)
    return logits_of(problem, subtract_log_q=subtract), targets_of(problem)
