"""Mixed negative sampling: in-batch negatives plus negatives sampled from the whole corpus."""

from __future__ import annotations

import math
from typing import Any

import torch

from torchnce._common.checks import check_bool
from torchnce._common.types import Reduction
from torchnce._contrastive.core import (
    check_ids,
    check_keys,
    check_log_q,
    check_query,
    check_reduction,
    check_temperature,
    columns,
    embed,
    id_mask,
    in_batch_mask,
    mixed_rows,
)
from torchnce._contrastive.options import (
    check_min_probability,
    check_num_hard_negatives,
    check_sample_weight,
    check_score_mask,
    removed,
    weigh,
)


def mixed_negatives_loss(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    sampled_keys: torch.Tensor,
    *,
    batch_log_q: Any,
    sampled_log_q: Any,
    temperature: float | torch.Tensor = 0.1,
    normalize: bool = True,
    reduction: Reduction = "mean",
    query_ids: Any = None,
    key_ids: Any = None,
    sampled_ids: Any = None,
    num_hard_negatives: int | None = None,
    sample_weight: Any = None,
    min_probability: float | None = None,
    score_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Softmax over the ``B`` in-batch keys plus ``M`` keys sampled from the corpus (MNS).

    Each row's positive ``k_i`` competes with the other rows' positives (drawn, in effect,
    from the training data's item distribution) and with ``M`` keys ``n_m`` shared by the
    batch, drawn from a sampler over the whole corpus (e.g. uniform) so that items rare in the
    data are negatives too. Each source has its own log-Q correction, the log of the
    candidate's expected count in that source:

    .. math::
        \ell_{ij} = s(q_i, k_j) / \tau - \log p_j, \qquad
        \ell_{i, B+m} = s(q_i, n_m) / \tau - \log (M q_m)

        L_i = -\ell_{ii} + \log \sum_{c \notin \mathcal{M}_i} e^{\ell_{ic}},
        \qquad c \in \{1, \dots, B + M\}

    where ``p_j`` is the probability that key j's item is in a batch (e.g. from
    :class:`StreamingFrequencyEstimator`, already on the per-batch scale) and ``q_m`` the
    sampler's per-draw probability, so ``M q_m`` is its expected count among the ``M`` draws.
    ``𝓜_i`` holds the false negatives: in-batch rows ``j ≠ i`` sharing row i's query id or key
    id, and sampled keys whose id equals row i's key id. The positive is never masked.

    Args:
        query: ``[B, D]`` floating.
        positive_key: ``[B, D]``, same dtype and device.
        sampled_keys: ``[M, D]`` keys drawn from the corpus sampler, shared by the batch.
        batch_log_q: ``[B]`` ``log p_j`` of each positive key (finite, <= 0).
        sampled_log_q: ``[M]`` ``log q_m``, the sampler's per-draw log-probability (finite,
            <= 0). With a TensorFlow-style sampler pass ``(sampled_expected_count / M).log()``.
        temperature: ``τ``, a float > 0 or a one-element tensor clamped into ``(0.01, 100)``.
        normalize: cosine similarity if True, dot product if False.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-row ``[B]``).
        query_ids: integer ``[B]`` query ids (masks in-batch pairs sharing a query).
        key_ids: integer ``[B]`` item ids of the positive keys.
        sampled_ids: integer ``[M]`` item ids of the sampled keys; needs ``key_ids``.
        num_hard_negatives: ``K`` in ``[1, B - 1 + M]``: keep only the ``K`` highest-scoring
            negatives of each row, after corrections and masks (TFRS ``num_hard_negatives``).
        sample_weight: ``[B]`` finite weights >= 0; ``"sum"`` is ``Σ w_i L_i`` (TFRS'
            default reduction), ``"mean"`` that sum over ``B``, ``"none"`` ``w_i L_i``.
        min_probability: clip the probabilities behind ``batch_log_q`` and ``sampled_log_q``
            into ``[min_probability, 1]`` before the log (TFRS' clip is ``1e-6``).
        score_mask: bool ``[B, B + M]`` (the in-batch keys, then the sampled ones), True where
            the candidate takes part (TFRS ``score_mask``); the positive's entry is ignored.

    Returns:
        The loss in ``query``'s dtype: a scalar, or ``[B]`` for ``reduction="none"``.

    Raises:
        TypeError: non-floating embeddings, keys of another dtype, non-integer ids.
        ValueError: wrong shapes, ``temperature <= 0``, an unknown ``reduction``, log
            probabilities > 0, ``-inf`` or NaN (unless clipped), ``sampled_ids`` without
            ``key_ids``, ``num_hard_negatives`` outside ``[1, B - 1 + M]``, ``sample_weight``
            not ``[B]`` or negative, ``min_probability`` outside ``(0, 1]``, a ``score_mask``
            of the wrong shape (a ``TypeError`` for a non-bool one).

    Note:
        Both corrections are required: without them the two sources are on different scales.
        To turn them off pass ``batch_log_q = 0`` and ``sampled_log_q = -log M`` (every
        correction 0). The checks of the log-probabilities read their values on CPU and are
        device-side assertions elsewhere (no synchronisation). A sampled key equal to another
        row's positive stays a negative. TFRS' ``Retrieval`` with extra candidates
        (``candidate_embeddings`` ``[B + M, D]``) is this loss with ``sampled_log_q = log p_m -
        log M`` (its correction has no ``log M``). Past keys from a :class:`KeyQueue` are
        sampled keys too: pass ``queue.keys``, ``queue.log_q`` and ``queue.ids``.

    References:
        Yang et al., "Mixed Negative Sampling for Learning Two-tower Neural Networks in
        Recommendations", WWW 2020; Yi et al., RecSys 2019.

    Examples:
        >>> import math, torch, torchnce
        >>> q = k = torch.eye(2)
        >>> n = torch.zeros(2, 2)  # two sampled keys, similarity 0 with every query
        >>> loss = torchnce.mixed_negatives_loss(
        ...     q, k, n, batch_log_q=torch.zeros(2), sampled_log_q=torch.full((2,), -math.log(2)),
        ...     temperature=1.0, normalize=False, reduction="none")
        >>> loss  # no correction: -log(e / (e + 3)) = log(1 + 3/e)
        tensor([0.7437, 0.7437])
    """
    q = check_query(query)
    batch, dim = q.shape
    k = check_keys("positive_key", positive_key, q, "BD", (batch, dim))
    n = check_keys("sampled_keys", sampled_keys, q, "MD", (-1, dim))
    width = n.shape[0]
    clip = check_min_probability(min_probability)
    blq = check_log_q("batch_log_q", batch_log_q, "B", (batch,), q, clip)
    slq = check_log_q("sampled_log_q", sampled_log_q, "M", (width,), q, clip)
    tau = check_temperature(temperature)
    normalize = check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    hard = check_num_hard_negatives(num_hard_negatives, batch - 1 + width)
    weight = check_sample_weight(sample_weight, batch, q)
    shown = check_score_mask(score_mask, (batch, batch + width), "[B, B + M]", q.device)
    ids = [
        None if value is None else check_ids(name, value, letter, (size,), q.device)
        for name, value, letter, size in (
            ("query_ids", query_ids, "B", batch),
            ("key_ids", key_ids, "B", batch),
            ("sampled_ids", sampled_ids, "M", width),
        )
    ]
    qids, kids, sids = ids
    sampled_mask = None
    if sids is not None:
        if kids is None:
            raise ValueError("key_ids must be given with sampled_ids (their ids are compared)")
        sampled_mask = id_mask(kids, sids)
    q, k, n = embed(q, normalize), embed(k, normalize), embed(n, normalize)
    correction = torch.cat([blq, slq + math.log(max(width, 1))])
    mask = columns([(in_batch_mask(qids, kids), batch), (sampled_mask, width)], batch)
    loss = mixed_rows(q, k, n, 0, tau, correction, removed(mask, shown, 0), hard)
    return weigh(loss, weight, reduction)
