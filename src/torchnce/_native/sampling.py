"""The binding of the native alias-table draw (``sampling.cpp``): word2vec's negatives.

The draw has the distribution of :func:`torchnce._sampling.tables.alias_draw` (the pure
path, which the tests compare it with by a χ² test); its random stream is its own, seeded from
a ``torch.Generator``, so a seeded run is reproducible on either path.
"""

from __future__ import annotations

import ctypes

import torch

from torchnce._native.build import kernel


def alias_draws(threshold: torch.Tensor, alias: torch.Tensor, count: int,
                generator: torch.Generator) -> torch.Tensor:
    """``count`` int64 ids drawn from the alias table ``(threshold, alias)`` (float64 and int64
    ``[n]``, CPU, as ``FixedUnigramSampler`` holds them); the seed is drawn from
    ``generator``."""
    fn = kernel("torchnce_alias_draws", [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p])
    n = threshold.numel()
    for name, table, dtype in (("threshold", threshold, torch.float64),
                               ("alias", alias, torch.int64)):
        if table.dtype != dtype or table.device.type != "cpu" or not table.is_contiguous() or (
                table.shape != (n,)):
            raise ValueError(f"{name} must be a contiguous CPU {dtype} tensor [{n}], got "
                             f"{table.dtype} {tuple(table.shape)} on {table.device}")
    if n == 0 or count < 0:
        raise ValueError(f"count must be >= 0 and the table non-empty, got {count} and {n}")
    seed = int(torch.randint(-(2**63), 2**63 - 1, (1,), generator=generator)) % 2**64
    out = torch.empty(count, dtype=torch.int64)
    fn(threshold.data_ptr(), alias.data_ptr(), n, count, seed, out.data_ptr())
    return out
