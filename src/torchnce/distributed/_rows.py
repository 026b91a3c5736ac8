"""What both exchanges of a sampled step share: the rows that travel and the candidates' check.

A row travels as ``[D (+1)]``: the weight row, with the bias as a last column when there is
one. The candidates must be the same on every rank; a checksum of them travels with each
step's first exchange, and the message below is what every rank raises when they differ.
"""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.lookup import gather_rows

SAME_CANDIDATES = ("sampled_values must hold the same candidates on every rank, got different "
                   "ones; draw them with a shared seed or broadcast them")


def payload(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor, sparse_grad: bool,
    update: Any = None,
) -> torch.Tensor:
    """``[n, D (+1)]``: the weight rows, with the bias as a last column when there is one.
    With ``update`` (a ``RowUpdate`` bound to this shard) the backward applies it to the rows
    instead of returning gradients (rows that travel as zeros get a zero gradient: a no-op)."""
    if update is not None:
        out: torch.Tensor = _UpdatedRows.apply(weight, bias, rows, update)  # type: ignore[no-untyped-call]
        return out
    w = gather_rows(weight, rows, sparse_grad=sparse_grad)
    if bias is None:
        return w
    b = gather_rows(bias, rows, sparse_grad=sparse_grad).to(w.dtype)
    return torch.cat([w, b.unsqueeze(1)], dim=1)


def digest(sampled: torch.Tensor) -> torch.Tensor:
    """A checksum (int64, 0-d) of the candidates and their order, to catch ranks that
    disagree; computed where the candidates are, read by no one but the exchange's check."""
    weights = torch.arange(1, 2 * sampled.numel() + 1, 2, device=sampled.device)
    return ((sampled + 1) * weights).sum() * 31 + sampled.numel()


class _UpdatedRows(torch.autograd.Function):
    """The shard's rows as :func:`payload` sends them; backward updates the shard in place."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor,
                update: Any) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.weight, ctx.bias, ctx.update, ctx.updated = weight, bias, update, False
        w = weight.detach().index_select(0, rows)
        if bias is None:
            return w
        return torch.cat([w, bias.detach().index_select(0, rows).to(w.dtype).unsqueeze(1)],
                         dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None, None]:
        if ctx.updated:
            raise RuntimeError("update: this step's rows were already updated by an earlier "
                               "backward of the same graph; run a new forward for each backward")
        ctx.updated = True
        (rows,) = ctx.saved_tensors
        dim, update = ctx.weight.shape[1], ctx.update
        update.apply_rows([ctx.weight], update.weight_states, rows, grad[:, :dim].contiguous(),
                          "mod")
        if ctx.bias is not None:
            update.apply_rows([ctx.bias], update.bias_states, rows, grad[:, dim].contiguous(),
                              "mod")
        return None, None, None, None
