"""The bindings of ``corpus.cpp``, the word2vec main job's text work: an ASCII corpus
tokenised, counted and encoded in one call, and vectors printed as text.

The pure path is the word2vec main job's ``load_corpus`` (``app/word2vec/corpus.py``: a
regular expression per line); for ASCII text the two give the same vocabulary, counts, ids and
lines, which the tests check. Text with other characters stays on the pure path (Unicode
letters, case and line ends are Python's to define).
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


def format_rows(values: torch.Tensor) -> list[str]:
    """The rows of a float32 matrix as text: each row's values as ``f"{v:.6g}"`` prints them,
    joined by spaces (the word2vec text format's numbers)."""
    if values.dtype != torch.float32 or values.dim() != 2 or values.device.type != "cpu":
        raise ValueError(f"values must be a 2-D float32 CPU tensor, got {values.dtype} "
                         f"{tuple(values.shape)} on {values.device}")
    values = values.contiguous()
    rows, cols = values.shape
    fn = kernel("torchnce_format_rows", [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_char_p, ctypes.c_int64],
                restype=ctypes.c_int64)
    capacity = rows * (14 * cols + 1)
    out = ctypes.create_string_buffer(max(capacity, 1))
    size = fn(values.data_ptr(), rows, cols, out, capacity)
    if size < 0:
        raise RuntimeError("format_rows: the output buffer was too small")
    return out.raw[:size].decode("ascii").split("\n")[:-1] if rows else []
