"""The fused sampled-loss step: gather, logits and loss in one autograd node.

The forward reuses :func:`compose_logits` (the maths lives there); the backward is the
analytic gradient ``dL/dℓ = σ(ℓ) − z`` (NCE) or ``softmax(ℓ) − z`` (sampled softmax), pushed
through the dots by hand. One node instead of a dozen keeps small steps off the dispatch floor,
and the weight gradient is built directly as a sparse tensor (or one ``index_add_``).
Gradcheck against the autograd path of :func:`compute_sampled_logits` pins the two together.

:func:`sampled_loss_grads` runs the same forward and backward code without a graph, for
callers that apply sparse updates themselves (word2vec's SGD), optionally into the reused
buffers of a :class:`Workspace`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from torchnce._common.labels import true_targets
from torchnce._common.lookup import lookup, sparse_rows
from torchnce._common.types import LossKind, apply_reduction
from torchnce._native import sampled as native
from torchnce._sampled import ops
from torchnce._sampled.logits import all_ids, compose_logits, log_of_counts, log_q, work_dtype
from torchnce._sampled.problem import Classes, Problem
from torchnce._sampled.spec import LossSpec


def row_losses(
    logits: torch.Tensor, num_true: int, kind: LossKind, targets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss ``[B]`` and its gradient ``[B, T + S]`` for targets ``z`` on the first T
    columns (``1/T`` when ``targets`` is None, else ``targets`` ``[B, T]``) and 0 elsewhere
    (the targets of :func:`targets_of`, never materialised here).

    NCE: ``Σ softplus(ℓ) − Σ z ℓ`` with gradient ``σ(ℓ) − z``; sampled softmax:
    ``(Σ z) logsumexp(ℓ) − Σ z ℓ`` with gradient ``(Σ z) softmax(ℓ) − z``. A removed hit or a
    padded label (``ℓ = −FLT_MAX``, ``z = 0``) contributes exactly 0 to both.
    """
    z: float | torch.Tensor = 1.0 / num_true if targets is None else targets
    if targets is None and num_true == 1:  # z = 1: the first column itself, two ops fewer
        true_part = logits[:, 0]
    else:
        true_part = (logits[:, :num_true] * z).sum(dim=1)
    if kind == "sigmoid":
        loss = F.logsigmoid(-logits).sum(dim=1).neg_().sub_(true_part)
        grad = torch.sigmoid(logits)
    else:
        lse = torch.logsumexp(logits, dim=1)
        grad = torch.exp(logits - lse.unsqueeze(1))
        if targets is None:
            loss = lse - true_part
        else:
            mass = targets.sum(dim=1)
            loss = lse * mass - true_part
            grad.mul_(mass.unsqueeze(1))
    grad[:, :num_true] -= z
    return loss, grad


def _table_grad(
    grad_rows: torch.Tensor, ids: torch.Tensor | None, table: torch.Tensor, sparse: bool
) -> torch.Tensor:
    grad_rows = grad_rows.to(table.dtype)
    if ids is None:
        return grad_rows
    if sparse:
        return sparse_rows(ids, grad_rows, table.shape)
    return torch.zeros_like(table).index_add_(0, ids, grad_rows)


class Workspace:
    """Output buffers reused by repeated :func:`sampled_loss_grads` calls.

    The ``[N, D]`` gathered rows and row gradients stay in cache and skip the allocator (about
    8% more word2vec words/s on CPU: benchmarks/README.md, word2vec section). What a call
    returns lives in them until the next call.
    """

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A ``shape`` tensor of ``like``'s dtype and device, over the buffer ``name``."""
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < numel or (flat.dtype, flat.device) != (
                like.dtype, like.device):
            flat = self._flat[name] = like.new_empty(numel)
        return flat[:numel].view(shape)


def _gather(table: torch.Tensor, ids: torch.Tensor | None, dtype: torch.dtype,
            workspace: Workspace | None = None) -> torch.Tensor:
    if ids is None:
        return table.to(dtype)
    if workspace is None or table.dtype != dtype:
        return table.index_select(0, ids).to(dtype)
    out = workspace.get("rows", (ids.shape[0], *table.shape[1:]), table)
    return torch.index_select(table, 0, ids, out=out)


