"""Small inline SVG charts for the HTML report: score histograms of good vs defective parts, the ROC curve.

Drawn as plain SVG text so the report opens offline, anywhere, with nothing to load.
"""

from __future__ import annotations

import html

import numpy as np

from lineguard.metrics.image import roc_curve

WIDTH, HEIGHT = 440, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 14, 38  # margins for the axes and their labels
GOOD_COLOUR, DEFECT_COLOUR, THRESHOLD_COLOUR = "#2f7ed8", "#d9432f", "#222"


def _frame(body: str, x_label: str, y_label: str, title: str) -> str:
    x0, y0, x1, y1 = _LEFT, HEIGHT - _BOTTOM, WIDTH - _RIGHT, _TOP
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
            f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#888"/>{body}'
            f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12">'
            f'{html.escape(x_label)}</text>'
            f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 12 {(y0 + y1) / 2})">{html.escape(y_label)}</text></svg>')


def _scale(low: float, high: float, out_low: float, out_high: float):
    span = high - low if high > low else 1.0
    return lambda v: out_low + (np.asarray(v, dtype=float) - low) / span * (out_high - out_low)


def _ticks(low: float, high: float, to_x) -> str:
    values = np.linspace(low, high, 5)
    return "".join(f'<text x="{float(to_x(v)):.1f}" y="{HEIGHT - _BOTTOM + 14}" text-anchor="middle" '
                   f'font-size="10">{v:.3g}</text>' for v in values)


def histogram_svg(good: np.ndarray, defective: np.ndarray, threshold: float | None, *, x_label: str,
                  bins: int = 30) -> str:
    """Two overlaid histograms (each as a fraction of its own class, so a rare class stays visible), with the
    threshold as a dashed line."""
    values = np.concatenate([good, defective, [] if threshold is None else [threshold]])
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    fractions = [np.histogram(v, edges)[0] / max(len(v), 1) for v in (good, defective)]
    to_x = _scale(edges[0], edges[-1], _LEFT, WIDTH - _RIGHT)
    to_y = _scale(0.0, max(float(max(f.max() for f in fractions)), 1e-9), HEIGHT - _BOTTOM, _TOP)
    bars = []
    for fraction, colour in zip(fractions, (GOOD_COLOUR, DEFECT_COLOUR), strict=True):
        for left, right, f in zip(edges[:-1], edges[1:], fraction, strict=True):
            if f > 0:
                x, y = float(to_x(left)), float(to_y(f))
                bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{float(to_x(right)) - x:.1f}" '
                            f'height="{HEIGHT - _BOTTOM - y:.1f}" fill="{colour}" fill-opacity="0.5"/>')
    if threshold is not None:
        x = float(to_x(threshold))
        bars.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{HEIGHT - _BOTTOM}" '
                    f'stroke="{THRESHOLD_COLOUR}" stroke-dasharray="4 3"/>')
    legend = (f'<text x="{WIDTH - _RIGHT}" y="{_TOP + 10}" text-anchor="end" font-size="11">'
              f'<tspan fill="{GOOD_COLOUR}">■ good ({len(good)})</tspan> '
              f'<tspan fill="{DEFECT_COLOUR}">■ defective ({len(defective)})</tspan></text>')
    return _frame("".join(bars) + legend + _ticks(edges[0], edges[-1], to_x), x_label, "fraction of class",
                  "score histograms, good vs defective")


def roc_svg(labels: np.ndarray, scores: np.ndarray, threshold: float | None) -> str:
    """ROC curve of binary ``labels`` (1 defective) and ``scores``; the operating point at ``threshold``."""
    fpr, tpr = roc_curve(labels, scores)
    to_x = _scale(0.0, 1.0, _LEFT, WIDTH - _RIGHT)
    to_y = _scale(0.0, 1.0, HEIGHT - _BOTTOM, _TOP)
    points = " ".join(f"{float(x):.1f},{float(y):.1f}" for x, y in zip(to_x(fpr), to_y(tpr), strict=True))
    body = (f'<line x1="{float(to_x(0)):.1f}" y1="{float(to_y(0)):.1f}" x2="{float(to_x(1)):.1f}" '
            f'y2="{float(to_y(1)):.1f}" stroke="#bbb" stroke-dasharray="4 3"/>'
            f'<polyline points="{points}" fill="none" stroke="{DEFECT_COLOUR}" stroke-width="2"/>')
    if threshold is not None:
        labels = np.asarray(labels, dtype=bool)
        x, y = np.mean(scores[~labels] >= threshold), np.mean(scores[labels] >= threshold)
        body += (f'<circle cx="{float(to_x(x)):.1f}" cy="{float(to_y(y)):.1f}" r="5" '
                 f'fill="{THRESHOLD_COLOUR}"><title>threshold: false-alarm rate {x:.3f}, '
                 f'detection rate {y:.3f}</title></circle>')
    return _frame(body + _ticks(0.0, 1.0, to_x), "false-alarm rate (good parts rejected)",
                  "detection rate", "ROC curve")
