"""Small inline SVG charts for ``avrec report`` (lines and horizontal bars), so the HTML report is one
self-contained file with no plotting dependency."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
W, H, PAD = 560, 320, 48


def _frame(title: str, xlabel: str, ylabel: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="12">',
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
            f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">{escape(ylabel)}</text>',
            f'<rect x="{PAD}" y="{PAD / 2}" width="{W - 1.5 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>']


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
               log_x: bool = False) -> str:
    """Lines through (x, y) points, one per named series, with a legend and min/max axis labels."""
    import math

    def fx(v: float) -> float:
        return math.log10(max(v, 1e-9)) if log_x else v

    xs = [fx(x) for xs_, _ in series.values() for x in xs_]
    ys = [y for _, ys_ in series.values() for y in ys_]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(0.0, min(ys)), max(ys)) if ys else (0.0, 1.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pw, ph = W - 1.5 * PAD, H - 2 * PAD

    def px(x: float) -> float:
        return PAD + (fx(x) - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return PAD / 2 + ph - (y - y0) / (y1 - y0) * ph

    out = _frame(title, xlabel, ylabel)
    for n, (name, (sx, sy)) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(sx, sy))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        out.append(f'<text x="{PAD + 8}" y="{PAD / 2 + 16 + 14 * n}" fill="{colour}">{escape(name)}</text>')
    lo_x, hi_x = (10 ** x0, 10 ** x1) if log_x else (x0, x1)
    out += [f'<text x="{PAD}" y="{H - PAD / 2 - 4}" text-anchor="start">{lo_x:.3g}</text>',
            f'<text x="{W - PAD / 2}" y="{H - PAD / 2 - 4}" text-anchor="end">{hi_x:.3g}</text>',
            f'<text x="{PAD - 4}" y="{PAD / 2 + ph}" text-anchor="end">{y0:.3g}</text>',
            f'<text x="{PAD - 4}" y="{PAD / 2 + 10}" text-anchor="end">{y1:.3g}</text>', "</svg>"]
    return "\n".join(out)


def bar_chart(labels: Sequence[str], groups: dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    """Horizontal bars: one row per label, one bar per named group of values (e.g. recommended vs consumed)."""
    n_rows = max(len(labels), 1)
    legend = 14 * len(groups)
    height = max(H, 40 + legend + n_rows * (6 + 10 * len(groups)))
    top = max((v for vs in groups.values() for v in vs), default=1.0) or 1.0
    left, pw = 170, W - 170 - 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
           f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="{W / 2}" y="14" text-anchor="middle" font-weight="bold" font-size="12">{escape(title)}</text>',
           f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{escape(xlabel)} (max {top:.3g})</text>']
    row_h = 6 + 10 * len(groups)
    for r, label in enumerate(labels):
        y = 26 + legend + r * row_h
        out.append(f'<text x="{left - 6}" y="{y + row_h / 2 + 3}" text-anchor="end">{escape(str(label)[:28])}</text>')
        for g, (name, values) in enumerate(groups.items()):
            width = max(0.0, values[r] / top * pw)
            out.append(f'<rect x="{left}" y="{y + g * 10}" width="{width:.1f}" height="9" '
                       f'fill="{COLOURS[g % len(COLOURS)]}"><title>{escape(name)}: {values[r]:.4g}</title></rect>')
    for g, name in enumerate(groups):
        out.append(f'<text x="{W - 20}" y="{32 + 14 * g}" text-anchor="end" fill="{COLOURS[g % len(COLOURS)]}">'
                   f'{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
