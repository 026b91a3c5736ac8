"""The command line, ``python -m torchnce``: ``word2vec`` and ``bench``.

* ``main``: the argument parser and the dispatch to the commands.
* ``bench``: times a training step of full softmax, sampled softmax and NCE.
* ``word2vec/``: the main job (corpus, model, training, vectors, the shipped corpus).

May import: the public API (``torchnce``, ``torchnce.distributed``) and one named internal
entry point, ``torchnce._sampled.step``. The library never imports the app.
"""
