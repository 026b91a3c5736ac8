"""The word2vec corpus: reading text, the vocabulary, subsampling and the training pairs.

A corpus is read once into a tensor of token ids (words outside the vocabulary dropped, as
word2vec does) and the line each token came from; a context window never crosses a line.
Everything per epoch (subsampling, reduced windows, pairs) is vectorised over a chunk of
tokens, so memory stays bounded by the chunk whatever the corpus size.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

import torchnce
from torchnce._native.corpus import scan_ascii
from torchnce.datasets import kjv_path

SHIPPED_CORPUS = "kjv.txt.xz"
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


class CorpusError(ValueError):
    """A corpus or evaluation file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus over its vocabulary.

    Attributes:
        words: the vocabulary, by decreasing count (ties alphabetical), so that id 0 is the
            most frequent word, as ``log_uniform_candidate_sampler`` assumes.
        counts: int64 ``[V]`` occurrences of each vocabulary word.
        ids: int64 ``[N]`` the corpus as vocabulary ids (rare words dropped).
        lines: int64 ``[N]`` the line of each token; windows stay inside a line.
        num_words: words read, rare ones included (the throughput unit gensim also uses).
    """

    words: list[str]
    counts: torch.Tensor
    ids: torch.Tensor
    lines: torch.Tensor
    num_words: int


def shipped_corpus_path() -> Path:
    """The King James Bible shipped inside the package (``torchnce.datasets.kjv_path()``)."""
    return kjv_path()


def _open_bytes(path: Path) -> IO[bytes]:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix)
    if opener is None:
        return path.open("rb")
    return opener(path, "rb")  # type: ignore[operator, no-any-return]


def read_bytes(path: Path, what: str = "corpus") -> bytes:
    """The bytes of a file, plain or compressed (.gz, .bz2, .xz), decompressed."""
    if path.is_dir():
        raise CorpusError(f"{what} file {path} is a directory; give a text file")
    if not path.is_file():
        raise CorpusError(f"{what} file {path} does not exist; check the path")
    try:
        with _open_bytes(path) as f:
            return f.read()
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise CorpusError(f"{what} file {path} cannot be read ({e}); "
                          "give plain text or a .gz/.bz2/.xz file") from None


def _decode(data: bytes, path: Path, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{what} file {path} is not UTF-8 text ({e.reason} at byte "
                          f"{e.start}); convert it with iconv -t utf-8") from None


def read_lines(path: Path, what: str = "corpus") -> list[str]:
    """The lines of a UTF-8 text file, plain or compressed (.gz, .bz2, .xz)."""
    return _decode(read_bytes(path, what), path, what).splitlines()


def tokenize(line: str) -> list[str]:
    """Lower-cased words (letters, with inner apostrophes: ``lord's``); digits are dropped."""
    return _WORD.findall(line.lower())


def load_corpus(path: Path, min_count: int, native: bool | None = None) -> Corpus:
    """Read, tokenise and encode a corpus, keeping words seen at least ``min_count`` times.

    An ASCII text takes the native corpus pass where the native kernels are available
    (``native=None``; ``False`` forces the pure path below, which every other text takes):
    the same vocabulary, counts, ids and lines, in a fraction of the time.
    """
    data = read_bytes(path)
    if native is None:
        native = torchnce.native_available().available
    if native and data.isascii():
        scanned = scan_ascii(data, min_count)
        words, total = scanned.words, scanned.num_words
        _check_vocabulary(path, total, words, min_count)
        return Corpus(words, scanned.counts, scanned.ids, scanned.lines, total)
    sentences = [tokenize(line) for line in _decode(data, path, "corpus").splitlines()]
    counter = Counter(w for s in sentences for w in s)
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    words = [w for w, c in ranked if c >= min_count]
    _check_vocabulary(path, counter.total(), words, min_count)
    index = {w: i for i, w in enumerate(words)}
    ids, lines = [], []
    for n, sentence in enumerate(sentences):
        for w in sentence:
            i = index.get(w)
            if i is not None:
                ids.append(i)
                lines.append(n)
    counts = torch.tensor([counter[w] for w in words], dtype=torch.int64)
    return Corpus(words, counts, torch.tensor(ids, dtype=torch.int64),
                  torch.tensor(lines, dtype=torch.int64), counter.total())


def _check_vocabulary(path: Path, total: int, words: list[str], min_count: int) -> None:
    if not total:
        raise CorpusError(f"corpus file {path} holds no words; give a non-empty text file")
    if len(words) < 2:
        fix = "lower --min-count or give more text" if min_count > 1 else "give more text"
        raise CorpusError(f"corpus file {path} has {len(words)} word(s) seen at least "
                          f"min_count={min_count} times; {fix}")


def keep_probability(counts: torch.Tensor, sample: float) -> torch.Tensor:
    """word2vec's (and gensim's) subsampling: keep a word of frequency f with probability
    ``(sqrt(f / t) + 1) · t / f`` where ``t = sample``; 1 everywhere when ``sample`` is 0."""
    if sample <= 0:
        return torch.ones(counts.shape, dtype=torch.float64)
    f = counts.double() / counts.sum()
    return ((f / sample).sqrt() + 1).mul(sample / f).clamp(max=1.0)


def subsample(ids: torch.Tensor, lines: torch.Tensor, keep: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each token with probability ``1 - keep[id]``."""
    mask = torch.rand(ids.shape, dtype=torch.float64, generator=generator) < keep[ids]
    return ids[mask], lines[mask]


def skipgram_pairs(ids: torch.Tensor, lines: torch.Tensor, window: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, context) pairs with word2vec's reduced window: every center draws its own
    window ``b ~ U{1..window}`` and pairs with the words at most ``b`` away on its line."""
    reach = torch.randint(1, window + 1, ids.shape, generator=generator)
    centers, contexts = [], []
    for d in range(1, min(window, ids.numel() - 1) + 1):
        same_line = lines[d:] == lines[:-d]
        forward = same_line & (reach[:-d] >= d)   # center i, context i + d
        backward = same_line & (reach[d:] >= d)   # center i + d, context i
        centers += [ids[:-d][forward], ids[d:][backward]]
        contexts += [ids[d:][forward], ids[:-d][backward]]
    if not centers:
        return ids[:0], ids[:0]
    return torch.cat(centers), torch.cat(contexts)


def cbow_windows(ids: torch.Tensor, lines: torch.Tensor, window: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CBOW examples: each center with its context ids ``[N, 2·window]`` and their bool mask
    (word2vec's reduced window); centers without any context are dropped."""
    n = ids.numel()
    reach = torch.randint(1, window + 1, (n,), generator=generator)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])
    where = torch.arange(n).unsqueeze(1) + offsets
    inside = (where >= 0) & (where < n)
    where = where.clamp(0, max(n - 1, 0))
    mask = inside & (lines[where] == lines.unsqueeze(1)) & (offsets.abs() <= reach.unsqueeze(1))
    has_context = mask.any(1)
    return ids[has_context], ids[where[has_context]], mask[has_context]
