"""Overview: RED per service with sparklines, the slowest and the failing flows, dead-letter totals."""

from __future__ import annotations

import streamlit as st

from hopscope.dashboard import data, url_state
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Overview")


@st.fragment(run_every=refresh_interval())
def overview() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    services = data.services_frame(context.db, since, until)
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

    st.subheader("Services")
    if services.empty:
        st.caption("No server or consumer spans in this time range.")
    else:
        services["p95_trend"] = [
            data.latency_frame(context.db, name, since, until, context.time_range.step_seconds)["p95_ms"]
            .fillna(0)
            .tolist()
            for name in services["service"]
        ]
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
