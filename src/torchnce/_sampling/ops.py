"""TensorFlow's candidate-sampler functions (``tf.random.*_candidate_sampler``).

Names, argument names, order and defaults are TensorFlow's; ``generator`` (and ``sampler``
for the learned unigram) are keyword-only extras. Each function validates its arguments, then
calls the same core as the sampler classes. Common behaviour:

* ``seed`` (an int) makes the draw a fixed function of the seed: unlike TensorFlow's eager op,
  a seeded call does not advance a stream, so the same seed gives the same candidates every
  call. TensorFlow's own random numbers are not reproduced, only their distribution.
* ``generator`` draws from a ``torch.Generator`` on the device of ``true_classes``
  (not together with ``seed``); with neither, torch's default generator is used. On CPU a
  call takes one int64 from it, which seeds the stream of ``seed=`` (so the native kernels
  and the pure path draw the same candidates, docs/native.md).
* On eager CPU tensors the whole call is one native kernel (``torchnce._sampling.fast``).
* Candidates are drawn on the device of ``true_classes`` (int32 or int64).
* ``name`` is accepted and ignored.
* Checking that the true classes lie in ``[0, range_max)`` reads them (one device sync).
"""

from __future__ import annotations

import torch

from torchnce._common.types import SampledValues
from torchnce._sampling.closed_form import log_uniform_values, uniform_values
from torchnce._sampling.draw import check_sampler_args, check_true_classes, resolve_generator
from torchnce._sampling.samplers import all_values


def uniform_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    r"""Sample classes uniformly from ``[0, range_max)``.

    .. math::
        P(k) = 1 / \text{range\_max}, \qquad
        Q = P·S \text{ or } 1 - (1 - P)^{\text{num\_tries}}

    ``P`` is ``fl32(1 / range_max)``; ``Q`` (the expected counts) is ``P·S`` when the draw
    needed no rejection (always with ``unique=False``), else ``-expm1(num_tries·log1p(-P))``,
    in float32. ``range_max`` may exceed 2³² (ids are int64).

    Args:
        true_classes: int ``[B, T]`` target classes; they only feed ``true_expected_count``
            and are not excluded from the sample.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes.
        seed: if given, the draw is a fixed function of it.
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``, float32
        ``[B, T]`` and ``[S]`` expected counts.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: bad shapes or counts, ``unique`` with ``num_sampled > range_max``
            ("Sampler's range is too small"), ids outside ``[0, range_max)`` ("out of range"),
            ``seed`` together with ``generator``.

    Examples:
        >>> import torch, torchnce
        >>> out = torchnce.uniform_candidate_sampler(torch.tensor([[1, 2]]), 2, 3, False, 4, seed=0)
        >>> out.true_expected_count  # 3 · 1/4
        tensor([[0.7500, 0.7500]])
    """
    del name
    num_true, num_sampled, unique, range_max = check_sampler_args(
        num_true, num_sampled, unique, range_max
    )
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    return uniform_values(tc, num_sampled, unique, range_max, gen)


def log_uniform_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    range_max: int,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    r"""Sample classes from a log-uniform (Zipfian) distribution over ``[0, range_max)``.

    .. math::
        P(k) = \frac{\log(k + 2) - \log(k + 1)}{\log(\text{range\_max} + 1)}

    computed as TensorFlow does, ``fl32(log((k + 2) / (k + 1)) / log1p(range_max))`` in double.
    This suits classes sorted by decreasing frequency; it is the default sampler of the losses.
    Expected counts as in ``uniform_candidate_sampler``.

    Args:
        true_classes: int ``[B, T]`` target classes; they only feed ``true_expected_count``
            and are not excluded from the sample.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes.
        seed: if given, the draw is a fixed function of it.
        name: ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``, float32
        ``[B, T]`` and ``[S]`` expected counts.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: as ``uniform_candidate_sampler``.

    Examples:
        >>> import torch, torchnce
        >>> out = torchnce.log_uniform_candidate_sampler(
        ...     torch.tensor([[0], [3]]), 1, 4, False, 10, seed=1)
        >>> out.true_expected_count  # 4 · log(2)/log(11) and 4 · log(5/4)/log(11)
        tensor([[1.1563],
                [0.3722]])
    """
    del name
    num_true, num_sampled, unique, range_max = check_sampler_args(
        num_true, num_sampled, unique, range_max
    )
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    return log_uniform_values(tc, num_sampled, unique, range_max, gen)


def all_candidate_sampler(
    true_classes: torch.Tensor,
    num_true: int,
    num_sampled: int,
    unique: bool,
    seed: int | None = None,
    name: str | None = None,
    *,
    generator: torch.Generator | None = None,
) -> SampledValues:
    """Return all classes ``0..num_sampled-1``, with every expected count 1 (for tests).

    Args:
        true_classes: int ``[B, T]`` target classes, in ``[0, num_sampled)``.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes (the range).
        unique: ignored (checked to be a bool).
        seed: ignored (no randomness).
        name: ignored.
        generator: ignored (not together with ``seed``).

    Returns:
        ``SampledValues``: ``arange(S)``, ones ``[B, T]``, ones ``[S]``.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: bad shapes; true classes outside ``[0, num_sampled)`` ("out of range").

    Examples:
        >>> import torch, torchnce
        >>> torchnce.all_candidate_sampler(torch.tensor([[1], [0]]), 1, 3, True).sampled_candidates
        tensor([0, 1, 2])
    """
    del name
    num_true, num_sampled, unique, _ = check_sampler_args(num_true, num_sampled, unique, 1)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, num_sampled)
    resolve_generator(seed, generator, tc.device)
    return all_values(tc, num_sampled)
