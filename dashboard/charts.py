"""The pages' plotly charts: a frame (or a graph edge) in, a ``Figure`` out, so that a page only draws it and
a test can read it. The two larger drawings have their own modules: the flow's waterfall (``waterfall``)
and the service map (``service_map_dot``).

Names in titles are span data: each goes through ``plain_text.plotly_text``, shortened.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px  # type: ignore[import-untyped, unused-ignore]
import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]

from hopscope.collector.model.graph import GraphEdge
from hopscope.dashboard.plain_text import plotly_text, shorten

PERCENTILES = ("p50", "p95", "p99")
# A queue's counts per poll (the depth frame's columns) and how the chart names them.
QUEUE_COUNTS = {"visible": "visible", "in_flight": "in flight", "delayed": "delayed"}


def percentiles_figure(
    series: pd.DataFrame, service: str, operation: str | None, step_seconds: int
) -> go.Figure:
    """p50, p95 and p99 per step of a latency frame (``time``, ``p50_ms``...): of a service's entry spans,
    or of one of its operations."""
    lines = series.rename(columns={f"{name}_ms": name for name in PERCENTILES})
    return px.line(
        lines,
        x="time",
        y=list(PERCENTILES),
        markers=True,
        labels={"value": "ms", "variable": "percentile", "time": ""},
        title=plotly_text(
            f"{shorten(service)} {shorten(operation) if operation else '(entry spans)'}: "
            f"percentiles per {step_seconds // 60} min"
        ),
    )


def latency_histogram_figure(histogram: pd.DataFrame) -> go.Figure:
    """Bars of a latency histogram frame (``upper_ms``, ``count``), one per bin, labelled by its bound."""
    bins = histogram.assign(bin=[f"≤ {upper:.3g} ms" for upper in histogram["upper_ms"]])
    return px.bar(
        bins,
        x="bin",
        y="count",
        hover_data={"upper_ms": ":.3f"},
        labels={"bin": "duration (bin upper bound)", "count": "spans"},
        title="Latency histogram over the range (bins about 9% wide)",
    )


def hop_wait_figure(edge: GraphEdge, label: str) -> go.Figure:
    """A consume hop's queue-wait percentiles beside its consumer's processing percentiles; ``label`` names
    the hop (plain text)."""
    comparison = pd.DataFrame(
        {
            "percentile": list(PERCENTILES),
            "queue wait": [edge.queue_wait_p50_ms, edge.queue_wait_p95_ms, edge.queue_wait_p99_ms],
            "processing": [edge.red.p50_ms, edge.red.p95_ms, edge.red.p99_ms],
        }
    )
    return px.bar(
        comparison,
        x="percentile",
        y=["queue wait", "processing"],
        barmode="group",
        labels={"value": "ms", "variable": ""},
        title=plotly_text(f"{label}: waiting in the queue vs processing, over the range"),
    )


def queue_messages_figure(depth: pd.DataFrame) -> go.Figure:
    """A queue's visible, in-flight and delayed counts per poll (a depth frame), as steps."""
    figure = px.line(
        depth.rename(columns=QUEUE_COUNTS),
        x="time",
        y=list(QUEUE_COUNTS.values()),
        labels={"value": "messages", "variable": "", "time": ""},
        title="Messages",
    )
    figure.update_traces(line_shape="hv")  # a count holds until the next poll
    return figure


def queue_age_figure(depth: pd.DataFrame) -> go.Figure:
    """The age of a queue's oldest message per poll (a depth frame)."""
    return px.line(
        depth,
        x="time",
        y="oldest_age_seconds",
        labels={"oldest_age_seconds": "seconds", "time": ""},
        title="Oldest message's age",
    )
