"""The output layer as PyTorch modules: ``NCELoss``, ``SampledSoftmaxLoss`` and
``NegativeSamplingLoss``.

Each final class names its loss (a ``LossSpec``) and documents it; everything else
(parameters, sampler, validation, ``forward``, ``logits``, ``top_k``) is the shared base
:class:`OutputLayer`.
"""

from __future__ import annotations

from typing import final

from torchnce._common.docs import fill_args
from torchnce._layers.base import OutputLayer
from torchnce._sampled.spec import NCE, NEGATIVE_SAMPLING, SAMPLED_SOFTMAX


@final
@fill_args
class NCELoss(OutputLayer):
    r"""An output layer trained with noise-contrastive estimation, evaluated exactly.

    Owns ``weight`` ``[C, D]`` and ``bias`` ``[C]`` (or ``num_shards`` shards of each, laid out
    by ``partition_strategy``) and a candidate ``sampler``. In training mode ``forward`` draws
    ``S`` candidates and returns :func:`torchnce.nce_loss`; in eval mode it returns the exact
    full sigmoid loss :func:`torchnce.nce_eval_loss`, the evaluation TensorFlow recommends:

    .. math::

        L^{\text{train}}_i = \sum_{j=1}^{T+S} \operatorname{softplus}(\ell_{ij})
            - \ell_{ij} z_{ij}, \qquad
        L^{\text{eval}}_i = \sum_{c=0}^{C-1} \operatorname{softplus}(\ell_{ic})
            - \frac{1}{T} \sum_{t=1}^{T} \ell_{i y_{it}}

    with the sampled logits ``ℓ = x·W + b − log Q`` and targets ``1/T`` in training, and the
    full logits ``ℓ = x Wᵀ + b`` in evaluation; ``reduction`` then averages, sums or keeps
    the ``[B]`` losses.

    Args:
        num_classes: {layer_num_classes}
        embedding_dim: {embedding_dim}
        num_sampled: {layer_num_sampled}
        num_true: {layer_num_true}
        sampler: {sampler}
        remove_accidental_hits: drop sampled candidates equal to a true class; None (the
            default) means False, as TensorFlow's ``nce_loss``.
        bias: {bias}
        num_shards: {num_shards}
        partition_strategy: {layer_partition_strategy}
        sparse_grad: {layer_sparse_grad}
        reduction: {reduction}
        device: {device}
        dtype: {dtype}
        per_example_negatives: {layer_per_example_negatives}
        update: {update}

    Raises:
        TypeError: non-int sizes, a sampler that is not a ``CandidateSampler``, a non-floating
            dtype.
        ValueError: sizes < 1, ``num_shards > num_classes``, a sampler whose ``range_max``
            differs from ``num_classes``, ``num_sampled > num_classes`` (unique draws need that
            many classes: "Sampler's range is too small"), unknown choices, ``update`` with
            ``sparse_grad=True`` or with a parameter that does not require grad.

    Note:
        Initialisation follows TensorFlow's word2vec tutorial: weights from a normal with std
        ``1/√D`` truncated at two standard deviations, zero biases (:meth:`reset_parameters`).
        Unlike TensorFlow, evaluation agrees with training under "mod" sharding too.

    Examples:
        >>> import torch, torchnce
        >>> _ = torch.manual_seed(0)
        >>> layer = torchnce.NCELoss(100, 8, num_sampled=5)
        >>> layer
        NCELoss(
          num_classes=100, embedding_dim=8, num_sampled=5, num_true=1, remove_accidental_hits=False, bias=True, num_shards=1, partition_strategy='mod', sparse_grad=False, reduction='mean', per_example_negatives=False
          (sampler): LogUniformSampler(range_max=100)
        )
        >>> x, y = torch.randn(4, 8), torch.tensor([3, 14, 15, 92])
        >>> layer(x, y).shape  # training mode: sampled NCE, averaged
        torch.Size([])
        >>> scores, ids = layer.eval().top_k(x, 3)
        >>> ids.shape, bool(layer(x, y) > 0)  # eval mode: the full sigmoid loss
        (torch.Size([4, 3]), True)
    """  # noqa: E501

    spec = NCE


