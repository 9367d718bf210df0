"""The waterfall of a flow: every span of every trace on one time axis, as a tree, with the queue waits
between them and the flow's critical path.

Pure (a ``FlowDetail`` and the collapsed spans in, a plotly ``Figure`` out), so that the page only draws it
and a test can read it. One row per span in tree order (model/critical_path.py ``flow_tree``: spans under
their parents, each consumer trace under the producer its hop links to, siblings by start time); the row's
label, left-aligned in a column of its own, is indented by depth and starts with ▾ (or ▸ when collapsed)
on a span with children; a collapsed span's descendants have no rows. Bars are labelled "service · name" and
coloured by service; each async hop's queue wait is its own grey, hatched segment from the producer's end to
the consumer's start; the critical path is a thin dark bar over each of its segments (legend "critical
path"); failed spans have a red outline and an ✕ at their end; a message received more than once says so on
its bar; the spans of a batch that the flow shares with other flows are marked ⇶. The flow's log lines are
markers on their spans' rows at their time (trace "log lines", red for errors); the line chosen in the page's
list has its span's row highlighted and a ring around its marker.

Every name on the chart is span data: Plotly would render the HTML in it, so each goes through
``plain_text.plotly_text``; row labels and legend entries are shortened (``plain_text.shorten``) so that the
bars keep the chart's width, and the whole name is in the bar's hover box.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]
from plotly.colors import qualitative  # type: ignore[import-untyped, unused-ignore]

from hopscope.collector.model import conventions
from hopscope.collector.model.critical_path import (
    PathSegment,
    SpanKey,
    TreeRow,
    critical_path,
    flow_tree,
)
from hopscope.collector.model.flows import AsyncHop, FlowDetail, FlowSpan, SharedTrace
from hopscope.collector.model.logs import LogLine
from hopscope.dashboard.plain_text import plotly_hover, plotly_text, shorten

ERROR_COLOUR = "#c62828"
WAIT_COLOUR = "rgba(158, 158, 158, 0.45)"
ROW_HEIGHT = 30
QUEUE_WAIT_TRACE = "queue wait"
ERROR_TRACE = "error"
CRITICAL_PATH_TRACE = "critical path"
CRITICAL_COLOUR = "rgba(33, 33, 33, 0.9)"
# The text trace that draws the row labels (no legend entry), on an x axis of its own left of the bars.
LABEL_TRACE = "spans"
# A row label names its span in at most this many characters, after its indentation and ▾/▸.
ROW_LABEL_CHARS = 36
# Indentation stops deepening here (a deeper row is still below its parent, at this indentation).
MAX_INDENT = 8
INDENT = "\u2003"  # an em space: SVG keeps it where it collapses ordinary spaces
EXPANDED, COLLAPSED = "▾ ", "▸ "
# The label column's share of the chart's width.
LABEL_DOMAIN = 0.4
# A legend entry names a service in at most this many characters.
LEGEND_CHARS = 40
# Marks the rows of spans that a batch shares with other flows.
SHARED_MARK = "⇶ "
LOG_TRACE = "log lines"
SELECTED_LOG_TRACE = "selected line"
WARN_COLOUR = "#ef6c00"
LOG_COLOUR = "#455a64"
HIGHLIGHT_COLOUR = "rgba(255, 193, 7, 0.28)"


def span_label(span: FlowSpan) -> str:
    return f"{span['service']} · {span['name']}"


def receive_count(span: FlowSpan) -> int:
    """How many times the span's message had been received (1 for the first delivery, 0 if not a consumer,
    nor when the attribute is not a number)."""
    value = span["attributes"].get(conventions.RECEIVE_COUNT)
    if not isinstance(value, (str, int, float)):  # None, a list or a key-value list
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def retry_text(span: FlowSpan) -> str:
    """'retry · receive #2' on a span that processed a redelivered message, '' otherwise."""
    count = receive_count(span)
    return f"retry · receive #{count}" if count > 1 else ""


def is_error(span: FlowSpan) -> bool:
    return span["status"]["code"] == "ERROR"


def _service_colours(services: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly
    return {service: palette[index % len(palette)] for index, service in enumerate(sorted(set(services)))}


def visible_rows(rows: Sequence[TreeRow], collapsed: Collection[SpanKey]) -> list[TreeRow]:
    """The rows left when the spans in ``collapsed`` hide their descendants (``rows`` in tree order)."""
    shown: list[TreeRow] = []
    hidden_below: int | None = None  # the depth of the collapsed row whose subtree is being skipped
    for row in rows:
        if hidden_below is not None and row.depth > hidden_below:
            continue
        hidden_below = row.depth if row.key in collapsed and row.child_count else None
        shown.append(row)
    return shown


def row_label(row: TreeRow, collapsed: Collection[SpanKey], shared: Collection[str]) -> str:
    """A row's label as Plotly text: indentation by depth, ▾/▸ on a span with children, ⇶ on a shared
    batch's span, then "service · name", escaped and shortened."""
    marker = (COLLAPSED if row.key in collapsed else EXPANDED) if row.child_count else ""
    return (
        INDENT * min(row.depth, MAX_INDENT)
        + marker
        + (SHARED_MARK if row.span["trace_id"] in shared else "")
        + plotly_text(shorten(span_label(row.span), ROW_LABEL_CHARS))
    )


