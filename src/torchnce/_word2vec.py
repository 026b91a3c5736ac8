"""word2vec trained with torchnce's losses: skip-gram or CBOW, per-example negatives, Hogwild.

Every step calls a public torchnce loss (``negative_sampling_loss``, ``nce_loss`` or
``sampled_softmax_loss``) with ``num_sampled`` negatives drawn independently for every example
(the word2vec way) from a torchnce sampler, and applies plain SGD with word2vec's linearly
decaying learning rate. With ``threads > 1`` worker threads update the shared tables without
locks (Hogwild, as word2vec and gensim do), each working on its own batches.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch

from torchnce._corpus import (
    Corpus,
    cbow_windows,
    chunks,
    keep_probability,
    skipgram_pairs,
    subsample,
)
from torchnce._losses import nce_loss, negative_sampling_loss, sampled_softmax_loss
from torchnce._sampler_fixed import FixedUnigramSampler
from torchnce._samplers import CandidateSampler, LogUniformSampler

Model = Literal["skipgram", "cbow"]
LossName = Literal["neg", "nce", "sampled_softmax"]
SamplerName = Literal["unigram", "log_uniform"]
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "neg": negative_sampling_loss, "nce": nce_loss, "sampled_softmax": sampled_softmax_loss}
_CHUNK_TOKENS = 50_000
_MIN_LR_FRACTION = 1e-4  # word2vec's floor: lr never drops below lr0 · 1e-4


@dataclass(frozen=True)
class Word2VecConfig:
    """Training settings; the defaults are word2vec's (and gensim's) skip-gram defaults."""

    model: Model = "skipgram"
    loss: LossName = "neg"
    sampler: SamplerName = "unigram"
    distortion: float = 0.75
    dim: int = 100
    window: int = 5
    num_sampled: int = 5
    epochs: int = 5
    batch_size: int = 1024
    subsample: float = 1e-3
    min_count: int = 5
    lr: float | None = None  # None: 0.025 for skip-gram, 0.05 for CBOW (word2vec's)
    threads: int = 2
    seed: int = 1

    @property
    def start_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.025 if self.model == "skipgram" else 0.05


@dataclass
class TrainLog:
    """What a run did: the loss curve (one point per chunk) and the work counters."""

    words_seen: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    examples: int = 0
    words: int = 0
    interrupted: bool = False


def make_sampler(corpus: Corpus, config: Word2VecConfig) -> CandidateSampler:
    """The noise distribution: unigram counts raised to ``distortion``, or log-uniform (Zipf)
    over the vocabulary ranks."""
    size = len(corpus.words)
    if config.sampler == "log_uniform":
        return LogUniformSampler(size)
    return FixedUnigramSampler(size, unigrams=corpus.counts.tolist(),
                               distortion=config.distortion)


class Word2Vec:
    """The two tables of word2vec and one SGD step per batch.

    ``input_vectors`` (the word vectors people keep) start uniform in ``±0.5/dim``;
    ``output_vectors`` (the loss's ``weights``) start at zero, as in word2vec.
    """

    def __init__(self, corpus: Corpus, config: Word2VecConfig) -> None:
        gen = torch.Generator().manual_seed(config.seed)
        size, dim = len(corpus.words), config.dim
        self.config, self.num_classes = config, size
        self.input_vectors = (torch.rand(size, dim, generator=gen) - 0.5) / dim
        self.output_vectors = torch.zeros(size, dim)
        self.sampler = make_sampler(corpus, config)
        self.loss_fn = LOSSES[config.loss]

    def _alias(self) -> torch.Tensor:
        """A leaf sharing ``output_vectors``' memory with its own version counter, so that other
        threads' in-place updates do not trip autograd's saved-tensor check (Hogwild)."""
        table = self.output_vectors
        alias = torch.empty(0).set_(table.untyped_storage(), 0, table.shape, table.stride())
        return alias.requires_grad_()

    def _negatives(self, labels: torch.Tensor,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``num_sampled`` independent draws per example, with their expected counts
        ``num_sampled · q`` (draws with replacement)."""
        k = self.config.num_sampled
        flat = self.sampler.sample(labels, labels.shape[0] * k, unique=False, generator=gen)
        sampled = flat.sampled_candidates.view(labels.shape[0], k)
        return (sampled, self.sampler.probability(labels) * k,
                self.sampler.probability(sampled) * k)

    def step(self, inputs_ids: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor,
             lr: float, gen: torch.Generator, weights: torch.Tensor) -> float:
        """One SGD step; returns the summed loss of the batch.

        Skip-gram: ``inputs_ids`` is ``[B]`` (the centers). CBOW: ``[B, 2·window]`` context ids
        with ``mask``; the input vector is the mean of the masked context vectors.
        """
        rows = self.input_vectors.index_select(0, inputs_ids.reshape(-1))
        rows = rows.view(*inputs_ids.shape, -1).requires_grad_()
        if mask is None:
            inputs = rows
        else:
            weight = mask.to(rows.dtype) / mask.sum(1, keepdim=True)
            inputs = (rows * weight.unsqueeze(2)).sum(1)
        labels = labels.unsqueeze(1)
        loss = self.loss_fn(weights, None, labels, inputs, self.config.num_sampled,
                            self.num_classes, sampled_values=self._negatives(labels, gen),
                            sparse_grad=True).sum()
        grad_rows, grad_w = torch.autograd.grad(loss, (rows, weights))
        if mask is None:
            self.input_vectors.index_add_(0, inputs_ids, grad_rows, alpha=-lr)
        else:
            self.input_vectors.index_add_(0, inputs_ids[mask], grad_rows[mask], alpha=-lr)
        self.output_vectors.index_add_(0, grad_w._indices()[0], grad_w._values(), alpha=-lr)
        return float(loss.detach())


def _examples(model: Model, ids: torch.Tensor, lines: torch.Tensor, window: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Shuffled training examples of a subsampled chunk: ``(inputs, mask, labels)``."""
    if model == "skipgram":
        centers, contexts = skipgram_pairs(ids, lines, window, gen)
        order = torch.randperm(centers.numel(), generator=gen)
        return centers[order], None, contexts[order]
    centers, context_ids, mask = cbow_windows(ids, lines, window, gen)
    order = torch.randperm(centers.numel(), generator=gen)
    return context_ids[order], mask[order], centers[order]


class Trainer:
    """Runs the epochs: chunks of the corpus, subsampled, turned into shuffled batches that
    ``threads`` workers consume; calls ``on_chunk(words_done, mean_loss)`` after each chunk."""

    def __init__(self, corpus: Corpus, config: Word2VecConfig) -> None:
        self.corpus, self.config = corpus, config
        self.model = Word2Vec(corpus, config)
        self.keep = keep_probability(corpus.counts, config.subsample)
        self.log = TrainLog()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the workers to finish their current batch and return (Ctrl-C)."""
        self._stop.set()

    def _worker(self, batches: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
                lr: Callable[[float], float], seed: int) -> tuple[float, int]:
        gen, weights = torch.Generator().manual_seed(seed), self.model._alias()
        total, count = 0.0, 0
        for i, (inputs, mask, labels) in enumerate(batches):
            if self._stop.is_set():
                break
            total += self.model.step(inputs, mask, labels, lr(i / len(batches)), gen, weights)
            count += labels.numel()
        return total, count

    def _chunk(self, pool: ThreadPoolExecutor, ids: torch.Tensor, lines: torch.Tensor,
               lr: Callable[[float], float], gen: torch.Generator) -> tuple[float, int]:
        kept, kept_lines = subsample(ids, lines, self.keep, gen)
        inputs, mask, labels = _examples(self.config.model, kept, kept_lines,
                                         self.config.window, gen)
        size, threads = self.config.batch_size, self.config.threads
        batches = [(inputs[i:i + size], None if mask is None else mask[i:i + size],
                    labels[i:i + size]) for i in range(0, labels.numel(), size)]
        seeds = torch.randint(2**62, (threads,), generator=gen).tolist()
        jobs = [pool.submit(self._worker, batches[t::threads], lr, seeds[t])
                for t in range(threads)]
        results = [job.result() for job in jobs]
        return sum(r[0] for r in results), sum(r[1] for r in results)

    def run(self, on_chunk: Callable[[int, float], None]) -> TrainLog:
        config, n = self.config, self.corpus.ids.numel()
        gen = torch.Generator().manual_seed(config.seed + 1)
        total_tokens, done = config.epochs * n, 0
        with ThreadPoolExecutor(config.threads) as pool:
            for _ in range(config.epochs):
                for ids, lines in chunks(self.corpus, _CHUNK_TOKENS):
                    if self._stop.is_set():
                        self.log.interrupted = True
                        return self.log
                    start, width = done / total_tokens, ids.numel() / total_tokens
                    lr = _schedule(config.start_lr, start, width)
                    loss, count = self._chunk(pool, ids, lines, lr, gen)
                    done += ids.numel()
                    self._record(done, loss, count)
                    on_chunk(round(done * self.corpus.num_words / n), loss / max(count, 1))
        return self.log

    def _record(self, done: int, loss: float, count: int) -> None:
        self.log.examples += count
        self.log.words = round(done * self.corpus.num_words / self.corpus.ids.numel())
        if count and math.isfinite(loss):
            self.log.words_seen.append(self.log.words)
            self.log.losses.append(loss / count)


def _schedule(lr0: float, start: float, width: float) -> Callable[[float], float]:
    """word2vec's linear decay ``lr0 · max(1 − progress, 1e-4)`` inside a chunk that covers
    the fraction ``[start, start + width)`` of all training tokens."""
    return lambda f: lr0 * max(1.0 - (start + f * width), _MIN_LR_FRACTION)
