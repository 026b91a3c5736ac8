"""Word vectors after training: nearest neighbours, word-similarity and analogy benchmarks,
and the word2vec text format.

The benchmark files are the classic ones: WordSim353 / SimLex-999 (``word1<TAB>word2<TAB>score``
lines, ``#`` comments) and Google's ``questions-words.txt`` (``: section`` headers, then
``a b c d`` lines meaning a : b :: c : d). Words are lower-cased like the corpus; pairs and
questions with a word outside the vocabulary are skipped and reported as coverage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import torchnce
from torchnce._native.corpus import format_rows
from torchnce.app.word2vec.corpus import CorpusError, read_lines


@dataclass(frozen=True)
class Score:
    """A benchmark result: the value over the ``used`` items found in the vocabulary."""

    value: float
    used: int
    total: int

    @property
    def coverage(self) -> float:
        return self.used / self.total if self.total else 0.0


class WordVectors:
    """Unit-normalised vectors with their vocabulary, for cosine queries."""

    def __init__(self, words: list[str], vectors: torch.Tensor) -> None:
        self.words, self.vectors = words, vectors
        self.unit = F.normalize(vectors.double(), dim=1)
        self.index = {w: i for i, w in enumerate(words)}

    def neighbours(self, word: str, k: int = 8) -> list[str]:
        """The ``k`` nearest words by cosine similarity, the word itself excluded."""
        sims = self.unit @ self.unit[self.index[word]]
        sims[self.index[word]] = -2.0
        return [self.words[i] for i in sims.topk(min(k, len(self.words) - 1)).indices.tolist()]

    def similarity(self, source: Path | list[tuple[str, str, float]]) -> Score:
        """Spearman correlation between human scores and cosine similarities, over a
        WordSim353-format file or its pairs as :func:`similarity_pairs` reads them."""
        pairs = similarity_pairs(source) if isinstance(source, Path) else source
        known = [(a, b, s) for a, b, s in pairs if a in self.index and b in self.index]
        if len(known) < 2:
            return Score(float("nan"), len(known), len(pairs))
        a = self.unit[[self.index[p[0]] for p in known]]
        b = self.unit[[self.index[p[1]] for p in known]]
        human = torch.tensor([p[2] for p in known], dtype=torch.float64)
        return Score(spearman((a * b).sum(1), human), len(known), len(pairs))

    def analogy(self, source: Path | list[tuple[str, ...]], batch: int = 512) -> Score:
        """3CosAdd accuracy: ``d`` must be the nearest word to ``b − a + c`` (a, b, c excluded),
        over a questions-words.txt-format file or its questions (:func:`analogy_questions`)."""
        questions = analogy_questions(source) if isinstance(source, Path) else source
        known = [q for q in questions if all(w in self.index for w in q)]
        if not known:
            return Score(float("nan"), 0, len(questions))
        ids = torch.tensor([[self.index[w] for w in q] for q in known])
        correct = 0
        for part in torch.split(ids, batch):
            query = self.unit[part[:, 1]] - self.unit[part[:, 0]] + self.unit[part[:, 2]]
            sims = F.normalize(query, dim=1) @ self.unit.T
            sims.scatter_(1, part[:, :3], -2.0)
            correct += int((sims.argmax(1) == part[:, 3]).sum())
        return Score(correct / len(known), len(known), len(questions))


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties get their mean
    rank), as ``scipy.stats.spearmanr``."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def _ranks(values: torch.Tensor) -> torch.Tensor:
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first copy
    mean_rank = first.double() + (counts.double() + 1) / 2
    ranks: torch.Tensor = mean_rank[inverse]
    return ranks


def similarity_pairs(path: Path) -> list[tuple[str, str, float]]:
    """The ``(word1, word2, score)`` pairs of a WordSim353-format file (``CorpusError`` when
    it cannot be used)."""
    pairs = []
    for n, line in enumerate(read_lines(path, "similarity"), start=1):
        fields = line.strip().split("\t") if "\t" in line else line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            pairs.append((fields[0].lower(), fields[1].lower(), float(fields[2])))
        except (IndexError, ValueError):
            raise CorpusError(
                f"similarity file {path} line {n} is not 'word1<TAB>word2<TAB>score': "
                f"{line.strip()[:60]!r}; give a WordSim353-format file") from None
    if not pairs:
        raise CorpusError(f"similarity file {path} holds no word pairs; "
                          "give a WordSim353-format file")
    return pairs


def analogy_questions(path: Path) -> list[tuple[str, ...]]:
    """The ``(a, b, c, d)`` questions of a questions-words.txt-format file (``CorpusError``
    when it cannot be used)."""
    questions: list[tuple[str, ...]] = []
    for n, line in enumerate(read_lines(path, "analogy"), start=1):
        if not line.strip() or line.startswith(":"):
            continue
        words = tuple(line.lower().split())
        if len(words) != 4:
            raise CorpusError(
                f"analogy file {path} line {n} is not 'a b c d' or ': section': "
                f"{line.strip()[:60]!r}; give a questions-words.txt-format file")
        questions.append(words)
    if not questions:
        raise CorpusError(f"analogy file {path} holds no questions; "
                          "give a questions-words.txt-format file")
    return questions


def write_word2vec(path: Path, words: list[str], vectors: torch.Tensor) -> None:
    """The word2vec text format: a ``count dim`` header, then ``word v1 ... vdim`` per line
    (``gensim.models.KeyedVectors.load_word2vec_format(path)`` reads it)."""
    values = vectors.detach().float().cpu()
    if torchnce.native_available().available:
        rows = format_rows(values)
    else:
        rows = [" ".join(f"{v:.6g}" for v in row) for row in values.tolist()]
    with path.open("w", encoding="utf-8") as f:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n")
        f.writelines(f"{word} {row}\n" for word, row in zip(words, rows, strict=True))


def write_vocabulary(path: Path, words: list[str], counts: torch.Tensor) -> None:
    """``word count`` per line, most frequent first (the id of a word is its line number − 1)."""
    with path.open("w", encoding="utf-8") as f:
        for word, count in zip(words, counts.tolist(), strict=True):
            f.write(f"{word} {count}\n")
