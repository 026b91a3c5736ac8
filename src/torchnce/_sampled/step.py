"""The graph-free training step: the one internal entry point the command line uses.

A caller that applies its own sparse updates (word2vec's SGD) needs a sampled loss and its
gradients without autograd. :class:`GraphFreeStep` validates labels and negatives once for a
chunk of many batches (``classes``), and then computes each batch's loss and ``scale`` times
its gradients (``__call__``) with the code of the fused autograd node, which tests pin to
autograd through the public functions. It takes no fake tensors and exposes no ``Problem``.
"""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import as_int_tensor, check_all_in_range, check_bool, check_choice
from torchnce._common.labels import TrueLabels
from torchnce._sampled.fused import LossGrads, Workspace, sampled_loss_grads
from torchnce._sampled.problem import (
    Classes,
    check_inputs,
    check_sampled_values,
    logged_counts,
    make_classes,
)
from torchnce._sampled.spec import SPECS

__all__ = ["Classes", "GraphFreeStep", "LossGrads"]


class GraphFreeStep:
    """Sampled-loss steps on one unsharded ``[C, D]`` table, without autograd.

    Args:
        loss: ``"nce_loss"``, ``"sampled_softmax_loss"`` or ``"negative_sampling_loss"``:
            the public function whose loss and gradients each call computes, with its
            TensorFlow default for ``remove_accidental_hits`` unless given.
        weights: the ``[C, D]`` float table (no bias), updated by the caller.
        remove_accidental_hits: as in the public function; None takes its default.

    Examples:
        >>> import torch
        >>> from torchnce._sampled.step import GraphFreeStep
        >>> step = GraphFreeStep("negative_sampling_loss", torch.zeros(4, 2))
        >>> classes = step.classes(torch.tensor([0, 1]), (torch.tensor([[2], [3]]),
        ...                        torch.ones(2, 1), torch.ones(2, 1)))
        >>> out = step(torch.ones(1, 2), classes.rows(slice(0, 1)), scale=-0.1)
        >>> round(out.loss.item(), 4)  # two logits of 0: 2·log 2
        1.3863
    """

    def __init__(self, loss: str, weights: torch.Tensor, *,
                 remove_accidental_hits: bool | None = None) -> None:
        self.spec = SPECS[check_choice("loss", loss, tuple(SPECS))]
        if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
            got = weights.dtype if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise TypeError(f"weights must be a floating [num_classes, dim] tensor, got {got}")
        if weights.dim() != 2:
            raise ValueError(f"weights must be a [num_classes, dim] tensor, got shape "
                             f"{tuple(weights.shape)}")
        self.weights = weights
        hits = self.spec.remove_accidental_hits if remove_accidental_hits is None else (
            remove_accidental_hits)
        self.remove_accidental_hits = check_bool("remove_accidental_hits", hits)
        self.workspace = Workspace()

    def classes(self, labels: torch.Tensor, sampled_values: Any) -> Classes:
        """Labels ``[N]`` and per-example negatives (``(candidates [N, S], counts [N, 1],
        counts [N, S])``) validated once, with one read of the device; batches take their
        rows with ``Classes.rows``, which checks nothing."""
        ids = as_int_tensor("labels", labels, device=self.weights.device)
        ids = ids.reshape(-1, 1).to(self.weights.device)
        values = check_sampled_values(sampled_values, ids)
        if values.sampled_candidates.dim() != 2:
            raise ValueError(f"sampled_values must hold per-example candidates [N, num_sampled], "
                             f"got shape {tuple(values.sampled_candidates.shape)}")
        counts = logged_counts(values, None) if self.spec.subtract_log_q else []
        check_all_in_range((("labels", ids), ("sampled_values", values[0])),
                           self.weights.shape[0], counts)
        return make_classes(TrueLabels(ids, None), values, values[0].shape[-1],
                            self.remove_accidental_hits)

    def __call__(self, inputs: torch.Tensor, classes: Classes, *, scale: float) -> LossGrads:
        """The loss ``[B]`` of ``inputs`` ``[B, D]`` against ``classes`` (rows of
        :meth:`classes`) and ``scale`` times its gradients; the returned rows live in a
        reused buffer until the next call."""
        inputs = check_inputs(inputs, self.weights.shape[1])
        if inputs.shape[0] != classes.labels.shape[0]:
            raise ValueError(f"inputs must have one row per label ({classes.labels.shape[0]}), "
                             f"got {inputs.shape[0]}")
        return sampled_loss_grads(inputs, self.weights, None, classes, self.spec, scale=scale,
                                  workspace=self.workspace)
