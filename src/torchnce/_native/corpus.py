"""The binding of the native corpus pass (``corpus.cpp``): an ASCII text tokenised, counted
and encoded in one call, for the word2vec main job.

The pure path is ``load_corpus`` in ``torchnce.app.word2vec.corpus`` (a regular expression
per line); for ASCII text the two give the same vocabulary, counts, ids and lines, which the
tests check. Text with other characters stays on the pure path (Unicode letters, case and line
ends are Python's to define).
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import torch

from torchnce._native.build import kernel


class Scanned(NamedTuple):
    """A tokenised corpus: the vocabulary (kept words by decreasing count, ties in byte
    order), their int64 counts ``[V]``, the kept tokens' int64 ids and lines ``[N]``, and the
    number of tokens read (rare ones included)."""

    words: list[str]
    counts: torch.Tensor
    ids: torch.Tensor
    lines: torch.Tensor
    num_words: int


def scan_ascii(text: bytes, min_count: int) -> Scanned:
    """Tokenise, count and encode ``text`` (ASCII bytes), keeping the words seen at least
    ``min_count`` times. ``ValueError`` for text that is not ASCII or a ``min_count`` below
    1; ``MemoryError`` when the pass runs out of memory."""
    if not isinstance(text, bytes) or not text.isascii():
        raise ValueError("text must be ASCII bytes (other text takes the pure path)")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    scan = kernel("torchnce_corpus_scan",
                  [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p],
                  restype=ctypes.c_void_p)
    take = kernel("torchnce_corpus_take", [ctypes.c_void_p] + [ctypes.c_void_p] * 4)
    sizes = (ctypes.c_int64 * 4)()
    handle = scan(text, len(text), min_count, sizes)
    if not handle:
        raise MemoryError("the native corpus pass ran out of memory")
    vocab, tokens, num_words, chars = sizes
    words = ctypes.create_string_buffer(max(chars, 1))
    counts = torch.empty(vocab, dtype=torch.int64)
    ids, lines = torch.empty(tokens, dtype=torch.int64), torch.empty(tokens, dtype=torch.int64)
    take(handle, words, counts.data_ptr(), ids.data_ptr(), lines.data_ptr())
    vocabulary = words.raw[:chars].decode("ascii").split("\n")[:-1] if chars else []
    return Scanned(vocabulary, counts, ids, lines, num_words)
