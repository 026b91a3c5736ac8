"""What the code needs from ``torch.compile`` without importing it at import time.

``import torch._dynamo`` takes about 0.8 s (measured on the project's 2-vCPU machine, torch
2.13.0, 2026-12-02), a third of ``import torchnce``; the one decorator torchnce needs from it
only marks a function, so it is applied here the same way, and dynamo is imported only by
whoever compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def constant_under_compile(fn: F) -> F:
    """``torch._dynamo.assume_constant_result`` (torch 2.13 marks the function with the
    attribute ``_dynamo_marked_constant``; tests/test_compile.py checks that this equals the
    real decorator): under ``torch.compile`` the call is evaluated once at trace time and its
    result is a constant of the graph."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn
