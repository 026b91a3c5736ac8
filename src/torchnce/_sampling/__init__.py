"""Candidate samplers: the sampler classes, the ``tf.random.*_candidate_sampler`` functions and
the draw machinery behind both.

* ``draw``: argument checks shared by all samplers, expected counts, ``sample_values``.
* ``unique``: TensorFlow's rejection loop (sampling without replacement), vectorised.
* ``closed_form``: the uniform and log-uniform distributions (no table).
* ``tables``: vocabulary files, TensorFlow's float32 unigram weights, Walker alias tables.
* ``samplers``: the ``CandidateSampler`` base class and the closed-form sampler classes.
* ``fixed``, ``learned``: the fixed- and learned-unigram sampler classes.
* ``per_example``: ``S`` unique candidates drawn independently for every row.
* ``ops``, ``unigram_ops``: the TensorFlow-named sampler functions.
* ``fast``: when a call takes the native kernels (``torchnce._native.samplers``: eager CPU).

May import: ``torchnce._common``, ``torchnce._native``.
"""
