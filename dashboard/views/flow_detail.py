"""One flow (``?flow=ID``): its summary, the waterfall of all its spans as a tree across its traces with the
queue waits between them and its critical path, beside it one span's attributes, events, links and resource
(``&span=ID``, chosen by a click on its bar), the critical path as a list, and the flow as OTLP JSON to
download."""

from __future__ import annotations

import functools
import json

import pandas as pd
import streamlit as st

from hopscope.collector.model.critical_path import (
    PathSegment,
    SpanKey,
    TreeRow,
    critical_path,
    flow_tree,
)
from hopscope.collector.model.fate import Fate, MessageFate
from hopscope.collector.model.flows import Attributes, AttributeValue, FlowDetail, FlowSpan
from hopscope.dashboard import data, url_state
from hopscope.dashboard.format import format_ms
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import (
    LABEL_CHARS,
    markdown_label,
    markdown_names,
    markdown_text,
    shorten,
    whole_text,
)
from hopscope.dashboard.time_range import refresh_interval
from hopscope.dashboard.waterfall import (
    SHARED_MARK,
    is_error,
    receive_count,
    shared_text,
    span_label,
    span_of_selection,
    waterfall_figure,
)

context = page_context()
st.title("Flow")


def _write_span(key: str) -> None:
    url_state.put("span", st.session_state[key])


def _span_select_key(flow_id: int, span_id: str) -> str:
    """The span list's key: a new list whenever the URL names another span (a click on a bar, a link), so
    that it shows that span rather than what the browser last chose in it."""
    return f"span_select_{flow_id}_{span_id}"


def _chart_key(flow_id: int) -> str:
    return f"waterfall_{flow_id}"


def _collapsed_key(flow_id: int) -> str:
    return f"collapsed_{flow_id}"


def _chart_clicked(flow_id: int) -> None:
    """A click on a span's bar (or label) selects that span: into the URL, and the span list follows."""
    state = st.session_state[_chart_key(flow_id)]
    span_id = span_of_selection(state["selection"]["points"])
    if span_id is not None:
        url_state.put("span", span_id)


def collapsed_spans(flow_id: int) -> set[SpanKey]:
    """The spans of this flow whose children the waterfall hides (this session's state, per flow)."""
    chosen: set[SpanKey] = st.session_state.setdefault(_collapsed_key(flow_id), set())
    return chosen


def _toggle(flow_id: int, key: SpanKey) -> None:
    collapsed = collapsed_spans(flow_id)
    collapsed.symmetric_difference_update({key})


def _expand_all(flow_id: int) -> None:
    collapsed_spans(flow_id).clear()


def selected_span(detail: FlowDetail) -> FlowSpan:
    """The span the URL names (``&span=ID``), else the flow's first."""
    wanted = url_state.text("span")
    return next((span for span in detail.spans if span["span_id"] == wanted), detail.spans[0])


def _text(value: AttributeValue) -> str:
    """Attribute values as text for one table column (they mix strings, numbers, booleans and lists)."""
    return value if isinstance(value, str) else json.dumps(value)


def _attribute_table(attributes: Attributes) -> pd.DataFrame:
    rows = [{"key": key, "value": _text(value)} for key, value in sorted(attributes.items())]
    return pd.DataFrame(rows, columns=["key", "value"])  # type: ignore[no-any-return, unused-ignore]


# A heading names a span or an entry in up to this many characters; the whole name is on hover.
HEADING_CHARS = 2 * LABEL_CHARS


def heading(text: str, suffix: str = "") -> None:
    """A bold line naming ``text`` (span data: shown as text), shortened, the whole of it on hover;
    ``suffix`` is Markdown of the page's own."""
    label = markdown_label(text, HEADING_CHARS) or "(no name)"
    st.markdown(f"**{label}**{suffix}", help=whole_text(text, HEADING_CHARS))


def summary(detail: FlowDetail) -> None:
    flow = detail.summary
    retried = sum(1 for span in detail.spans if receive_count(span) > 1)
    entry = f"{flow.entry_service} · {flow.entry_operation}" if flow.entry_service else "entry unknown"
    st.subheader(markdown_label(entry, HEADING_CHARS), anchor=False, help=whole_text(entry, HEADING_CHARS))
    if detail.entry_called_from_outside:
        st.caption(
            "called with a trace context from outside",
            help="The entry span's parent never reached hopscope: the caller passed a traceparent.",
        )
    cells = st.columns(5)
    cells[0].metric("Duration", format_ms(flow.duration_ms))
    cells[1].metric("Services", len(flow.services), help=markdown_text("\n".join(flow.services)))
    cells[2].metric("Spans", flow.span_count, help=f"in {flow.trace_count} trace(s)")
    cells[3].metric("Errors", flow.error_count)
    cells[4].metric("Max receive count", flow.max_receive_count, help=f"{retried} span(s) processed a retry")
    started = data.to_datetime(flow.start_unix_nano)
    parts = [f"Started {started:%Y-%m-%d %H:%M:%S} UTC", f"services: {markdown_names(flow.services)}"]
    if flow.correlation_ids:
        parts.append(f"correlation ids: {markdown_names(flow.correlation_ids)}")
    st.caption(" · ".join(parts))
    if detail.truncated:
        st.warning(
            f"Showing the first {len(detail.spans)} spans of {flow.span_count}: the flow is larger than one "
            "answer holds. The summary above counts them all; the download holds the same first spans.",
            icon=":material/content_cut:",
        )


