"""The waterfall of a flow: every span of every trace on one time axis, with the queue waits between them.

Pure (a ``FlowDetail`` in, a plotly ``Figure`` out), so that the page only draws it and a test can read it.
One bar per span, in start order, labelled "service · name" and coloured by service; each async hop's
queue wait is its own grey, hatched segment from the producer's end to the consumer's start; failed spans
have a red outline and an ✕ at their end; a message received more than once says so on its bar; the spans
of a batch that the flow shares with other flows are marked ⇶.

Every name on the chart is span data: Plotly would render the HTML in it, so each goes through
``plain_text.plotly_text``; row labels and legend entries are shortened (``plain_text.shorten``) so that the
bars keep the chart's width, and the whole name is in the bar's hover box.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]
from plotly.colors import qualitative  # type: ignore[import-untyped, unused-ignore]

from hopscope.collector.model import conventions
from hopscope.collector.model.flows import AsyncHop, FlowDetail, FlowSpan, SharedTrace
from hopscope.dashboard.plain_text import LABEL_CHARS, plotly_hover, plotly_text, shorten

ERROR_COLOUR = "#c62828"
WAIT_COLOUR = "rgba(158, 158, 158, 0.45)"
ROW_HEIGHT = 30
QUEUE_WAIT_TRACE = "queue wait"
ERROR_TRACE = "error"
# A legend entry names a service in at most this many characters.
LEGEND_CHARS = 40
# Marks the rows of spans that a batch shares with other flows.
SHARED_MARK = "⇶ "


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


def waterfall_figure(detail: FlowDetail) -> go.Figure:
    """The flow's waterfall; x is milliseconds since the flow's first span started.

    Spans are rows (``y`` is the row number, ``customdata`` the span id, so rows with the same label stay
    apart and a reader can find a span's bar); hops are bars of the ``queue wait`` trace, on the
    consumer's row, with the producer and consumer span ids in ``customdata``.
    """
    spans = detail.spans
    figure = go.Figure()
    if not spans:
        return figure
    origin = min(span["start_unix_nano"] for span in spans)
    row_of = {(span["trace_id"], span["span_id"]): row for row, span in enumerate(spans)}
    shared = {trace["trace_id"]: trace for trace in detail.shared_traces}
    colours = _service_colours([span["service"] for span in spans])

    for service, colour in colours.items():
        rows = [(row, span) for row, span in enumerate(spans) if span["service"] == service]
        figure.add_trace(
            go.Bar(
                name=plotly_text(shorten(service, LEGEND_CHARS)),
                orientation="h",
                y=[row for row, _ in rows],
                base=[(span["start_unix_nano"] - origin) / 1e6 for _, span in rows],
                x=[max(span["duration_ms"], 0.0) for _, span in rows],
                customdata=[span["span_id"] for _, span in rows],
                # an em space first: the error ✕ sits on the bar's end
                text=["\u2003" + retry_text(span) if retry_text(span) else "" for _, span in rows],
                textposition="outside",
                cliponaxis=False,
                marker={
                    "color": colour,
                    "line": {
                        "color": [ERROR_COLOUR if is_error(span) else colour for _, span in rows],
                        "width": [3 if is_error(span) else 0 for _, span in rows],
                    },
                },
                hovertext=[_hover(span, shared) for _, span in rows],
                hoverinfo="text",
            )
        )

    waits = [hop for hop in detail.hops if _hop_rows(hop, row_of) is not None]
    if waits:
        by_id = {(span["trace_id"], span["span_id"]): span for span in spans}
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

    failed = [(row, span) for row, span in enumerate(spans) if is_error(span)]
    if failed:
        figure.add_trace(
            go.Scatter(
                name=ERROR_TRACE,
                mode="markers",
                y=[row for row, _ in failed],
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

    end = max(max(span["end_unix_nano"] for span in spans) - origin, 1) / 1e6
    figure.update_layout(
        barmode="overlay",
        height=120 + ROW_HEIGHT * len(spans),
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        # a bar's text that only fits in a tiny font is left out (its hover box still says it)
        uniformtext={"minsize": 9, "mode": "hide"},
        # room on the right for the retry text of the last bars
        xaxis={"title": "ms since the flow started", "zeroline": False, "range": [-0.02 * end, 1.3 * end]},
        yaxis={
            "tickmode": "array",
            "tickvals": list(range(len(spans))),
            "ticktext": [
                (SHARED_MARK if span["trace_id"] in shared else "")
                + plotly_text(shorten(span_label(span), LABEL_CHARS))
                for span in spans
            ],
            "autorange": "reversed",
        },
    )
    return figure


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
