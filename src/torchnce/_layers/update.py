"""Optimizer in backward for the output table: :class:`RowUpdate`.

A sampled step touches ``B·T + S`` rows of a ``[C, D]`` table. With ``sparse_grad=True`` the
backward still builds a sparse gradient tensor and an optimizer then walks it; FBGEMM's
table-batched embeddings and TorchRec's optimizer-in-backward skip both by updating the looked-up
rows inside the backward. :class:`RowUpdate` does that for the output-layer modules: the
module's fused backward hands it the rows' gradients (of the loss as the module reduces it) and
it applies SGD, Adagrad or row-wise Adagrad to those rows in place; ``weight.grad`` and
``bias.grad`` are never built.

Repeated ids in a step are summed first, so a step equals the dense optimizer's step on the
dense gradient: SGD adds every occurrence's ``−lr·g`` (addition of the repeats, as
``torch.optim.SGD`` on the sparse gradient does); the Adagrad variants add the summed gradient's
square to the accumulator once per row and step once per row. The grouping is sort-based and
fixed-shape (no ``unique``, no read of the device), so the pure-PyTorch path runs on any device
with no host synchronisation; the native CPU path (when built) does the same arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchnce._common.checks import check_choice
from torchnce._common.lookup import route, sparse_rows
from torchnce._native import sampled as native

UPDATES = ("sgd", "adagrad", "rowwise_adagrad")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class RowUpdate(nn.Module):
    r"""Optimizer in backward for an output layer's ``weight`` and ``bias`` rows.

    Give it to :class:`torchnce.NCELoss`, :class:`torchnce.SampledSoftmaxLoss` or
    :class:`torchnce.NegativeSamplingLoss` as ``update=``: each backward of a training-mode
    (sampled) call then updates the rows the step touched, in place, and leaves
    ``weight.grad`` and ``bias.grad`` None; ``inputs`` still receive their gradient. With the
    step's row gradients ``g`` (repeated ids summed, the loss as reduced by the module):

    * ``"sgd"``: ``w ← w − lr·g``, equal to ``sparse_grad=True`` with ``torch.optim.SGD``
      (no momentum, no weight decay).
    * ``"adagrad"``: ``s ← s + g²``, ``w ← w − lr·g / (√s + eps)`` elementwise, as
      ``torch.optim.Adagrad`` with sparse gradients (``lr_decay=0``, no weight decay).
    * ``"rowwise_adagrad"``: one accumulator per row, ``s ← s + mean(g²)``,
      ``w ← w − lr·g / (√s + eps)`` (FBGEMM's row-wise Adagrad; a bias is its own row of one
      element, so for biases it is Adagrad).

    The accumulators are buffers of this module, a child of the layer: they are in the layer's
    ``state_dict`` (``update.weight_state``, ``update.bias_state``; with ``num_shards > 1``
    ``update.weight_state_0`` …), move with ``.to()``, and a checkpoint resumes with the same
    next step. ``lr`` may be changed between steps (``layer.update.lr = …``) for a schedule.

    Args:
        name: ``"sgd"``, ``"adagrad"`` or ``"rowwise_adagrad"``.
        lr: the learning rate, a finite number > 0.
        eps: added to ``√s`` (Adagrad variants), a finite number > 0; torch's default 1e-10.
        initial_accumulator_value: the accumulators' start value, finite and >= 0.

    Raises:
        TypeError: a non-number ``lr``, ``eps`` or ``initial_accumulator_value``.
        ValueError: an unknown ``name``; ``lr`` or ``eps`` <= 0, NaN or infinite; a negative
            ``initial_accumulator_value``. The layer refuses it with ``sparse_grad=True``, and
            at a call when a parameter has ``requires_grad=False``.

    Note:
        Adagrad is not linear in the gradient: a step of the mean loss over a batch is not the
        mean of per-example steps, and duplicate rows count once per step with their summed
        gradient, as the dense optimizer sees them. One RowUpdate serves one layer; the
        update happens during ``backward``, so a second ``backward`` of the same graph
        (``retain_graph=True``) raises instead of updating twice, and a table used elsewhere
        in the same graph (tied input and output embeddings) cannot take it.

    Examples:
        >>> import torch, torchnce
        >>> _ = torch.manual_seed(0)
        >>> layer = torchnce.NCELoss(100, 8, num_sampled=5,
        ...                          update=torchnce.RowUpdate("adagrad", lr=0.1))
        >>> before = layer.weight.detach().clone()
        >>> layer(torch.randn(4, 8), torch.tensor([3, 14, 15, 92])).backward()
        >>> layer.weight.grad is None, bool((layer.weight != before).any())
        (True, True)
        >>> sorted(layer.state_dict())
        ['bias', 'update.bias_state', 'update.weight_state', 'weight']
    """

    weight_states: list[str]
    bias_states: list[str]

    def __init__(self, name: str, lr: float, *, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0) -> None:
        super().__init__()
        self.kind = check_choice("name", name, UPDATES)
        self.lr = lr
        self.eps = _positive("eps", eps)
        if isinstance(initial_accumulator_value, bool) or not isinstance(
                initial_accumulator_value, (int, float)):
            raise TypeError(f"initial_accumulator_value must be a number, got "
                            f"{type(initial_accumulator_value).__name__}")
        if not (math.isfinite(initial_accumulator_value) and initial_accumulator_value >= 0):
            raise ValueError(f"initial_accumulator_value must be finite and >= 0, got "
                             f"{initial_accumulator_value!r}")
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.weight_states, self.bias_states = [], []
        self._bound: tuple[int, ...] | None = None

    @property
    def lr(self) -> float:
        """The learning rate; set it between steps for a schedule."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _positive("lr", value)

    @property
    def stateful(self) -> bool:
        """Whether the update keeps accumulators (the Adagrad variants)."""
        return self.kind != "sgd"

    def bind(self, weights: list[torch.Tensor], biases: list[torch.Tensor] | None) -> None:
        """Create the accumulators for a layer's shards (once; ``ValueError`` if this update
        already serves tables of other shapes)."""
        key = (*(s for w in weights for s in w.shape), -1,
               *(s for b in biases or [] for s in b.shape))
        if self._bound is not None:
            if self._bound != key:
                raise ValueError("update must be a RowUpdate of its own: this one already "
                                 "updates another layer's tables")
            return
        self._bound = key
        if not self.stateful:
            return
        def suffix(i: int) -> str:
            return "" if len(weights) == 1 else f"_{i}"

        for i, w in enumerate(weights):
            shape = w.shape if self.kind == "adagrad" else w.shape[:1]
            name = f"weight_state{suffix(i)}"
            self.register_buffer(name, torch.full(shape, self.initial_accumulator_value,
                                                  dtype=w.dtype, device=w.device))
            self.weight_states.append(name)
        for i, b in enumerate(biases or []):
            name = f"bias_state{suffix(i)}"
            self.register_buffer(name, torch.full(b.shape, self.initial_accumulator_value,
                                                  dtype=b.dtype, device=b.device))
            self.bias_states.append(name)

    def extra_repr(self) -> str:
        extra = "" if not self.stateful else (
            f", eps={self.eps}, initial_accumulator_value={self.initial_accumulator_value}")
        return f"{self.kind!r}, lr={self.lr}{extra}"

    def apply_rows(self, shards: list[torch.Tensor], states: list[str], ids: torch.Tensor,
                   grads: torch.Tensor, partition_strategy: str) -> None:
        """Update the rows ``ids`` (global, 1-D, repeats allowed) of the table ``shards`` with
        the row gradients ``grads`` (``[N, D]`` or ``[N]``)."""
        grads = grads.to(shards[0].dtype)
        table = shards[0]
        if len(shards) == 1 and table.is_contiguous() and native.usable(table, grads, ids):
            state = getattr(self, states[0]) if self.stateful else None
            native.row_update(self.kind, table.detach(), ids.contiguous(), grads.contiguous(),
                              state, self.lr, self.eps)
            return
        with torch.no_grad():
            placed: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None]]
            if len(shards) == 1:
                placed = [(0, shards[0], ids, None)]
            else:
                num_rows = sum(int(s.shape[0]) for s in shards)
                shard, row = route(ids, num_rows, len(shards), partition_strategy)
                placed = [(p, s, torch.where(shard == p, row, 0), shard == p)
                          for p, s in enumerate(shards) if s.shape[0]]
            if self.kind == "sgd":
                for _, table, rows, mine in placed:
                    step = grads if mine is None else _masked(grads, mine)
                    # the op torch.optim.SGD applies to a sparse gradient (bit-equal steps)
                    table.add_(sparse_rows(rows, step, table.shape), alpha=-self.lr)
                return
            summed, first = _group_sums(ids, grads)
            square = summed * summed
            if self.kind == "rowwise_adagrad" and square.dim() == 2:
                square = square.mean(dim=1)
            for p, table, rows, mine in placed:
                keep = first if mine is None else first & mine
                state = getattr(self, states[p])
                state.index_add_(0, rows, _masked(square, keep))
                std = state.index_select(0, rows).sqrt_().add_(self.eps)
                if std.dim() < summed.dim():
                    std = std.unsqueeze(1)
                step = (summed / std).mul_(-self.lr)
                table.index_add_(0, rows, _masked(step, keep))


