"""Latency: p50/p95/p99 over time per service and operation, the distribution, and each async hop's
processing time against the time its messages waited in the queue.

The selection lives in the URL (``?service=billing&operation=...&hop=aws_sqs:billing>service:billing``).
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px  # type: ignore[import-untyped, unused-ignore]
import streamlit as st

from hopscope.collector.model.graph import GraphEdge, GraphNode
from hopscope.dashboard import data
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import plotly_text, shorten
from hopscope.dashboard.time_range import refresh_interval

ALL_OPERATIONS = ""  # the operation choice that means "every entry span of the service"
PERCENTILES = ("p50", "p95", "p99")

context = page_context()
st.title("Latency")


def url_choice(
    param: str,
    label: str,
    options: list[str],
    labels: dict[str, str] | None = None,
    default: str | None = None,
) -> str:
    """A select whose choice is kept in the URL as ``?param=``, so that the view can be shared."""
    current = st.query_params.get(param, "")
    names = labels or {}
    start = current if current in options else default
    choice = st.selectbox(
        label,
        options,
        index=options.index(start) if start in options else 0,
        format_func=lambda value: names.get(value, value),
        key=f"latency_{param}",
    )
    choice = choice if choice is not None else options[0]
    if choice != current:
        if choice:
            st.query_params[param] = choice
        elif param in st.query_params:
            del st.query_params[param]
    return choice


def ms(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:,.1f} ms"


def service_latency(services: pd.DataFrame) -> str:
    """The chosen service's (or operation's) percentiles over time, and its latency histogram; returns
    the service chosen."""
    tr = context.time_range
    since, until = tr.since_unix_nano, tr.until_unix_nano
    pick_service, pick_operation = st.columns(2)
    with pick_service:
        service = url_choice("service", "Service", services["service"].tolist())
    operations = services.loc[services["service"] == service, "operations"].iloc[0]
    with pick_operation:
        operation = url_choice(
            "operation",
            "Operation",
            [ALL_OPERATIONS, *operations],
            {ALL_OPERATIONS: "All entry spans", **{name: name for name in operations}},
        )
    chosen = operation or None

    # One step over the whole range: the percentiles of the whole selection, from the same rollups.
    whole = data.latency_frame(context.db, service, since, until, tr.seconds, operation=chosen).iloc[0]
    totals = st.columns(4)
    for column, name in zip(totals, PERCENTILES, strict=False):
        column.metric(f"{name} over the range", ms(whole[f"{name}_ms"]))
    totals[3].metric("Spans", int(whole["spans"]), help=f"{int(whole['errors'])} with an error")

    series = data.latency_frame(context.db, service, since, until, tr.step_seconds, operation=chosen)
    series = series.rename(columns={f"{name}_ms": name for name in PERCENTILES})
    figure = px.line(
        series,
        x="time",
        y=list(PERCENTILES),
        markers=True,
        labels={"value": "ms", "variable": "percentile", "time": ""},
        title=plotly_text(
            f"{shorten(service)} {shorten(operation) if operation else '(entry spans)'}: "
            f"percentiles per {tr.step_seconds // 60} min"
        ),
    )
    st.plotly_chart(figure, width="stretch")

    histogram = data.latency_histogram_frame(context.db, service, since, until, operation=chosen)
    if histogram.empty:
        st.caption("No spans of this selection in the time range: no histogram.")
        return service
    histogram["bin"] = [f"≤ {upper:.3g} ms" for upper in histogram["upper_ms"]]
    bars = px.bar(
        histogram,
        x="bin",
        y="count",
        hover_data={"upper_ms": ":.3f"},
        labels={"bin": "duration (bin upper bound)", "count": "spans"},
        title="Latency histogram over the range (bins about 9% wide)",
    )
    st.plotly_chart(bars, width="stretch")
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
    key = url_choice(
        "hop",
        "Hop",
        list(hops),
        {key: hop_label(edge, nodes) for key, edge in hops.items()},
        default=consumed[0] if consumed else None,
    )
    edge = hops[key]
    waits = (edge.queue_wait_p50_ms, edge.queue_wait_p95_ms, edge.queue_wait_p99_ms)
    processing = (edge.red.p50_ms, edge.red.p95_ms, edge.red.p99_ms)
    totals = st.columns(4)
    totals[0].metric("Queue wait p95", ms(edge.queue_wait_p95_ms))
    totals[1].metric("Processing p95", ms(edge.red.p95_ms))
    totals[2].metric("Messages consumed", edge.red.span_count, help=f"{edge.red.error_count} failed")
    totals[3].metric(
        "Max receive count", edge.max_receive_count, help="the most times one message was received"
    )
    comparison = pd.DataFrame(
        {"percentile": list(PERCENTILES), "queue wait": list(waits), "processing": list(processing)}
    )
    figure = px.bar(
        comparison,
        x="percentile",
        y=["queue wait", "processing"],
        barmode="group",
        labels={"value": "ms", "variable": ""},
        title=plotly_text(f"{hop_label(edge, nodes)}: waiting in the queue vs processing, over the range"),
    )
    st.plotly_chart(figure, width="stretch")


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