def expired_notice(detail: FlowDetail) -> None:
    """A flow partly expired: which part is gone (the summary above still counts it)."""
    gone = detail.expired_span_count
    if not gone:
        return
    kept = detail.retained_since_unix_nano
    since = "" if kept is None else f" Spans are kept from {data.to_datetime(kept):%Y-%m-%d %H:%M:%S} UTC on."
    st.info(
        f"Partly expired: {gone} of the {detail.summary.span_count} spans this flow counts are no longer "
        f"stored (older than the collector's --retention); the waterfall and the table show the "
        f"{len(detail.spans)} that remain.{since}",
        icon=":material/history_toggle_off:",
    )


# A shared batch offers buttons to at most this many of the other flows it processed messages of.
SHARED_FLOW_BUTTONS = 8


def shared_batches(detail: FlowDetail) -> None:
    """Each batch this flow shares: one invocation processed its message with others, so its spans are in
    every one of those flows (counted in each summary); the other flows can be opened from here."""
    for batch in detail.shared_traces:
        spans = sum(1 for span in detail.spans if span["trace_id"] == batch["trace_id"])
        with st.container(border=True):
            st.markdown(
                f"{shared_text(batch)}: {spans} span{'s' * (spans != 1)} of trace `{batch['trace_id']}`",
                help="A Lambda invocation (or any consumer span linking to several messages) processed this "
                "flow's message together with other messages. Its spans belong to each of their flows; "
                "they are marked ⇶ in the waterfall.",
            )
            others = batch["other_flow_ids"]
            if not others:
                continue
            cells = st.columns(min(len(others), SHARED_FLOW_BUTTONS) + 1)
            for cell, other in zip(cells, others[:SHARED_FLOW_BUTTONS], strict=False):
                if cell.button(f"Flow {other}", key=f"shared_{batch['trace_id']}_{other}"):
                    url_state.put("flow", str(other))
                    url_state.remove("span")
                    st.rerun()
            if len(others) > SHARED_FLOW_BUTTONS:
                cells[-1].caption(f"and {len(others) - SHARED_FLOW_BUTTONS} more")


_FATE_ICONS = {
    Fate.DEAD_LETTERED.value: ":material/report:",
    Fate.REDRIVEN.value: ":material/replay:",
    Fate.DUPLICATE.value: ":material/content_copy:",
    Fate.RETRIED.value: ":material/autorenew:",
    Fate.PROCESSED.value: ":material/check_circle:",
    Fate.FAILED.value: ":material/error:",
    Fate.NO_PROCESSING.value: ":material/help:",
}


def _fate_line(message: MessageFate) -> str:
    """One message's fate as one line of plain text: its id, its destination, what became of it."""
    name = message["message_id"] or "a message without an id"
    where = f" to {message['destination']}" if message["destination"] else ""
    return f"{name}{where}: {message['summary']}"


def message_fates(flow_id: int) -> None:
    """What became of each message of the flow (model/fate.py), each as a line of text; span data and queue
    names are shown as the characters they hold."""
    messages = data.message_fates(context.db, flow_id)
    if not messages:
        return
    st.subheader(
        "Messages",
        anchor=False,
        help="What became of each message the flow sent: processed, retried, in a dead-letter queue now, "
        "redriven, delivered twice, or gone without a trace of processing.",
    )
    for message in messages:
        icon = _FATE_ICONS.get(message["fate"], "")
        st.markdown(f"{icon} {markdown_text(_fate_line(message))}")
        details = []
        if message["retries"]:
            details.append(f"retried {message['retries']} time(s)")
        if message["redrive_spans"]:
            spans = ", ".join(ref["span_id"] for ref in message["retry_spans"]) or "none yet"
            details.append(f"the retry's spans: {spans}")
        if details:
            st.caption(markdown_text("; ".join(details)))


