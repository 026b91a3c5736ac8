"""``python -m torchnce``: the command-line entry (also the ``torchnce`` console script).

Commands: ``word2vec`` trains word vectors on the shipped corpus (or ``--corpus``); ``bench``
times a training step of full softmax, sampled softmax and NCE as the classes grow. The
commands live in :mod:`torchnce.app`.
"""

from __future__ import annotations

import sys

from torchnce._common.startup import restore_interrupts
from torchnce.app.main import main

__all__ = ["main"]

restore_interrupts()  # main handles Ctrl-C from here on (one line, status 130)

if __name__ == "__main__":
    sys.exit(main())
