"""word2vec trained with torchnce's losses: the settings, the two tables and the SGD steps.

Every step computes a torchnce loss (``negative_sampling_loss``, ``nce_loss`` or
``sampled_softmax_loss``, with their defaults) with ``num_sampled`` negatives from a torchnce
sampler, and applies plain SGD, on one of two paths:

* native (``torchnce._native``, where it builds): skip-gram with the unigram sampler makes and
  trains a chunk's examples in one call, by windows, the examples of a window sharing
  ``share_negatives`` at a time; other settings train given examples one after the other;
* pure PyTorch (``torchnce._sampled.step``, the reference): labels and negatives validated
  once per chunk, each batch's loss and gradients from the code of the losses' fused autograd
  node, without a graph.

Tests pin both to autograd through the public functions. The epochs, the learning-rate
schedule and the Hogwild workers are in ``training``.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Literal

import torch

from torchnce import (
    CandidateSampler,
    FixedUnigramSampler,
    LogUniformSampler,
    SampledValues,
    native_available,
)
from torchnce._native.sampling import alias_draws
from torchnce._native.word2vec import batches, skipgram
from torchnce._sampled.step import Classes, GraphFreeStep
from torchnce.app.word2vec.corpus import Corpus, cbow_windows, skipgram_pairs

Model = Literal["skipgram", "cbow"]
LossName = Literal["neg", "nce", "sampled_softmax"]
SamplerName = Literal["unigram", "log_uniform"]


LOSSES: dict[str, str] = {  # the command line's names of the public losses
    "neg": "negative_sampling_loss",
    "nce": "nce_loss",
    "sampled_softmax": "sampled_softmax_loss",
}


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
    share_negatives: int = 2  # native skip-gram: examples of a window sharing a set (0: all)
    seed: int = 1

    @property
    def start_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.025 if self.model == "skipgram" else 0.05


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

    def __init__(self, corpus: Corpus, config: Word2VecConfig, *, shared: bool = False,
                 native: bool | None = None) -> None:
        gen = torch.Generator().manual_seed(config.seed)
        size, dim = len(corpus.words), config.dim
        self.config, self.num_classes = config, size
        self._buffers: list[mmap.mmap] = []
        self.input_vectors = self._table(size, dim, shared)
        self.input_vectors.copy_((torch.rand(size, dim, generator=gen) - 0.5) / dim)
        self.output_vectors = self._table(size, dim, shared)
        self.sampler = make_sampler(corpus, config)
        self.loss = GraphFreeStep(LOSSES[config.loss], self.output_vectors)
        # The native kernel where it builds (checked before any worker forks), else the pure
        # step; native=False forces the pure one.
        self.native = native_available().available if native is None else native
        # Skip-gram with unigram negatives makes its examples natively too, chunk by chunk.
        self.native_skipgram = (self.native and config.model == "skipgram"
                                and isinstance(self.sampler, FixedUnigramSampler))

    def _table(self, rows: int, cols: int, shared: bool) -> torch.Tensor:
        """A zero float32 table; with ``shared``, in anonymous shared memory, so that worker
        processes forked later update the same numbers (and nothing lands in /dev/shm)."""
        if not shared:
            return torch.zeros(rows, cols)
        buffer = mmap.mmap(-1, max(rows * cols * 4, 1))
        self._buffers.append(buffer)
        return torch.frombuffer(buffer, dtype=torch.float32, count=rows * cols).view(rows, cols)

    def negatives(self, labels: torch.Tensor, gen: torch.Generator) -> Classes:
        """``num_sampled`` independent draws for each of the ``[N]`` labels' examples, with
        their expected counts ``num_sampled · q`` (draws with replacement), validated as the
        loss's per-example ``sampled_values`` once for the whole chunk: one sampler call and
        one check of the ids; batches take their rows with ``Classes.rows``."""
        n, k = labels.shape[0], self.config.num_sampled
        if self.native and isinstance(self.sampler, FixedUnigramSampler):
            # The native draw from the sampler's own alias table, and its expected counts.
            draws = alias_draws(self.sampler.threshold, self.sampler.alias, n * k, gen)
            p = self.sampler.probs
            flat = SampledValues(draws, (p.index_select(0, labels) * float(n * k)).unsqueeze(1),
                                 p.index_select(0, draws) * float(n * k))
        else:
            flat = self.sampler.sample(labels.unsqueeze(1), n * k, unique=False, generator=gen)
        # The sampler's counts are q · N·k for N·k draws; each example has k of them.
        values = (flat.sampled_candidates.view(n, k), flat.true_expected_count / n,
                  (flat.sampled_expected_count / n).view(n, k))
        return self.loss.classes(labels, values)

    def step(self, inputs_ids: torch.Tensor, mask: torch.Tensor | None, batch: Classes,
             lr: float) -> float:
        """One SGD step; returns the summed loss of the batch.

        Skip-gram: ``inputs_ids`` is ``[B]`` (the centers). CBOW: ``[B, 2·window]`` context ids
        with ``mask``; the input vector is the mean of the masked context vectors. ``batch``
        holds the batch's labels and negatives: rows of :meth:`negatives`.
        """
        rows = self.input_vectors.index_select(0, inputs_ids.reshape(-1))
        rows = rows.view(*inputs_ids.shape, -1)
        share = None if mask is None else mask.to(rows.dtype) / mask.sum(1, keepdim=True)
        inputs = rows if share is None else (rows * share.unsqueeze(2)).sum(1)
        # scale = -lr: the gradients come out as the SGD updates themselves, and index_add_
        # without alpha is 3x faster on CPU than with it (2 vCPUs, torch 2.13.0, 2026-11).
        grads = self.loss(inputs, batch, scale=-lr)
        if share is None:
            self.input_vectors.index_add_(0, inputs_ids, grads.inputs)
        else:  # the mean's gradient: each context row gets its share of the input's
            step_rows = share.unsqueeze(2) * grads.inputs.unsqueeze(1)
            self.input_vectors.index_add_(0, inputs_ids[mask], step_rows[mask])
        self.output_vectors.index_add_(0, grads.ids, grads.rows)
        return float(grads.loss.sum())


    def train_batches(self, inputs_ids: torch.Tensor, mask: torch.Tensor | None,
                      classes: Classes, lrs: list[float]) -> float:
        """Consecutive batches of ``batch_size`` examples, batch ``b`` at rate ``lrs[b]``;
        returns the summed loss. Where the native kernel runs, one call that trains the
        examples one after the other (word2vec's own SGD); else :meth:`step` batch by batch.
        The two are the same maths at ``batch_size=1``, where the tests compare them."""
        size = self.config.batch_size
        if not self.native:
            return sum(self.step(inputs_ids[b * size:(b + 1) * size],
                                 None if mask is None else mask[b * size:(b + 1) * size],
                                 classes.rows(slice(b * size, (b + 1) * size)), lr)
                       for b, lr in enumerate(lrs))
        spec, n = self.loss.spec, inputs_ids.shape[0]
        log_q: tuple[torch.Tensor | None, torch.Tensor | None] = None, None
        if spec.subtract_log_q:  # the counts in the inputs' dtype, then their logs, as the step
            log_q = (classes.true_count.float().log().expand(n, 1).reshape(n).contiguous(),
                     classes.sampled_count.float().log().expand(n, -1).contiguous())
        loss = batches(
            self.input_vectors, self.output_vectors, inputs_ids.reshape(n, -1).contiguous(),
            None if mask is None else mask.contiguous(), classes.labels.reshape(n).contiguous(),
            classes.sampled.contiguous(), *log_q, torch.tensor(lrs, dtype=torch.float32),
            spec.kind == "softmax", self.loss.remove_accidental_hits, size)
        return float(loss)


    def train_skipgram(self, ids: torch.Tensor, lines: torch.Tensor, reach: torch.Tensor,
                       lr_first: float, lr_last: float, lr_floor: float,
                       gen: torch.Generator) -> tuple[float, int]:
        """Skip-gram over a chunk's (subsampled) tokens in one native call: the examples of
        word2vec's reduced windows ``reach``, in corpus order, each with ``num_sampled``
        negatives from the sampler's alias table; returns ``(summed loss, examples)``."""
        sampler = self.sampler
        assert isinstance(sampler, FixedUnigramSampler)  # native_skipgram says so
        spec = self.loss.spec
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        out = skipgram(
            self.input_vectors, self.output_vectors, ids.contiguous(), lines.contiguous(),
            reach.contiguous(), sampler.threshold, sampler.alias, sampler.probs,
            self.config.num_sampled, spec.subtract_log_q, spec.kind == "softmax",
            self.loss.remove_accidental_hits, lr_first, lr_last, lr_floor, seed,
            self.config.share_negatives)
        return float(out[0]), int(out[1])


def examples(model: Model, ids: torch.Tensor, lines: torch.Tensor, window: int,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Shuffled training examples of a subsampled chunk: ``(inputs, mask, labels)``."""
    if model == "skipgram":
        centers, contexts = skipgram_pairs(ids, lines, window, gen)
        order = torch.randperm(centers.numel(), generator=gen)
        return centers[order], None, contexts[order]
    centers, context_ids, mask = cbow_windows(ids, lines, window, gen)
    order = torch.randperm(centers.numel(), generator=gen)
    return context_ids[order], mask[order], centers[order]
