"""Server-side SVG charts: a line of points over time (a device's readings, a
verified stream, the block interval) and bars (transactions per block).

Plain SVG text built here (no chart library: a chart is a polyline, circles
and four labels), so it shows with JavaScript off and costs the Pi nothing.
Every point is a <circle class="pt"> with a <title> (the value on hover);
the <svg> carries data-points = the number of points.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT = 640, 200
PAD_L, PAD_R, PAD_T, PAD_B = 56, 12, 22, 26


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _num(v: float) -> str:
    return ("%.3f" % v).rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def _frame(title: str, n: int, body: list[str], lo: float, hi: float,
           t0: float, t1: float, unit: str) -> str:
    h = HEIGHT - PAD_B
    return "\n".join([
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'data-points="{n}">',
        f'<text x="{PAD_L}" y="14" font-size="12">{escape(title)}</text>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{h}" stroke="#888"/>',
        f'<line x1="{PAD_L}" y1="{h}" x2="{WIDTH - PAD_R}" y2="{h}" stroke="#888"/>',
        f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" font-size="10" text-anchor="end">'
        f'{escape(_num(hi))}{escape(unit)}</text>',
        f'<text x="{PAD_L - 4}" y="{h}" font-size="10" text-anchor="end">'
        f'{escape(_num(lo))}{escape(unit)}</text>',
        f'<text x="{PAD_L}" y="{HEIGHT - 8}" font-size="10">{_clock(t0) if n else ""}</text>',
        f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">'
        f'{_clock(t1) if n else "no data yet"}</text>',
        *body, "</svg>"])


def _scale(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    lo = min(p[1] for p in points)
    hi = max(p[1] for p in points)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    if t1 == t0:
        t0, t1 = t0 - 1, t1 + 1
    return t0, t1, lo, hi


def line(title: str, points: Sequence[tuple[float, float]], unit: str = "") -> str:
    """Points (time in Unix seconds, value) joined by a line, oldest left."""
    if not points:
        return _frame(title, 0, [], 0, 1, 0, 0, unit)
    t0, t1, lo, hi = _scale(points)
    w, h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        return (PAD_L + (p[0] - t0) / (t1 - t0) * w, PAD_T + (hi - p[1]) / (hi - lo) * h)

    coords = [xy(p) for p in points]
    body = ['<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="'
            + " ".join("%.1f,%.1f" % c for c in coords) + '"/>']
    body += [f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#1f77b4">'
             f'<title>{_clock(p[0])} {escape(_num(p[1]))}{escape(unit)}</title></circle>'
             for (x, y), p in zip(coords, points, strict=True)]
    return _frame(title, len(points), body, lo, hi, t0, t1, unit)


def bars(title: str, points: Sequence[tuple[float, float]], unit: str = "") -> str:
    """One bar per point (e.g. transactions per block), oldest left."""
    if not points:
        return _frame(title, 0, [], 0, 1, 0, 0, unit)
    t0, t1, _, hi = _scale(points)
    lo = 0.0
    hi = max(hi, 1.0)
    w, h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    bw = max(1.0, w / len(points) - 1)
    body = []
    for i, p in enumerate(points):
        x = PAD_L + i * (w / len(points))
        bh = (p[1] - lo) / (hi - lo) * h
        body.append(f'<rect class="pt" x="{x:.1f}" y="{PAD_T + h - bh:.1f}" width="{bw:.1f}" '
                    f'height="{bh:.1f}" fill="#2ca02c"><title>{_clock(p[0])} '
                    f'{escape(_num(p[1]))}{escape(unit)}</title></rect>')
    return _frame(title, len(points), body, lo, hi, t0, t1, unit)