def _shared_grads(
    g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, num_true: int, need: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dx, dL/drows, dL/dbias_rows)`` for the shared layout ``[B·T + S, D]``."""
    (batch, dim), n_true = x.shape, x.shape[0] * num_true
    g_true, g_sampled = g[:, :num_true], g[:, num_true:]
    true_w, sampled_w = rows[:n_true].view(batch, num_true, dim), rows[n_true:]
    grad_x = grad_rows = grad_bias_rows = None
    if need[0]:
        grad_x = g_sampled @ sampled_w
        if num_true == 1:
            grad_x.addcmul_(g_true, true_w[:, 0])
        else:
            grad_x.add_((g_true.unsqueeze(2) * true_w).sum(dim=1))
    if need[1]:
        grad_rows = torch.empty_like(rows)
        torch.mul(g_true.unsqueeze(2), x.unsqueeze(1),
                  out=grad_rows[:n_true].view(batch, num_true, dim))
        torch.mm(g_sampled.t(), x, out=grad_rows[n_true:])
    if need[2]:
        grad_bias_rows = torch.empty(rows.shape[0], dtype=g.dtype, device=g.device)
        grad_bias_rows[:n_true] = g_true.reshape(-1)
        torch.sum(g_sampled, dim=0, out=grad_bias_rows[n_true:])
    return grad_x, grad_rows, grad_bias_rows


def _example_grads(
    g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, need: tuple[bool, ...],
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dx, dL/drows, dL/dbias_rows)`` for per-example rows ``[B, T + S, D]``; the row
    gradients come back flat, ``[B·(T + S), D]`` and ``[B·(T + S)]``."""
    grad_x = torch.bmm(g.unsqueeze(1), rows).squeeze(1) if need[0] else None
    grad_rows = None
    if need[1]:
        out = None if workspace is None else workspace.get("grad_rows", tuple(rows.shape), x)
        grad_rows = torch.mul(g.unsqueeze(2), x.unsqueeze(1), out=out).view(-1, x.shape[1])
    grad_bias_rows = g.reshape(-1) if need[2] else None
    return grad_x, grad_rows, grad_bias_rows


class InBackward(NamedTuple):
    """An optimizer applied to the table rows inside the fused backward (``RowUpdate``).

    Attributes:
        update: has ``apply_rows(shards, states, ids, grads, partition_strategy)`` and the
            names of its accumulators, ``weight_states`` and ``bias_states``.
        weights: the weight shards to update in place.
        biases: the bias shards, or None.
        ids: the global ids of the rows the step gathered, ``[N]``.
        partition_strategy: the shards' layout.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``, applied inside the node (one autograd
            node less per step).
    """

    update: Any
    weights: list[torch.Tensor]
    biases: list[torch.Tensor] | None
    ids: torch.Tensor
    partition_strategy: str
    reduction: str = "none"


class FusedPlan(NamedTuple):
    """Everything the fused node takes besides the tensors it differentiates.

    Attributes:
        w_ids: ids of the rows of ``weight`` to gather, or None when ``weight`` holds the
            looked-up rows already (shards, or rows fetched from other ranks).
        b_ids: the same for ``bias``.
        log_q: ``(log Q(true), log Q(sampled))`` to subtract, or None.
        hits: bool ``[B, S]`` accidental hits to remove, or None.
        label_mask: bool ``[B, T]`` real labels, or None.
        num_true: T.
        width: ``T + S`` for per-example candidates (rows ``[B, T + S, D]``), None for shared
            ones (rows ``[B·T + S, D]``).
        kind: the cross entropy, ``"sigmoid"`` or ``"softmax"``.
        sparse: whether the table gradients are sparse.
        in_backward: the row update to apply in backward instead of returning table
            gradients, or None.
        counts: the expected counts ``(Q(true), Q(sampled))`` whose logs to subtract, given
            instead of ``log_q`` (the native operator takes the logs itself), or None.
    """

    w_ids: torch.Tensor | None
    b_ids: torch.Tensor | None
    log_q: tuple[torch.Tensor, torch.Tensor] | None
    hits: torch.Tensor | None
    label_mask: torch.Tensor | None
    num_true: int
    width: int | None
    kind: LossKind
    sparse: bool
    in_backward: InBackward | None = None
    counts: tuple[torch.Tensor, torch.Tensor] | None = None