@final
@fill_args
class SampledSoftmaxLoss(OutputLayer):
    r"""An output layer trained with sampled softmax, evaluated with the exact full softmax.

    Same parameters, sampler and modes as :class:`NCELoss`. In training mode ``forward``
    returns :func:`torchnce.sampled_softmax_loss`; in eval mode the exact full softmax cross
    entropy :func:`torchnce.sampled_softmax_eval_loss`:

    .. math::

        L^{\text{train}}_i = -\sum_{j=1}^{T+S} z_{ij}
            \log \frac{e^{\ell_{ij}}}{\sum_k e^{\ell_{ik}}}, \qquad
        L^{\text{eval}}_i = \log \sum_{c=0}^{C-1} e^{\ell_{ic}}
            - \frac{1}{T} \sum_{t=1}^{T} \ell_{i y_{it}}

    Args:
        num_classes: {layer_num_classes}
        embedding_dim: {embedding_dim}
        num_sampled: {layer_num_sampled}
        num_true: {layer_num_true}
        sampler: {sampler}
        remove_accidental_hits: drop sampled candidates equal to a true class; None (the
            default) means True, as TensorFlow's ``sampled_softmax_loss``.
        bias: {bias}
        num_shards: {num_shards}
        partition_strategy: {layer_partition_strategy}
        sparse_grad: {layer_sparse_grad}
        reduction: {reduction}
        device: {device}
        dtype: {dtype}
        per_example_negatives: {layer_per_example_negatives}
        update: {update}

    Raises:
        TypeError, ValueError: as :class:`NCELoss`.

    Note:
        Initialisation as :class:`NCELoss` (TensorFlow's word2vec: truncated normal with std
        ``1/√D``, zero biases).

    Examples:
        >>> import torch, torchnce
        >>> _ = torch.manual_seed(0)
        >>> layer = torchnce.SampledSoftmaxLoss(100, 8, num_sampled=5, num_shards=2,
        ...                                     reduction="none")
        >>> [tuple(p.shape) for p in layer.parameters()]
        [(50, 8), (50, 8), (50,), (50,)]
        >>> x, y = torch.randn(4, 8), torch.tensor([3, 14, 15, 92])
        >>> layer(x, y).shape, layer(x, y, mode="full").shape
        (torch.Size([4]), torch.Size([4]))
    """

    spec = SAMPLED_SOFTMAX


@final
@fill_args
class NegativeSamplingLoss(OutputLayer):
    r"""An output layer trained with word2vec's negative sampling, evaluated exactly.

    Same parameters, sampler and modes as :class:`NCELoss`. In training mode ``forward``
    returns :func:`torchnce.negative_sampling_loss` (NCE's logits without log-Q); in eval
    mode the exact full sigmoid loss :func:`torchnce.nce_eval_loss`, which has no log-Q
    either:

    .. math::

        L^{\text{train}}_i = \sum_{j=1}^{T+S} \operatorname{softplus}(\ell_{ij})
            - \ell_{ij} z_{ij}, \qquad \ell = x \cdot W + b

    NEG learns a shifted PMI rather than normalised probabilities (see
    :func:`torchnce.negative_sampling_loss`).

    Args:
        num_classes: {layer_num_classes}
        embedding_dim: {embedding_dim}
        num_sampled: S (word2vec's ``k``), candidates drawn per batch or per row.
        num_true: {layer_num_true}
        sampler: a :class:`torchnce.CandidateSampler` over ``[0, C)``; None builds
            ``LogUniformSampler(num_classes)``; word2vec uses
            ``FixedUnigramSampler(C, unigrams=counts, distortion=0.75)``.
        remove_accidental_hits: drop sampled candidates equal to a true class; None (the
            default) means False.
        bias: learn a bias per class (word2vec has none).
        num_shards: {num_shards}
        partition_strategy: {layer_partition_strategy}
        sparse_grad: {layer_sparse_grad}
        reduction: {reduction}
        device: {device}
        dtype: {dtype}
        per_example_negatives: {layer_per_example_negatives}
        update: {update}

    Raises:
        TypeError, ValueError: as :class:`NCELoss`.

    Examples:
        >>> import torch, torchnce
        >>> _ = torch.manual_seed(0)
        >>> layer = torchnce.NegativeSamplingLoss(100, 8, num_sampled=5, bias=False,
        ...                                       per_example_negatives=True)
        >>> x, y = torch.randn(4, 8), torch.tensor([3, 14, 15, 92])
        >>> layer(x, y).shape, layer(x, y, mode="full").shape
        (torch.Size([]), torch.Size([]))
    """

    spec = NEGATIVE_SAMPLING

