"""The bindings of the candidate-sampler kernels (``samplers.cpp``): one call per sample.

Each function takes validated arguments (``torchnce._sampling`` checks every one before the
call, the ids' range included) and returns the ``SampledValues``, or None where a unique draw
gave up after 2³¹ − 1 draws (the kernel returned :data:`TOO_MANY_TRIES`). ``rng`` is
a ``torch.Generator``, None (torch's default CPU generator) or a seed stream (an object with
integer ``key`` and ``offset``, ``torchnce._sampling.draw.SeedStream``, whose offset moves past
the ``num_tries`` values the call took).

A call with a generator (or torch's default one) is one call of the pybind11 module
``_torchnce_samplers`` (pysamplers.cpp, build.py's ``load_samplers``), which takes the seed,
makes the outputs and runs the kernel in C++. A seed stream (or where that module did not
build) goes through ctypes: the arguments in one ``Structure`` of this thread's (a ctypes call
converts each argument, ~0.1 µs apiece), the outputs made by ``new_empty``, and a generator
gives one random int64 per call (one ``random_``, the value the module takes too).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, NamedTuple

import torch

from torchnce._common.types import SampledValues
from torchnce._native.build import kernel, load, load_samplers

TOO_MANY_TRIES = -2
SEED_RANGE = (-(2**63), 2**63 - 1)  # a call's seed, as torchnce._sampling.draw draws it
RANGE_LIMIT = 1 << 62  # ranges the kernels take are below it (u·range stays far below 2⁶³)

_P, _I, _U = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64
_MASK = (1 << 64) - 1


class _Call(ctypes.Structure):
    """``TorchnceSamplerCall`` of ``samplers.cpp``, field for field."""

    _fields_ = [
        ("true_classes", _P), ("num_true_ids", _I), ("num_sampled", _I), ("unique", _I),
        ("fresh", _P), ("key", _U), ("offset", _U),
        ("candidates", _P), ("true_count", _P), ("sampled_count", _P),
        ("range", _I), ("log_range", ctypes.c_double),
        ("threshold", _P), ("alias", _P), ("probs", _P),
        ("counts", _P), ("base_cum", _P), ("guide", _P), ("guide_width", _I), ("recent", _P),
        ("base_total", _I), ("recent_len", _I), ("total", _I), ("add", _I), ("append", _I),
        ("total_dev", _P),
    ]


class _Kernels(NamedTuple):
    uniform: Any
    log_uniform: Any
    alias: Any
    learned: Any
    ids_in_range: Any
    learned_guide: Any


_kernels: _Kernels | None = None
_local = threading.local()
_FLOAT = torch.empty(0, dtype=torch.float32)  # new_empty's prototype for the counts


def available() -> bool:
    """Whether the native kernels are built and loaded (see ``torchnce.native_available``)."""
    return load()[0] is not None


def _bound() -> _Kernels:
    global _kernels
    if _kernels is None:
        call = [ctypes.POINTER(_Call)]
        _kernels = _Kernels(
            kernel("torchnce_uniform_sample", call, _I),
            kernel("torchnce_log_uniform_sample", call, _I),
            kernel("torchnce_alias_sample", call, _I),
            kernel("torchnce_learned_sample", call, _I),
            kernel("torchnce_ids_in_range", call, ctypes.c_int),
            kernel("torchnce_learned_guide", [_P, _I, _I, _P], ctypes.c_int),
        )
    return _kernels


def _call() -> _Call:
    """This thread's call block."""
    call = getattr(_local, "call", None)
    if call is None:
        call = _local.call = _Call()
        _local.seed = torch.empty(1, dtype=torch.int64)
    return call


_FAST: Any = None  # the module _torchnce_samplers (pysamplers.cpp) once loaded, else False
_GENERATOR = torch.Generator


def _module() -> Any:
    """The samplers' pybind11 module (build.py's ``load_samplers``), False if it did not build."""
    global _FAST
    if _FAST is None:
        _FAST = load_samplers() or False
    return _FAST


def module_for(rng: object) -> Any:
    """The samplers' module where it takes a draw from ``rng`` (a generator or None), else
    None (a seed stream, or the module did not build)."""
    if (rng is None or type(rng) is _GENERATOR) and (_FAST or _module()):
        return _FAST
    return None


def ids_in_range(ids: torch.Tensor, upper: int) -> bool:
    """Whether every id of a contiguous int64 CPU tensor lies in ``[0, upper)``."""
    if _FAST or _module():
        return bool(_FAST.ids_in_range(ids, upper))
    call = getattr(_local, "call", None) or _call()
    call.true_classes, call.num_true_ids, call.range = ids.data_ptr(), ids.numel(), upper
    return bool((_kernels or _bound()).ids_in_range(call))


def _start(tc: torch.Tensor, num_sampled: int, unique: bool,
           rng: object) -> tuple[_Call, SampledValues]:
    """This thread's call with the shared fields filled, and the outputs it writes."""
    call = getattr(_local, "call", None) or _call()
    rows, cols = tc.shape
    out = SampledValues(tc.new_empty(num_sampled), _FLOAT.new_empty(rows, cols),
                        _FLOAT.new_empty(num_sampled))
    call.true_classes, call.num_true_ids = tc.data_ptr(), rows * cols
    call.num_sampled, call.unique = num_sampled, unique
    call.candidates = out[0].data_ptr()
    call.true_count, call.sampled_count = out[1].data_ptr(), out[2].data_ptr()
    if rng is None or isinstance(rng, torch.Generator):
        seed = _local.seed
        seed.random_(*SEED_RANGE, generator=rng)  # torch.randint(*SEED_RANGE, ()) does this
        call.fresh = seed.data_ptr()
    else:
        call.fresh, call.key, call.offset = None, rng.key & _MASK, rng.offset  # type: ignore[attr-defined]
    return call, out


