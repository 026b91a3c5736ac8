"""What both exchanges of a sampled step share: the rows that travel and the candidates' check.

A row travels as ``[D (+1)]``: the weight row, with the bias as a last column when there is
one. The candidates must be the same on every rank; a checksum of them travels with each
step's first exchange, and the message below is what every rank raises when they differ.
"""

from __future__ import annotations

import torch

from torchnce._common.lookup import gather_rows

SAME_CANDIDATES = ("sampled_values must hold the same candidates on every rank, got different "
                   "ones; draw them with a shared seed or broadcast them")


def payload(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor, sparse_grad: bool
) -> torch.Tensor:
    """``[n, D (+1)]``: the weight rows, with the bias as a last column when there is one."""
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
