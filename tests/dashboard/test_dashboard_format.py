"""How numbers and times read on the pages (``dashboard/format.py``): each unit switches where it says."""

from __future__ import annotations

import math

import pytest

from hopscope.dashboard.format import (
    format_age,
    format_ago,
    format_error_pct,
    format_ms,
    format_ms_fixed,
    format_rate,
)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "-"),
        (0.04, "0.0 ms"),
        (99.94, "99.9 ms"),
        (100, "100 ms"),
        (9_999, "9999 ms"),
        (12_345, "12.3 s"),
    ],
)
def test_a_duration_reads_in_ms_then_seconds(ms: float | None, text: str) -> None:
    assert format_ms(ms) == text


@pytest.mark.parametrize(("ms", "text"), [(None, "-"), (math.nan, "-"), (1234.56, "1,234.6 ms")])
def test_a_percentile_reads_with_one_decimal_whatever_its_size(ms: float | None, text: str) -> None:
    assert format_ms_fixed(ms) == text


@pytest.mark.parametrize(("per_second", "text"), [(2.5, "2.5/s"), (0.5, "30.0/min"), (0.001, "3.60/h")])
def test_a_rate_reads_in_the_unit_that_keeps_it_readable(per_second: float, text: str) -> None:
    assert format_rate(per_second) == text


def test_an_error_rate_reads_as_a_percentage() -> None:
    assert format_error_pct(0.025) == "2.5% err"


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (math.nan, "-"), (42.4, "42 s"), (150, "2.5 min")]
)
def test_a_message_age_reads_in_seconds_then_minutes(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("seconds_ago", "text"), [(-5, "0 s ago"), (42, "42 s ago"), (600, "10 min ago"), (9000, "2.5 h ago")]
)
def test_a_moment_reads_as_how_long_ago(seconds_ago: float, text: str) -> None:
    now = 1_800_000_000.0
    assert format_ago(int((now - seconds_ago) * 1e9), now=now) == text
    assert format_ago(None, now=now) == "-"
