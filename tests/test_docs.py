"""Every citation of the spec points at a section that exists, and the docs carry no tracker
labels: a person who clones the project can follow every reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "docs" / "tf-semantics.md"
CITED = [p for d in ("src", "docs", "tests", "benchmarks") for p in sorted((ROOT / d).rglob("*"))
         if p.suffix in (".py", ".md") and p not in (SPEC, Path(__file__).resolve())]
CITED.append(ROOT / "README.md")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")


def sections() -> set[str]:
    """The numbers of the spec's headings: ``## 6. ...`` gives "6", ``### 6.3 ...`` "6.3"."""
    text = SPEC.read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))


def citations(text: str) -> list[str]:
    """The sections cited right after each mention of the spec (ranges and lists included),
    read across line breaks and comment markers."""
    flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
    found = []
    for mention in re.finditer(r"tf-semantics\.md\)?", flat):
        tail = re.match(r"[\s§\d.,–\-]*(?:and [\s§\d.,–\-]*)?", flat[mention.end():])
        found += SECTION.findall(tail.group(0) if tail else "")
    return found


def test_the_spec_has_the_numbered_sections():
    assert {"2", "4", "5", "6.3", "6.4", "6.10", "8.1", "10"} <= sections()


@pytest.mark.parametrize("path", CITED, ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_point_at_existing_sections(path):
    text = path.read_text(encoding="utf-8")
    missing = [s for s in citations(text) if s not in sections()]
    assert not missing, f"{path.name} cites sections the spec lacks: {missing}"
    bare = re.findall(r"(?<!docs/)(?<!\()\btf-semantics\.md", text)
    assert ROOT / "docs" in path.parents or not bare, (  # docs/ pages link it relatively
        f"{path.name} cites the spec without its path docs/tf-semantics.md")


@pytest.mark.parametrize("path", CITED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_tracker_labels(path):
    assert not re.search(r"\bissue \d", path.read_text(encoding="utf-8"), re.I)


def test_citation_parser_reads_ranges_lists_and_line_breaks():
    text = "see docs/tf-semantics.md §6.3–§6.4 and\n    # §8.1, §2 step 12"
    assert citations(text) == ["6.3", "6.4", "8.1", "2"]


def test_no_public_docstring_has_an_unfilled_argument_slot():
    import torchnce
    import torchnce.distributed

    for module in (torchnce, torchnce.distributed):
        for name in module.__all__:
            doc = getattr(module, name).__doc__ or ""
            assert not re.search(r"^\s*\w+: \{\w+\}\s*$", doc, re.M), name


def test_the_site_renders_sphinx_roles_as_code() -> None:
    """mkdocs_hooks.py (mkdocs.yml's hook): the docstrings' Sphinx roles, which mkdocstrings
    leaves as text before the code, become the code alone; ``~`` keeps the last name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = ("see :func:<code>torchnce.nce_loss</code>, :class:<code>~torch.Generator</code>, "
            ":meth:<code>KeyQueue.enqueue</code> and :math:<code>x^2</code>; time: 3 s")
    assert hooks.strip_roles(html) == (
        "see <code>torchnce.nce_loss</code>, <code>Generator</code>, "
        "<code>KeyQueue.enqueue</code> and <code>x^2</code>; time: 3 s")
    assert "mkdocs_hooks.py" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
