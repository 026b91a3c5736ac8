"""Argument validation shared by every public function.

Each check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong value, shape or
choice) with a one-sentence message that starts with the argument's name as it appears in the
signature, then what was expected, then ``, got <actual>``.

Checks of tensor *values* (``check_ids_in_range``, ``check_all_in_range``) read them on the
host only for eager CPU tensors, where the read stalls no stream: there they raise the
``ValueError`` that names the argument and the bad value. On an accelerator, on ``meta``, for
FakeTensors and under ``torch.compile`` the same conditions are device-side assertions
(``torch._assert_async``): nothing is read back, and a bad value raises a ``RuntimeError``
carrying the same message (without the value) when the device reaches it, asynchronously on
CUDA. Callers run them once, at the public boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch._subclasses.fake_tensor import is_fake

HOST_READS_ON_CPU = True  # False: eager CPU checks take the device path too (the tests' switch)
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # never fake: is_fake is only asked of the others

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``; reject bools, floats and values below ``minimum``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype in _INT_DTYPES:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return str(value)


def _to_tensor(name: str, value: Any, what: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}") from err


def as_int_tensor(name: str, value: Any, *, device: torch.device | None = None) -> torch.Tensor:
    """Convert ``value`` (tensor, list, numpy array) to an int64 tensor of class ids."""
    tensor = _to_tensor(name, value, "an integer tensor of class ids", device)
    if tensor.dtype not in _INT_DTYPES:
        raise TypeError(
            f"{name} must be an integer tensor of class ids, got {tensor.dtype}; use {name}.long()"
        )
    return tensor.long()


def as_float_tensor(name: str, value: Any, *, device: torch.device | None = None) -> torch.Tensor:
    """Convert ``value`` (tensor, list, numpy array) to a floating tensor, keeping its dtype.

    Python and numpy integers become float32; an integer *tensor* is rejected.
    """
    tensor = _to_tensor(name, value, "a floating tensor", device)
    if not isinstance(value, torch.Tensor) and not tensor.is_floating_point():
        tensor = tensor.float()
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {tensor.dtype}")
    return tensor


def reads_on_host(t: torch.Tensor) -> bool:
    """Whether a check may read ``t``'s values on the host: an eager CPU tensor that is not
    fake (a CPU read stalls no stream), outside ``torch.compile``."""
    return (HOST_READS_ON_CPU and t.device.type == "cpu" and not torch.compiler.is_compiling()
            and (type(t) in _PLAIN or not is_fake(t)))


def check_ids_in_range(name: str, ids: torch.Tensor, upper: int) -> None:
    """Raise TensorFlow's "out of range" error unless every id lies in ``[0, upper)``.

    Reads the values on CPU: one ``aminmax`` and its two scalars. Elsewhere (see the module's
    docstring) a device-side assertion, with no read.
    """
    check_all_in_range(((name, ids),), upper)


def check_all_in_range(
    named_ids: Sequence[tuple[str, torch.Tensor]],
    upper: int,
    positive: Sequence[tuple[str, str, torch.Tensor]] = (),
) -> None:
    """:func:`check_ids_in_range` for several tensors at the cost of one: a single
    ``aminmax`` over all of them, so a call that checks labels and candidates reads the device
    once. Only a failure looks at each tensor alone, to name the argument at fault.

    ``positive`` holds ``(name, what, values)`` triples of floating tensors that must be
    finite and > 0 (expected counts whose log is taken), checked in the same read.
    """
    if len(named_ids) == 1 and not positive and reads_on_host(named_ids[0][1]):
        ids = named_ids[0][1]  # the common case, one tensor on the host: two scalars
        if ids.numel():
            lo, hi = torch.aminmax(ids)
            if lo.item() < 0 or hi.item() >= upper:
                _raise_out_of_range(list(named_ids), upper)
        return
    present = [(name, ids) for name, ids in named_ids if ids.numel()]
    counts = [(name, what, t) for name, what, t in positive if t.numel()]
    if not present and not counts:
        return
    scalars: list[torch.Tensor] = []
    if present:
        if len(present) == 1:
            lo, hi = torch.aminmax(present[0][1])
        else:
            bounds = [torch.aminmax(ids) for _, ids in present]
            lo = torch.stack([b.min for b in bounds]).min()
            hi = torch.stack([b.max for b in bounds]).max()
        scalars += [lo, hi]
    flags = [_not_positive(t).any() for _, _, t in counts]
    if not reads_on_host(scalars[0] if scalars else flags[0]):
        _assert_on_device(present, counts, upper, scalars, flags)
        return
    scalars += [f.to(torch.int64) for f in flags]
    values = torch.stack([v.to(scalars[0].device) for v in scalars]).tolist()  # one read
    if present and (values[0] < 0 or values[1] >= upper):
        _raise_out_of_range(present, upper)
    for (name, what, t), flag in zip(counts, values[2:] if present else values, strict=True):
        if flag:
            bad = t[_not_positive(t)].flatten()[0].item()
            raise ValueError(positive_message(name, what) + f", got {bad}; their log "
                             "is subtracted from the logits")


def positive_message(name: str, what: str) -> str:
    """The start of the error for counts that must be finite and > 0."""
    return f"{name} must hold finite, positive {what}"


def _assert_on_device(
    present: Sequence[tuple[str, torch.Tensor]],
    counts: Sequence[tuple[str, str, torch.Tensor]],
    upper: int,
    scalars: Sequence[torch.Tensor],
    flags: Sequence[torch.Tensor],
) -> None:
    """The checks of :func:`check_all_in_range` as device-side assertions (no host read)."""
    if present:
        names = " and ".join(name for name, _ in present)
        ok = (scalars[0] >= 0) & (scalars[1] < upper)
        # Under torch.compile the bound may be symbolic (dynamic shapes), which cannot enter a
        # string: the message names it instead.
        bound = "the number of classes" if torch.compiler.is_compiling() else upper
        torch._assert_async(ok, f"{names} must hold ids in [0, {bound})")
    for (name, what, _), flag in zip(counts, flags, strict=True):
        torch._assert_async(torch.logical_not(flag), positive_message(name, what))


def _not_positive(t: torch.Tensor) -> torch.Tensor:
    """True where ``t`` is not a finite number > 0 (NaN, inf, 0 or negative)."""
    return torch.logical_not((t > 0) & (t < math.inf))


def _raise_out_of_range(present: Sequence[tuple[str, torch.Tensor]], upper: int) -> None:
    """The failure path: find the first argument at fault."""
    for name, ids in present:
        lo_i, hi_i = (int(v) for v in torch.aminmax(ids))
        if lo_i < 0 or hi_i >= upper:
            bad = lo_i if lo_i < 0 else hi_i
            raise ValueError(
                f"{name} must hold ids in [0, {upper}), got {bad} (out of range [0, {upper}))"
            )


def range_too_small(num_sampled: int, bound: str, detail: str = "") -> ValueError:
    """TensorFlow's "Sampler's range is too small" error, for ``num_sampled`` above ``bound``
    (what limits it, e.g. ``"range_max (4) when unique=True"``); ``detail`` follows the value."""
    return ValueError(f"num_sampled must be <= {bound}, got {num_sampled}{detail} "
                      "(Sampler's range is too small)")


def check_bool(name: str, value: Any, *, truthy: bool = False) -> bool:
    """Return ``value`` if it is a ``bool`` (a one-element bool tensor is accepted too).

    ``truthy=True`` also takes the ints 0 and 1 and numpy bools: for the arguments that
    TensorFlow tests with Python's ``if`` (e.g. ``remove_accidental_hits``), so that ported
    code passing them keeps working; strings, None and other numbers are still refused.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype == torch.bool:
        return bool(value.item())
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if truthy and ((isinstance(value, int) and value in (0, 1)) or numpy_bool):
        return bool(value)
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value
