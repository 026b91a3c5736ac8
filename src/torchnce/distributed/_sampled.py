"""One sampled step over class shards: rows travel to the data, the loss is computed locally.

Rank ``r`` holds the rows of its classes and its own batch ``x_r`` ``[b_r, D]`` with labels
``[b_r, T]``; every rank holds the same ``S`` candidates. An exchange brings each rank the
``b_r·T + S`` rows its examples need, and the rank computes the loss of its rows with the
single-process fused node: the maths is the core's, only the rows' origin differs.

Two exchanges give the same rows (and, by their backward, the same shard gradients):

* ``_padded`` (the default with dense gradients): fixed-size blocks whose split sizes the host
  knows from shapes, so a step reads nothing back from the device; it sends every label row
  from every rank, ``(P−1)·m·T`` rows per rank and direction for a batch capacity ``m``;
* ``_variable`` (``exchange="variable"``, and the default with ``sparse_grad=True``, whose
  gradient must hold only the rows looked up): only the rows asked for travel,
  ``(P−1)/P·b·T``, sized by per-step counts that the host reads.
"""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.types import LossKind
from torchnce._sampled.fused import FusedPlan, fused_loss
from torchnce._sampled.logits import log_q
from torchnce._sampled.problem import Classes
from torchnce.distributed._comm import Communicator
from torchnce.distributed._padded import padded_rows
from torchnce.distributed._variable import variable_rows


def sharded_sampled_loss(
    kind: LossKind,
    comm: Communicator,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    inputs: torch.Tensor,
    classes: Classes,
    num_classes: int,
    strategy: str,
    *,
    sparse_grad: bool,
    capacity: int | None,
    update: Any = None,
) -> tuple[torch.Tensor, int | torch.Tensor]:
    """``(per-example loss [b_r], global batch size)`` for validated classes: labels int64
    ``[b_r, T]``, shared candidates ``[S]`` (the same on every rank), counts and hits. A
    ``capacity`` (the most rows of any rank's batch) takes the padded exchange, whose global
    batch size is a 0-d tensor; None takes the variable one. ``update``: a ``RowUpdate`` bound
    to this rank's shard, applied in backward."""
    labels, num_true = classes.labels, classes.num_true
    total: int | torch.Tensor
    if capacity is None:
        rows, total_labels = variable_rows(comm, weight, bias, labels.reshape(-1),
                                           classes.sampled, num_classes, strategy, sparse_grad,
                                           update)
        total = total_labels // num_true
    else:
        rows, total = padded_rows(comm, weight, bias, labels, classes.sampled, num_classes,
                                  strategy, capacity, update)
    dim = weight.shape[1]
    w_rows, b_rows = rows[:, :dim], (None if bias is None else rows[:, dim])
    plan = FusedPlan(None, None, log_q(classes, inputs.dtype), classes.hits, None, num_true,
                     None, kind, False)
    return fused_loss(inputs, w_rows, b_rows, plan), total
