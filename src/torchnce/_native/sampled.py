"""The binding of the fused sampled-loss kernels (``sampled.cpp``) and the row update.

:func:`usable` says when the native path may run: the kernels built, float32 CPU tensors,
eager (not under ``torch.compile``, not FakeTensors). Each function here checks the layout of
what it passes (contiguous float32 / int64 / bool CPU tensors of the stated shapes) and calls
one C function; the ids were range-checked by the caller and are checked again in C (a bad one
raises ``ValueError``, never reads outside the table). The matrix products of shared candidates
are ``torch.mm`` (the BLAS, all threads); the kernels do the rest of the step in one pass each.
The pure-PyTorch twin is ``torchnce._sampled.fused``; tests compare the two.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import torch

from torchnce._native.build import kernel, load

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES: dict[str, list[Any]] = {
    "torchnce_sl_gather": [_P, _I, _I, _I, _P, _P, _I, _P, _P],
    "torchnce_sl_forward": [_P, _I, _I, _P, _P, _P, _I, _I, ctypes.c_int, _P, _P, _I, _I, _P, _I,
                            _I, _P, _P, ctypes.c_int, _P, _P],
    "torchnce_sl_backward": [_P, _I, _I, _P, _I, _I, ctypes.c_int, _P, _P, _P, _P, _P],
    "torchnce_row_update": [ctypes.c_int, _P, _I, _I, _I, _P, _I, _P, _P, _F, _F, _P, _P, _I, _P],
}
ROW_UPDATES = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 2}
@functools.cache
def _fn(name: str) -> Any:
    return kernel(name, _SIGNATURES[name])


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not FakeTensors nor other subclasses


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the native kernels may take these tensors: built, eager, float32 (or integer)
    CPU tensors of the plain classes (no FakeTensor, no other subclass)."""
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN or t.device.type != "cpu" or (
                t.is_floating_point() and t.dtype != torch.float32):
            return False
    return load()[0] is not None


def _need(t: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous CPU {dtype} tensor, got {t.dtype} "
                         f"on {t.device}")
    return t


