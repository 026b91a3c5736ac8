"""The fixed-unigram sampler: TensorFlow's weights table drawn through a Walker alias table."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import cast, final

import torch
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import unset_fake_temporarily

from torchnce._common.checks import check_int, range_too_small
from torchnce._common.types import SampledValues
from torchnce._native import samplers as native
from torchnce._sampling import fast
from torchnce._sampling.draw import (
    Rng,
    check_ids,
    check_range_max,
    check_same_device,
    gather,
    sample_values,
    true_divide_,
)
from torchnce._sampling.samplers import CandidateSampler
from torchnce._sampling.tables import (
    alias_draw,
    alias_masses,
    alias_table,
    read_vocab_weights,
    unigram_weights,
    weight_bins,
)
from torchnce._sampling.unique import UniquePlan, unique_plan


@final
class FixedUnigramSampler(CandidateSampler):
    r"""Classes drawn with fixed weights ``u**distortion`` (word2vec's unigram^0.75 table).

    .. math::
        w_k = \operatorname{powf}(u_k, \text{distortion}), \qquad
        P(k) = w_k / \textstyle\sum_j w_j

    in float32 with TensorFlow's float32 running total. The weights ``u`` come from
    ``unigrams`` or from ``vocab_file`` (the last comma-separated field of each non-empty
    line). Ids ``[0, num_reserved_ids)`` get weight 0. With ``num_shards > 1`` the sampler
    keeps the ids ``≡ shard (mod num_shards)`` and works in shard-local indices
    ``[0, range_max)``. Draws use a Walker alias table built once (O(1) per draw).

    Args:
        range_max: ``C``, the number of weights in this shard (reserved ids included).
        vocab_file: a file of ``...,count`` lines (not with ``unigrams``).
        distortion: the exponent applied to every weight (rounded to float32 first).
        num_reserved_ids: leading ids with weight 0 (e.g. padding, unknown).
        num_shards: the number of shards the vocabulary is split into.
        shard: which shard this sampler draws for.
        unigrams: the weights (not with ``vocab_file``).

    Raises:
        ValueError: both or neither of ``vocab_file`` and ``unigrams``, an unreadable file
            or line ("Wrong vocabulary format at line"), negative or non-finite weights,
            a bad shard, or ``range_max`` different from the number of weights ("range is
            ... must be equal to weights size ...").

    Note:
        Like TensorFlow, with shards the unigrams start at word id = the number of reserved
        ids *in this shard* (not ``num_reserved_ids``; TensorFlow's quirk, docs/tf-semantics.md
        §6.8). Unlike TensorFlow, negative weights and an all-zero shard are errors (TensorFlow
        returns negative or NaN counts), and ``unique=True`` with more samples than classes that
        can be drawn is an error (TensorFlow loops forever). A class whose weight is below
        half the alias table's resolution (``2⁻⁴⁰`` of the mean weight up to 2²² classes,
        coarser above) has mass 0 there: it has a tiny ``probability`` but is never drawn,
        and does not count as drawable. The table is rebuilt from the constructor
        arguments, so it is not part of ``state_dict``.

    Examples:
        >>> import torch, torchnce
        >>> sampler = torchnce.FixedUnigramSampler(4, unigrams=[1.0, 2.0, 3.0, 4.0])
        >>> sampler.probability(torch.arange(4))
        tensor([0.1000, 0.2000, 0.3000, 0.4000])
    """

    range_max: int
    threshold: torch.Tensor
    alias: torch.Tensor
    probs: torch.Tensor

    def __init__(
        self,
        range_max: int,
        vocab_file: str | os.PathLike[str] = "",
        distortion: float = 1.0,
        num_reserved_ids: int = 0,
        num_shards: int = 1,
        shard: int = 0,
        unigrams: torch.Tensor | Sequence[float] = (),
    ) -> None:
        super().__init__()
        self._config = (distortion, num_reserved_ids, num_shards, shard)
        self.range_max = check_range_max(range_max, unigram=True)
        # The tables are built from real values even under a FakeTensorMode (which could not
        # read them), then made fake there.
        mode = detect_fake_mode()
        with unset_fake_temporarily():
            self._build(vocab_file, unigrams)
        if mode is not None:
            self._buffers.update({k: mode.from_tensor(v) for k, v in self._buffers.items()
                                  if v is not None})

    def _build(self, vocab_file: str | os.PathLike[str],
               unigrams: torch.Tensor | Sequence[float]) -> None:
        distortion, num_reserved_ids, num_shards, shard = self._config
        weights = _fixed_weights(
            vocab_file, distortion, num_reserved_ids, num_shards, shard, unigrams
        )
        w, total = weights
        if w.numel() != self.range_max:
            raise ValueError(
                f"range_max must equal the number of weights in this shard ({w.numel()}),"
                f" got {self.range_max} (range is {self.range_max} must be equal to weights"
                f" size {w.numel()})"
            )
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"unigrams must have a positive, finite total weight, got {total}")
        threshold, alias = alias_table(w)
        self.register_buffer("probs", true_divide_(w.clone(), total), persistent=False)
        self.register_buffer("threshold", threshold, persistent=False)
        self.register_buffer("alias", alias, persistent=False)
        self._drawable = int((alias_masses(w) > 0).sum())
        p_bins, count_bins = weight_bins(w)
        self._bins: tuple[list[float], list[float]] = (p_bins.tolist(), count_bins.tolist())
        self._blocks: dict[int, UniquePlan] = {}

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        return self._probability(check_ids(ids, self.range_max))

    def _probability(self, ids: torch.Tensor) -> torch.Tensor:
        return gather(self.probs, ids.to(self.probs.device))

    def _sample(
        self, tc: torch.Tensor, num_sampled: int, unique: bool, gen: Rng | None
    ) -> SampledValues:
        if unique and num_sampled > self._drawable:
            raise range_too_small(num_sampled, "the number of classes the sampler can draw"
                                  f" ({self._drawable}) when unique=True")
        buffers = cast("dict[str, torch.Tensor]", self._buffers)  # (module reads cost 0.5 µs)
        check_same_device("true_classes", tc, buffers["probs"])
        if fast.runs(tc) and type(buffers["probs"]) is torch.Tensor:
            return fast.checked(native.alias(buffers["threshold"], buffers["alias"],
                                            buffers["probs"], tc, num_sampled, unique, gen))
        return sample_values(
            tc,
            num_sampled,
            unique,
            alias_draw(self.threshold, self.alias, gen),
            lambda ids: self.probs.index_select(0, ids),
            lambda: self._plan(num_sampled),
        )

    def _plan(self, num_sampled: int) -> UniquePlan:
        if num_sampled not in self._blocks:
            self._blocks[num_sampled] = unique_plan(*self._bins, num_sampled, self.range_max)
        return self._blocks[num_sampled]

    def extra_repr(self) -> str:
        distortion, reserved, shards, shard = self._config
        return (
            f"range_max={self.range_max}, distortion={distortion}, num_reserved_ids={reserved},"
            f" num_shards={shards}, shard={shard}"
        )


def _fixed_weights(
    vocab_file: str | os.PathLike[str],
    distortion: float,
    num_reserved_ids: int,
    num_shards: int,
    shard: int,
    unigrams: torch.Tensor | Sequence[float],
) -> tuple[torch.Tensor, float]:
    """Validate the fixed-unigram configuration and build its weights (docs/tf-semantics.md
    §6.8)."""
    distortion = check_distortion(distortion)
    num_reserved_ids = check_int("num_reserved_ids", num_reserved_ids, minimum=0)
    num_shards = check_int("num_shards", num_shards, minimum=1)
    shard = check_int("shard", shard, minimum=0)
    if shard >= num_shards:
        raise ValueError(f"shard must be in [0, num_shards={num_shards}), got {shard}")
    if not isinstance(vocab_file, (str, os.PathLike)):
        raise TypeError(f"vocab_file must be a path, got {type(vocab_file).__name__}")
    try:
        u = torch.as_tensor(unigrams, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"unigrams must be a sequence of floats, got {type(unigrams).__name__}"
        ) from err
    has_file, has_unigrams = bool(os.fspath(vocab_file)), u.numel() > 0
    if has_file and has_unigrams:
        raise ValueError(
            "vocab_file and unigrams must not both be given, got both"
            " (Must only provide one of vocab_file and unigrams.)"
        )
    if not has_file and not has_unigrams:
        raise ValueError(
            "vocab_file or unigrams must be given, got neither"
            " (Must provide either vocab_file or unigrams.)"
        )
    values = read_vocab_weights(vocab_file) if has_file else u
    w, total = unigram_weights(values, float(distortion), num_reserved_ids, num_shards, shard)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(
            f"distortion must keep every weight powf(u, distortion) finite, got {distortion}"
            " with a zero weight; use distortion >= 0"
        )
    return w, total


def check_distortion(distortion: object) -> float:
    """Return ``distortion`` as a finite float."""
    if isinstance(distortion, bool) or not isinstance(distortion, (int, float)):
        raise TypeError(f"distortion must be a float, got {type(distortion).__name__}")
    if not math.isfinite(distortion):
        raise ValueError(f"distortion must be finite, got {distortion}")
    return float(distortion)
