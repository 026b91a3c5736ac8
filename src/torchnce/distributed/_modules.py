"""The class-sharded output layers: ``ShardedNCELoss`` and ``ShardedSampledSoftmaxLoss``.

Each final class names the single-process loss it reproduces; the shard, the sampler, the
process group and the plumbing are the shared base :class:`ShardedOutputLayer`.
"""

from __future__ import annotations

from typing import final

from torchnce._sampled.spec import NCE, SAMPLED_SOFTMAX
from torchnce.distributed._base import ShardedOutputLayer


@final
class ShardedNCELoss(ShardedOutputLayer):
    r""":class:`torchnce.NCELoss` with its classes sharded over the ranks of a process group.

    Rank ``r`` owns the rows of the classes ``shard_ids(C, r, P, partition_strategy)``
    (TensorFlow's "mod" or "div" layout, uneven shards included) and its own batch
    ``x_r`` ``[b_r, D]``. Every rank scores against the same ``S`` candidates; the rows its
    examples need are fetched from their owners (an all-to-all), so that with ``X`` and ``Y``
    the concatenation of the ranks' batches in rank order and ``W``, ``b`` the union of the
    shards:

    .. math::

        \sum_{r=0}^{P-1} L^{(r)} = \texttt{nce\_loss}(W, b, Y, X, S, C, T)
            \text{ reduced}, \qquad
        \frac{\partial}{\partial W_r}, \frac{\partial}{\partial x_r}
            \text{ equal the single-process gradients}

    in training mode, and the exact full sigmoid loss :func:`torchnce.nce_eval_loss` of the
    rank's rows in eval mode (partial softplus sums of every shard, added).

    Args:
        num_classes: C.
        embedding_dim: D.
        num_sampled: S, candidates per step, shared by all ranks.
        num_true: T.
        sampler: a :class:`torchnce.CandidateSampler` whose draw does not depend on the labels
            (all but :class:`torchnce.LearnedUnigramSampler`); None builds
            ``LogUniformSampler(num_classes)``.
        remove_accidental_hits: as :class:`torchnce.NCELoss` (None, the default, means False).
        bias: learn a bias per class.
        partition_strategy: ``"mod"`` or ``"div"``, which classes each rank owns.
        sparse_grad: sparse gradients of the shard in training mode.
        reduction: ``"mean"`` (over the global batch), ``"sum"`` or ``"none"``.
        seed: the seed of the sampler's generator; ranks draw identical candidates because
            they share it and step in lockstep (no broadcast needed).
        group: the process group (None: the default group).
        timeout: seconds (or a ``timedelta``) after which a collective fails with
            :class:`CollectiveError`; creates a group of the same ranks with this timeout
            (every rank of the default group must construct the layer). None keeps the
            group's own timeout.
        exchange: how a training step fetches its rows. ``"padded"`` sends fixed-size blocks
            whose sizes the host knows from shapes, so a step reads nothing back from the
            device (no synchronisation), at the price of every rank answering every label
            row; ``"variable"`` sends only the rows asked for, sized by counts the host
            reads each step. None: ``"padded"``, or ``"variable"`` with ``sparse_grad``
            (whose gradient must hold only the rows looked up).
        max_batch_size: the padded exchange's capacity, the most rows of any rank's batch
            (the same on every rank); None agrees on the largest batch of the ranks' first
            training step (one small exchange, read on the host). A larger batch raises
            ``ValueError`` on every rank (a device-side assertion off CPU).
        device: where to create the shard (the GPU of this rank for NCCL).
        dtype: its floating dtype.
        update: a :class:`torchnce.RowUpdate` applied to the shard's touched rows inside
            backward (optimizer in backward; every rank's gradients of a row reach its owner
            first, so the step equals the single-process layer's); None leaves the shard to
            an optimizer.

    Raises:
        TypeError, ValueError: as :class:`torchnce.NCELoss`.
        RuntimeError: no initialised process group.

    Note:
        Every rank must call ``forward``, ``backward`` and ``top_k`` in the same order; the
        full loss is differentiable too (an exact vocabulary-parallel loss). Per-example
        negatives are not supported. Traffic per step and rank, forward and backward:
        ``2(P−1)/P·(S + b·T)·(D + 1)`` values with the variable exchange,
        ``2(P−1)·m·T·(D + 1) + 4(P−1)/P·S·(D + 1)`` with the padded one for a capacity ``m``
        (docs/distributed.md).

    Examples:
        >>> import torch, torch.distributed as dist
        >>> from torchnce.distributed import ShardedNCELoss
        >>> dist.init_process_group("gloo")  # doctest: +SKIP
        >>> layer = ShardedNCELoss(10**6, 128, num_sampled=8192, seed=0)  # doctest: +SKIP
        >>> loss = layer(inputs, labels)  # this rank's batch  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """

    spec = NCE

@final
class ShardedSampledSoftmaxLoss(ShardedOutputLayer):
    r""":class:`torchnce.SampledSoftmaxLoss` with its classes sharded over the ranks.

    Same shards, candidates, arguments and exchange as :class:`ShardedNCELoss`; the loss of
    each row is :func:`torchnce.sampled_softmax_loss` in training mode and the exact full
    softmax :func:`torchnce.sampled_softmax_eval_loss` in eval mode, whose partition is
    merged from the shards' partial log-sum-exps:

    .. math::

        \log \sum_{c=0}^{C-1} e^{\ell_{ic}}
            = \operatorname{logsumexp}_{p} \Bigl( \log \sum_{c \in \text{shard } p}
              e^{\ell_{ic}} \Bigr)

    Args:
        num_classes: C.
        embedding_dim: D.
        num_sampled: S, candidates per step, shared by all ranks.
        num_true: T.
        sampler: as :class:`ShardedNCELoss`.
        remove_accidental_hits: as :class:`torchnce.SampledSoftmaxLoss` (None, the default,
            means True).
        bias: learn a bias per class.
        partition_strategy: ``"mod"`` or ``"div"``.
        sparse_grad: sparse gradients of the shard in training mode.
        reduction: ``"mean"`` (over the global batch), ``"sum"`` or ``"none"``.
        seed: the shared seed of the sampler's generator.
        group: the process group (None: the default group).
        timeout: as :class:`ShardedNCELoss`.
        exchange: as :class:`ShardedNCELoss`: ``"padded"`` (no host read per step),
            ``"variable"`` (fewer bytes) or None (padded unless ``sparse_grad``).
        max_batch_size: as :class:`ShardedNCELoss`, the padded exchange's batch capacity.
        device: where to create the shard.
        dtype: its floating dtype.
        update: as :class:`ShardedNCELoss`.

    Raises:
        TypeError, ValueError: as :class:`torchnce.SampledSoftmaxLoss`.
        RuntimeError: no initialised process group.

    Examples:
        >>> from torchnce.distributed import ShardedSampledSoftmaxLoss
        >>> layer = ShardedSampledSoftmaxLoss(10**6, 128, 8192, timeout=60)  # doctest: +SKIP
        >>> scores, ids = layer.top_k(inputs, 5)  # doctest: +SKIP
    """

    spec = SAMPLED_SOFTMAX
