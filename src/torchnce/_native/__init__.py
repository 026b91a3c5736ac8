"""Native CPU kernels: C++ sources, their build, thin ctypes bindings.

* ``build``: compiles the C++ sources on first use into a per-user cache (plain C++, no torch
  headers: about a second), loads them, and reports which path runs and why
  (:func:`native_status`, public as ``torchnce.native_available``).
* ``word2vec.cpp`` / ``word2vec``: word2vec's SGD over a chunk of examples, batch by batch,
  registered as the custom op ``torchnce::word2vec_batches``. Its pure-PyTorch twin and
  oracle is the graph-free step of ``torchnce._sampled.step`` (``Word2Vec.step`` in the app).

Python validates every argument; a kernel trusts its documented preconditions. Where no
compiler is found or the build fails, the pure-PyTorch path runs and a warning says why, once.
``TORCHNCE_NATIVE=0`` forces the pure path.

May import: ``torchnce._common``.
"""
