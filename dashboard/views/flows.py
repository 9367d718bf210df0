"""Flows: search by service, operation, correlation id, message id, status, duration and attribute.

The search is kept in the URL with the names of ``GET /api/flows`` (``?correlation_id=o-3&status=error``),
so a link opens the page already searching; choosing a row opens the flow (``flow_detail?flow=ID``).
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from hopscope.collector.model.fate import FateFilter
from hopscope.collector.model.flows import FlowFilter, FlowSort
from hopscope.collector.query.params import (
    FATE_PARAMS,
    MAX_LIMIT,
    parse_fate_filters_leniently,
    parse_flow_filter_leniently,
)
from hopscope.dashboard import data, url_state
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_label
from hopscope.dashboard.service_map_routes import HOP_PARAM, hop_text
from hopscope.dashboard.time_range import URL_PARAMS, refresh_interval

context = page_context()
st.title("Flows")

SORTS = {FlowSort.START.value: "Newest first", FlowSort.DURATION.value: "Slowest first"}
DEFAULT_LIMIT = FlowFilter().limit
# The search's parameters of GET /api/flows that the page keeps in its URL (and ``attr``, repeated); the
# time range is the sidebar's, and the page has no paging.
SEARCH_PARAMS = (
    "service", "operation", "correlation_id", "message_id", "status", "min_duration_ms", "sort", "limit",
)  # fmt: skip


def criteria_from_url(since: int, until: int) -> FlowFilter:
    """The FlowFilter the URL describes, parsed as ``GET /api/flows`` parses it, over the sidebar's time range
    (what the API would refuse is left out)."""
    params = {name: url_state.text(name) for name in SEARCH_PARAMS}
    criteria = parse_flow_filter_leniently(params, url_state.texts("attr"))
    return dataclasses.replace(criteria, since_unix_nano=since, until_unix_nano=until)


def fates_from_url() -> frozenset[FateFilter]:
    """The fate filters of the URL (``?dead_lettered=true&duplicates=true``, as ``GET /api/flows``)."""
    return parse_fate_filters_leniently({name: url_state.text(name) for name in FATE_PARAMS})


def search_form(criteria: FlowFilter, services: list[str], fates: frozenset[FateFilter]) -> None:
    """The form mirrors the FlowFilter; submitting writes it to the URL (and the page searches again)."""
    with st.form("flow_search", border=True):
        first = st.columns(4)
        options = ["", *sorted({*services, *([criteria.service] if criteria.service else [])})]
        service = first[0].selectbox(
            "Service",
            options,
            index=options.index(criteria.service or ""),
            format_func=lambda name: name or "any",
        )
        operation = first[1].text_input("Operation", criteria.operation or "", placeholder="POST /orders")
        correlation_id = first[2].text_input("Correlation id", criteria.correlation_id or "")
        message_id = first[3].text_input("Message id", criteria.message_id or "")
        second = st.columns(4)
        attribute = second[0].text_input(
            "Attribute",
            ", ".join(f"{key}:{value}" for key, value in criteria.attributes),
            placeholder="key:value, key:value",
            help="Span attributes, each as key:value; a flow must have them all.",
        )
        min_duration = second[1].number_input(
            "Min duration (ms)", min_value=0.0, value=criteria.min_duration_ms, step=100.0
        )
        sort = second[2].selectbox(
            "Sort", list(SORTS), index=list(SORTS).index(criteria.sort.value), format_func=SORTS.__getitem__
        )
        limit = second[3].number_input("Limit", min_value=1, max_value=MAX_LIMIT, value=criteria.limit)
        toggles = st.columns(3)
        errors_only = toggles[0].toggle("Errors only", value=criteria.errors_only)
        dead_lettered = toggles[1].toggle(
            "In a dead-letter queue",
            value=FateFilter.DEAD_LETTERED in fates,
            help="Flows with a message in a dead-letter queue now (as the SQS poller last saw it).",
        )
        duplicates = toggles[2].toggle(
            "Delivered twice",
            value=FateFilter.DUPLICATES in fates,
            help="Flows with a message processed successfully more than once by the same consumer.",
        )
        if st.form_submit_button("Search", icon=":material/search:", type="primary"):
            url_state.put_all(
                {
                    "service": service,
                    "operation": operation.strip(),
                    "correlation_id": correlation_id.strip(),
                    "message_id": message_id.strip(),
                    "status": "error" if errors_only else None,
                    "min_duration_ms": f"{min_duration:g}" if min_duration else None,
                    "attr": [pair.strip() for pair in attribute.split(",") if ":" in pair],
                    "sort": FlowSort.DURATION.value if sort == FlowSort.DURATION.value else None,
                    "limit": str(limit) if limit != DEFAULT_LIMIT else None,
                    "dead_lettered": "true" if dead_lettered else None,
                    "duplicates": "true" if duplicates else None,
                    # the map's hop stands for its service: another service is another search
                    HOP_PARAM: url_state.text(HOP_PARAM) if service == criteria.service else None,
                }
            )
            st.rerun()


def describe(criteria: FlowFilter, fates: frozenset[FateFilter] = frozenset()) -> str:
    """The active search in words, under the form: what the table is the answer to. Its values come from
    the URL (a shared link) or from span data: Markdown-escaped."""
    parts = [
        f"{label} {markdown_label(value)}"
        for label, value in (
            ("in service", criteria.service),
            ("with operation", criteria.operation),
            ("with correlation id", criteria.correlation_id),
            ("with message id", criteria.message_id),
        )
        if value
    ]
    parts += [f"with {markdown_label(key)}={markdown_label(value)}" for key, value in criteria.attributes]
    hop = url_state.text(HOP_PARAM)
    if hop:
        parts.append(f"(the service map's hop {markdown_label(hop_text(hop))})")
    if criteria.min_duration_ms:
        parts.append(f"lasting {criteria.min_duration_ms:g} ms or more")
    if criteria.errors_only:
        parts.append("with errors")
    if FateFilter.DEAD_LETTERED in fates:
        parts.append("with a message in a dead-letter queue")
    if FateFilter.DUPLICATES in fates:
        parts.append("with a duplicate delivery")
    return " " + ", ".join(parts) if parts else ""


def open_flow(flow_id: int) -> None:
    """Switch to the flow page, keeping the time range and auto-refresh of this page's URL."""
    st.switch_page(
        f"views/{url_state.FLOW_PAGE}.py", query_params={**url_state.kept(URL_PARAMS), "flow": str(flow_id)}
    )


