"""The native corpus pass against the pure one (``load_corpus(..., native=False)``: a regular
expression per line of ``str.splitlines``): for ASCII text, the same vocabulary, counts, ids,
lines and word count; other text takes the pure path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchnce
from torchnce._native.corpus import format_rows, scan_ascii
from torchnce.app.word2vec.corpus import CorpusError, load_corpus, shipped_corpus_path

native = pytest.mark.skipif(not torchnce.native_available().available,
                            reason="the native kernels are off or could not be built")

# Letters of both cases, digits, the underscore, apostrophes and every ASCII line end
# str.splitlines knows (\r\n among them), with punctuation and spaces between.
PIECES = ["a", "b", "Z", "Q", "lord", "LORD's", "don't", "'", "''", "rock'n'roll", "x'",
          "'y", "7", "a1b", "_", "a_b", " ", " ", "  ", ",", ".", "-", "\t", "\n", "\r",
          "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x00", "~"]


def assert_same(path, min_count):
    a, b = load_corpus(path, min_count, native=True), load_corpus(path, min_count, native=False)
    assert a.words == b.words
    assert a.num_words == b.num_words
    for name in ("counts", "ids", "lines"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == torch.int64, name
        assert torch.equal(x, y), name


@native
@pytest.mark.parametrize("min_count", [1, 5, 50])
def test_the_shipped_corpus_scans_the_same_on_both_paths(min_count):
    assert_same(shipped_corpus_path(), min_count)


@native
@settings(max_examples=150, deadline=None, derandomize=True)
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=0, max_size=80),
       min_count=st.integers(1, 3))
def test_ascii_texts_scan_the_same_on_both_paths(tmp_path_factory, pieces, min_count):
    text = "".join(pieces)
    path = tmp_path_factory.mktemp("scan") / "t.txt"
    path.write_bytes(text.encode("ascii"))
    try:
        load_corpus(path, min_count, native=False)
    except CorpusError as e:  # too few words: the native path says the same
        with pytest.raises(CorpusError) as err:
            load_corpus(path, min_count, native=True)
        assert str(err.value) == str(e)
        return
    assert_same(path, min_count)


@native
def test_non_ascii_text_takes_the_pure_path(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("Ça va où déjà? ça va\nÉTÉ été\n", encoding="utf-8")
    c = load_corpus(path, 1)
    assert c.words == load_corpus(path, 1, native=False).words
    assert "été" in c.words and "ça" in c.words


@native
@pytest.mark.parametrize("text, min_count, match", [
    ("déjà".encode(), 1, "text must be ASCII"),
    ("abc", 1, "text must be ASCII"),
    (b"abc", 0, "min_count must be an integer >= 1"),
    (b"abc", True, "min_count must be an integer >= 1"),
])
def test_scan_ascii_refuses_bad_arguments(text, min_count, match):
    with pytest.raises(ValueError, match=match):
        scan_ascii(text, min_count)


@native
def test_an_empty_text_scans_to_nothing():
    scanned = scan_ascii(b"", 1)
    assert scanned.words == [] and scanned.num_words == 0
    assert scanned.ids.shape == scanned.lines.shape == scanned.counts.shape == (0,)


@native
def test_format_rows_prints_as_python_does():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(40, 33, generator=gen) * torch.logspace(-30, 30, 33)
    values[0, :6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45])
    expected = [" ".join(f"{v:.6g}" for v in row) for row in values.tolist()]
    assert format_rows(values) == expected
    assert format_rows(torch.empty(0, 3)) == []


@native
@pytest.mark.parametrize("values", [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3)])
def test_format_rows_refuses_other_tensors(values):
    with pytest.raises(ValueError, match="values must be a 2-D float32 CPU tensor"):
        format_rows(values)
