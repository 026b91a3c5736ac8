"""The loss curve of a word2vec run as an SVG file, written directly (no plotting library: it
takes a millisecond where importing one took a second of every run).

The curve shows the mean loss per example of each chunk (light), a running mean over about a
twentieth of the run (dark), a dashed mark where each epoch starts, and axes with round ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 44, 56


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(most - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    """A tick label: 2.5M, 750k, 0.35."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:.4g}"


def running_mean(values: Sequence[float], width: int) -> list[float]:
    """The mean of each value and the ``width - 1`` before it (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def loss_svg(words: Sequence[int], losses: Sequence[float], epoch_words: int, epochs: int,
             title: str, ylabel: str) -> str:
    """The SVG document of the curve ``losses`` over ``words`` (words processed), with a mark
    at every multiple of ``epoch_words`` below ``epochs`` of them."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_max = max(max(words, default=0), epoch_words * epochs, 1)
    points = [(x, v) for x, v in zip(words, losses, strict=True) if math.isfinite(v)]
    xs, finite = [x for x, _ in points], [v for _, v in points]
    y_low, y_high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if y_high - y_low < 1e-12:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    pad = 0.05 * (y_high - y_low)
    y_low, y_high = y_low - pad, y_high + pad

    def x_at(v: float) -> float:
        return LEFT + plot_w * v / x_max

    def y_at(v: float) -> float:
        return TOP + plot_h * (1.0 - (v - y_low) / (y_high - y_low))

    def polyline(ys: Sequence[float], style: str) -> str:
        text = " ".join(f"{x_at(x):.1f},{y_at(y):.1f}" for x, y in zip(xs, ys, strict=True))
        return f'<polyline fill="none" {style} points="{text}"/>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="14">'
             f'{escape(title)}</text>']
    for v in nice_ticks(0.0, float(x_max)):
        x = x_at(v)
        parts += [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" '
                  'stroke="#e4e4e4"/>',
                  f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">'
                  f'{_label(v)}</text>']
    for v in nice_ticks(y_low, y_high, most=8):
        y = y_at(v)
        parts += [f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                  'stroke="#e4e4e4"/>',
                  f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{_label(v)}</text>']
    for e in range(1, epochs):
        x = x_at(e * epoch_words)
        parts += [f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" '
                  'stroke="#888" stroke-dasharray="4 3"/>',
                  f'<text x="{x + 4:.1f}" y="{TOP + 12}" fill="#666">epoch {e + 1}</text>']
    if finite:  # the points with a finite loss
        parts.append(polyline(finite, 'stroke="#9ecae1" stroke-width="1"'))
        smooth = running_mean(finite, max(1, len(finite) // 20))
        parts.append(polyline(smooth, 'stroke="#08519c" stroke-width="2"'))
    parts += [f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
              'stroke="#333"/>',
              f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 14}" text-anchor="middle">'
              'words processed</text>',
              f'<text transform="translate(18 {TOP + plot_h / 2}) rotate(-90)" '
              f'text-anchor="middle">{escape(ylabel)}</text>',
              '</svg>']
    return "\n".join(parts) + "\n"


def write_loss_svg(path: Path, words: Sequence[int], losses: Sequence[float],
                   epoch_words: int, epochs: int, title: str, ylabel: str) -> None:
    """Write :func:`loss_svg` to ``path``."""
    path.write_text(loss_svg(words, losses, epoch_words, epochs, title, ylabel),
                    encoding="utf-8")
