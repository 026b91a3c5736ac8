"""Shared fixtures. Being at the root of ``tests/``, this file also puts ``tests/`` on
``sys.path`` (pytest's default import mode), so every test imports the oracles as
``from reference import sampled as ref``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with 0: random inputs that are the same every run."""
    return torch.Generator().manual_seed(0)