def span_table(detail: FlowDetail) -> None:
    """Every span as a row, for searching and copying ids (the waterfall is what one looks at)."""
    origin = min(span["start_unix_nano"] for span in detail.spans)
    shared = {batch["trace_id"] for batch in detail.shared_traces}
    rows = [
        {
            "shared": SHARED_MARK.strip() if span["trace_id"] in shared else "",
            "service": span["service"],
            "name": span["name"],
            "kind": span["kind"],
            "start_ms": (span["start_unix_nano"] - origin) / 1e6,
            "duration_ms": span["duration_ms"],
            "status": span["status"]["code"],
            "receive_count": receive_count(span) or None,
            "span_id": span["span_id"],
            "trace_id": span["trace_id"],
        }
        for span in detail.spans
    ]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "start_ms": st.column_config.NumberColumn("Start +ms", format="%.1f"),
            "duration_ms": st.column_config.NumberColumn("Duration ms", format="%.1f"),
            "receive_count": st.column_config.NumberColumn("Receive #"),
        },
    )


def links(flow_id: int, span: FlowSpan, by_id: dict[tuple[str, str], FlowSpan]) -> None:
    """Each link names its span; a link into another flow can open that flow."""
    for index, link in enumerate(span["links"]):
        target = by_id.get((link["trace_id"], link["span_id"]))
        other = None if target is not None else data.flow_of_trace(context.db, link["trace_id"])
        where = f"`{link['trace_id']}` / `{link['span_id']}`"
        if target is not None:
            st.markdown(f"→ {markdown_label(span_label(target))} ({where}), in this flow")
        elif other is None:
            st.markdown(f"→ {where}: trace not stored")
        elif other == flow_id:
            st.markdown(f"→ {where}, in this flow (the span itself is not stored)")
        else:
            left, right = st.columns([3, 1])
            left.markdown(f"→ {where}, in flow {other}")
            if right.button(f"Open flow {other}", key=f"link_{span['span_id']}_{index}"):
                url_state.put("flow", str(other))
                url_state.remove("span")
                st.rerun()
        if link["attributes"]:
            st.dataframe(_attribute_table(link["attributes"]), hide_index=True, width="stretch")


def span_panel(flow_id: int, detail: FlowDetail) -> None:
    by_id = {(span["trace_id"], span["span_id"]): span for span in detail.spans}
    span_ids = [span["span_id"] for span in detail.spans]
    labels = {span["span_id"]: span for span in detail.spans}
    wanted = selected_span(detail)["span_id"]
    key = _span_select_key(flow_id, wanted)
    chosen = st.selectbox(
        "Span",
        span_ids,
        index=span_ids.index(wanted),
        help="Or click a span's bar in the waterfall.",
        format_func=lambda span_id: f"{shorten(span_label(labels[span_id]), HEADING_CHARS)} · {span_id}",
        key=key,
        on_change=_write_span,
        args=(key,),
    )
    span = labels[chosen if chosen is not None else span_ids[0]]
    status = span["status"]
    heading(span_label(span), f" · {span['kind'].lower()} · {span['duration_ms']:.1f} ms")
    if is_error(span):
        st.error(markdown_text(status["message"] or "status ERROR"), icon=":material/error:")
    attributes_tab, events_tab, links_tab, resource_tab = st.tabs(
        [
            f"Attributes ({len(span['attributes'])})",
            f"Events ({len(span['events'])})",
            f"Links ({len(span['links'])})",
            "Resource",
        ]
    )
    with attributes_tab:
        st.dataframe(_attribute_table(span["attributes"]), hide_index=True, width="stretch")
    with events_tab:
        if not span["events"]:
            st.caption("No events.")
        for event in span["events"]:
            offset = (event["time_unix_nano"] - span["start_unix_nano"]) / 1e6
            heading(event["name"], f" at +{offset:.1f} ms")
            st.dataframe(_attribute_table(event["attributes"]), hide_index=True, width="stretch")
    with links_tab:
        if not span["links"]:
            st.caption("No links.")
        links(flow_id, span, by_id)
    with resource_tab:
        st.dataframe(_attribute_table(span["resource"]), hide_index=True, width="stretch")
        scope = span["scope"]
        st.caption(f"Scope: {markdown_label(scope['name'])} {markdown_label(scope['version'])}".strip())


