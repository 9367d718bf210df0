"""What every page starts with: the database, the time range, the empty-database hint, and a notice when
flows trail the stored spans."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from hopscope.collector.store.errors import StoreError
from hopscope.dashboard import data
from hopscope.dashboard.config import DashboardConfig, load_config, store_label
from hopscope.dashboard.format import format_age
from hopscope.dashboard.plain_text import markdown_text
from hopscope.dashboard.time_range import TimeRange, current_range

SEND_SPANS_SNIPPET = """\
from hopscope.instrumentation import configure, traced_handler
configure(endpoint="{collector}")       # or OTEL_EXPORTER_OTLP_ENDPOINT={collector}
@traced_handler                          # on each Lambda handler
"""


# Flows that trail the stored spans by more than this are noted on every page (after a burst, the collector
# stitches a bounded share while spans keep arriving: bench/freshness.py).
FLOWS_LAG_NOTICE_SECONDS = 5.0


@dataclass(frozen=True)
class PageContext:
    db: str
    config: DashboardConfig
    time_range: TimeRange


def empty_hint(config: DashboardConfig) -> None:
    """No data yet: where to send spans, never a traceback."""
    st.info(
        f"**No data yet** in `{store_label(config)}`. Start the collector "
        f"(`hopscope collector {'--store ' + config.store if config.store else '--db ' + str(config.db)}`), "
        f"then send spans to {config.collector_url}:",
        icon=":material/hourglass_empty:",
    )
    st.code(SEND_SPANS_SNIPPET.format(collector=config.collector_url), language="python")


def flows_lag_notice(lag_seconds: float) -> None:
    """Say that flows (and, on SQLite, RED and the service map) miss the newest spans, and by how much."""
    if lag_seconds > FLOWS_LAG_NOTICE_SECONDS:
        st.info(
            f"Flows are {format_age(lag_seconds)} behind: the newest spans are stored but not yet stitched "
            "into flows, so lists, counts and the service map miss them for now.",
            icon=":material/schedule:",
        )


def page_context() -> PageContext:
    """The page's database and time range; renders the hint and stops the page when there is no data,
    and the lag notice when flows trail the spans."""
    config = load_config()
    try:
        layer = data.queries()
        if layer is None or not data.has_data(data.db_key()):
            empty_hint(config)
            st.stop()
        flows_lag_notice(layer.flows_lag_seconds())
    except StoreError as exc:
        st.error(f"Cannot read {store_label(config)}: {markdown_text(str(exc))}")
        st.stop()
    return PageContext(data.db_key(), config, current_range())
