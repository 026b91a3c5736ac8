"""``python -m torchnce word2vec``: word vectors trained with torchnce's sampled losses.

* ``cli``: the command's options, progress, evaluation, plots and output files.
* ``corpus``: reading, tokenising and subsampling a corpus; the shipped one in ``data/``.
* ``model``: the settings, the two tables and one SGD step.
* ``training``: epochs, the learning-rate schedule and the Hogwild worker processes.
* ``vectors``: the trained vectors, their files and the similarity/analogy evaluations.
"""
