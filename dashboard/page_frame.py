"""What every page starts with: the database, the time range, and the empty-database hint."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from hopscope.collector.store.errors import StoreError
from hopscope.dashboard import data
from hopscope.dashboard.config import DashboardConfig, load_config, store_label
from hopscope.dashboard.plain_text import markdown_text
from hopscope.dashboard.time_range import TimeRange, current_range

SEND_SPANS_SNIPPET = """\
from hopscope.instrumentation import configure, traced_handler
configure(endpoint="{collector}")       # or OTEL_EXPORTER_OTLP_ENDPOINT={collector}
@traced_handler                          # on each Lambda handler
"""


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


def page_context() -> PageContext:
    """The page's database and time range; renders the hint and stops the page when there is no data."""
    config = load_config()
    try:
        layer = data.queries()
        if layer is None or not data.has_data(data.db_key()):
            empty_hint(config)
            st.stop()
    except StoreError as exc:
        st.error(f"Cannot read {store_label(config)}: {markdown_text(str(exc))}")
        st.stop()
    return PageContext(data.db_key(), config, current_range())
