"""The sampled losses: ``nce_loss``, ``sampled_softmax_loss`` and ``negative_sampling_loss``."""

from __future__ import annotations

from typing import Any

import torch

from torchnce._common.docs import fill_args
from torchnce._common.types import PartitionStrategy, Table
from torchnce._sampled.fused import fused_sampled_loss
from torchnce._sampled.problem import prepare
from torchnce._sampled.spec import NCE, NEGATIVE_SAMPLING, SAMPLED_SOFTMAX


@fill_args
def nce_loss(
    weights: Table,
    biases: Table | None,
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
    per_example_negatives: bool = False,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> torch.Tensor:
    r"""Noise-contrastive estimation loss per example, as ``tf.compat.v1.nn.nce_loss``.

    With the logits ``ℓ`` and targets ``z`` of :func:`compute_sampled_logits` (log-Q subtracted,
    ``z = 1/T`` on the true columns and 0 on the sampled ones):

    .. math::

        L_i = \sum_{j=1}^{T+S} \max(\ell_{ij}, 0) - \ell_{ij} z_{ij}
              + \log\left(1 + e^{-|\ell_{ij}|}\right)

    The result is per example; reduce it yourself (TensorFlow's word2vec takes the mean).

    Args:
        weights: {weights}
        biases: ``[C]`` tensor or list of shards; None for no bias (a PyTorch extension).
        labels: {labels}
        inputs: {inputs}
        num_sampled: S, candidates drawn once for the whole batch (or for every row).
        num_classes: {num_classes}
        num_true: {num_true}
        sampled_values: {sampled_values}
        remove_accidental_hits: drop sampled candidates equal to a true class ("sampled
            logistic" rather than NCE, in TensorFlow's words).
        partition_strategy: {partition_strategy}
        name: {name}
        seed: seed of the default sampler (TensorFlow's v1 nce_loss has no seed argument).
        generator: {generator}
        sparse_grad: {sparse_grad}
        per_example_negatives: {per_example_negatives}
        label_mask: {label_mask}
        padding_id: {padding_id}

    Returns:
        ``[B]`` losses in the dtype of ``inputs``.

    Raises:
        TypeError, ValueError: as :func:`compute_sampled_logits`.

    Note:
        Unlike TensorFlow, float16/bfloat16 inputs with ``remove_accidental_hits`` give finite
        losses (the loss, log expected counts included, is evaluated in float32 and cast
        back), expected counts of any dtype are accepted (finite and > 0), and
        ``seed``/``generator`` make the default sample reproducible.
        With variable labels (TensorFlow has none; padding there gives NaN), padding
        contributes nothing and a row without labels gets the loss of its negatives alone,
        ``Σ_s softplus(ℓ_s)``.

    References:
        Gutmann and Hyvärinen, "Noise-contrastive estimation", AISTATS 2010; Mnih and Teh,
        "A fast and simple algorithm for training neural probabilistic language models", 2012.

    Examples:
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
                      seed=seed, generator=generator, sparse_grad=sparse_grad,
                      per_example_negatives=per_example_negatives, label_mask=label_mask,
                      padding_id=padding_id)
    return fused_sampled_loss(problem, NCE)


@fill_args
def sampled_softmax_loss(
    weights: Table,
    biases: Table | None,
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
    per_example_negatives: bool = False,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> torch.Tensor:
    r"""Sampled softmax loss per example, as ``tf.compat.v1.nn.sampled_softmax_loss``.

    With the logits ``ℓ`` and targets ``z`` of :func:`compute_sampled_logits` (log-Q subtracted):

    .. math::

        L_i = -\sum_{j=1}^{T+S} z_{ij} \log \frac{e^{\ell_{ij}}}{\sum_k e^{\ell_{ik}}}

    Args:
        weights: {weights}
        biases: ``[C]`` tensor or list of shards; None for no bias (a PyTorch extension).
        labels: {labels}
        inputs: {inputs}
        num_sampled: S, candidates drawn once for the whole batch (or for every row).
        num_classes: {num_classes}
        num_true: {num_true}
        sampled_values: {sampled_values}
        remove_accidental_hits: drop sampled candidates equal to a true class (default True).
        partition_strategy: {partition_strategy}
        name: {name}
        seed: seed of the default sampler; the same seed draws the same candidates.
        generator: {generator}
        sparse_grad: {sparse_grad}
        per_example_negatives: {per_example_negatives}
        label_mask: {label_mask}
        padding_id: {padding_id}

    Returns:
        ``[B]`` losses in the dtype of ``inputs``.

    Raises:
        TypeError, ValueError: as :func:`compute_sampled_logits`.

    Note:
        Unlike TensorFlow, float16/bfloat16 with hit removal give finite losses and gradients,
        and expected counts of any dtype are accepted. Evaluate with the full softmax.
        With variable labels, padding contributes nothing and a row without labels has the
        loss 0 (all its targets are 0, as TensorFlow's softmax cross entropy gives).

    References:
        Jean et al., "On using very large target vocabulary for neural machine translation",
        ACL 2015.

    Examples:
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
                      seed=seed, generator=generator, sparse_grad=sparse_grad,
                      per_example_negatives=per_example_negatives, label_mask=label_mask,
                      padding_id=padding_id)
    return fused_sampled_loss(problem, SAMPLED_SOFTMAX)


@fill_args
def negative_sampling_loss(
    weights: Table,
    biases: Table | None,
    labels: Any,
    inputs: torch.Tensor,
    num_sampled: int,
    num_classes: int,
    num_true: int = 1,
    sampled_values: Any = None,
    remove_accidental_hits: bool = False,
    partition_strategy: PartitionStrategy = "mod",
    name: str = "negative_sampling_loss",
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sparse_grad: bool = False,
    per_example_negatives: bool = False,
    label_mask: torch.Tensor | None = None,
    padding_id: int | None = None,
) -> torch.Tensor:
    r"""Negative-sampling loss per example (word2vec's NEG): NCE without the log-Q correction.

    With the logits of :func:`compute_sampled_logits` *without* log-Q,
    ``ℓ_ij = x_i·W_j + b_j``, and the same targets as :func:`nce_loss` (``1/T`` on the true
    columns, 0 on the sampled ones), the sigmoid cross entropy summed per row:

    .. math::

        L_i = \sum_{j=1}^{T+S} \operatorname{softplus}(\ell_{ij}) - z_{ij} \ell_{ij}
            \;\overset{T=1}{=}\; -\log \sigma(\ell_{iy})
              - \sum_{s=1}^{S} \log \sigma(-\ell_{is})

    NCE classifies data against noise with the logit ``ℓ − log Q`` (``Q ≈ k·q``, with ``k``
    samples from the noise ``q``), so its classifier is ``p_θ / (p_θ + k q)``: NCE is a
    consistent estimator of the normalised model, and at the optimum ``exp(ℓ)`` is
    ``p(c | x)`` itself. NEG uses ``σ(ℓ) = p_θ / (p_θ + 1)``, i.e. NCE with ``k·q(c) = 1`` for
    every class: at its optimum ``ℓ = log p(c | x) − log(k q(c))``, a shifted PMI (with unigram
    noise, ``PMI(x, c) − log k``). NEG is not a consistent density estimator; it learns good
    representations, not probabilities. The two agree only when the noise is uniform and
    ``k·q = 1`` (expected counts of 1). The arguments are :func:`nce_loss`'s; the expected
    counts are not used (they are still validated, and drawn by the default sampler).

    Args:
        weights: {weights}
        biases: ``[C]`` tensor or list of shards; None for no bias (word2vec has none).
        labels: {labels}
        inputs: {inputs}
        num_sampled: S (word2vec's ``k``), candidates drawn for the batch (or for every row).
        num_classes: {num_classes}
        num_true: {num_true}
        sampled_values: {sampled_values}
        remove_accidental_hits: drop sampled candidates equal to a true class.
        partition_strategy: {partition_strategy}
        name: {name}
        seed: seed of the default sampler.
        generator: {generator}
        sparse_grad: {sparse_grad}
        per_example_negatives: {per_example_negatives}
        label_mask: {label_mask}
        padding_id: {padding_id}

    Returns:
        ``[B]`` losses in the dtype of ``inputs``.

    Raises:
        TypeError, ValueError: as :func:`compute_sampled_logits`.

    Note:
        TensorFlow has no such loss; word2vec's own implementation draws its ``k`` negatives
        per example from the unigram distribution raised to 0.75
        (:class:`torchnce.FixedUnigramSampler` with ``distortion=0.75``). With variable
        labels, a row without labels gets the loss of its negatives alone.

    References:
        Mikolov et al., "Distributed representations of words and phrases and their
        compositionality", NeurIPS 2013; Dyer, "Notes on noise contrastive estimation and
        negative sampling", arXiv:1410.8251, 2014; Levy and Goldberg, "Neural word embedding as
        implicit matrix factorization", NeurIPS 2014.

    Examples:
        >>> import torch, torchnce
        >>> w, b = torch.zeros(4, 2), torch.zeros(4)
        >>> values = ([1, 2], [[0.5]], [0.5, 0.5])  # expected counts are not used
        >>> loss = torchnce.negative_sampling_loss(w, b, torch.tensor([0]), torch.ones(1, 2), 2,
        ...                                        4, sampled_values=values)
        >>> round(loss.item(), 4)  # three logits of 0: 3·log 2
        2.0794
    """
    del name
    problem = prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true,
                      sampled_values, remove_accidental_hits, partition_strategy,
                      seed=seed, generator=generator, sparse_grad=sparse_grad,
                      per_example_negatives=per_example_negatives, label_mask=label_mask,
                      padding_id=padding_id, log_counts=False)
    return fused_sampled_loss(problem, NEGATIVE_SAMPLING)
