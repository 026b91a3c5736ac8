"""Native CPU code: C++ sources, their build, thin bindings.

* ``build``: compiles the sources on first use into a per-user cache and loads them, and
  reports which path runs and why (``native_available``, public). Three libraries: the kernels
  (plain C++, no torch headers, a few seconds; called through ctypes), the operators
  (``ops.cpp``, against torch's headers: ``torch.ops.torchnce_cpu.*``) and the samplers'
  pybind11 module (``pysamplers.cpp``).
* ``word2vec.cpp`` / ``word2vec``: word2vec's SGD over given examples and over a chunk's
  skip-gram windows, registered as the custom ops ``torchnce::word2vec_batches`` and
  ``torchnce::word2vec_skipgram``. Their pure-PyTorch twin and oracle is the graph-free step
  of ``torchnce._sampled.step`` (``Word2Vec.step`` in the app) and the public losses.
* ``ops.cpp`` over ``sampled.cpp`` / ``sampled``: the fused sampled-loss step (one operator per
  forward and per backward), the row update, and the ``RowUpdate`` step as one C++ autograd
  node. Their twin is ``torchnce._sampled.fused``.
* ``samplers.cpp`` / ``samplers`` (with ``pysamplers.cpp``): the candidate samplers' draws.
* ``sampling.cpp`` / ``sampling``: draws from a Walker alias table.
* ``corpus.cpp`` / ``corpus``: an ASCII corpus tokenised, counted and encoded in one pass, and
  float rows printed as text (the main job's corpus reading and vector writing).

Python validates every argument; the kernels trust their documented preconditions, and the
operators check theirs again. Where no compiler is found or a build fails, the pure-PyTorch
path runs and a warning says why, once. ``TORCHNCE_NATIVE=0`` forces the pure path.

May import: ``torchnce._common``.
"""
