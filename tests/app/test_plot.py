"""The loss curve's SVG: round ticks, the running mean, epoch marks, escaped text."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from torchnce.app.word2vec.plot import loss_svg, nice_ticks, running_mean

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("low, high, expected", [
    (0.0, 10.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
    (0.0, 3_948_420.0, [0.0, 1e6, 2e6, 3e6]),
    (2.31, 2.97, [2.4, 2.6, 2.8]),
    (-1.0, 1.0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
])
def test_nice_ticks_are_round_and_cover_the_range(low, high, expected):
    ticks = nice_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert all(low - 1e-9 <= t <= high + 1e-9 for t in ticks)


def test_nice_ticks_of_an_empty_range():
    assert nice_ticks(1.0, 1.0) == [1.0]
    assert nice_ticks(0.0, math.inf) == [0.0]


def test_running_mean():
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert running_mean([], 3) == []


def test_the_svg_holds_the_curves_epoch_marks_and_labels():
    words = list(range(1000, 41_000, 1000))
    losses = [3.0 - 0.02 * i for i in range(len(words))]
    root = ET.fromstring(loss_svg(words, losses, 10_000, 4, "a <title> & more", "loss"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "a <title> & more" in texts  # escaped in the file, read back whole
    assert [t for t in texts if t.startswith("epoch")] == ["epoch 2", "epoch 3", "epoch 4"]
    assert "words processed" in texts and "loss" in texts
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    assert all(len(line.get("points").split()) == len(words) for line in lines)


def test_the_svg_of_a_run_without_points_or_with_a_nan():
    ET.fromstring(loss_svg([], [], 100, 1, "t", "y"))
    root = ET.fromstring(loss_svg([1, 2, 3], [1.0, math.nan, 2.0], 3, 1, "t", "y"))
    lines = root.findall(f"{SVG}polyline")
    assert [len(line.get("points").split()) for line in lines] == [2, 2]  # the NaN left out