def waterfall_figure(
    detail: FlowDetail,
    collapsed: Collection[SpanKey] = frozenset(),
    selected: str | None = None,
    *,
    tree: Sequence[TreeRow] | None = None,
    path: Sequence[PathSegment] | None = None,
    logs: Sequence[LogLine] = (),
    picked: LogLine | None = None,
) -> go.Figure:
    """The flow's waterfall; x is milliseconds since the flow's first span started.

    Spans are rows in tree order (``y`` is the row number, ``customdata`` the span id, so rows with the same
    label stay apart and a click on a bar names its span); the labels are the text of the ``spans`` trace
    on a second x axis (the selected span's in bold). Hops are bars of the ``queue wait`` trace, on the
    consumer's row, with the producer and consumer span ids in ``customdata``; the ``critical path`` trace
    has a thin bar per span or wait segment (on the row of its span, or of the nearest shown ancestor), its
    span id in ``customdata``. ``collapsed`` holds the (trace id, span id) of collapsed spans; ``tree`` and
    ``path`` are the flow's ``flow_tree`` and ``critical_path`` when the caller has them already.

    ``logs`` are the flow's log lines: each of a span of the flow is a marker of the ``log lines`` trace on
    that span's row (or its nearest shown ancestor's) at its time, its span id in ``customdata`` (so a click
    on it names its span); ``picked``, a line chosen in the page's list, highlights its span's row (a layout
    shape) and rings its marker (the ``selected line`` trace).
    """
    spans = detail.spans
    figure = go.Figure()
    if not spans:
        return figure
    origin = min(span["start_unix_nano"] for span in spans)
    rows = flow_tree(spans, detail.hops) if tree is None else tree
    shown = visible_rows(rows, collapsed)
    row_of = {row.key: index for index, row in enumerate(shown)}
    shown_row = _shown_rows(rows, row_of)
    shared = {trace["trace_id"]: trace for trace in detail.shared_traces}
    colours = _service_colours([span["service"] for span in spans])

    for service, colour in colours.items():
        bars = [(index, row.span) for index, row in enumerate(shown) if row.span["service"] == service]
        if not bars:
            continue
        figure.add_trace(
            go.Bar(
                name=plotly_text(shorten(service, LEGEND_CHARS)),
                orientation="h",
                y=[index for index, _ in bars],
                base=[(span["start_unix_nano"] - origin) / 1e6 for _, span in bars],
                x=[max(span["duration_ms"], 0.0) for _, span in bars],
                customdata=[span["span_id"] for _, span in bars],
                # an em space first: the error ✕ sits on the bar's end
                text=["\u2003" + retry_text(span) if retry_text(span) else "" for _, span in bars],
                textposition="outside",
                cliponaxis=False,
                marker={
                    "color": colour,
                    "line": {
                        "color": [ERROR_COLOUR if is_error(span) else colour for _, span in bars],
                        "width": [3 if is_error(span) else 0 for _, span in bars],
                    },
                },
                hovertext=[_hover(span, shared) for _, span in bars],
                hoverinfo="text",
            )
        )

    by_id = {(span["trace_id"], span["span_id"]): span for span in spans}
    waits = [hop for hop in detail.hops if _hop_rows(hop, row_of) is not None]
    if waits:
        producers = [by_id[(hop["producer"]["trace_id"], hop["producer"]["span_id"])] for hop in waits]
        consumers = [by_id[(hop["consumer"]["trace_id"], hop["consumer"]["span_id"])] for hop in waits]
        figure.add_trace(
            go.Bar(
                name=QUEUE_WAIT_TRACE,
                orientation="h",
                y=[row_of[(c["trace_id"], c["span_id"])] for c in consumers],
                base=[(p["end_unix_nano"] - origin) / 1e6 for p in producers],
                x=[
                    (c["start_unix_nano"] - p["end_unix_nano"]) / 1e6
                    for p, c in zip(producers, consumers, strict=True)
                ],
                customdata=[[p["span_id"], c["span_id"]] for p, c in zip(producers, consumers, strict=True)],
                text=[plotly_text(f"queue wait {shorten(hop['destination'])}") for hop in waits],
                textposition="inside",
                insidetextanchor="middle",
                marker={"color": WAIT_COLOUR, "pattern": {"shape": "/", "fgcolor": "#bdbdbd"}},
                hovertext=[
                    plotly_hover(f"queue wait {hop['destination']}")
                    + f"<br>{hop['queue_wait_ms']:.1f} ms"
                    + (f"<br>receive #{hop['receive_count']}" if hop["receive_count"] else "")
                    for hop in waits
                ],
                hoverinfo="text",
            )
        )

    if path is None:
        path = critical_path(spans, detail.hops)
    drawn = [segment for segment in path if segment.span is not None]
    if drawn:
        total = max(max(span["end_unix_nano"] for span in spans) - origin, 1)
        keys = [segment.span for segment in drawn if segment.span is not None]
        figure.add_trace(
            go.Bar(
                name=CRITICAL_PATH_TRACE,
                orientation="h",
                y=[shown_row[key] for key in keys],
                base=[(segment.start_unix_nano - origin) / 1e6 for segment in drawn],
                x=[segment.duration_ns / 1e6 for segment in drawn],
                width=0.28,
                customdata=[key[1] for key in keys],
                marker={"color": CRITICAL_COLOUR},
                hovertext=[_critical_hover(segment, by_id, total) for segment in drawn],
                hoverinfo="text",
            )
        )

    failed = [(index, row.span) for index, row in enumerate(shown) if is_error(row.span)]
    if failed:
        figure.add_trace(
            go.Scatter(
                name=ERROR_TRACE,
                mode="markers",
                y=[index for index, _ in failed],
                x=[(span["end_unix_nano"] - origin) / 1e6 for _, span in failed],
                customdata=[span["span_id"] for _, span in failed],
                marker={"symbol": "x", "size": 12, "color": ERROR_COLOUR},
                hovertext=[
                    f"<b>{plotly_hover(span_label(span))}</b><br>"
                    + plotly_hover(f"error: {span['status']['message'] or 'status ERROR'}")
                    for _, span in failed
                ],
                hoverinfo="text",
            )
        )

    _add_logs(figure, logs, picked, origin, shown_row)

    labels = [row_label(row, collapsed, shared) for row in shown]
    figure.add_trace(
        go.Scatter(
            name=LABEL_TRACE,
            mode="text",
            xaxis="x2",
            y=list(range(len(shown))),
            x=[0.0] * len(shown),
            text=[
                f"<b>{label}</b>" if row.span["span_id"] == selected else label
                for row, label in zip(shown, labels, strict=True)
            ],
            textposition="middle right",
            customdata=[row.span["span_id"] for row in shown],
            hovertext=[_hover(row.span, shared) for row in shown],
            hoverinfo="text",
            showlegend=False,
            cliponaxis=True,
        )
    )

    end = max(max(span["end_unix_nano"] for span in spans) - origin, 1) / 1e6
    figure.update_layout(
        barmode="overlay",
        height=120 + ROW_HEIGHT * len(shown),
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        # a bar's text that only fits in a tiny font is left out (its hover box still says it)
        uniformtext={"minsize": 9, "mode": "hide"},
        # room on the right for the retry text of the last bars
        xaxis={
            "title": "ms since the flow started",
            "zeroline": False,
            "range": [-0.02 * end, 1.3 * end],
            "domain": [LABEL_DOMAIN, 1.0],
        },
        xaxis2={
            "domain": [0.0, LABEL_DOMAIN - 0.01],
            "range": [0.0, 1.0],
            "visible": False,
            "fixedrange": True,
        },
        yaxis={"showticklabels": False, "autorange": "reversed"},
        dragmode="zoom",
    )
    return figure


