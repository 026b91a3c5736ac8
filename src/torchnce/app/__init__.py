"""The command line, ``python -m torchnce``: ``word2vec`` and ``bench``.

* ``main``: the argument parser and the dispatch to the commands.
* ``bench``: times a training step of full softmax, sampled softmax and NCE.
* ``word2vec/``: the main job (corpus, model, training, vectors, the shipped corpus).

May import: the public API (``torchnce``, ``torchnce.distributed``) and the two named internal
entry points of word2vec's step: ``torchnce._sampled.step`` (pure PyTorch) and its native twin
``torchnce._native`` (``word2vec`` and ``sampling``). The library never imports the app.
"""
