"""The fused sampled-loss step as two custom operators: ``torchnce::fused_forward`` and
``torchnce::fused_backward``.

Registered with ``torch.library`` (a schema, one implementation for every device and a fake
implementation for shape propagation), so that ``torch.compile`` treats each as one opaque op
and the meta device and ``FakeTensorMode`` propagate shapes through them. The autograd of the
step is the fused autograd node of ``fused.py``, whose forward and backward call these two
ops. Their implementations (:func:`register`, given by ``fused.py``) run the native kernels for
float32 CPU tensors and the pure-PyTorch code otherwise.

``fused_forward(inputs, weight, bias, w_ids, b_ids, log_q_true, log_q_sampled, hits,
label_mask, num_true, width, softmax) -> (loss [B], dL/dlogits [B, T+S], rows [N, D])``: the
loss per example and its gradient with respect to the logits, in the work dtype (float32 for
float16/bfloat16), and the rows gathered (``width`` = T + S for per-example candidates, 0 for
shared ones). ``fused_backward(g, x, rows, num_true, width, need_x, need_rows, need_bias) ->
(dL/dx, dL/drows [N, D], dL/dbias_rows [N])`` from ``g = dL/dlogits`` scaled; an output not
needed is an empty tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_LIBRARY = torch.library.Library("torchnce", "FRAGMENT")  # type: ignore[no-untyped-call]
_LIBRARY.define(  # type: ignore[no-untyped-call]
    "fused_forward(Tensor inputs, Tensor weight, Tensor? bias, Tensor? w_ids, Tensor? b_ids, "
    "Tensor? log_q_true, Tensor? log_q_sampled, Tensor? hits, Tensor? label_mask, "
    "int num_true, int width, bool softmax) -> (Tensor, Tensor, Tensor)")
_LIBRARY.define(  # type: ignore[no-untyped-call]
    "fused_backward(Tensor g, Tensor x, Tensor rows, int num_true, int width, bool need_x, "
    "bool need_rows, bool need_bias) -> (Tensor, Tensor, Tensor)")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _work(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


@torch.library.register_fake("torchnce::fused_forward")  # type: ignore[untyped-decorator]
def _forward_fake(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  w_ids: torch.Tensor | None, b_ids: torch.Tensor | None,
                  log_q_true: torch.Tensor | None, log_q_sampled: torch.Tensor | None,
                  hits: torch.Tensor | None, label_mask: torch.Tensor | None, num_true: int,
                  width: int, softmax: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    del bias, b_ids, log_q_true, log_q_sampled, hits, label_mask, softmax
    batch, work = inputs.shape[0], _work(inputs.dtype)
    rows = w_ids.shape[0] if w_ids is not None else weight.shape[0]
    columns = width if width > 0 else rows - batch * num_true + num_true
    return (inputs.new_empty((batch,), dtype=work), inputs.new_empty((batch, columns), dtype=work),
            inputs.new_empty((rows, inputs.shape[1]), dtype=work))


@torch.library.register_fake("torchnce::fused_backward")  # type: ignore[untyped-decorator]
def _backward_fake(g: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, num_true: int,
                   width: int, need_x: bool, need_rows: bool, need_bias: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    del g, num_true, width
    n = rows.shape[0]
    return (x.new_empty(tuple(x.shape) if need_x else (0,)),
            x.new_empty((n, x.shape[1]) if need_rows else (0,)),
            x.new_empty((n,) if need_bias else (0,)))


def register(forward: Callable[..., Any], backward: Callable[..., Any]) -> None:
    """Give the two ops their implementation (for every device: CompositeExplicitAutograd)."""
    _LIBRARY.impl("fused_forward", forward, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    _LIBRARY.impl("fused_backward", backward, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]


def fused_forward(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = torch.ops.torchnce.fused_forward(*args)
    return out


def fused_backward(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = torch.ops.torchnce.fused_backward(
        *args)
    return out