def log_colour(line: LogLine) -> str:
    """Red for an error (or fatal) line, orange for a warning, grey for the rest."""
    if line.is_error:
        return ERROR_COLOUR
    return WARN_COLOUR if line.severity == "WARN" else LOG_COLOUR


def log_hover(line: LogLine, origin_unix_nano: int) -> str:
    """A log marker's hover box: time since the flow started, severity, service and logger, the body."""
    offset = (line.time_unix_nano - origin_unix_nano) / 1e6
    source = plotly_hover(f"{line.service} · {line.scope}")
    return f"<b>{plotly_text(line.severity)}</b> +{offset:.1f} ms · {source}<br>{plotly_hover(line.body)}"


def _add_logs(
    figure: go.Figure,
    logs: Sequence[LogLine],
    picked: LogLine | None,
    origin: int,
    shown_row: Mapping[SpanKey, int],
) -> None:
    """The log lines' markers on their spans' rows, and the picked line's highlight."""
    placed = [
        (line, shown_row[(line.trace_id, line.span_id)])
        for line in logs
        if (line.trace_id, line.span_id) in shown_row
    ]
    if placed:
        figure.add_trace(
            go.Scatter(
                name=LOG_TRACE,
                mode="markers",
                y=[row for _, row in placed],
                x=[(line.time_unix_nano - origin) / 1e6 for line, _ in placed],
                customdata=[line.span_id for line, _ in placed],
                marker={
                    "symbol": "diamond",
                    "size": [13 if line.is_error else 9 for line, _ in placed],
                    "color": [log_colour(line) for line, _ in placed],
                    "line": {"width": 1, "color": "white"},
                },
                hovertext=[log_hover(line, origin) for line, _ in placed],
                hoverinfo="text",
            )
        )
    row = None if picked is None else shown_row.get((picked.trace_id, picked.span_id))
    if picked is None or row is None:
        return
    figure.add_shape(
        type="rect",
        xref="paper",
        x0=0.0,
        x1=1.0,
        yref="y",
        y0=row - 0.5,
        y1=row + 0.5,
        fillcolor=HIGHLIGHT_COLOUR,
        line={"width": 0},
        layer="below",
    )
    figure.add_trace(
        go.Scatter(
            name=SELECTED_LOG_TRACE,
            mode="markers",
            y=[row],
            x=[(picked.time_unix_nano - origin) / 1e6],
            customdata=[picked.span_id],
            marker={"symbol": "circle-open", "size": 20, "color": "#212121", "line": {"width": 2}},
            hovertext=[log_hover(picked, origin)],
            hoverinfo="text",
            showlegend=False,
        )
    )