def _done(values: SampledValues, tries: int, rng: object) -> SampledValues | None:
    """The values (None where the unique draw gave up); a seed stream moves past the
    ``num_tries`` values the call took."""
    if tries < 0:
        return None
    if rng is not None and not isinstance(rng, torch.Generator):
        rng.offset += tries  # type: ignore[attr-defined]
    return values


def uniform(tc: torch.Tensor, num_sampled: int, unique: bool, range_max: int,
            rng: object) -> SampledValues | None:
    """``uniform_values`` of ``torchnce._sampling.closed_form`` (int64 ``tc``, any strides)."""
    if (rng is None or type(rng) is _GENERATOR) and (_FAST or _module()):
        return _FAST.sample(  # type: ignore[no-any-return]
            0, tc, num_sampled, unique, range_max, 0.0, rng)
    tc = tc if tc.is_contiguous() else tc.contiguous()  # a layer's labels may be a view
    call, out = _start(tc, num_sampled, unique, rng)
    call.range = range_max
    return _done(out, (_kernels or _bound()).uniform(call), rng)


def log_uniform(tc: torch.Tensor, num_sampled: int, unique: bool, range_max: int,
                log_range: float, rng: object) -> SampledValues | None:
    """``log_uniform_values``; ``log_range`` is ``math.log1p(range_max)``."""
    if (rng is None or type(rng) is _GENERATOR) and (_FAST or _module()):
        return _FAST.sample(  # type: ignore[no-any-return]
            1, tc, num_sampled, unique, range_max, log_range, rng)
    tc = tc if tc.is_contiguous() else tc.contiguous()  # a layer's labels may be a view
    call, out = _start(tc, num_sampled, unique, rng)
    call.range, call.log_range = range_max, log_range
    return _done(out, (_kernels or _bound()).log_uniform(call), rng)


def alias(threshold: torch.Tensor, alias_: torch.Tensor, probs: torch.Tensor,
          tc: torch.Tensor, num_sampled: int, unique: bool,
          rng: object) -> SampledValues | None:
    """``FixedUnigramSampler``'s draw from its tables (contiguous CPU float64, int64 and
    float32 ``[n]``)."""
    if (rng is None or type(rng) is _GENERATOR) and (_FAST or _module()):
        return _FAST.sample_fixed(  # type: ignore[no-any-return]
            tc, num_sampled, unique, rng, threshold, alias_, probs)
    tc = tc if tc.is_contiguous() else tc.contiguous()  # a layer's labels may be a view
    call, out = _start(tc, num_sampled, unique, rng)
    call.threshold, call.alias, call.probs = (threshold.data_ptr(), alias_.data_ptr(),
                                              probs.data_ptr())
    call.range = probs.numel()
    return _done(out, (_kernels or _bound()).alias(call), rng)


def learned(counts: torch.Tensor, base_cum: torch.Tensor, recent: torch.Tensor,
            total_dev: torch.Tensor, guide: torch.Tensor,
            state: tuple[int, int, int, int, int, bool], tc: torch.Tensor, num_sampled: int,
            unique: bool, rng: object) -> SampledValues | None:
    """``LearnedUnigramSampler``'s draw, then its update, through ctypes (the sampler calls
    the samplers' module itself where :func:`module_for` gives one).

    Args:
        counts: int32 ``[C]``, updated in place; base_cum: int64 ``[C]``, the cumulative
            static counts (read only when ``base_total > 0``); recent: int32, the classes
            added since the last fold, with room for ``add`` more when ``append``;
            total_dev: int64 scalar, ``W``, grows by ``add``; guide: int32, the index
            :func:`learned_guide` built for ``base_cum`` (all contiguous, CPU).
        state: ``(base_total, recent_len, total, guide_width, add, append)``: the static
            counts' total minus ``C``, the number of recent classes, ``W``, the guide's
            bucket width (0: no guide), how many true classes to add (row-major), whether
            they join the recent classes.
    """
    tc = tc if tc.is_contiguous() else tc.contiguous()  # a layer's labels may be a view
    call, out = _start(tc, num_sampled, unique, rng)
    call.counts, call.base_cum, call.recent = (counts.data_ptr(), base_cum.data_ptr(),
                                               recent.data_ptr())
    call.range, call.total_dev, call.guide = counts.numel(), total_dev.data_ptr(), guide.data_ptr()
    (call.base_total, call.recent_len, call.total, call.guide_width, call.add,
     call.append) = state
    return _done(out, (_kernels or _bound()).learned(call), rng)


def learned_guide(base_cum: torch.Tensor) -> tuple[torch.Tensor, int]:
    """An index into the cumulative counts (int64 ``[C]``, contiguous, CPU, last value
    ``T``) for the learned draw: ``guide[j]`` is the first ``i`` with ``base_cum[i] > j·w``
    for ``j = 0 … ⌈T / w⌉``, buckets of ``w = max(1, T // C)`` values of ``r``; returns it
    (int32) and ``w``. O(C), at each fold."""
    width = max(1, int(base_cum[-1]) // base_cum.numel())
    guide = torch.empty(-(-int(base_cum[-1]) // width) + 1, dtype=torch.int32)
    (_kernels or _bound()).learned_guide(base_cum.data_ptr(), base_cum.numel(), width,
                                         guide.data_ptr())
    return guide, width
