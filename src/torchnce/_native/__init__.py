"""Native CPU kernels: C++ sources, their build, thin ctypes bindings.

* ``build``: compiles the C++ sources on first use into a per-user cache (plain C++, no torch
  headers: a few seconds), loads them, and reports which path runs and why
  (:func:`native_status`, public as ``torchnce.native_available``).
* ``word2vec.cpp`` / ``word2vec``: word2vec's SGD over given examples and over a chunk's
  skip-gram windows, registered as the custom ops ``torchnce::word2vec_batches`` and
  ``torchnce::word2vec_skipgram``. Their pure-PyTorch twin and oracle is the graph-free step
  of ``torchnce._sampled.step`` (``Word2Vec.step`` in the app) and the public losses.
* ``sampling.cpp`` / ``sampling``: draws from a Walker alias table.
* ``corpus.cpp`` / ``corpus``: an ASCII corpus tokenised, counted and encoded in one pass, and
  float rows printed as text (the main job's corpus reading and vector writing).

Python validates every argument; a kernel trusts its documented preconditions. Where no
compiler is found or the build fails, the pure-PyTorch path runs and a warning says why, once.
``TORCHNCE_NATIVE=0`` forces the pure path.

May import: ``torchnce._common``.
"""