@st.fragment(run_every=refresh_interval())
def flow_page(flow_id: int) -> None:
    detail = data.flow_detail(context.db, flow_id)
    if detail is None:
        st.warning(
            f"No flow {flow_id} is stored: there is no such flow, or it has expired. With the collector's "
            "--retention, a flow is deleted with its spans once its last span is older than the retention.",
            icon=":material/search_off:",
        )
        return
    summary(detail)
    expired_notice(detail)
    if not detail.spans:  # every span stored is larger than one answer holds
        return
    message_fates(flow_id)
    shared_batches(detail)
    otlp = data.flow_otlp_json(context.db, flow_id)
    if otlp is not None:
        st.download_button(
            "Download the flow as OTLP JSON",
            otlp,
            file_name=f"hopscope-flow-{flow_id}.otlp.json",
            mime="application/json",
            on_click="ignore",
            icon=":material/download:",
        )
    st.subheader("Waterfall")
    tree = flow_tree(detail.spans, detail.hops)
    path = critical_path(detail.spans, detail.hops)
    chart, side = st.columns([5, 3], gap="medium")
    with chart:
        waterfall(flow_id, detail, tree, path)
    with side:
        span_panel(flow_id, detail)
    critical_path_list(detail, path)
    with st.expander(f"All {len(detail.spans)} spans as a table"):
        span_table(detail)


def waterfall(flow_id: int, detail: FlowDetail, tree: list[TreeRow], path: list[PathSegment]) -> None:
    """The chart (a click on a bar selects its span), and the buttons that fold the selected span's
    children away or open every span again."""
    collapsed = collapsed_spans(flow_id)
    chosen = selected_span(detail)
    st.plotly_chart(
        waterfall_figure(detail, collapsed, chosen["span_id"], tree=tree, path=path),
        width="stretch",
        key=_chart_key(flow_id),
        on_select=functools.partial(_chart_clicked, flow_id),
        selection_mode="points",
    )
    rows = {row.key: row for row in tree}
    key = (chosen["trace_id"], chosen["span_id"])
    left, right = st.columns(2)
    children = rows[key].child_count
    if children:
        folded = key in collapsed
        left.button(
            f"{'Expand' if folded else 'Collapse'} the selected span's {children} "
            f"{'child' if children == 1 else 'children'}",
            key=f"toggle_{flow_id}",
            on_click=_toggle,
            args=(flow_id, key),
            icon=":material/unfold_more:" if folded else ":material/unfold_less:",
        )
    if collapsed:
        right.button(
            "Expand all",
            key=f"expand_all_{flow_id}",
            on_click=_expand_all,
            args=(flow_id,),
            icon=":material/expand:",
        )
    st.caption(
        "One row per span, under its parent; a trace that consumed a message hangs under the span that "
        "sent it. Bars are coloured by service; grey hatched bars are the time a message waited in its "
        "queue or topic; the thin dark bars are the critical path; a red outline and ✕ mark an error; ⇶ "
        "marks the spans of a batch shared with other flows. Click a bar to see its span."
    )


def critical_path_list(detail: FlowDetail, segments: list[PathSegment]) -> None:
    """The critical path as a table: each segment, what it is (span data, shown as text), its time and its
    share of the flow."""
    if not segments:
        return
    by_id = {(span["trace_id"], span["span_id"]): span for span in detail.spans}
    total = segments[-1].end_unix_nano - segments[0].start_unix_nano
    rows = []
    for index, segment in enumerate(segments, start=1):
        span = by_id.get(segment.span) if segment.span is not None else None
        if segment.kind == "wait" and segment.hop is not None:
            what = f"queue wait {segment.hop['destination']}"
        elif segment.kind == "span" and span is not None:
            what = span_label(span)
        else:
            what = "no span (between traces)"
        rows.append(
            {
                "segment": index,
                "what": what,
                "duration_ms": segment.duration_ns / 1e6,
                "share": 100 * segment.duration_ns / total,
                "span": segment.span[1] if segment.kind == "span" and segment.span else "",
            }
        )
    st.subheader(
        "Critical path",
        anchor=False,
        help="The chain of spans and queue waits that made the flow take as long as it did, across its "
        "traces: walking back from the flow's last end, each step follows the child (or consumer) that "
        "ended last. Shortening anything off this path would not make the flow faster.",
    )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "segment": st.column_config.NumberColumn("#"),
            "what": st.column_config.TextColumn("Segment"),
            "duration_ms": st.column_config.NumberColumn("Duration ms", format="%.1f"),
            "share": st.column_config.ProgressColumn(
                "Share of the flow", format="%.0f%%", min_value=0, max_value=100
            ),
            "span": st.column_config.TextColumn("Span id"),
        },
    )


current = url_state.positive_int("flow")
if current is None:
    st.info(
        "No flow chosen. Type a flow id, trace id, correlation id or message id into the sidebar's "
        "**Find a flow** box, or pick a flow on the Flows page.",
        icon=":material/search:",
    )
    st.page_link("views/flows.py", label="Search flows", icon=":material/route:")
else:
    flow_page(current)
