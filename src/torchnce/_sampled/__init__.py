"""The sampled losses: the validated call, accidental hits, sampled logits, the fused node.

* ``spec``: what each sampled loss computes (``LossSpec``), defined once.
* ``problem``: validation of a sampled-loss call into a ``Problem`` (the validated call).
* ``hits``: accidental hits, ``compute_accidental_hits``.
* ``logits``: TensorFlow's ``_compute_sampled_logits`` maths, ``compute_sampled_logits``.
* ``fused``: gather, logits, loss and the analytic backward in one autograd node, and the
  same code without a graph (``sampled_loss_grads``) for callers that update rows themselves.
* ``losses``: ``nce_loss``, ``sampled_softmax_loss``, ``negative_sampling_loss``.
* ``step``: the graph-free training step over validated chunks (the app's one entry point).

May import: ``torchnce._common``, ``torchnce._sampling``.
"""