def checked_update(update: Any, *, sparse_grad: bool) -> RowUpdate | None:
    """A layer's ``update`` argument: a ``RowUpdate`` or None, never with ``sparse_grad``."""
    if update is not None and not isinstance(update, RowUpdate):
        raise TypeError(f"update must be a torchnce.RowUpdate or None, got "
                        f"{type(update).__name__}")
    if update is not None and sparse_grad:
        raise ValueError("update cannot be combined with sparse_grad=True: the RowUpdate "
                         "applies the rows' gradients itself, none is built")
    return update


def bound_update(update: RowUpdate | None, sparse_grad: bool, weights: list[torch.Tensor],
                 biases: list[torch.Tensor] | None) -> RowUpdate | None:
    """A layer's update checked against its current settings and bound to its tables (at
    construction and at every sampled call, so that a setting changed since is caught)."""
    update = checked_update(update, sparse_grad=sparse_grad)
    if update is None:
        return None
    if not all(t.requires_grad for t in [*weights, *(biases or [])]):
        raise ValueError("update needs every weight and bias to require grad (the RowUpdate "
                         "updates them in backward); one has requires_grad=False")
    update.bind(weights, biases)
    return update


def _masked(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``values`` where ``keep`` (per row), exactly 0 elsewhere (not ``values·0``: inf·0 is NaN)."""
    if values.dim() == 2:
        keep = keep.unsqueeze(1)
    return torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))


def _group_sums(ids: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position ``i``: the sum of ``grads`` over the positions holding ``ids[i]``,
    and whether ``i`` is the first of them; fixed shapes, nothing read on the host."""
    ordered, order = torch.sort(ids, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_sorted = starts.cumsum(0) - 1
    group = torch.empty_like(group_sorted).scatter_(0, order, group_sorted)
    first = torch.empty_like(starts).scatter_(0, order, starts)
    sums = torch.zeros_like(grads).index_add_(0, group, grads)
    return sums.index_select(0, group), first
