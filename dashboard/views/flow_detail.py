"""One flow (``?flow=ID``): its summary, the waterfall of all its spans as a tree across its traces with the
queue waits between them and its critical path, beside it one span's attributes, events, links and resource
(``&span=ID``, chosen by a click on its bar), the flow's log lines under it (each a marker on its span's row;
a click on a span shows only its lines, ``&lines=span``; a click on a line highlights its span), the critical
path as a list, and the flow as OTLP JSON to download."""

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
from hopscope.collector.model.logs import MAX_ANSWER_LOGS, LogLine
from hopscope.collector.query.layer import LogAnswer
from hopscope.dashboard import data, url_state
from hopscope.dashboard.format import format_ms
from hopscope.dashboard.log_lines import LOGS_OFF_HINT, emphasised, level_text, line_details
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
        url_state.put(LINES_PARAM, SPAN_LINES)  # the log list shows that span's lines


# ``&lines=span``: the log list shows only the selected span's lines (a click on a span sets it).
LINES_PARAM = "lines"
SPAN_LINES = "span"


def _lines_key(flow_id: int, span_filter: str | None) -> str:
    """The log list's key: a new list (no line chosen) whenever it shows other lines."""
    return f"log_lines_{flow_id}_{span_filter or 'all'}"


def lines_filter(detail: FlowDetail) -> str | None:
    """The span whose lines alone the list shows (``&lines=span``: the selected span's), or None: all."""
    return selected_span(detail)["span_id"] if url_state.text(LINES_PARAM) == SPAN_LINES else None


def picked_line(key: str, lines: list[LogLine]) -> LogLine | None:
    """The line chosen in the log list (its selection, from this session's state), if any."""
    state = st.session_state.get(key)
    selection = state.get("selection", {}) if state else {}
    rows = [*selection.get("rows", []), *(cell[0] for cell in selection.get("cells", []))]
    return lines[rows[0]] if rows and 0 <= rows[0] < len(lines) else None


def _line_clicked(key: str, lines: list[LogLine], known: frozenset[str]) -> None:
    """A click on a line selects its span (the waterfall highlights its row, the panel shows the span)."""
    line = picked_line(key, lines)
    if line is not None and line.span_id in known:
        url_state.put("span", line.span_id)


def _all_lines() -> None:
    url_state.remove(LINES_PARAM)


def _span_lines() -> None:
    url_state.put(LINES_PARAM, SPAN_LINES)


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
                    url_state.remove("span", LINES_PARAM)
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
                url_state.remove("span", LINES_PARAM)
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
    answer = data.flow_logs(context.db, flow_id)
    logs = [] if answer is None else answer.lines
    span_filter = lines_filter(detail)
    listed = [line for line in logs if span_filter is None or line.span_id == span_filter]
    picked = picked_line(_lines_key(flow_id, span_filter), listed)
    chart, side = st.columns([5, 3], gap="medium")
    with chart:
        waterfall(flow_id, detail, tree, path, logs=logs, picked=picked)
    with side:
        span_panel(flow_id, detail)
    log_list(flow_id, detail, answer=answer, listed=listed, span_filter=span_filter, picked=picked)
    critical_path_list(detail, path)
    with st.expander(f"All {len(detail.spans)} spans as a table"):
        span_table(detail)


def waterfall(
    flow_id: int,
    detail: FlowDetail,
    tree: list[TreeRow],
    path: list[PathSegment],
    *,
    logs: list[LogLine],
    picked: LogLine | None,
) -> None:
    """The chart (a click on a bar selects its span), and the buttons that fold the selected span's
    children away or open every span again."""
    collapsed = collapsed_spans(flow_id)
    chosen = selected_span(detail)
    st.plotly_chart(
        waterfall_figure(
            detail, collapsed, chosen["span_id"], tree=tree, path=path, logs=logs, picked=picked
        ),
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
        "marks the spans of a batch shared with other flows; ◆ are log lines (red: an error). Click a "
        "bar to see its span and its log lines."
    )


def log_list(
    flow_id: int,
    detail: FlowDetail,
    *,
    answer: LogAnswer | None,
    listed: list[LogLine],
    span_filter: str | None,
    picked: LogLine | None,
) -> None:
    """The flow's log lines under the waterfall, oldest first: time since the flow started, level, service,
    span, logger, body (text cells; errors red and marked ✖). A click on a line highlights its span."""
    st.subheader(
        "Log lines",
        anchor=False,
        help="Every log record of the flow's traces, across its functions, in time order; each is placed "
        "at its span and time in the waterfall.",
    )
    logs = [] if answer is None else answer.lines
    if not logs:
        st.caption(f"No log lines from this flow's traces. {LOGS_OFF_HINT}")
        return
    by_id = {span["span_id"]: span for span in detail.spans}
    origin = min(span["start_unix_nano"] for span in detail.spans)
    errors = sum(1 for line in listed if line.is_error)
    told = f" · :red[**{errors} error{'s' * (errors != 1)}**]" if errors else ""
    left, right = st.columns([3, 1], vertical_alignment="center")
    if span_filter is not None and span_filter in by_id:
        span = by_id[span_filter]
        left.caption(
            f"{len(listed)} of {len(logs)} lines: those of span {markdown_label(span_label(span))}{told}"
        )
        right.button("All lines", key=f"all_lines_{flow_id}", on_click=_all_lines, icon=":material/list:")
    else:
        left.caption(
            f"{len(logs)} line{'s' * (len(logs) != 1)}, oldest first{told}. Click a line to highlight its "
            "span; click a span in the waterfall to see only its lines."
        )
        right.button(
            "This span's lines",
            key=f"span_lines_{flow_id}",
            on_click=_span_lines,
            icon=":material/filter_alt:",
        )
    if answer is not None and answer.truncated:
        st.warning(
            f"More lines are stored than one answer holds: the first {MAX_ANSWER_LOGS} are shown, the rest "
            f"are not (GET /api/flows/{flow_id}/logs/otlp has the same first ones).",
            icon=":material/content_cut:",
        )
    if not listed:
        st.caption("No log lines of this span.")
        return
    frame = pd.DataFrame(
        [
            {
                "at_ms": (line.time_unix_nano - origin) / 1e6,
                "level": level_text(line),
                "service": line.service,
                "span": span_label(by_id[line.span_id]) if line.span_id in by_id else "",
                "logger": line.scope,
                "body": line.body,
                "span_id": line.span_id,
            }
            for line in listed
        ]
    )
    key = _lines_key(flow_id, span_filter)
    st.dataframe(
        emphasised(frame, listed),
        hide_index=True,
        width="stretch",
        key=key,
        on_select=functools.partial(_line_clicked, key, listed, frozenset(by_id)),
        selection_mode=["single-row", "single-cell"],  # a click on any cell picks its line
        column_config={
            "at_ms": st.column_config.NumberColumn("+ms", format="%.1f", help="since the flow started"),
            "level": st.column_config.TextColumn("Level"),
            "service": st.column_config.TextColumn("Service"),
            "span": st.column_config.TextColumn("Span"),
            "logger": st.column_config.TextColumn("Logger"),
            "body": st.column_config.TextColumn("Body", width="large"),
            "span_id": st.column_config.TextColumn("Span id"),
        },
    )
    if picked is not None:
        home = by_id.get(picked.span_id)
        where = f"span {markdown_label(span_label(home))}" if home is not None else "no span of this flow"
        offset = (picked.time_unix_nano - origin) / 1e6
        line_details(picked, f"+{offset:.1f} ms · {where}")


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
