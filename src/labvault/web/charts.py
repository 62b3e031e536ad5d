"""Trend charts drawn on the server: one small SVG per analyte, no script.

The SVG holds numbers and the unit only (escaped by the template); the reference range, when known,
is a band behind the line, so a value out of range reads at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

WIDTH, HEIGHT, PAD = 240, 64, 6


@dataclass(frozen=True, slots=True)
class Chart:
    points: str  # the polyline's points
    dots: tuple[tuple[float, float], ...]
    band: tuple[float, float] | None  # y of the reference range's high and low edges
    low: float
    high: float
    width: int = WIDTH
    height: int = HEIGHT


def trend(values: list[tuple[datetime, float]], ref: tuple[float | None, float | None] = (None, None)) -> Chart | None:
    """The chart of a test's values over time (oldest first), or None under two values."""
    pts = sorted(values)
    if len(pts) < 2:
        return None
    ys = [v for _, v in pts] + [b for b in ref if b is not None]
    lo, hi = min(ys), max(ys)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    t0, t1 = pts[0][0].timestamp(), pts[-1][0].timestamp()
    span = (t1 - t0) or 1.0

    def x(t: datetime) -> float:
        return round(PAD + (t.timestamp() - t0) / span * (WIDTH - 2 * PAD), 1)

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2 * PAD), 1)

    dots = tuple((x(t), y(v)) for t, v in pts)
    band = None
    if ref[0] is not None and ref[1] is not None:
        band = (y(ref[1]), y(ref[0]))
    return Chart(" ".join(f"{a},{b}" for a, b in dots), dots, band, lo, hi)
