"""Number formatting shared by the evaluation tables and plots."""

from __future__ import annotations

import math


def format_value(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_ci(ci) -> str:
    return "n/a" if not ci else f"{ci[0]:.3f}-{ci[1]:.3f}"


def finite_or_none(value):
    """A float, or None for None, NaN and infinity (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


__all__ = ["finite_or_none", "format_ci", "format_value"]
