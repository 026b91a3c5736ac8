"""word2vec trained with torchnce's losses: the settings, the two tables and one SGD step.

Every step calls a public torchnce loss (``negative_sampling_loss``, ``nce_loss`` or
``sampled_softmax_loss``) with ``num_sampled`` negatives drawn independently for every example
(the word2vec way) from a torchnce sampler, and applies plain SGD. The epochs, the learning-rate
schedule and the Hogwild workers are in ``_training``.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from torchnce._corpus import Corpus, cbow_windows, skipgram_pairs
from torchnce._losses import nce_loss, negative_sampling_loss, sampled_softmax_loss
from torchnce._sampler_fixed import FixedUnigramSampler
from torchnce._samplers import CandidateSampler, LogUniformSampler

Model = Literal["skipgram", "cbow"]
LossName = Literal["neg", "nce", "sampled_softmax"]
SamplerName = Literal["unigram", "log_uniform"]
Negatives = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "neg": negative_sampling_loss, "nce": nce_loss, "sampled_softmax": sampled_softmax_loss}


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

    def __init__(self, corpus: Corpus, config: Word2VecConfig, *, shared: bool = False) -> None:
        gen = torch.Generator().manual_seed(config.seed)
        size, dim = len(corpus.words), config.dim
        self.config, self.num_classes = config, size
        self._buffers: list[mmap.mmap] = []
        self.input_vectors = self._table(size, dim, shared)
        self.input_vectors.copy_((torch.rand(size, dim, generator=gen) - 0.5) / dim)
        self.output_vectors = self._table(size, dim, shared)
        self.sampler = make_sampler(corpus, config)
        self.loss_fn = LOSSES[config.loss]

    def _table(self, rows: int, cols: int, shared: bool) -> torch.Tensor:
        """A zero float32 table; with ``shared``, in anonymous shared memory, so that worker
        processes forked later update the same numbers (and nothing lands in /dev/shm)."""
        if not shared:
            return torch.zeros(rows, cols)
        buffer = mmap.mmap(-1, max(rows * cols * 4, 1))
        self._buffers.append(buffer)
        return torch.frombuffer(buffer, dtype=torch.float32, count=rows * cols).view(rows, cols)

    def alias(self) -> torch.Tensor:
        """A leaf sharing ``output_vectors``' memory with its own version counter: the loss's
        ``weights``, whose saved-tensor check the in-place updates must not trip."""
        table = self.output_vectors
        alias = torch.empty(0).set_(table.untyped_storage(), 0, table.shape, table.stride())
        return alias.requires_grad_()

    def negatives(self, labels: torch.Tensor, gen: torch.Generator) -> Negatives:
        """``num_sampled`` independent draws for each of the ``[N]`` labels' examples, with
        their expected counts ``num_sampled · q`` (draws with replacement): the per-example
        ``sampled_values`` of the loss, ``([N, k], [N, 1], [N, k])``. One sampler call for a
        whole chunk of examples; batches take slices."""
        n, k = labels.shape[0], self.config.num_sampled
        flat = self.sampler.sample(labels.unsqueeze(1), n * k, unique=False, generator=gen)
        # The sampler's counts are q · N·k for N·k draws; each example has k of them.
        return (flat.sampled_candidates.view(n, k), flat.true_expected_count / n,
                (flat.sampled_expected_count / n).view(n, k))

    def step(self, inputs_ids: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor,
             negatives: Negatives, lr: float, weights: torch.Tensor) -> float:
        """One SGD step; returns the summed loss of the batch.

        Skip-gram: ``inputs_ids`` is ``[B]`` (the centers). CBOW: ``[B, 2·window]`` context ids
        with ``mask``; the input vector is the mean of the masked context vectors. ``labels``
        is ``[B]`` and ``negatives`` their slice of :meth:`negatives`.
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
                            self.num_classes, sampled_values=negatives, sparse_grad=True).sum()
        # Backpropagating -lr gives the SGD updates themselves; index_add_ without alpha is
        # 3x faster on CPU than with it.
        step_rows, step_w = torch.autograd.grad(loss, (rows, weights),
                                                grad_outputs=loss.new_tensor(-lr))
        if mask is None:
            self.input_vectors.index_add_(0, inputs_ids, step_rows)
        else:
            self.input_vectors.index_add_(0, inputs_ids[mask], step_rows[mask])
        self.output_vectors.index_add_(0, step_w._indices()[0], step_w._values())
        return float(loss.detach())


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
