"""Small SVG charts for `hybrid-router report`: grouped bars and lines, linear or log scale.

Written by hand so the report needs nothing beyond the serving install (matplotlib is a
training-only dependency). Every text is escaped; the output is a standalone SVG document.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["Chart", "bars", "grid", "lines"]

COLORS = {"specialist": "#2a9d8f", "cache": "#8ab17d", "foundation": "#e76f51", "degraded": "#e9c46a",
          "avoided": "#264653", "specialist alone": "#2a9d8f", "foundation alone": "#e76f51",
          "hybrid": "#6d597a", "p50": "#457b9d", "p95": "#e9c46a", "p99": "#e76f51", "cost": "#6d597a"}
_FALLBACK = ("#577590", "#f3722c", "#43aa8b", "#f94144", "#90be6d", "#277da1")
W, H = 420, 260
_L, _R, _T, _B = 58, 12, 30, 56  # plot margins


class Chart:
    """One panel: its SVG body (drawn in a W x H box) and its title."""

    def __init__(self, body: str) -> None:
        self.body = body


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _color(name: str, i: int) -> str:
    return COLORS.get(name, _FALLBACK[i % len(_FALLBACK)])


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _scale(values: Sequence[float], log: bool) -> tuple[float, float, list[float]]:
    """(low, high, tick values) of the y axis (NaN, e.g. a gap in a timeline, is left out)."""
    values = [v for v in values if not math.isnan(v)]
    positive = [v for v in values if v > 0]
    if log and positive:
        lo = 10 ** math.floor(math.log10(min(positive)))
        hi = 10 ** math.ceil(math.log10(max(positive)))
        if hi <= lo:
            hi = lo * 10
        ticks = [10.0 ** e for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
        return lo, hi, ticks
    hi = max(values, default=0.0) or 1.0
    step = 10 ** math.floor(math.log10(hi / 4)) if hi > 0 else 1
    for mult in (1, 2, 2.5, 5, 10):
        if hi / (step * mult) <= 5:
            step *= mult
            break
    top = math.ceil(hi / step) * step
    return 0.0, top, [i * step for i in range(round(top / step) + 1)]


def _y(v: float, lo: float, hi: float, log: bool) -> float:
    plot_h = H - _T - _B
    if log:
        if v <= 0:
            return H - _B
        frac = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    else:
        frac = (v - lo) / (hi - lo) if hi > lo else 0.0
    return H - _B - max(0.0, min(1.0, frac)) * plot_h


def _frame(title: str, unit: str, lo: float, hi: float, ticks: list[float], log: bool) -> list[str]:
    out = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{_esc(title)}</text>',
           f'<line x1="{_L}" y1="{H - _B}" x2="{W - _R}" y2="{H - _B}" stroke="#333"/>',
           f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{H - _B}" stroke="#333"/>',
           (f'<text x="12" y="{(H - _B + _T) / 2}" transform="rotate(-90 12 {(H - _B + _T) / 2})" '
            f'text-anchor="middle">{_esc(unit + (" (log)" if log else ""))}</text>')]
    for t in ticks:
        y = _y(t, lo, hi, log)
        out.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{W - _R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    return out


def _legend(names: Sequence[str], y: float) -> list[str]:
    out, x = [], float(_L)
    for i, name in enumerate(names):
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{_color(name, i)}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{y:.1f}">{_esc(name)}</text>')
        x += 22 + 7 * len(name)
    return out


def _use_log(values: Sequence[float], log: bool | None) -> bool:
    """Log scale when asked, or (None) when the positive values span more than two decades."""
    if log is not None:
        return log
    positive = [v for v in values if v > 0]  # NaN > 0 is False
    return len(positive) > 1 and max(positive) / min(positive) > 100


def bars(title: str, unit: str, groups: Sequence[str], series: Mapping[str, Sequence[float]],
         log: bool | None = None, labels: Sequence[str] | None = None) -> Chart:
    """Grouped bars: one group per `groups` entry, one bar per series; `labels` over each group."""
    values = [v for s in series.values() for v in s]
    use_log = _use_log(values, log)
    lo, hi, ticks = _scale(values, use_log)
    out = _frame(title, unit, lo, hi, ticks, use_log)
    slot = (W - _L - _R) / max(1, len(groups))
    width = slot * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = _L + g * slot + slot * 0.1
        for k, (name, vals) in enumerate(series.items()):
            v = vals[g]
            y = _y(v, lo, hi, use_log)
            out.append(f'<rect x="{x0 + k * width:.1f}" y="{y:.1f}" width="{width * 0.92:.1f}" '
                       f'height="{H - _B - y:.1f}" fill="{_color(name if len(series) > 1 else group, k if len(series) > 1 else g)}">'
                       f'<title>{_esc(f"{group} {name}: {_fmt(v)} {unit}")}</title></rect>')
        if labels is not None:
            top = min(_y(vals[g], lo, hi, use_log) for vals in series.values())
            out.append(f'<text x="{_L + (g + 0.5) * slot:.1f}" y="{top - 4:.1f}" text-anchor="middle">'
                       f'{_esc(labels[g])}</text>')
        out.append(f'<text x="{_L + (g + 0.5) * slot:.1f}" y="{H - _B + 14}" text-anchor="middle">'
                   f'{_esc(group[:14])}</text>')
    if len(series) > 1:
        out += _legend(list(series), H - 12)
    return Chart("\n".join(out))


def lines(title: str, unit: str, xs: Sequence[float], series: Mapping[str, Sequence[float]],
          x_labels: tuple[str, str], log: bool | None = None) -> Chart:
    """Lines over time: `xs` are timestamps, `x_labels` the first and last tick's text."""
    values = [v for s in series.values() for v in s]
    use_log = _use_log(values, log)
    lo, hi, ticks = _scale(values, use_log)
    out = _frame(title, unit, lo, hi, ticks, use_log)
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (x_hi - x_lo) or 1.0
    for i, (name, vals) in enumerate(series.items()):
        points = " ".join(f"{_L + (x - x_lo) / span * (W - _L - _R):.1f},{_y(v, lo, hi, use_log):.1f}"
                          for x, v in zip(xs, vals, strict=True) if not math.isnan(v))
        out.append(f'<polyline points="{points}" fill="none" stroke="{_color(name, i)}" stroke-width="2"/>')
    out.append(f'<text x="{_L}" y="{H - _B + 14}">{_esc(x_labels[0])}</text>')
    out.append(f'<text x="{W - _R}" y="{H - _B + 14}" text-anchor="end">{_esc(x_labels[1])}</text>')
    out += _legend(list(series), H - 12)
    return Chart("\n".join(out))


def grid(title: str, subtitle: str, charts: Sequence[Chart], columns: int = 3) -> str:
    """A standalone SVG document with the charts in rows of `columns`."""
    rows = math.ceil(len(charts) / columns)
    width, height = columns * W, rows * H + 50
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'),
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{_esc(title)}</text>',
             f'<text x="{width / 2}" y="38" text-anchor="middle" fill="#555">{_esc(subtitle)}</text>']
    for i, chart in enumerate(charts):
        x, y = (i % columns) * W, 50 + (i // columns) * H
        parts.append(f'<g transform="translate({x},{y})">{chart.body}</g>')
    parts.append("</svg>")
    return "\n".join(parts)
