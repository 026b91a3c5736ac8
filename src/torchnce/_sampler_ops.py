"""TensorFlow's candidate-sampler functions (``tf.random.*_candidate_sampler``).

Names, argument names, order and defaults are TensorFlow's; ``generator`` is a keyword-only
extra. Every function validates its arguments, then calls the same core as the sampler
classes of ``torchnce._samplers``.
"""

from __future__ import annotations

import torch

from torchnce._checks import check_bool, check_int
from torchnce._sampler_dists import (
    log_uniform_block,
    log_uniform_draw,
    log_uniform_probability,
)
from torchnce._sampling import (
    check_num_sampled,
    check_true_classes,
    resolve_generator,
    sample_values,
)
from torchnce._types import SampledValues


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
    """Sample classes from a log-uniform (Zipfian) distribution over ``[0, range_max)``.

    .. math::
        P(k) = \\frac{\\log(k + 2) - \\log(k + 1)}{\\log(\\text{range\\_max} + 1)}

    computed as TensorFlow does, ``fl32(log((k + 2) / (k + 1)) / log1p(range_max))`` in double.
    This suits classes sorted by decreasing frequency. The expected counts are ``P·S`` when the
    draw needed no rejection (always with ``unique=False``), else
    ``-expm1(num_tries·log1p(-P))``, in float32.

    Args:
        true_classes: int ``[B, T]`` target classes; they only feed ``true_expected_count``
            and are not excluded from the sample.
        num_true: ``T``, the number of columns of ``true_classes``.
        num_sampled: ``S``, the number of classes to sample.
        unique: sample without replacement (TensorFlow's rejection loop) if True.
        range_max: ``C``, the number of classes.
        seed: if given, the draw is a fixed function of it.
        name: accepted for TensorFlow compatibility and ignored.
        generator: the random generator to draw with (keyword-only; not with ``seed``).

    Returns:
        ``SampledValues``: int64 ``[S]`` candidates on the device of ``true_classes``, float32
        ``[B, T]`` and ``[S]`` expected counts.

    Raises:
        TypeError: non-integer ``true_classes``.
        ValueError: bad shapes or counts, ``unique`` with ``num_sampled > range_max``
            ("Sampler's range is too small"), ids outside ``[0, range_max)`` ("out of range"),
            ``seed`` together with ``generator``.

    Note:
        Unlike TensorFlow's eager op, a seeded call does not advance a stream: the same seed
        gives the same candidates every call. TensorFlow's own random stream is not
        reproduced. Checking that the true classes are in range reads them (one device sync).

    Example:
        >>> import torch, torchnce
        >>> out = torchnce.log_uniform_candidate_sampler(
        ...     torch.tensor([[0], [3]]), 1, 4, True, 10, seed=1)
        >>> out.sampled_candidates.shape, out.true_expected_count.dtype
        (torch.Size([4]), torch.float32)
        >>> len(set(out.sampled_candidates.tolist()))
        4
    """
    del name
    num_true = check_int("num_true", num_true, minimum=1)
    num_sampled = check_num_sampled(num_sampled)
    unique = check_bool("unique", unique)
    range_max = check_int("range_max", range_max, minimum=1)
    tc = check_true_classes(true_classes, num_true, num_sampled, unique, range_max)
    gen = resolve_generator(seed, generator, tc.device)
    return sample_values(
        tc,
        num_sampled,
        unique,
        log_uniform_draw(range_max, gen, tc.device),
        lambda ids: log_uniform_probability(ids, range_max),
        lambda: log_uniform_block(range_max, num_sampled),
    )
