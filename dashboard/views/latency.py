"""Latency: p50/p95/p99 over time per service and operation, the distribution, and each async hop's
processing time against the time its messages waited in the queue.

The selection lives in the URL (``?service=billing&operation=...&hop=aws_sqs:billing>service:billing``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope.collector.model.graph import GraphEdge, GraphNode
from hopscope.dashboard import data, url_state
from hopscope.dashboard.charts import (
    PERCENTILES,
    hop_wait_figure,
    latency_histogram_figure,
    percentiles_figure,
)
from hopscope.dashboard.format import format_ms_fixed
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import shorten
from hopscope.dashboard.time_range import refresh_interval

ALL_OPERATIONS = ""  # the operation choice that means "every entry span of the service"

context = page_context()
st.title("Latency")


def service_latency(services: pd.DataFrame) -> str:
    """The chosen service's (or operation's) percentiles over time, and its latency histogram; returns
    the service chosen."""
    tr = context.time_range
    since, until = tr.since_unix_nano, tr.until_unix_nano
    pick_service, pick_operation = st.columns(2)
    with pick_service:
        service = url_state.select("service", "Service", services["service"].tolist(), key="latency_service")
    operations = services.loc[services["service"] == service, "operations"].iloc[0]
    with pick_operation:
        operation = url_state.select(
            "operation",
            "Operation",
            [ALL_OPERATIONS, *operations],
            key="latency_operation",
            format_func=lambda name: name or "All entry spans",
        )
    chosen = operation or None

    # The whole selection's percentiles, its series and its histogram: one read of the same rollups.
    whole, series, histogram = data.latency_frames(
        context.db, service, since, until, tr.step_seconds, operation=chosen
    )
    totals = st.columns(4)
    for column, name in zip(totals, PERCENTILES, strict=False):
        column.metric(f"{name} over the range", format_ms_fixed(whole[f"{name}_ms"]))
    totals[3].metric("Spans", int(whole["spans"]), help=f"{int(whole['errors'])} with an error")

    st.plotly_chart(percentiles_figure(series, service, chosen, tr.step_seconds), width="stretch")

    if histogram.empty:
        st.caption("No spans of this selection in the time range: no histogram.")
        return service
    st.plotly_chart(latency_histogram_figure(histogram), width="stretch")
    return service


def hop_label(edge: GraphEdge, nodes: dict[str, GraphNode]) -> str:
    """'queue (type) → service', each name shortened (plain text: a select option or, escaped, a title)."""
    source, target = nodes.get(edge.source), nodes.get(edge.target)
    source_text = f"{shorten(source.name)} ({source.type})" if source else shorten(edge.source)
    return f"{source_text} → {shorten(target.name if target else edge.target)}"


def hop_latency(service: str | None) -> None:
    """Per consume edge: the consumer's processing percentiles beside the queue-wait percentiles.

    Unless the URL names one, the hop shown is one the chosen service consumes from.
    """
    tr = context.time_range
    graph = data.graph(context.db, tr.since_unix_nano, tr.until_unix_nano, ("consume",))
    hops = {f"{edge.source}>{edge.target}": edge for edge in graph.edges if edge.kind == "consume"}
    if not hops:
        st.caption("No consumed messages in this time range.")
        return
    nodes = {node.id: node for node in graph.nodes}
    consumed = [key for key, edge in hops.items() if edge.target == f"service:{service}"]
    labels = {key: hop_label(edge, nodes) for key, edge in hops.items()}
    key = url_state.select(
        "hop",
        "Hop",
        list(hops),
        key="latency_hop",
        default=consumed[0] if consumed else None,
        format_func=labels.__getitem__,
    )
    edge = hops[key]
    totals = st.columns(4)
    totals[0].metric("Queue wait p95", format_ms_fixed(edge.queue_wait_p95_ms))
    totals[1].metric("Processing p95", format_ms_fixed(edge.red.p95_ms))
    totals[2].metric("Messages consumed", edge.red.span_count, help=f"{edge.red.error_count} failed")
    totals[3].metric(
        "Max receive count", edge.max_receive_count, help="the most times one message was received"
    )
    st.plotly_chart(hop_wait_figure(edge, labels[key]), width="stretch")


@st.fragment(run_every=refresh_interval())
def latency() -> None:
    tr = context.time_range
    services = data.services_frame(context.db, tr.since_unix_nano, tr.until_unix_nano)
    st.subheader("Per service and operation")
    service = None
    if services.empty:
        st.caption("No server or consumer spans in this time range.")
    else:
        service = service_latency(services)
    st.subheader("Per async hop")
    hop_latency(service)


latency()