def span_of_selection(points: Sequence[Mapping[str, Any]]) -> str | None:
    """The span id a click on the chart names (``st.plotly_chart``'s selection points): the first point
    whose ``customdata`` is a span id (a queue wait's is a pair, and names no one span)."""
    for point in points:
        data = point.get("customdata")
        if isinstance(data, str) and data:
            return data
    return None


def _shown_rows(rows: Sequence[TreeRow], row_of: Mapping[SpanKey, int]) -> dict[SpanKey, int]:
    """Each span's row, or its nearest shown ancestor's when it is inside a collapsed span."""
    result: dict[SpanKey, int] = {}
    for row in rows:  # a parent comes before its children
        own = row_of.get(row.key)
        result[row.key] = own if own is not None else result[row.parent] if row.parent is not None else 0
    return result


def _critical_hover(segment: PathSegment, by_id: Mapping[SpanKey, FlowSpan], total_ns: int) -> str:
    """A critical-path bar's hover box: what the segment is, its duration and share of the flow."""
    if segment.kind == "wait" and segment.hop is not None:
        what = plotly_hover(f"queue wait {segment.hop['destination']}")
    else:
        span = by_id[segment.span] if segment.span is not None else None
        what = plotly_hover(span_label(span)) if span is not None else "no span"
    share = 100 * segment.duration_ns / total_ns
    return f"<b>critical path</b><br>{what}<br>{segment.duration_ns / 1e6:.1f} ms · {share:.0f}% of the flow"


def shared_text(batch: SharedTrace) -> str:
    """What a shared batch trace is, in a sentence (numbers only: no span data)."""
    others = batch["other_messages"]
    flows = len(batch["other_flow_ids"])
    return (
        f"{SHARED_MARK}shared: processed in one batch with {others} other message{'s' * (others != 1)} "
        f"({flows} other flow{'s' * (flows != 1)})"
    )


def _hop_rows(hop: AsyncHop, row_of: dict[tuple[str, str], int]) -> tuple[int, int] | None:
    producer = row_of.get((hop["producer"]["trace_id"], hop["producer"]["span_id"]))
    consumer = row_of.get((hop["consumer"]["trace_id"], hop["consumer"]["span_id"]))
    return None if producer is None or consumer is None else (producer, consumer)


def _hover(span: FlowSpan, shared: Mapping[str, SharedTrace]) -> str:
    """The bar's hover box: the whole label (wrapped), kind, duration, trace, whether a batch shares it,
    and the error if any."""
    lines = [
        f"<b>{plotly_hover(span_label(span))}</b>",
        f"{span['kind'].lower()} · {span['duration_ms']:.1f} ms",
        f"trace {span['trace_id']}",
    ]
    batch = shared.get(span["trace_id"])
    if batch is not None:
        lines.append(shared_text(batch))
    if is_error(span):
        lines.append(plotly_hover(f"error: {span['status']['message'] or 'status ERROR'}"))
    if retry_text(span):
        lines.append(retry_text(span))
    return "<br>".join(lines)
