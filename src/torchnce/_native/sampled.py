"""The binding of the fused sampled-loss operators (``ops.cpp`` over ``sampled.cpp``).

:func:`usable` says when the native path may run: the operators built and loaded, float32 CPU
tensors, eager (not under ``torch.compile``, not FakeTensors). Each function here is one call
of an operator ``torch.ops.torchnce_cpu.*``, which checks its arguments again (a bad one raises
``ValueError``, never reads outside a table) and runs the gather, the matrix products (the
BLAS) and the per-row kernels on torch's thread pool. The pure-PyTorch twin is
``torchnce._sampled.fused``; tests compare the two.
"""

from __future__ import annotations

import torch

from torchnce._native.build import load_ops

ROW_UPDATES = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 2}

_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not FakeTensors nor other subclasses


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the native operators may take these tensors: built, eager, float32 (or integer)
    CPU tensors of the plain classes (no FakeTensor, no other subclass)."""
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or t.device.type != "cpu" or (
                t.dtype is not torch.float32 and t.is_floating_point())):
            return False
    return load_ops().available


def _ids(ids: torch.Tensor | None) -> torch.Tensor | None:
    return None if ids is None else ids.contiguous()


def forward(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    w_ids: torch.Tensor | None, b_ids: torch.Tensor | None,
    log_q: tuple[torch.Tensor, torch.Tensor] | None, hits: torch.Tensor | None,
    label_mask: torch.Tensor | None, num_true: int, width: int, softmax: bool, *,
    take_log: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss [B], dL/dlogits [B, T + S], rows [N, D])`` of ``torchnce::fused_forward``
    (``width`` = T + S per-example, 0 shared); ``rows`` is ``weight`` itself when ``w_ids`` is
    None and ``weight`` is contiguous. With ``take_log`` the pair ``log_q`` holds the expected
    counts, whose float32 logs the operator takes (torch's ``log``, as the pure path)."""
    same = b_ids is w_ids  # then gathered together
    w_ids = _ids(w_ids)
    b_ids = w_ids if same else _ids(b_ids)
    lq_true, lq_sampled = (None, None) if log_q is None else log_q
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = torch.ops.torchnce_cpu.sl_forward(
        inputs, weight, bias, w_ids, b_ids, lq_true, lq_sampled, hits, label_mask, num_true,
        width, softmax, take_log)
    return out


def backward(
    dlogits: torch.Tensor, grad_loss: torch.Tensor | None, divisor: int, x: torch.Tensor,
    rows: torch.Tensor, num_true: int, width: int, need: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dx, dL/drows, dL/dbias_rows)`` from ``g = dlogits · grad_loss / divisor`` per row
    (``g = dlogits`` when ``grad_loss`` is None); a gradient not in ``need`` is None."""
    grad_x, grad_rows, grad_bias = torch.ops.torchnce_cpu.sl_backward(
        dlogits, grad_loss, divisor, x, rows.reshape(-1, x.shape[1]), num_true, width, *need)
    return (grad_x if need[0] else None, grad_rows if need[1] else None,
            grad_bias if need[2] else None)


def backward_update(
    dlogits: torch.Tensor, grad_loss: torch.Tensor, divisor: int, x: torch.Tensor,
    rows: torch.Tensor, ids: torch.Tensor, num_true: int, width: int, need_x: bool,
    weight: torch.Tensor, bias: torch.Tensor | None, weight_state: torch.Tensor | None,
    bias_state: torch.Tensor | None, kind: str, lr: float, eps: float,
) -> torch.Tensor | None:
    """``dL/dx`` (None if not ``need_x``), after updating the rows ``ids`` of ``weight`` (and
    ``bias``) with RowUpdate ``kind``; ``dlogits`` is scaled in place."""
    grad_x: torch.Tensor = torch.ops.torchnce_cpu.sl_backward_update(
        dlogits, grad_loss, divisor, x, rows.reshape(-1, x.shape[1]), ids.contiguous(),
        num_true, width, need_x, weight, bias, weight_state, bias_state, ROW_UPDATES[kind], lr,
        eps)
    return grad_x if need_x else None


_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def update_loss(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor,
    counts: tuple[torch.Tensor, torch.Tensor] | None, hits: torch.Tensor | None,
    label_mask: torch.Tensor | None, num_true: int, width: int, softmax: bool, reduction: str,
    weight_state: torch.Tensor | None, bias_state: torch.Tensor | None, kind: str, lr: float,
    eps: float, params: list[torch.Tensor],
) -> torch.Tensor:
    """The loss reduced by ``reduction``, from one autograd node in C++ whose backward updates
    the rows ``ids`` of ``weight`` (and ``bias``) with RowUpdate ``kind`` (``counts``: the
    expected counts whose logs are subtracted, or None; ``params``: the layer's parameters,
    inputs of the node so that its backward runs)."""
    count_true, count_sampled = (None, None) if counts is None else counts
    loss: torch.Tensor = torch.ops.torchnce_cpu.update_loss(
        inputs, weight, bias, ids.contiguous(), count_true, count_sampled, hits, label_mask,
        num_true, width, softmax, _REDUCTIONS[reduction], weight_state, bias_state,
        ROW_UPDATES[kind], lr, eps, params)
    return loss


def row_update(kind: str, table: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor,
               state: torch.Tensor | None, lr: float, eps: float) -> None:
    """Apply ``RowUpdate`` ``kind`` to the rows ``ids`` of a float32 table (``[C, D]`` with
    unit column stride, or ``[C]``) in place, with row gradients ``grads`` (``[n, D]`` or
    ``[n]``)."""
    torch.ops.torchnce_cpu.row_update(ROW_UPDATES[kind], table, ids.contiguous(), grads,
                                      state, lr, eps)
