"""The native path of the samplers: when it runs.

A sampler call on eager CPU tensors runs its whole draw (TensorFlow's rejection loop for
``unique=True``), its expected counts and the learned sampler's update in one native call
(``torchnce._native.samplers``, docs/native.md); everywhere else the pure-PyTorch path of
this package runs, unchanged: on other devices, on ``meta`` and FakeTensors, under
``torch.compile`` or any dispatch mode, where value checks may not read the host
(``HOST_READS_ON_CPU``), with ``TORCHNCE_NATIVE=0``, or where the kernels could not be built.
Both paths draw from the same distributions with the same expected counts.

The stream: a ``seed=`` call draws the values of its ``SeedStream`` bit for bit, and a call
with a ``torch.Generator`` (or the default one) takes one random int64 from it and draws the
``SeedStream`` of that seed, which on CPU is what the pure path draws too
(``draw.call_stream``): both paths give the same candidates, eager or compiled, and their
expected counts agree to float32 rounding (libm's scalar or vector functions against torch's).
"""

from __future__ import annotations

import torch
from torch._C import _len_torch_dispatch_stack
from torch.compiler import is_compiling

from torchnce._common import checks
from torchnce._common.types import SampledValues
from torchnce._native import samplers as native
from torchnce._sampling.unique import too_many_tries

ENABLED = True  # False: the pure path everywhere (the tests' switch)
_built: bool | None = None  # whether the kernels loaded (known after the first call)
_Tensor = torch.Tensor


def runs(tc: torch.Tensor) -> bool:
    """Whether a call on the validated true classes ``tc`` takes the native path."""
    global _built
    if not (ENABLED and type(tc) is _Tensor and tc.is_cpu and checks.HOST_READS_ON_CPU
            and not is_compiling() and not _len_torch_dispatch_stack()):
        return False
    if _built is None:
        _built = native.available()
    return _built


def checked(values: SampledValues | None) -> SampledValues:
    """A kernel's values; raises the pure path's error where its unique draw gave up."""
    if values is None:
        raise too_many_tries()
    return values
