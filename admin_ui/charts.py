"""Server-rendered charts for the admin UI: pure geometry, drawn as inline SVG by a template.

The admin UI runs no JavaScript (its Content-Security-Policy forbids scripts), so a chart is
computed here as plain numbers — where each interval, dot, tick and label goes — and the
``_interval_chart.html`` partial turns those numbers into SVG elements. Keeping the markup in
a template means Jinja's autoescaping handles every arm key and tier code; keeping the
geometry here means it is testable without Flask. Colours live in ``admin.css`` classes, never
inline ``style`` attributes, which the policy (``style-src 'self'``) would block.

Values are shares in [0, 1] (retention rates) and are labelled as percentages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MIN_SPAN = 0.02  # never zoom in further than two percentage points across the whole axis
LABEL_MAX_CHARS = 18
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (None, NaN, ±inf, text, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def format_percent(share: Any, digits: int = 1) -> str:
    """0.8812 → ``88.1%``; anything that is not a finite number → ``—``."""
    number = finite(share)
    return "—" if number is None else f"{100 * number:.{digits}f}%"


@dataclass(frozen=True)
class Interval:
    """One estimate and its 95% credible interval; any of the three may be missing."""

    label: str
    mean: float | None
    low: float | None = None
    high: float | None = None
    is_reference: bool = False  # the control: its mean is drawn as a line across the chart


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class ChartRow:
    """One interval placed on the chart (x in SVG units; None when that value is missing)."""

    key: str  # the interval's full label
    label: str  # possibly shortened to fit; ``title`` has the full text
    y: float
    x_mean: float | None
    x_low: float | None
    x_high: float | None
    clipped_low: bool  # the interval runs past the left edge of the axis
    clipped_high: bool
    is_reference: bool
    title: str  # hover text, and what a screen reader reads for the row

    @property
    def has_interval(self) -> bool:
        return self.x_low is not None and self.x_high is not None


@dataclass(frozen=True)
class IntervalChart:
    """A horizontal interval ("forest") plot: one row per arm, one shared x axis."""

    chart_id: str
    title: str
    axis_label: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    ticks: tuple[Tick, ...]
    rows: tuple[ChartRow, ...]
    reference_x: float | None

    @property
    def has_data(self) -> bool:
        return any(row.x_mean is not None or row.has_interval for row in self.rows)


def _values(intervals: Iterable[Interval]) -> list[float]:
    out: list[float] = []
    for interval in intervals:
        out.extend(v for v in (finite(interval.mean), finite(interval.low), finite(interval.high)) if v is not None)
    return out


def nice_step(span: float, target_ticks: int = 5) -> float:
    """The 1-, 2- or 5-times-a-power-of-ten step that cuts ``span`` into about ``target_ticks``."""
    raw = span / max(target_ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if raw <= multiple * magnitude:
            return multiple * magnitude
    return 10 * magnitude


def axis_domain(
    intervals: Iterable[Interval], *, bounds: tuple[float, float] = (0.0, 1.0), target_ticks: int = 5
) -> tuple[float, float] | None:
    """An x range that holds every mean and interval end, padded and rounded outward to
    tick steps, kept within ``bounds``; None when there is nothing to draw."""
    values = _values(intervals)
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, (MIN_SPAN - (high - low)) / 2, 0.0)
    low, high = max(bounds[0], low - pad), min(bounds[1], high + pad)
    if high - low < MIN_SPAN:  # pressed against a bound (e.g. every arm at 100%)
        low, high = (max(bounds[0], high - MIN_SPAN), min(bounds[1], low + MIN_SPAN))
    step = nice_step(high - low, target_ticks)
    return (max(bounds[0], math.floor(low / step + 1e-9) * step), min(bounds[1], math.ceil(high / step - 1e-9) * step))


def shared_domain(groups: Iterable[Sequence[Interval]], **kwargs: Any) -> tuple[float, float] | None:
    """One domain for several charts (per-tier small multiples), so their axes compare."""
    return axis_domain([interval for group in groups for interval in group], **kwargs)


def _tick_digits(step: float) -> int:
    """Decimals needed to tell ticks ``step`` apart when shown as percentages."""
    return max(0, -math.floor(math.log10(100 * step) + 1e-9))


def _ticks(domain: tuple[float, float], scale: Any, target_ticks: int) -> tuple[Tick, ...]:
    low, high = domain
    step = nice_step(high - low, target_ticks)
    digits = _tick_digits(step)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    for i in range(first, first + 1000):
        value = i * step
        if value > high + step * 1e-6:
            break
        ticks.append(Tick(x=round(scale(value), 1), label=format_percent(value, digits)))
    return tuple(ticks)


def _short(label: str) -> str:
    return label if len(label) <= LABEL_MAX_CHARS else label[: LABEL_MAX_CHARS - 1] + "…"


def chart_id(*parts: str) -> str:
    """An HTML id from free text (arm keys and tier codes may hold dots)."""
    return "-".join(_UNSAFE_ID_CHARS.sub("_", part) for part in parts)


def interval_chart(
    intervals: Sequence[Interval],
    *,
    title: str,
    chart_key: str,
    domain: tuple[float, float] | None = None,
    axis_label: str = "Retention rate",
    width: int = 640,
    label_width: int = 130,
    row_height: int = 28,
    target_ticks: int = 5,
) -> IntervalChart:
    """Place ``intervals`` (one row each, in order) on a shared x axis.

    ``domain`` fixes the axis (small multiples pass the same one); by default it is fitted to
    the data. Values outside the domain are drawn at its edge and flagged as clipped. A row
    whose values are all missing keeps its place and says "no data".
    """
    domain = domain or axis_domain(intervals, target_ticks=target_ticks) or (0.0, 1.0)
    low, high = domain
    if not high > low:
        low, high = max(0.0, low - MIN_SPAN / 2), low + MIN_SPAN / 2
    plot_left, plot_right = float(label_width), float(width - 16)
    plot_top = 8.0
    plot_bottom = plot_top + row_height * max(len(intervals), 1)

    def scale(value: float) -> float:
        return plot_left + (value - low) / (high - low) * (plot_right - plot_left)

    def place(value: float | None) -> tuple[float | None, bool, bool]:
        if value is None:
            return None, False, False
        clamped = min(max(value, low), high)
        return round(scale(clamped), 1), value < low, value > high

    rows = []
    reference_x = None
    for index, interval in enumerate(intervals):
        mean, lo, hi = finite(interval.mean), finite(interval.low), finite(interval.high)
        x_mean, _, _ = place(mean)
        x_low, clipped_low, _ = place(lo)
        x_high, _, clipped_high = place(hi)
        if lo is None or hi is None:
            x_low = x_high = None
            clipped_low = clipped_high = False
        if interval.is_reference and x_mean is not None:
            reference_x = x_mean
        if mean is None:
            text = f"{interval.label}: no data"
        elif lo is None or hi is None:
            text = f"{interval.label}: {format_percent(mean)}"
        else:
            text = (
                f"{interval.label}: {format_percent(mean)} (95% interval {format_percent(lo)} to {format_percent(hi)})"
            )
        rows.append(
            ChartRow(
                key=interval.label,
                label=_short(interval.label),
                y=plot_top + row_height * (index + 0.5),
                x_mean=x_mean,
                x_low=x_low,
                x_high=x_high,
                clipped_low=clipped_low,
                clipped_high=clipped_high,
                is_reference=interval.is_reference,
                title=text,
            )
        )
    return IntervalChart(
        chart_id=chart_id("chart", chart_key),
        title=title,
        axis_label=axis_label,
        width=width,
        height=int(plot_bottom + 40),
        plot_left=plot_left,
        plot_right=plot_right,
        plot_top=plot_top,
        plot_bottom=plot_bottom,
        ticks=_ticks((low, high), scale, target_ticks),
        rows=tuple(rows),
        reference_x=reference_x,
    )


def retention_intervals(arms: Iterable[Any]) -> list[Interval]:
    """The readout's arms (dicts in the API shape; any field may be missing or None) as
    retention intervals, the control marked as the reference."""
    out = []
    for arm in arms:
        if not isinstance(arm, dict):
            continue
        ci = arm.get("retention_ci95")
        low, high = (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
        out.append(
            Interval(
                label=str(arm.get("key") or "holdout"),
                mean=finite(arm.get("retention_mean")),
                low=finite(low),
                high=finite(high),
                is_reference=bool(arm.get("is_control")),
            )
        )
    return out
