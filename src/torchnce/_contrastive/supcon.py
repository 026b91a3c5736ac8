"""Supervised contrastive loss: every embedding with the same label is a positive (SupCon)."""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.checks import check_bool
from torchnce._common.types import Reduction
from torchnce._contrastive.core import (
    TEMPERATURE_RANGE,
    check_ids,
    check_keys,
    check_query,
    check_reduction,
    check_temperature,
    embed,
)


def supervised_contrastive_loss(
    embeddings: torch.Tensor,
    labels: Any,
    *,
    temperature: float | torch.Tensor = 0.1,
    normalize: bool = True,
    reduction: Reduction = "mean",
    ref_embeddings: torch.Tensor | None = None,
    ref_labels: Any = None,
) -> torch.Tensor:
    r"""Supervised contrastive loss (SupCon, ``L_out``): the mean over each anchor's positives.

    Each embedding ``z_i`` is an anchor; its candidates ``A(i)`` are the other embeddings
    (``ref_embeddings`` None) or every reference embedding, and its positives
    ``P(i) ⊆ A(i)`` the candidates with its label:

    .. math::
        L_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{e^{s(z_i, z_p) / \tau}}{\sum_{a \in A(i)} e^{s(z_i, z_a) / \tau}}

    An anchor without positives has ``L_i = 0`` and is left out of the mean: ``"mean"``
    averages over the anchors with ``|P(i)| > 0`` (as pytorch-metric-learning's
    ``SupConLoss``, whose reducer averages the non-zero losses), ``"sum"`` adds every row,
    ``"none"`` gives ``[N]``.

    Relation to :func:`info_nce_loss`. With references whose labels are all distinct and
    shared one to one with the anchors (``ref_embeddings = k``, ``labels = ref_labels = ids``,
    every id once), ``P(i) = {k_i}`` and ``A(i)`` is every key: each row is exactly
    ``info_nce_loss(z, k, reduction="none")``. Without references, two views
    ``embeddings = [q; k]`` with ``labels = [ids; ids]`` (NT-Xent, SimCLR) give for the first
    ``B`` rows ``info_nce_loss(q, k, torch.cat([k, q]), key_ids=ids,
    negative_ids=torch.cat([ids, ids]), reduction="none")`` (the masks remove ``k_i`` and
    ``q_i`` from the negatives), and the same with ``q`` and ``k`` swapped for the last ``B``.

    Args:
        embeddings: ``[N, D]`` floating.
        labels: integer ``[N]`` class labels of the embeddings.
        temperature: ``τ``, a float > 0 or a one-element tensor clamped into ``(0.01, 100)``.
        normalize: cosine similarity if True (SupCon's and pytorch-metric-learning's
            default), dot product if False.
        reduction: ``"mean"`` (over the anchors with a positive), ``"sum"`` or ``"none"``.
        ref_embeddings: ``[R, D]`` candidates instead of the other embeddings (e.g. a
            :class:`KeyQueue`'s keys, or the other view); pytorch-metric-learning's ``ref_emb``.
        ref_labels: integer ``[R]`` labels of ``ref_embeddings`` (required with them).

    Returns:
        The loss in ``embeddings``' dtype: a scalar, or ``[N]`` for ``reduction="none"``.

    Raises:
        TypeError: non-floating embeddings, non-integer labels, references of another dtype.
        ValueError: wrong shapes, ``temperature <= 0``, an unknown ``reduction``,
            ``ref_embeddings`` without ``ref_labels`` or the reverse.

    Note:
        ``"mean"`` reads nothing on the host: the count of anchors with positives stays a
        tensor (a batch where no anchor has a positive gives 0, not NaN). The anchor is never
        its own candidate; with references, a reference equal to the anchor is a candidate.

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2 (``L_out``).

    Examples:
        >>> import torch, torchnce
        >>> z = torch.eye(3)  # orthogonal: every similarity 0 except with itself
        >>> labels = torch.tensor([0, 0, 1])  # anchor 2 has no positive
        >>> torchnce.supervised_contrastive_loss(z, labels, temperature=1.0, reduction="none")
        tensor([0.6931, 0.6931, 0.0000])
    """
    z = check_query(embeddings, name="embeddings")
    count, dim = z.shape
    y = check_ids("labels", labels, "N", (count,), z.device)
    tau = check_temperature(temperature)
    normalize = check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    if (ref_embeddings is None) != (ref_labels is None):
        given, missing = (("ref_embeddings", "ref_labels") if ref_labels is None
                          else ("ref_labels", "ref_embeddings"))
        raise ValueError(f"{missing} must be given with {given}, got None")
    if ref_embeddings is None:
        ref, ref_y = None, y
    else:
        ref = check_keys("ref_embeddings", ref_embeddings, z, "RD", (-1, dim), "embeddings")
        ref_y = check_ids("ref_labels", ref_labels, "R", (ref.shape[0],), z.device)
    z = embed(z, normalize)
    ref = z if ref is None else embed(ref, normalize)
    loss, anchors = _rows(z, ref, y, ref_y, tau, self_excluded=ref_embeddings is None)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / anchors.sum().clamp(min=1)


def _rows(
    z: torch.Tensor,
    ref: torch.Tensor,
    y: torch.Tensor,
    ref_y: torch.Tensor,
    tau: float | torch.Tensor,
    self_excluded: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``L_i`` ``[N]`` (the mean of ``-log softmax`` over the anchor's positive pairs, 0
    without one) and whether each anchor has a positive."""
    if isinstance(tau, torch.Tensor):
        tau = tau.to(z).clamp(*TEMPERATURE_RANGE)
    logits = z @ ref.T / tau
    positive = y.unsqueeze(1) == ref_y.unsqueeze(0)
    if self_excluded:
        self_pair = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_pair, torch.finfo(logits.dtype).min)
        positive = positive & ~self_pair
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per = positive.sum(1)
    total = torch.where(positive, -log_prob, torch.zeros((), dtype=z.dtype, device=z.device))
    return total.sum(1) / per.clamp(min=1).to(z.dtype), per > 0
