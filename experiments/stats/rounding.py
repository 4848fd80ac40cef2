"""How statistics are written to JSON: six significant digits, None for the undefined."""

from __future__ import annotations

import math

SIGNIFICANT_DIGITS = 6


def json_number(value: float | None) -> float | None:
    """``value`` to six significant digits (beyond any Monte Carlo or display precision);
    None stays None, and so does a non-finite value, which JSON cannot carry."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def json_pair(pair: tuple[float, float] | None) -> list[float | None] | None:
    """A (low, high) interval as a two-element list."""
    return None if pair is None else [json_number(pair[0]), json_number(pair[1])]


def json_money(value: float | None) -> float | None:
    """A money total to four decimals: large totals keep their cents."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 4)
