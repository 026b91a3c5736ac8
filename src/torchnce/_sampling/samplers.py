"""Candidate samplers as PyTorch modules: one abstract base, final concrete classes.

Each class holds its configuration (and table or learned state as buffers, so ``.to(device)``
moves it); ``sample`` validates and then calls the same core as the TensorFlow-named
functions of ``torchnce._sampling.ops``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import final

import torch

from torchnce._common.checks import check_bool
from torchnce._common.types import SampledValues
from torchnce._sampling.closed_form import (
    log_uniform_probability,
    log_uniform_values,
    uniform_probability,
    uniform_values,
)
from torchnce._sampling.draw import (
    Rng,
    check_ids,
    check_num_sampled,
    check_range_max,
    check_true_classes,
    resolve_generator,
)


class CandidateSampler(torch.nn.Module, abc.ABC):
    r"""A distribution over class ids ``[0, range_max)`` that draws negatives for sampled losses.

    ``sample`` returns TensorFlow's ``(sampled_candidates, true_expected_count,
    sampled_expected_count)``: ``S`` ids shared by the whole batch and the expected number of
    times each true and each sampled class appears in the sample,

    .. math::
        Q(k) = \begin{cases} P(k)·S & \text{no rejection (always when not unique)} \\
        1 - (1 - P(k))^{\text{num\_tries}} & \text{otherwise} \end{cases}

    in float32, where ``num_tries`` counts every draw of TensorFlow's rejection loop.
    Calling the module is the same as calling ``sample``.

    Note:
        Unlike TensorFlow's ops (CPU only, state lost when a model reloads), samplers draw on
        the device of ``true_classes``, their tables follow ``.to(device)`` (keeping their
        dtypes), and learned counts are part of ``state_dict``. The distribution of the draws
        is TensorFlow's; its random stream is not reproduced.

    Examples:
        >>> import torch, torchnce
        >>> sampler: torchnce.CandidateSampler = torchnce.UniformSampler(10)
        >>> out = sampler(torch.tensor([[3], [7]]), 4, generator=torch.Generator().manual_seed(0))
        >>> out.sampled_candidates.shape, out.true_expected_count.shape
        (torch.Size([4]), torch.Size([2, 1]))
    """

    range_max: int | None

    def sample(
        self,
        true_classes: torch.Tensor,
        num_sampled: int,
        *,
        unique: bool = True,
        generator: torch.Generator | None = None,
    ) -> SampledValues:
        """Draw ``num_sampled`` candidates for a batch of true classes.

        Args:
            true_classes: int ``[B, T]`` target classes (only feed ``true_expected_count``).
            num_sampled: ``S``, the number of candidates.
            unique: draw without replacement (TensorFlow's rejection loop) if True.
            generator: the random generator; None uses torch's default one for the device.

        Returns:
            ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``,
            float32 ``[B, T]`` and ``[S]`` expected counts.

        Raises:
            TypeError: non-integer ``true_classes``.
            ValueError: bad shapes, ``unique`` with ``num_sampled > range_max`` ("Sampler's
                range is too small"), ids outside ``[0, range_max)`` ("out of range").
        """
        num_sampled = check_num_sampled(num_sampled)
        unique = check_bool("unique", unique)
        limit = self.range_max if self.range_max is not None else num_sampled
        tc = check_true_classes(true_classes, None, num_sampled, unique, limit)
        return self._sample(tc, num_sampled, unique, resolve_generator(None, generator, tc.device))

    def forward(
        self,
        true_classes: torch.Tensor,
        num_sampled: int,
        *,
        unique: bool = True,
        generator: torch.Generator | None = None,
    ) -> SampledValues:
        """Same as ``sample``."""
        return self.sample(true_classes, num_sampled, unique=unique, generator=generator)

    @abc.abstractmethod
    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        """TensorFlow's float32 ``P(id)`` of one draw, same shape as ``ids``."""

    def _probability(self, ids: torch.Tensor) -> torch.Tensor:
        """``probability`` of ids already known to lie in ``[0, range_max)``, not re-checked
        (the library's own draws and validated labels); a subclass's own ``probability``
        unless it overrides this."""
        return self.probability(ids)

    def log_probability(self, ids: torch.Tensor) -> torch.Tensor:
        """``log P(id)`` in float32 (``-inf`` for ids that are never drawn)."""
        return torch.log(self.probability(ids))

    @abc.abstractmethod
    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        """Draw from validated arguments; shared with the TensorFlow-named functions."""

    def extra_repr(self) -> str:
        return f"range_max={self.range_max}"

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> CandidateSampler:
        """Move the tables with ``.to(device)`` but keep their dtypes under ``.to(dtype)``,
        ``.double()`` or ``.half()``: float32 probabilities and float64 alias thresholds are
        part of TensorFlow's semantics."""

        module: CandidateSampler = super()._apply(keep_dtypes(fn), recurse)  # type: ignore[no-untyped-call]
        return module


def keep_dtypes(
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` for ``nn.Module._apply`` that moves a tensor to ``fn``'s device but never
    changes its dtype (for tables whose dtypes are part of the semantics)."""

    def same_dtype(tensor: torch.Tensor) -> torch.Tensor:
        moved = fn(tensor)
        return moved if moved.dtype == tensor.dtype else tensor.to(moved.device)

    return same_dtype


@final
class UniformSampler(CandidateSampler):
    """Every class equally likely: ``P(k) = fl32(1 / range_max)``.

    Args:
        range_max: ``C``, the number of classes (up to 2⁶³; 2³² + 1 works).

    Examples:
        >>> import torch, torchnce
        >>> sampler = torchnce.UniformSampler(4)
        >>> sampler.probability(torch.tensor([0, 3]))
        tensor([0.2500, 0.2500])
        >>> out = sampler.sample(torch.tensor([[1]]), 4, generator=torch.Generator().manual_seed(0))
        >>> sorted(out.sampled_candidates.tolist())
        [0, 1, 2, 3]
    """

    range_max: int

    def __init__(self, range_max: int) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return self._probability(check_ids(ids, self.range_max))

    def _probability(self, ids: torch.Tensor) -> torch.Tensor:
        return uniform_probability(ids, self.range_max)

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        return uniform_values(tc, num_sampled, unique, self.range_max, gen)


@final
class LogUniformSampler(CandidateSampler):
    """Zipfian classes: ``P(k) = log((k + 2) / (k + 1)) / log(range_max + 1)``.

    Computed in double and rounded to float32, as TensorFlow does. Suits classes sorted by
    decreasing frequency; the default sampler of ``nce_loss`` and ``sampled_softmax_loss``.

    Args:
        range_max: ``C``, the number of classes.

    Examples:
        >>> import torch, torchnce
        >>> sampler = torchnce.LogUniformSampler(3)
        >>> sampler.probability(torch.tensor([0, 1, 2]))  # log(2)/log(4), log(1.5)/log(4), ...
        tensor([0.5000, 0.2925, 0.2075])
    """

    range_max: int

    def __init__(self, range_max: int) -> None:
        super().__init__()
        self.range_max = check_range_max(range_max)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return self._probability(check_ids(ids, self.range_max))

    def _probability(self, ids: torch.Tensor) -> torch.Tensor:
        return log_uniform_probability(ids, self.range_max)

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        return log_uniform_values(tc, num_sampled, unique, self.range_max, gen)


@final
class AllCandidateSampler(CandidateSampler):
    """Not random: the candidates are all classes ``0..S-1`` and every expected count is 1.

    The range is ``num_sampled`` itself, so the true classes must lie in ``[0, S)``. Meant for
    tests (the loss then equals the full softmax / full logistic loss, with log Q = 0).

    Examples:
        >>> import torch, torchnce
        >>> torchnce.AllCandidateSampler().sample(torch.tensor([[1, 2]]), 3)
        SampledValues(sampled_candidates=tensor([0, 1, 2]), true_expected_count=tensor([[1., 1.]]), sampled_expected_count=tensor([1., 1., 1.]))
    """  # noqa: E501

    def __init__(self) -> None:
        super().__init__()
        self.range_max = None

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "AllCandidateSampler has no sampling distribution: it returns every class once"
        )

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        return all_values(tc, num_sampled)


def all_values(tc: torch.Tensor, num_sampled: int) -> SampledValues:
    """Candidates ``0..S-1`` and expected counts of 1 (docs/tf-semantics.md §6.9)."""
    return SampledValues(
        torch.arange(num_sampled, device=tc.device),
        torch.ones(tc.shape, dtype=torch.float32, device=tc.device),
        torch.ones(num_sampled, dtype=torch.float32, device=tc.device),
    )
