"""The sampled losses: ``nce_loss`` and ``sampled_softmax_loss``."""

from __future__ import annotations

from typing import Any

import torch

from torchnce._fused import fused_sampled_loss
from torchnce._lookup import PartitionStrategy
from torchnce._problem import prepare


def nce_loss(
    weights: torch.Tensor | list[torch.Tensor],
    biases: torch.Tensor | list[torch.Tensor] | None,
    labels: Any,
    inputs: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    num_true: int = 1,
    sampled_values: Any = None,
    remove_accidental_hits: bool = False,
    partition_strategy: PartitionStrategy = "mod",
    name: str = "nce_loss",
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Noise-contrastive estimation loss per example, as ``tf.compat.v1.nn.nce_loss``.

    With the logits ``ℓ`` and targets ``z`` of :func:`compute_sampled_logits` (log-Q subtracted,
    ``z = 1/T`` on the true columns and 0 on the sampled ones):

    .. math::

        L_i = \\sum_{j=1}^{T+S} \\max(\\ell_{ij}, 0) - \\ell_{ij} z_{ij}
              + \\log\\left(1 + e^{-|\\ell_{ij}|}\\right)

    The result is per example; reduce it yourself (TensorFlow's word2vec takes the mean).

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias (a PyTorch extension).
        labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1).
        inputs: ``[B, D]`` floating.
        num_sampled: S, candidates drawn once for the whole batch.
        num_classes: C.
        num_true: T.
        sampled_values: a ``(sampled_candidates, true_expected_count, sampled_expected_count)``
            triple; None uses ``log_uniform_candidate_sampler`` with ``unique=True``.
        remove_accidental_hits: drop sampled candidates equal to a true class ("sampled
            logistic" rather than NCE, in TensorFlow's words).
        partition_strategy: ``"mod"`` or ``"div"``.
        name: accepted for TensorFlow compatibility and ignored.
        seed: seed of the default sampler (TensorFlow's v1 nce_loss has no seed argument).
        generator: a ``torch.Generator`` for the default sampler.
        sparse_grad: sparse gradients for weights and biases (TensorFlow's IndexedSlices);
            works with ``torch.optim.SGD``, ``Adagrad`` and ``SparseAdam``.

    Returns:
        ``[B]`` losses in the dtype of ``inputs``.

    Raises:
        TypeError, ValueError: as :func:`compute_sampled_logits`.

    Note:
        Unlike TensorFlow, float16/bfloat16 inputs with ``remove_accidental_hits`` give finite
        losses (the loss is evaluated in float32 and cast back), expected counts of any dtype
        are accepted, and ``seed``/``generator`` make the default sample reproducible.

    References:
        Gutmann and Hyvärinen, "Noise-contrastive estimation", AISTATS 2010; Mnih and Teh,
        "A fast and simple algorithm for training neural probabilistic language models", 2012.

    Example:
        >>> import torch, torchnce
        >>> w, b = torch.zeros(4, 2), torch.zeros(4)
        >>> values = ([1, 2], [[1.0]], [1.0, 1.0])
        >>> loss = torchnce.nce_loss(w, b, torch.tensor([0]), torch.ones(1, 2), 2, 4,
        ...                          sampled_values=values)
        >>> round(loss.item(), 4)  # three logits of 0: 3·log 2 − 0·1
        2.0794
    """
    del name
    problem = prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true,
                      sampled_values, remove_accidental_hits, partition_strategy,
                      seed=seed, generator=generator, sparse_grad=sparse_grad)
    return fused_sampled_loss(problem, "nce")


def sampled_softmax_loss(
    weights: torch.Tensor | list[torch.Tensor],
    biases: torch.Tensor | list[torch.Tensor] | None,
    labels: Any,
    inputs: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    num_true: int = 1,
    sampled_values: Any = None,
    remove_accidental_hits: bool = True,
    partition_strategy: PartitionStrategy = "mod",
    name: str = "sampled_softmax_loss",
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Sampled softmax loss per example, as ``tf.compat.v1.nn.sampled_softmax_loss``.

    With the logits ``ℓ`` and targets ``z`` of :func:`compute_sampled_logits` (log-Q subtracted):

    .. math::

        L_i = -\\sum_{j=1}^{T+S} z_{ij} \\log \\frac{e^{\\ell_{ij}}}{\\sum_k e^{\\ell_{ik}}}

    Args:
        weights: ``[C, D]`` tensor or a Python list of shards laid out by ``partition_strategy``.
        biases: ``[C]`` tensor or list of shards; None for no bias (a PyTorch extension).
        labels: integer ``[B, T]`` (or ``[B]`` when ``num_true`` is 1).
        inputs: ``[B, D]`` floating.
        num_sampled: S, candidates drawn once for the whole batch.
        num_classes: C.
        num_true: T.
        sampled_values: a ``(sampled_candidates, true_expected_count, sampled_expected_count)``
            triple; None uses ``log_uniform_candidate_sampler`` with ``unique=True``.
        remove_accidental_hits: drop sampled candidates equal to a true class (default True).
        partition_strategy: ``"mod"`` or ``"div"``.
        name: accepted for TensorFlow compatibility and ignored.
        seed: seed of the default sampler; the same seed draws the same candidates.
        generator: a ``torch.Generator`` for the default sampler.
        sparse_grad: sparse gradients for weights and biases (TensorFlow's IndexedSlices).

    Returns:
        ``[B]`` losses in the dtype of ``inputs``.

    Raises:
        TypeError, ValueError: as :func:`compute_sampled_logits`.

    Note:
        Unlike TensorFlow, float16/bfloat16 with hit removal give finite losses and gradients,
        and expected counts of any dtype are accepted. Evaluate with the full softmax.

    References:
        Jean et al., "On using very large target vocabulary for neural machine translation",
        ACL 2015.

    Example:
        >>> import torch, torchnce
        >>> w, b = torch.zeros(4, 2), torch.zeros(4)
        >>> values = ([1, 2], [[1.0]], [1.0, 1.0])
        >>> loss = torchnce.sampled_softmax_loss(w, b, torch.tensor([0]), torch.ones(1, 2), 2, 4,
        ...                                      sampled_values=values)
        >>> round(loss.item(), 4)  # three equal logits: log 3
        1.0986
    """
    del name
    problem = prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true,
                      sampled_values, remove_accidental_hits, partition_strategy,
                      seed=seed, generator=generator, sparse_grad=sparse_grad)
    return fused_sampled_loss(problem, "softmax")
