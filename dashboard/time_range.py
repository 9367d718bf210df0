"""The time range every page shows, and the auto-refresh, both kept in the URL so that a link can be shared.

``?range=1h`` picks a preset (15m, 1h, 24h, 7d); ``?refresh=on`` reruns the page body every few seconds.
The end of the range is rounded to ``ROUND_SECONDS``, so that reruns within it hit the query cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from hopscope.dashboard import url_state

PRESETS = {"15m": ("15 min", 900), "1h": ("1 h", 3600), "24h": ("24 h", 86400), "7d": ("7 d", 7 * 86400)}
DEFAULT_PRESET = "1h"
ROUND_SECONDS = 10
REFRESH_SECONDS = 10
# The URL parameters of every page (the range and the auto-refresh): a link to another page keeps them.
URL_PARAMS = ("range", "refresh")


@dataclass(frozen=True)
class TimeRange:
    preset: str
    since_unix_nano: int
    until_unix_nano: int

    @property
    def seconds(self) -> int:
        return PRESETS[self.preset][1]

    @property
    def step_seconds(self) -> int:
        """About 60 points over the range, in whole minutes (the rollups' resolution)."""
        return max(60, self.seconds // 60 // 60 * 60)


def current_range(now: float | None = None) -> TimeRange:
    preset = url_state.choice("range", PRESETS, DEFAULT_PRESET)
    until = int((now if now is not None else time.time()) // ROUND_SECONDS * ROUND_SECONDS) + ROUND_SECONDS
    return TimeRange(preset, (until - PRESETS[preset][1]) * 1_000_000_000, until * 1_000_000_000)


def auto_refresh() -> bool:
    return url_state.text("refresh") == "on"


def refresh_interval() -> int | None:
    """For ``st.fragment(run_every=...)``: rerun the page body every few seconds when auto-refresh is on."""
    return REFRESH_SECONDS if auto_refresh() else None


def sidebar_controls() -> None:
    """The range presets and the auto-refresh toggle; each change is written back to the URL."""
    current = current_range().preset
    labels = {key: label for key, (label, _) in PRESETS.items()}
    chosen = st.sidebar.segmented_control(
        "Time range", list(PRESETS), default=current, format_func=labels.__getitem__, key="range_control"
    )
    if chosen and chosen != url_state.text("range", DEFAULT_PRESET):
        url_state.put("range", chosen)
    refresh = st.sidebar.toggle("Auto-refresh", value=auto_refresh(), key="refresh_control")
    if refresh != auto_refresh():
        url_state.put("refresh", "on" if refresh else None)
