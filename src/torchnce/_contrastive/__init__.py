"""Contrastive retrieval losses with log-Q correction, and streaming frequency estimates.

* ``core``: argument checks, candidate blocks, masks and the softmax loss they share.
* ``info_nce``: ``info_nce_loss`` (in-batch and explicit negatives).
* ``mixed_negatives``: ``mixed_negatives_loss`` (in-batch plus sampled negatives).
* ``frequency``: ``StreamingFrequencyEstimator`` (item probabilities for log-Q).
* ``options``: the checks and effects of TFRS' retrieval options (hard negatives, sample
  weights, probability clipping, score masks).
* ``supcon``: ``supervised_contrastive_loss`` (SupCon, multi-positive).
* ``queue``: ``KeyQueue`` (past keys as extra negatives).

May import: ``torchnce._common``, ``torchnce._sampling``.
"""
