"""The public surface: the exported names, the version, the docstrings, and the layout rules.

The exported lists are pinned literally, so adding or removing a public name is a visible
change to this file. That the docstring examples run is checked by ``--doctest-modules``
(pyproject.toml); here each public name is only required to have one.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import torchnce
import torchnce.distributed

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "torchnce"

TORCHNCE_ALL = [
    "AllCandidateSampler",
    "CandidateSampler",
    "FixedUnigramSampler",
    "KeyQueue",
    "LearnedUnigramSampler",
    "LogUniformSampler",
    "NCELoss",
    "NativeStatus",
    "NegativeSamplingLoss",
    "RowUpdate",
    "SampledSoftmaxLoss",
    "SampledValues",
    "StreamingFrequencyEstimator",
    "UniformSampler",
    "all_candidate_sampler",
    "compute_accidental_hits",
    "compute_sampled_logits",
    "embedding_lookup",
    "fixed_unigram_candidate_sampler",
    "full_logits",
    "info_nce_loss",
    "learned_unigram_candidate_sampler",
    "log_uniform_candidate_sampler",
    "mixed_negatives_loss",
    "native_available",
    "nce_eval_loss",
    "nce_loss",
    "negative_sampling_loss",
    "sampled_softmax_eval_loss",
    "sampled_softmax_loss",
    "supervised_contrastive_loss",
    "top_k",
    "uniform_candidate_sampler",
]
DISTRIBUTED_ALL = [
    "CollectiveError",
    "GatheredNegatives",
    "ShardedNCELoss",
    "ShardedOutputLayer",
    "ShardedSampledSoftmaxLoss",
    "gather_state_dict",
    "shard_ids",
    "shard_state_dict",
]
PACKAGES = {"torchnce": torchnce, "torchnce.distributed": torchnce.distributed}
PUBLIC = [f"torchnce.{name}" for name in TORCHNCE_ALL] + [
    f"torchnce.distributed.{name}" for name in DISTRIBUTED_ALL
]


def _public(qualified: str) -> object:
    package, name = qualified.rsplit(".", 1)
    return getattr(PACKAGES[package], name)


def _docstring(qualified: str) -> str:
    # A class's own docstring: ``__doc__`` is not inherited by classes, so a class without
    # one is not credited with its base's.
    return inspect.cleandoc(_public(qualified).__doc__ or "")


def _section(doc: str, header: str) -> list[str]:
    """The lines of the Google-style section ``header`` (e.g. ``Examples:``), or ``[]``."""
    lines = doc.splitlines()
    if header not in lines:
        return []
    body = []
    for line in lines[lines.index(header) + 1 :]:
        if line and not line[0].isspace():
            break
        body.append(line)
    return body


@pytest.mark.parametrize(("package", "expected"), [("torchnce", TORCHNCE_ALL),
                                                   ("torchnce.distributed", DISTRIBUTED_ALL)])
def test_all_is_pinned(package, expected):
    assert PACKAGES[package].__all__ == expected


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted(package):
    names = PACKAGES[package].__all__
    assert names == sorted(names)


@pytest.mark.parametrize("qualified", PUBLIC)
def test_public_name_exists(qualified):
    package, name = qualified.rsplit(".", 1)
    assert hasattr(PACKAGES[package], name)


def test_version_matches_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(torchnce.__version__, str)
    assert torchnce.__version__ == project["version"]


@pytest.mark.parametrize("qualified", PUBLIC)
def test_docstring_has_summary_line(qualified):
    # Google style: one line ending in a full stop, then a blank line (or nothing).
    lines = _docstring(qualified).splitlines()
    assert lines, f"{qualified} has no docstring"
    assert lines[0].strip() and lines[0].endswith("."), f"{qualified}: {lines[0]!r}"
    assert len(lines) == 1 or not lines[1].strip(), f"{qualified}: summary runs onto line 2"


@pytest.mark.parametrize("qualified", PUBLIC)
def test_docstring_has_example(qualified):
    example = _section(_docstring(qualified), "Examples:")
    assert any(line.lstrip().startswith(">>>") for line in example), (
        f"{qualified} has no 'Examples:' section with a '>>>' line"
    )


def test_library_never_imports_the_app():
    code = (
        "import sys, torchnce, torchnce.distributed\n"
        "print(sorted(m for m in sys.modules if m.startswith('torchnce.app')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_library_source_never_names_the_app():
    app = PACKAGE / "app"
    library = [path for path in PACKAGE.rglob("*.py")
               if app not in path.parents and path != PACKAGE / "__main__.py"]
    assert library  # the scan found the sources
    offenders = [str(path.relative_to(ROOT)) for path in library
                 if "torchnce.app" in path.read_text(encoding="utf-8")]
    assert offenders == []


def test_few_modules_at_the_package_root():
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(modules) <= 5, modules
