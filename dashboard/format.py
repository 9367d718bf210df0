"""How numbers and times read on the pages: durations, rates, error rates, ages. One place, so that the same
value reads the same on every page and chart. Pure (no Streamlit), so that a test can check each.

Missing values (None, or NaN from a DataFrame) read as "-".
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd


def format_ms(ms: float | None) -> str:
    """Milliseconds, or seconds once they are long, in a few characters: for labels and headline metrics."""
    if ms is None:
        return "-"
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def format_ms_fixed(ms: float | None) -> str:
    """Milliseconds with one decimal whatever their size ('1,234.5 ms'): percentiles read side by side."""
    return "-" if ms is None or pd.isna(ms) else f"{ms:,.1f} ms"


def format_rate(per_second: float) -> str:
    """A rate in the unit that keeps it readable: per second, per minute or per hour."""
    if per_second >= 1:
        return f"{per_second:.1f}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:.1f}/min"
    return f"{per_second * 3600:.2f}/h"


def format_error_pct(error_rate: float) -> str:
    """An error rate (0 to 1) as a percentage: '2.5% err'."""
    return f"{100 * error_rate:.1f}% err"


def format_age(seconds: float | None) -> str:
    """How old a message is: seconds up to two minutes, then minutes."""
    if seconds is None or pd.isna(seconds):
        return "-"
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


def format_ago(unix_nano: int | None, now: float | None = None) -> str:
    """'42 s ago', '3 min ago' for a timestamp (``now``: unix seconds, the clock by default); '-' for None."""
    if unix_nano is None:
        return "-"
    current = now if now is not None else datetime.now(timezone.utc).timestamp()
    seconds = max(0.0, current - unix_nano / 1e9)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
