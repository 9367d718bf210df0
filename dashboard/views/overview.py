"""Overview: RED per service with sparklines, the slowest and the failing flows, dead-letter totals, and the
store on disk (size, oldest span kept, retention)."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from hopscope.collector.model.storage import StorageFacts, byte_size
from hopscope.collector.store.errors import StoreError
from hopscope.dashboard import data, url_state
from hopscope.dashboard.format import format_ago
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_text
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Overview")


@st.cache_data(ttl=data.TTL_SECONDS, show_spinner=False)
def storage_facts(db: str) -> StorageFacts | None:
    """The store on disk, from the query layer (``db`` keys the cache); None when it cannot be read."""
    layer = data.queries()
    try:
        return None if layer is None else layer.storage()
    except StoreError:
        return None


def format_retention(seconds: int | None) -> str:
    """The collector's --retention as it recorded it in the store: '7 d', '12 h', '30 min', '45 s'."""
    if seconds is None:
        return "set on the collector"
    if seconds == 0:
        return "kept for ever"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def storage_metrics(facts: StorageFacts) -> None:
    """Size on disk, oldest span kept and retention, as plain metrics; a warning when free space is low."""
    where = markdown_text(facts.location)
    free = "unknown free space" if facts.free_bytes is None else f"{byte_size(facts.free_bytes)} free"
    size, oldest, retention = st.columns(3)
    size.metric(
        "Size on disk",
        byte_size(facts.size_bytes),
        help=f"every file of the store {where}; {free} on its disk",
    )
    if facts.oldest_span_unix_nano is None:
        oldest.metric("Oldest span kept", "none")
    else:
        started = datetime.fromtimestamp(facts.oldest_span_unix_nano / 1e9, tz=timezone.utc)
        oldest.metric(
            "Oldest span kept",
            format_ago(facts.oldest_span_unix_nano),
            help=f"started {started:%Y-%m-%d %H:%M:%S} UTC",
        )
    retention.metric(
        "Retention",
        format_retention(facts.retention_seconds),
        help="the collector's --retention, as it recorded it in the store"
        if facts.retention_seconds is not None
        else "no hopscope collector recorded a --retention in this store (an older database, or spans "
        "written by OpenTelemetry Collectors, whose exporter has its own ttl): see the collector's flags",
    )
    if facts.disk_low and facts.free_bytes is not None:
        st.warning(
            f"Only {byte_size(facts.free_bytes)} free on the disk holding {where}: when it is full the "
            "collector refuses spans. Free space there, shorten --retention, or move the store.",
            icon=":material/storage:",
        )


@st.fragment(run_every=refresh_interval())
def overview() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    services = data.services_trend_frame(context.db, since, until, context.time_range.step_seconds)
    dead_letter_queues = [q for q in data.queues(context.db) if q.is_dead_letter_queue]
    waiting = sum(q.latest.visible for q in dead_letter_queues if q.latest is not None)
    totals = st.columns(4)
    totals[0].metric("Services", len(services))
    totals[1].metric(
        "Requests in range",
        int(services["spans"].sum()) if len(services) else 0,
        help="server and consumer spans, each Lambda invocation once; a batch's messages count on its queue",
    )
    totals[2].metric("Errors in range", int(services["errors"].sum()) if len(services) else 0)
    totals[3].metric(
        "Dead letters waiting", waiting, help=f"in {len(dead_letter_queues)} dead-letter queue(s)"
    )
    facts = storage_facts(context.db)
    if facts is not None:
        storage_metrics(facts)

    st.subheader("Services")
    if services.empty:
        st.caption("No server or consumer spans in this time range.")
    else:
        st.dataframe(
            services.drop(columns=["operations"]),
            hide_index=True,
            width="stretch",
            column_config={
                "service": st.column_config.TextColumn("Service"),
                "rate_per_s": st.column_config.NumberColumn("Rate /s", format="%.2f"),
                "error_pct": st.column_config.ProgressColumn(
                    "Errors", format="%.1f%%", min_value=0, max_value=100
                ),
                "p50_ms": st.column_config.NumberColumn("p50 ms", format="%.1f"),
                "p95_ms": st.column_config.NumberColumn("p95 ms", format="%.1f"),
                "p99_ms": st.column_config.NumberColumn("p99 ms", format="%.1f"),
                "spans": st.column_config.NumberColumn("Requests"),
                "errors": st.column_config.NumberColumn("Errors"),
                "p95_trend": st.column_config.LineChartColumn("p95 over the range"),
            },
        )

    slowest, failing = st.columns(2)
    for column, title, flows in (
        (slowest, "Slowest flows", data.slowest_flows(context.db, since, until)),
        (failing, "Failing flows", data.failing_flows(context.db, since, until)),
    ):
        column.subheader(title)
        if flows.empty:
            column.caption("None in this time range.")
            continue
        linked = flows.assign(link=[url_state.flow_link(flow_id) for flow_id in flows["flow_id"]])
        column.dataframe(
            linked[["link", "entry", "duration_ms", "errors", "start"]],
            hide_index=True,
            width="stretch",
            column_config={
                "link": url_state.flow_link_column(),
                "duration_ms": st.column_config.NumberColumn("Duration ms", format="%.1f"),
                "start": st.column_config.DatetimeColumn("Start", format="HH:mm:ss"),
            },
        )


overview()