def gather(table: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(table[ids], bias[ids])`` for a ``[C, D]`` float32 table (rows may be strided) and
    1-D int64 ``ids``."""
    if table.dim() != 2 or table.stride(1) != 1 or table.dtype != torch.float32:
        raise ValueError("table must be a float32 [C, D] tensor with unit column stride")
    ids = _need(ids, torch.int64, "ids")
    n, dim = ids.numel(), table.shape[1]
    rows = torch.empty(n, dim)
    bias_rows = None if bias is None else torch.empty(n)
    if bias is not None:
        _need(bias, torch.float32, "bias")
    if _fn("torchnce_sl_gather")(table.data_ptr(), table.stride(0), table.shape[0], dim,
                                 _ptr(bias), ids.data_ptr(), n, rows.data_ptr(),
                                 _ptr(bias_rows)):
        raise ValueError(f"ids must be in [0, {table.shape[0]})")
    return rows, bias_rows


def _strided(count: torch.Tensor | None, shape: tuple[int, int]
             ) -> tuple[torch.Tensor | None, int, int]:
    """A ``[B, K]``-broadcastable tensor as ``(float32 tensor, row stride, column stride)``
    in elements (the tensor is returned so that its memory outlives the call)."""
    if count is None:
        return None, 0, 0
    if count.dtype != torch.float32:
        count = count.to(torch.float32)
    if count.dim() == 2 and tuple(count.shape) == shape:
        return count, count.stride(0), count.stride(1)
    if count.dim() == 1 and count.shape[0] == shape[1]:
        return count, 0, count.stride(0)
    view = count.expand(shape)
    return view, view.stride(0), view.stride(1)


def forward(
    x: torch.Tensor, rows: torch.Tensor, bias_rows: torch.Tensor | None, num_true: int,
    num_sampled: int, per_example: bool, sdots: torch.Tensor | None,
    log_q: tuple[torch.Tensor, torch.Tensor] | None, hits: torch.Tensor | None,
    label_mask: torch.Tensor | None, softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss [B], dL/dlogits [B, T + S])``; ``sdots`` ``[B, S]`` holds the sampled dots of
    shared candidates (None per-example)."""
    batch, dim = x.shape
    width = num_true + num_sampled
    for name, t in (("x", x), ("rows", rows), ("bias_rows", bias_rows), ("sdots", sdots)):
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 tensor, got {t.dtype}")
    lq_true, lq_sampled = (None, None) if log_q is None else log_q
    true_q, qt_b, qt_t = _strided(lq_true, (batch, num_true))
    sampled_q, qs_b, qs_s = _strided(lq_sampled, (batch, num_sampled))
    hits_u8 = None if hits is None else _need(hits.contiguous(), torch.bool, "hits")
    mask_u8 = None if label_mask is None else _need(label_mask.contiguous(), torch.bool,
                                                    "label_mask")
    dlogits, loss = torch.empty(batch, width), torch.empty(batch)
    sampled_bias = None if bias_rows is None or per_example else (
        bias_rows.data_ptr() + batch * num_true * 4)
    _fn("torchnce_sl_forward")(
        x.data_ptr(), batch, dim, rows.data_ptr(), _ptr(bias_rows), sampled_bias, num_true,
        num_sampled, int(per_example), _ptr(sdots), _ptr(true_q), qt_b, qt_t,
        _ptr(sampled_q), qs_b, qs_s, _ptr(hits_u8), _ptr(mask_u8), int(softmax),
        dlogits.data_ptr(), loss.data_ptr())
    return loss, dlogits


def backward(
    x: torch.Tensor, rows: torch.Tensor, num_true: int, num_sampled: int, per_example: bool,
    g: torch.Tensor, grad_x: torch.Tensor | None, grad_rows: torch.Tensor | None,
    grad_bias: torch.Tensor | None,
) -> None:
    """Fill what is not a matrix product of the gradients (see ``sampled.cpp``)."""
    batch, dim = x.shape
    _need(g, torch.float32, "g")
    for name, t in (("grad_x", grad_x), ("grad_rows", grad_rows), ("grad_bias", grad_bias)):
        if t is not None:
            _need(t, torch.float32, name)
    fn, f32 = _fn("torchnce_sl_backward"), 4
    fn(x.data_ptr(), batch, dim, rows.data_ptr(), num_true, num_sampled, int(per_example),
       g.data_ptr(), _ptr(grad_x), _ptr(grad_rows), _ptr(grad_bias),
       None if grad_bias is None or per_example else
       grad_bias.data_ptr() + batch * num_true * f32)


def row_update(kind: str, table: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor,
               state: torch.Tensor | None, lr: float, eps: float) -> None:
    """Apply ``RowUpdate`` ``kind`` to the rows ``ids`` of a contiguous float32 table
    (``[C, D]`` or ``[C]``) in place, with row gradients ``grads`` (``[n, D]`` or ``[n]``)."""
    _need(table, torch.float32, "table")
    _need(ids, torch.int64, "ids")
    _need(grads, torch.float32, "grads")
    n = ids.numel()
    dim = table.shape[1] if table.dim() == 2 else 1
    cap = 1 << max(4, (2 * n - 1).bit_length())
    scratch = torch.empty(n + cap if kind != "sgd" else 0, dtype=torch.int64)
    sums = torch.empty(n * dim) if kind != "sgd" else None
    if state is not None:
        _need(state, torch.float32, "state")
    if _fn("torchnce_row_update")(ROW_UPDATES[kind], table.data_ptr(), dim, table.shape[0], dim,
                                  ids.data_ptr(), n, grads.data_ptr(), _ptr(state), lr, eps,
                                  scratch.data_ptr(), scratch.data_ptr() + 8 * n, cap,
                                  _ptr(sums)):
        raise ValueError(f"ids must be in [0, {table.shape[0]})")
