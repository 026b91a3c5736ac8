"""``python -m torchnce``: the command-line entry (also the ``torchnce`` console script).

Commands: ``word2vec`` trains word vectors on the shipped corpus (or ``--corpus``); ``bench``
times a training step of full softmax, sampled softmax and NCE as the classes grow. The
commands live in :mod:`torchnce.app`.
"""

from __future__ import annotations

import sys

from torchnce.app.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