@st.fragment(run_every=refresh_interval())
def flows() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    criteria = criteria_from_url(since, until)
    services = data.services_frame(context.db, since, until)["service"].tolist()
    fates = fates_from_url()
    search_form(criteria, services, fates)
    found = data.flows_frame(context.db, criteria, fates)
    if found.empty:
        st.caption("No flows match in this time range.")
        return
    more = " (the limit: there may be more)" if len(found) == criteria.limit else ""
    st.caption(f"{len(found)} flow(s){describe(criteria, fates)}{more}. Click a row to open its flow.")
    table = found.assign(link=[url_state.flow_link(flow_id) for flow_id in found["flow_id"]])
    longest = float(found["duration_ms"].max()) or 1.0
    event = st.dataframe(
        table[["link", "start", "duration_ms", "entry", "services", "spans", "traces", "errors",
               "max_receive_count", "dead_lettered", "duplicate_deliveries", "correlation_ids"]],
        hide_index=True,
        width="stretch",
        key="flows_table",
        on_select="rerun",
        # a click on any cell opens the row's flow (a row's checkbox does too)
        selection_mode=["single-row", "single-cell"],
        column_config={
            "link": url_state.flow_link_column(),
            "start": st.column_config.DatetimeColumn("Start", format="YYYY-MM-DD HH:mm:ss"),
            "duration_ms": st.column_config.ProgressColumn(
                "Duration ms", format="%.1f", min_value=0, max_value=longest
            ),
            "entry": st.column_config.TextColumn("Entry"),
            "services": st.column_config.TextColumn("Services"),
            "spans": st.column_config.NumberColumn("Spans"),
            "traces": st.column_config.NumberColumn("Traces"),
            "errors": st.column_config.NumberColumn("Errors"),
            "max_receive_count": st.column_config.NumberColumn("Max receives"),
            "dead_lettered": st.column_config.NumberColumn(
                "In DLQ", help="messages of the flow in a dead-letter queue now"
            ),
            "duplicate_deliveries": st.column_config.NumberColumn(
                "Duplicates", help="successful deliveries after a message's first, to the same consumer"
            ),
            "correlation_ids": st.column_config.TextColumn("Correlation ids"),
        },
    )  # fmt: skip
    rows = [*event.selection.rows, *(row for row, _ in event.selection.cells)]
    if rows and 0 <= rows[0] < len(found):
        open_flow(int(found["flow_id"].iloc[rows[0]]))


flows()