def _forward(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    plan: FusedPlan,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather and logits in the work dtype: ``(x, rows, logits)``; ``rows`` is ``[B, T + S, D]``
    per-example, else ``[B·T + S, D]``."""
    work = work_dtype(inputs.dtype)
    x, rows = inputs.to(work), _gather(weight, plan.w_ids, work, workspace)
    bias_rows = None if bias is None else _gather(bias, plan.b_ids, work)
    if plan.width is not None:  # per-example: [B, T + S] classes
        rows = rows.view(x.shape[0], plan.width, x.shape[1])
        bias_rows = None if bias_rows is None else bias_rows.view(x.shape[0], plan.width)
    log_q_work = None if plan.log_q is None else (plan.log_q[0].to(work), plan.log_q[1].to(work))
    logits = compose_logits(x, rows, bias_rows, log_q_work, plan.hits, plan.num_true,
                            plan.label_mask)
    return x, rows, logits


def _loss_and_grad(plan: FusedPlan, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The row losses and ``dL/dlogits`` with the plan's targets."""
    mask = plan.label_mask
    targets = None if mask is None else true_targets(mask, logits.dtype)
    return row_losses(logits, plan.num_true, plan.kind, targets)


def _grads(
    g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, num_true: int, need: tuple[bool, ...],
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dx, dL/drows, dL/dbias_rows)`` from ``g = dL/dlogits``, for either layout."""
    if rows.dim() == 3:
        return _example_grads(g, x, rows, need, workspace)
    return _shared_grads(g, x, rows, num_true, need)


# Float32 on the CPU: the native operators (torchnce._native.sampled, one call per forward and
# per backward: gather, the products as the BLAS, the rest in one pass per row).


def _forward_op(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    w_ids: torch.Tensor | None, b_ids: torch.Tensor | None, log_q_true: torch.Tensor | None,
    log_q_sampled: torch.Tensor | None, hits: torch.Tensor | None,
    label_mask: torch.Tensor | None, num_true: int, width: int, softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torchnce::fused_forward`` (ops.py): native for float32 CPU, else pure."""
    log_qs = None if log_q_true is None or log_q_sampled is None else (log_q_true, log_q_sampled)
    plan = FusedPlan(w_ids, b_ids, log_qs, hits, label_mask, num_true, width or None,
                     "softmax" if softmax else "sigmoid", False)
    if native.usable(inputs, weight, bias, w_ids):
        loss, dlogits, rows = native.forward(inputs, weight, bias, w_ids, b_ids, log_qs, hits,
                                             label_mask, num_true, width, softmax)
    else:
        _, rows, logits = _forward(inputs, weight, bias, plan)
        loss, dlogits = _loss_and_grad(plan, logits)
    rows = rows.reshape(-1, rows.shape[-1])
    if w_ids is None:  # the rows were given: an op's output must not alias its input
        rows = rows.clone()
    return loss, dlogits, rows


def _backward_op(
    g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, num_true: int, width: int,
    need_x: bool, need_rows: bool, need_bias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torchnce::fused_backward`` (ops.py): native for float32 CPU, else pure; an output
    not needed is empty."""
    need = (need_x, need_rows, need_bias)
    if native.usable(g, x, rows):
        grad_x, grad_rows, grad_bias = native.backward(g, None, 1, x, rows, num_true, width,
                                                       need)
    else:
        if width:
            rows = rows.view(x.shape[0], width, x.shape[1])
        grad_x, grad_rows, grad_bias = _grads(g, x, rows, num_true, need)
        if grad_bias is not None and width:  # per-example: g itself, flattened
            grad_bias = grad_bias.clone()
    return tuple(x.new_empty(0) if t is None else t  # type: ignore[return-value]
                 for t in (grad_x, grad_rows, grad_bias))


ops.register(_forward_op, _backward_op)


def _op_grads(g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, num_true: int,
              width: int, need: tuple[bool, ...]
              ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad_x, grad_rows, grad_bias = ops.fused_backward(g, x, rows, num_true, width, *need)
    return (grad_x if need[0] else None, grad_rows if need[1] else None,
            grad_bias if need[2] else None)


class _FusedSampledLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        plan: FusedPlan, *params: torch.Tensor,
    ) -> torch.Tensor:
        # params: the tables a row update changes in backward (so that it runs), else none
        ctx.native = native.usable(inputs, weight, bias, plan.w_ids)
        if ctx.native:  # the operator itself, without the op of ops.py around it
            given = plan.log_q if plan.counts is None else plan.counts
            loss, dlogits, rows = native.forward(
                inputs, weight, bias, plan.w_ids, plan.b_ids, given, plan.hits,
                plan.label_mask, plan.num_true, plan.width or 0, plan.kind == "softmax",
                take_log=plan.counts is not None)
        else:
            logs = plan.log_q if plan.counts is None else log_of_counts(plan.counts, inputs.dtype)
            lq_true, lq_sampled = (None, None) if logs is None else logs
            loss, dlogits, rows = ops.fused_forward(
                inputs, weight, bias, plan.w_ids, plan.b_ids, lq_true, lq_sampled, plan.hits,
                plan.label_mask, plan.num_true, plan.width or 0, plan.kind == "softmax")
        x = inputs.to(work_dtype(inputs.dtype))
        if plan.in_backward is None:
            ctx.save_for_backward(x, rows, dlogits, plan.w_ids, plan.b_ids, weight, bias)
        else:
            ctx.save_for_backward(x, rows, dlogits)
            ctx.updated = False
        ctx.num_true, ctx.sparse, ctx.in_backward = plan.num_true, plan.sparse, plan.in_backward
        ctx.has_bias, ctx.num_params, ctx.width = bias is not None, len(params), plan.width or 0
        loss = loss.to(inputs.dtype)
        reduction = "none" if plan.in_backward is None else plan.in_backward.reduction
        ctx.reduction, ctx.batch = reduction, loss.shape[0]
        return apply_reduction(loss, reduction)  # type: ignore[arg-type]

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:
        none_for_params = (None,) * ctx.num_params
        if ctx.in_backward is not None:
            return (*_backward_with_update(ctx, grad_loss), None, None, None, *none_for_params)
        x, rows, dlogits, w_ids, b_ids, weight, bias = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:3])
        if ctx.native:
            grad_x, grad_rows, grad_bias_rows = native.backward(
                dlogits, grad_loss, 1, x, rows, ctx.num_true, ctx.width, need)
        else:
            g = dlogits * grad_loss.to(dlogits.dtype).unsqueeze(1)
            grad_x, grad_rows, grad_bias_rows = _op_grads(g, x, rows, ctx.num_true, ctx.width,
                                                          need)
        grad_x = None if grad_x is None else grad_x.to(grad_loss.dtype)
        grad_w = None if grad_rows is None else _table_grad(grad_rows, w_ids, weight, ctx.sparse)
        grad_b = None
        if grad_bias_rows is not None:
            grad_b = _table_grad(grad_bias_rows, b_ids, bias, ctx.sparse)
        return (grad_x, grad_w, grad_b, None, *none_for_params)


def _backward_with_update(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None]:
    """The input gradient, after applying the plan's row update to the tables."""
    if ctx.updated:
        raise RuntimeError("update: this step's rows were already updated by an earlier "
                           "backward of the same graph; run a new forward for each backward")
    ctx.updated = True
    x, rows, dlogits = ctx.saved_tensors
    plan: InBackward = ctx.in_backward
    update = plan.update
    divisor = ctx.batch if ctx.reduction == "mean" else 1
    if ctx.native and len(plan.weights) == 1 and native.usable(*plan.weights, *(plan.biases or [])):
        # one operator: the gradients and the update of the rows
        weight = plan.weights[0].detach()
        bias = None if plan.biases is None else plan.biases[0].detach()
        if weight.stride(1) == 1 and (bias is None or bias.is_contiguous()):
            w_state, b_state = (getattr(update, names[0]) if names else None
                                for names in (update.weight_states, update.bias_states))
            grad_x = native.backward_update(
                dlogits, grad_loss, divisor, x, rows, plan.ids, ctx.num_true, ctx.width,
                ctx.needs_input_grad[0], weight, bias, w_state, b_state, update.kind, update.lr,
                update.eps)
            return (grad_x,)
    # in place: a row update's node runs backward once (a second call raised above)
    if ctx.reduction == "none":
        g = dlogits.mul_(grad_loss.to(dlogits.dtype).unsqueeze(1))
    else:  # the gradient a mean's or sum's backward would hand every row
        row_grad = grad_loss / ctx.batch if ctx.reduction == "mean" else grad_loss
        g = dlogits.mul_(row_grad.to(dlogits.dtype))
    grad_x, grad_rows, grad_bias_rows = _op_grads(g, x, rows, ctx.num_true, ctx.width,
                                                  (ctx.needs_input_grad[0], True, ctx.has_bias))
    assert grad_rows is not None
    flat = grad_rows.reshape(-1, x.shape[1])
    update.apply_rows(plan.weights, update.weight_states, plan.ids, flat,
                      plan.partition_strategy)
    if grad_bias_rows is not None and plan.biases is not None:
        update.apply_rows(plan.biases, update.bias_states, plan.ids, grad_bias_rows.reshape(-1),
                          plan.partition_strategy)
    return (None if grad_x is None else grad_x.to(grad_loss.dtype),)


def fused_loss(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: FusedPlan,
    *params: torch.Tensor,
) -> torch.Tensor:
    """Per-example loss ``[B]`` of the fused node: one autograd node for gather, logits and
    loss, with the analytic backward (``params``: the tables a row update changes)."""
    loss: torch.Tensor = _FusedSampledLoss.apply(inputs, weight, bias, plan, *params)  # type: ignore[no-untyped-call]
    return loss


def _table_input(
    problem: Problem, shards: list[torch.Tensor], ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A single table enters the fused node with its ids; shards are looked up beforehand."""
    if len(shards) == 1:
        return shards[0], ids
    rows = lookup(shards, ids, problem.num_classes, problem.partition_strategy,
                  sparse_grad=problem.sparse_grad)
    return rows, None


def _counts(classes: Classes, spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The expected counts whose logs the loss subtracts, or None."""
    return (classes.true_count, classes.sampled_count) if spec.subtract_log_q else None


def _width(classes: Classes) -> int | None:
    """``T + S`` for per-example candidates, None for shared ones."""
    return classes.num_true + classes.sampled.shape[1] if classes.per_example else None


def fused_sampled_loss(problem: Problem, spec: LossSpec, update: Any = None,
                       reduction: str = "none") -> torch.Tensor:
    """Per-example sampled loss ``spec`` of a validated problem, ``[B]``; with ``update`` (a
    ``RowUpdate``) the backward updates the table rows instead of returning their gradients,
    and the loss comes reduced by ``reduction``."""
    classes = problem.classes
    ids = all_ids(classes)
    if update is not None:
        if torch.compiler.is_compiling():  # the update mutates the tables in backward: eager,
            # a graph break (dynamo is loaded by then; importing it here, not at import time,
            # keeps 0.8 s off `import torchnce`)
            eager = torch.compiler.disable(_updated_in_backward)  # type: ignore[no-untyped-call]
            loss: torch.Tensor = eager(problem, spec, update, ids, reduction)
            return loss
        return _updated_in_backward(problem, spec, update, ids, reduction)
    weight, w_ids = _table_input(problem, problem.weights, ids)
    bias, b_ids = None, None
    if problem.biases is not None:
        # dynamo cannot trace an autograd.Function given one tensor twice: a copy when compiling
        b_ids_in = ids.clone() if torch.compiler.is_compiling() else ids
        bias, b_ids = _table_input(problem, problem.biases, b_ids_in)
    plan = FusedPlan(w_ids, b_ids, None, classes.hits, classes.label_mask, classes.num_true,
                     _width(classes), spec.kind, problem.sparse_grad,
                     counts=_counts(classes, spec))
    return fused_loss(problem.inputs, weight, bias, plan)


NATIVE_NODE = True  # False: a RowUpdate step takes the Python node even where native (tests)


def _updated_in_backward(problem: Problem, spec: LossSpec, update: Any, ids: torch.Tensor,
                         reduction: str) -> torch.Tensor:
    """The fused node with the tables as detached inputs and the row update in backward
    (run eagerly under ``torch.compile``: a graph break, so not with ``fullgraph=True``)."""
    classes = problem.classes
    weights, biases = problem.weights, problem.biases
    if NATIVE_NODE and len(weights) == 1 and native.usable(problem.inputs, *weights,
                                                           *(biases or [])):
        weight, bias = weights[0].detach(), None if biases is None else biases[0].detach()
        if weight.stride(1) == 1 and (bias is None or bias.is_contiguous()):
            # the whole step in one autograd node of the native operators
            w_state, b_state = (getattr(update, names[0]) if names else None
                                for names in (update.weight_states, update.bias_states))
            return native.update_loss(
                problem.inputs, weight, bias, ids, _counts(classes, spec), classes.hits,
                classes.label_mask, classes.num_true, _width(classes) or 0,
                spec.kind == "softmax", reduction, w_state, b_state, update.kind, update.lr,
                update.eps, [*weights, *(biases or [])])
    with torch.no_grad():
        weight, w_ids = _table_input(problem, [w.detach() for w in weights], ids)
        bias, b_ids = None, None
        if biases is not None:
            bias, b_ids = _table_input(problem, [b.detach() for b in biases], ids)
    plan = FusedPlan(w_ids, b_ids, None, classes.hits, classes.label_mask, classes.num_true,
                     _width(classes), spec.kind, False,
                     InBackward(update, weights, biases, ids, problem.partition_strategy,
                                reduction), _counts(classes, spec))
    return fused_loss(problem.inputs, weight, bias, plan, *weights, *(biases or []))


class LossGrads(NamedTuple):
    """A sampled loss and its gradients times ``scale``, without autograd (one table).

    ``rows[i]`` is the gradient of ``weights[ids[i]]`` (ids repeat: sum them, e.g. with
    ``index_add_``), ``bias_rows`` likewise for the biases.
    """

    loss: torch.Tensor  # [B], unscaled
    inputs: torch.Tensor  # [B, D]
    ids: torch.Tensor  # [N]
    rows: torch.Tensor  # [N, D]
    bias_rows: torch.Tensor | None  # [N]


def sampled_loss_grads(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, classes: Classes,
    spec: LossSpec, *, scale: float = 1.0, workspace: Workspace | None = None,
) -> LossGrads:
    """The per-example loss of :func:`fused_sampled_loss` on one unsharded table and ``scale``
    times its gradients, computed by the same code as the autograd node's forward and
    backward, for callers that apply sparse updates themselves (word2vec's SGD with
    ``scale = -lr``): no graph and no sparse tensor, which saved about 0.2 ms per call on the
    project's 2-vCPU machine (torch 2.13.0, 2026-11-23; benchmarks/README.md, word2vec
    section). With a ``workspace`` the returned ``rows`` live in its buffers until the next
    call.
    """
    ids = all_ids(classes)
    log_qs = log_q(classes, inputs.dtype) if spec.subtract_log_q else None
    plan = FusedPlan(ids, ids, log_qs, classes.hits, classes.label_mask, classes.num_true,
                     _width(classes), spec.kind, False)
    with torch.no_grad():
        x, rows, logits = _forward(inputs, weight, bias, plan, workspace)
        loss, g = _loss_and_grad(plan, logits)
        grad_x, grad_rows, grad_bias = _grads(g.mul_(scale), x, rows, plan.num_true,
                                              (True, True, bias is not None), workspace)
    assert grad_x is not None and grad_rows is not None  # both were asked for
    return LossGrads(loss.to(inputs.dtype), grad_x.to(inputs.dtype), ids,
                     grad_rows.to(weight.dtype),
                     None if grad_bias is None else grad_bias.to(weight.dtype))
