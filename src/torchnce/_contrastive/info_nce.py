"""InfoNCE: a softmax over in-batch or explicit negatives, with log-Q correction and masking."""

from __future__ import annotations

from typing import Any, Literal

import torch

from torchnce._common.checks import check_bool, check_choice
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
    in_batch_rows,
    pair_scores,
    row_scores,
    softmax_loss,
)
from torchnce._contrastive.options import (
    check_min_probability,
    check_num_hard_negatives,
    check_sample_weight,
    check_score_mask,
    removed,
    weigh,
)

NegativeMode = Literal["unpaired", "paired"]
NEGATIVE_MODES = ("unpaired", "paired")


def info_nce_loss(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    negative_keys: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 0.1,
    negative_mode: NegativeMode = "unpaired",
    symmetric: bool = False,
    normalize: bool = True,
    reduction: Reduction = "mean",
    query_ids: Any = None,
    key_ids: Any = None,
    negative_ids: Any = None,
    log_q: Any = None,
    negative_log_q: Any = None,
    num_hard_negatives: int | None = None,
    sample_weight: Any = None,
    min_probability: float | None = None,
    score_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""InfoNCE (softmax cross-entropy over candidate keys) with in-batch or explicit negatives.

    With ``s(q, k)`` the cosine similarity (``normalize=True``) or the dot product, each row's
    positive ``k_i`` competes with the other rows' positives (``negative_keys`` None) or with
    explicit negatives ``n_m`` shared by the batch (``[M, D]``) or per example (``[B, M, D]``):

    .. math::
        \ell_{ij} = s(q_i, k_j) / \tau - \log q_j, \qquad
        L_i = -\ell_{ii} + \log \sum_{j \notin \mathcal{M}_i} e^{\ell_{ij}}
        \qquad \text{(in-batch)}

        \ell_{i0} = s(q_i, k_i) / \tau - \log q_i, \quad
        \ell_{im} = s(q_i, n_{im}) / \tau - \log q^-_{im}, \qquad
        L_i = -\ell_{i0} + \log \sum_{m \notin \mathcal{M}_i} e^{\ell_{im}}
        \qquad \text{(explicit)}

    The log-Q correction (Yi et al. 2019) *subtracts* ``log q``, the log-probability that the
    candidate was sampled: popular keys, over-represented among the negatives, are pushed down
    less. It is off where ``log_q`` / ``negative_log_q`` are None (``log q = 0``). The masked set
    ``𝓜_i`` holds the false negatives: in-batch, the rows ``j ≠ i`` that share row i's query id
    or key id (their pair is a known positive, so ``k_j`` is one of row i's positives);
    explicit, the negatives whose id equals row i's key id. The positive is never masked.
    ``symmetric=True`` averages this query→key loss with the key→query loss (the transposed
    logits, same mask): ``L_i = (L_i^{q→k} + L_i^{k→q}) / 2``.

    A multi-vector query ``[B, H, D]`` (``H`` heads per query, each normalised on its own
    with ``normalize=True``) scores a key by its best head, ``s(q_i, k) = max_h s(q_{ih}, k)``
    (max-sim, as TFRS' ``Retrieval`` does for ``[num_queries, num_heads, dim]`` queries).

    The retrieval options of TFRS' ``Retrieval`` task act on these logits in TFRS' order:
    probabilities clipped into ``[min_probability, 1]`` before the log-Q correction, then the
    id masks and ``score_mask``, then ``num_hard_negatives`` keeps each row's ``K`` largest
    negative logits (the positive always stays), then ``sample_weight`` scales each row:

    .. math::
        L = \sum_i w_i L_i \;\; (\text{"sum"}), \qquad
        L = \frac{1}{B} \sum_i w_i L_i \;\; (\text{"mean"}), \qquad
        w_i L_i \;\; (\text{"none"})

    Args:
        query: ``[B, D]`` floating, or ``[B, H, D]`` multi-vector queries (max-sim).
        positive_key: ``[B, D]``, the positive key of each query, same dtype and device.
        negative_keys: ``[M, D]`` (``negative_mode="unpaired"``) or ``[B, M, D]``
            (``"paired"``); None uses the in-batch negatives.
        temperature: ``τ``, a float > 0 or a one-element tensor (e.g. a learnable parameter),
            which is clamped into ``TEMPERATURE_RANGE = (0.01, 100)`` before use.
        negative_mode: ``"unpaired"`` (negatives shared by the batch) or ``"paired"``.
        symmetric: also apply the key→query loss (in-batch negatives only; no ``log_q``).
        normalize: cosine similarity if True, dot product if False.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-row ``[B]``).
        query_ids: integer ``[B]`` ids of the queries (in-batch masking only).
        key_ids: integer ``[B]`` item ids of the positive keys.
        negative_ids: integer ``[M]`` or ``[B, M]`` ids of the explicit negatives; needs
            ``key_ids``.
        log_q: ``[B]`` log sampling probability of each positive key's item, subtracted
            wherever that key is a candidate (every row in-batch, its own row otherwise).
        negative_log_q: ``[M]`` or ``[B, M]`` log sampling probability of each negative.
        num_hard_negatives: ``K``, keep only the ``K`` highest-scoring negatives of each row
            (TFRS ``num_hard_negatives``), in ``[1, B - 1]`` in-batch, ``[1, M]`` otherwise;
            None keeps them all.
        sample_weight: ``[B]`` finite weights >= 0 of the rows (TFRS ``sample_weight``).
        min_probability: clip the probabilities behind ``log_q`` and ``negative_log_q`` into
            ``[min_probability, 1]`` (TFRS clips ``candidate_sampling_probability`` into
            ``[1e-6, 1]``): ``-inf`` (an item never seen) and values > 0 are then accepted.
        score_mask: bool ``[B, B]`` in-batch (column j: key j) or ``[B, M]`` (negative m),
            True where the candidate takes part (TFRS ``score_mask``); the positive's own
            entry is ignored, the positive always takes part.

    Returns:
        The loss in ``query``'s dtype: a scalar, or ``[B]`` for ``reduction="none"``.

    Raises:
        TypeError: non-floating embeddings, keys of another dtype than ``query``, non-integer
            ids, a non-numeric temperature.
        ValueError: wrong shapes (a key dim other than ``query``'s, per-example negatives of
            another batch size), ``temperature <= 0``, an unknown ``negative_mode`` or
            ``reduction``, ``log_q`` values > 0, ``-inf`` or NaN (probabilities outside
            ``(0, 1]``), options that do not fit the chosen form, ``num_hard_negatives``
            outside ``[1, negatives]``, ``sample_weight`` not ``[B]`` or negative,
            ``min_probability`` outside ``(0, 1]``, a ``score_mask`` of the wrong shape
            (a ``TypeError`` for a non-bool one).

    Note:
        Unlike TFRS, ``num_hard_negatives`` larger than the row's negatives is an error (TFRS
        keeps them all), and the default reduction is the mean, TFRS' the sum.
        ``log_q`` and the ids are checked once at the boundary; the ``log_q`` value check
        reads the values on CPU and is a device-side assertion elsewhere (no
        synchronisation; docs/gpu-and-compile.md). Masked entries get the dtype's most
        negative finite value after the division by ``τ``, so no NaN appears in the loss or
        any gradient. A float temperature is used as given; only tensors are clamped (their
        gradient is zero while clamped, as with CLIP's logit scale).

    References:
        van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
        2018; Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations", RecSys 2019.

    Examples:
        >>> import torch, torchnce
        >>> q = k = torch.eye(3)  # cosine similarity 1 with its own key, 0 with the others
        >>> torchnce.info_nce_loss(q, k, temperature=1.0, reduction="none")  # log(1 + 2/e)
        tensor([0.5514, 0.5514, 0.5514])
        >>> ids = torch.tensor([7, 7, 9])  # rows 0 and 1 hold the same item: log(1 + 1/e)
        >>> torchnce.info_nce_loss(q, k, temperature=1.0, reduction="none", key_ids=ids)
        tensor([0.3133, 0.3133, 0.5514])
        >>> # the hardest negative only: every negative scores 0, so log(1 + 1/e)
        >>> torchnce.info_nce_loss(q, k, temperature=1.0, reduction="none", num_hard_negatives=1)
        tensor([0.3133, 0.3133, 0.3133])
    """
    q = check_query(query, heads=True)
    batch, dim = q.shape[0], q.shape[-1]
    k = check_keys("positive_key", positive_key, q, "BD", (batch, dim))
    tau = check_temperature(temperature)
    mode = check_choice("negative_mode", negative_mode, NEGATIVE_MODES)
    symmetric = check_bool("symmetric", symmetric)
    normalize = check_bool("normalize", normalize)
    reduction = check_reduction(reduction)
    clip = check_min_probability(min_probability)
    weight = check_sample_weight(sample_weight, batch, q)
    kids = None if key_ids is None else check_ids("key_ids", key_ids, "B", (batch,), q.device)
    lq = None if log_q is None else check_log_q("log_q", log_q, "B", (batch,), q, clip)
    if negative_keys is None:
        _check_absent(
            "without negative_keys", negative_ids=negative_ids, negative_log_q=negative_log_q
        )
        if symmetric and lq is not None:
            raise ValueError(
                "log_q must be None when symmetric=True, got a tensor; the key→query loss has"
                " no sampling probabilities for the queries"
            )
        hard = check_num_hard_negatives(num_hard_negatives, batch - 1)
        shown = check_score_mask(score_mask, (batch, batch), "[B, B]", q.device)
        qids = (
            None
            if query_ids is None
            else check_ids("query_ids", query_ids, "B", (batch,), q.device)
        )
        ids = in_batch_mask(qids, kids)
        q, k = embed(q, normalize), embed(k, normalize)
        back = None
        if symmetric:
            back = (None, removed(ids, None if shown is None else shown.T, 0))
        loss = in_batch_rows(q, k, 0, tau, lq, removed(ids, shown, 0), hard, back)
        return weigh(loss, weight, reduction)
    if symmetric:
        raise ValueError("symmetric must be False with negative_keys (in-batch only), got True")
    _check_absent("with negative_keys (in-batch only)", query_ids=query_ids)
    n, nlq, mask = _negatives(q, negative_keys, mode, kids, negative_ids, negative_log_q, clip)
    width = n.shape[-2]
    hard = check_num_hard_negatives(num_hard_negatives, width)
    shown = check_score_mask(score_mask, (batch, width), "[B, M]", q.device)
    q, k, n = embed(q, normalize), embed(k, normalize), embed(n, normalize)
    loss = _explicit(q, k, n, tau, lq, nlq, removed(mask, shown, None), hard)
    return weigh(loss, weight, reduction)


def _check_absent(form: str, **options: Any) -> None:
    """Reject options that the chosen form of the loss does not use."""
    for name, value in options.items():
        if value is not None:
            raise ValueError(f"{name} must be None {form}, got {type(value).__name__}")


def _negatives(
    q: torch.Tensor,
    negative_keys: Any,
    mode: str,
    key_ids: torch.Tensor | None,
    negative_ids: Any,
    negative_log_q: Any,
    clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The checked negatives ``[M, D]`` or ``[B, M, D]``, their log q and their id mask."""
    batch, dim = q.shape[0], q.shape[-1]
    letters, shape = ("MD", (-1, dim)) if mode == "unpaired" else ("BMD", (batch, -1, dim))
    n = check_keys("negative_keys", negative_keys, q, letters, shape)
    per, per_shape = letters[:-1], tuple(n.shape[:-1])  # one value per negative
    nlq = None
    if negative_log_q is not None:
        nlq = check_log_q("negative_log_q", negative_log_q, per, per_shape, q, clip)
    if negative_ids is None:
        return n, nlq, None
    nids = check_ids("negative_ids", negative_ids, per, per_shape, q.device)
    if key_ids is None:
        raise ValueError("key_ids must be given with negative_ids (their ids are compared)")
    return n, nlq, id_mask(key_ids, nids)


def _explicit(
    q: torch.Tensor,
    k: torch.Tensor,
    n: torch.Tensor,
    tau: float | torch.Tensor,
    log_q: torch.Tensor | None,
    negative_log_q: torch.Tensor | None,
    mask: torch.Tensor | None,
    hard: int | None,
) -> torch.Tensor:
    """Per-row loss over ``[positive, negatives]``, the positive in column 0."""
    batch, width = q.shape[0], n.shape[-2]
    scores = torch.cat([row_scores(q, k).unsqueeze(1), pair_scores(q, n)], dim=1)
    correction = columns(
        [(None if log_q is None else log_q.unsqueeze(1), 1), (negative_log_q, width)], batch
    )
    full_mask = None if mask is None else columns([(None, 1), (mask, width)], batch)
    target = torch.zeros(batch, dtype=torch.long, device=q.device)
    return softmax_loss(scores, target, tau, correction, full_mask, hard)
