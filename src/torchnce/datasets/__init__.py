"""The data shipped with torchnce: the corpus of the main job, for your own experiments.

``kjv_path()`` is the King James Bible as xz-compressed plain text (789,684 words as the
word2vec job counts them, public domain; where it comes from and how it was made:
``data/README.md`` beside this module). Open it with :mod:`lzma`.

This package imports nothing else of torchnce; the word2vec job reads its corpus from here.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["kjv_path"]


def kjv_path() -> Path:
    """The path of the shipped corpus, ``kjv.txt.xz`` (one verse per line, UTF-8 text).

    Returns:
        A ``Path`` to a file inside the installed package (read-only in general).

    Examples:
        >>> import lzma, torchnce.datasets
        >>> with lzma.open(torchnce.datasets.kjv_path(), "rt", encoding="utf-8") as f:
        ...     first = f.readline()
        >>> first.split()[:4]
        ['In', 'the', 'beginning', 'God']
    """
    return Path(str(importlib.resources.files(__name__) / "data" / "kjv.txt.xz"))
