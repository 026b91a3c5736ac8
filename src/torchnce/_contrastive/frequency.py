"""Streaming estimate of each item's probability of appearing in a batch (Yi et al. 2019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, final

import torch

from torchnce._common.checks import as_int_tensor, check_choice, check_int
from torchnce._sampling.samplers import keep_dtypes

Hash = Literal["mod", "multiplicative"]
HASHES = ("mod", "multiplicative")
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64 (Fibonacci hashing)


@final
class StreamingFrequencyEstimator(torch.nn.Module):
    r"""Estimates each item's per-batch sampling probability from the stream of batches.

    Algorithm 2 of Yi et al.: two hash arrays, ``A`` (``last_step``, the step at which a bucket
    was last seen) and ``B`` (``gap``, a moving average of the number of steps between two
    sightings). Step ``t`` (the ``t``-th ``update``) visits every distinct bucket
    ``h = hash(y)`` of the batch once:

    .. math::
        B_h \leftarrow \begin{cases} (1 - \alpha) B_h + \alpha (t - A_h) & A_h > 0 \\
        t & A_h = 0 \text{ (first sighting)} \end{cases}, \qquad A_h \leftarrow t,
        \qquad \hat p(y) = 1 / B_{\operatorname{hash}(y)}

    If an item appears in each batch independently with probability ``p``, the gaps are
    geometric with mean ``1 / p``; the first sighting's step ``t`` is one such gap counted from
    step 0, so ``B`` starts unbiased instead of from an arbitrary prior. A bucket never seen
    gets ``1 / (t + 1)``, the value it would have if it appeared at the next step. Estimates
    lie in ``(0, 1]``, so ``log_probability`` can be passed as ``log_q`` to
    :func:`info_nce_loss` or as ``batch_log_q`` to :func:`mixed_negatives_loss`.

    Args:
        num_buckets: ``H``, the size of the hash arrays.
        alpha: the moving average's weight of a new gap, in ``(0, 1]``; its stationary
            relative spread is about ``sqrt(α / (2 - α))`` and it forgets in ``~1/α`` sightings.
        hash: ``"mod"`` (``id mod H``: exact, collision-free estimates for ids in ``[0, H)``)
            or ``"multiplicative"`` (the high 32 bits of ``id × 0x9E3779B97F4A7C15``, mod H:
            spreads sparse or structured ids).

    Raises:
        TypeError: a non-int ``num_buckets`` or a non-numeric ``alpha``.
        ValueError: ``num_buckets < 1``, ``alpha`` outside ``(0, 1]``, an unknown ``hash``.

    Note:
        An id that appears several times in one batch, or several ids that share a bucket,
        count once: the estimate is the probability that the item (bucket) is in a batch,
        whatever its multiplicity, and the vectorised update is deterministic (every duplicate
        writes the same value). The buffers ``last_step``, ``gap`` and ``step`` are in the
        ``state_dict`` and follow ``.to(device)``, keeping their dtypes under ``.half()`` or
        ``.double()``. Ids may be any integers (negative ones too) and are never range-checked.

    References:
        Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
        Recommendations", RecSys 2019, Algorithm 2.

    Examples:
        >>> import torch, torchnce
        >>> estimator = torchnce.StreamingFrequencyEstimator(8, alpha=0.5)
        >>> for batch in ([1, 2], [1], [1, 2], [1, 1]):  # item 1 at every step, 2 every other
        ...     estimator.update(torch.tensor(batch))
        >>> estimator.probability(torch.tensor([1, 2, 3]))  # 3 unseen in 4 steps: 1 / 5
        tensor([1.0000, 0.6667, 0.2000])
    """

    num_buckets: int
    alpha: float
    hash: Hash
    last_step: torch.Tensor
    gap: torch.Tensor
    step: torch.Tensor

    def __init__(self, num_buckets: int, *, alpha: float = 0.01, hash: Hash = "mod") -> None:
        super().__init__()
        self.num_buckets = check_int("num_buckets", num_buckets, minimum=1)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a float, got {type(alpha).__name__}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.hash = check_choice("hash", hash, HASHES)  # type: ignore[assignment]
        self.register_buffer("last_step", torch.zeros(self.num_buckets, dtype=torch.int64))
        self.register_buffer("gap", torch.zeros(self.num_buckets, dtype=torch.float32))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def buckets(self, ids: Any) -> torch.Tensor:
        """The bucket of each id, int64 of the same shape, on the estimator's device."""
        t = as_int_tensor("ids", ids, device=self.gap.device).to(self.gap.device)
        if self.hash == "mod":
            return torch.remainder(t, self.num_buckets)
        high = torch.bitwise_and(torch.bitwise_right_shift(t * _GOLDEN, 32), 0xFFFFFFFF)
        return torch.remainder(high, self.num_buckets)

    @torch.no_grad()
    def update(self, ids: Any) -> None:
        """Advance one step and record the batch's ids (any shape; duplicates count once)."""
        h = self.buckets(ids).reshape(-1)
        self.step.add_(1)
        last = self.last_step[h]
        gap = (self.step - last).to(self.gap.dtype)
        self.gap[h] = torch.where(last > 0, torch.lerp(self.gap[h], gap, self.alpha), gap)
        self.last_step[h] = self.step

    def probability(self, ids: Any) -> torch.Tensor:
        """``1 / B[hash(id)]`` in float32, same shape as ``ids``; in ``(0, 1]``."""
        return torch.reciprocal(self._gap(ids))

    def log_probability(self, ids: Any) -> torch.Tensor:
        """``-log B[hash(id)]``, ready to pass as ``log_q``; in ``(-inf, 0]``."""
        return torch.log(self._gap(ids)).neg_()

    def _gap(self, ids: Any) -> torch.Tensor:
        h = self.buckets(ids)
        unseen = (self.step + 1).to(self.gap.dtype)
        return torch.where(self.last_step[h] > 0, self.gap[h], unseen)

    def extra_repr(self) -> str:
        return f"num_buckets={self.num_buckets}, alpha={self.alpha}, hash={self.hash!r}"

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> StreamingFrequencyEstimator:
        """Move the buffers with ``.to(device)`` but keep their dtypes: a float16 gap would
        swallow the moving average's small steps."""
        module: StreamingFrequencyEstimator = super()._apply(keep_dtypes(fn), recurse)  # type: ignore[no-untyped-call]
        return module
