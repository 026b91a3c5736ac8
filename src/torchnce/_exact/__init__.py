"""Exact evaluation over all classes, in chunks of classes so memory stays bounded.

* ``chunked``: the chunked walk over the full logits (softplus sums, log-sum-exps, top-k) with
  its analytic backward.
* ``evaluation``: ``full_logits``, ``nce_eval_loss``, ``sampled_softmax_eval_loss``, ``top_k``.

May import: ``torchnce._common``, ``torchnce._sampled``.
"""
