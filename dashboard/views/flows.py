"""Flows: search by service, operation, correlation id, message id, status, duration and attribute.

The search is kept in the URL with the names of ``GET /api/flows`` (``?correlation_id=o-3&status=error``),
so a link opens the page already searching; choosing a row opens the flow (``flow_detail?flow=ID``).
"""

from __future__ import annotations

import streamlit as st

from hopscope.collector.model.flows import FlowFilter, FlowSort
from hopscope.dashboard import data
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_label
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Flows")

SORTS = {FlowSort.START.value: "Newest first", FlowSort.DURATION.value: "Slowest first"}
DEFAULT_LIMIT = 50


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _limit() -> int:
    value = _number(st.query_params.get("limit"))
    return int(value) if value is not None and 1 <= value <= 1000 else DEFAULT_LIMIT


def _attributes() -> tuple[tuple[str, str], ...]:
    pairs = []
    for pair in st.query_params.get_all("attr"):
        key, sep, value = pair.partition(":")
        if sep and key:
            pairs.append((key, value))
    return tuple(pairs)


def criteria_from_url(since: int, until: int) -> FlowFilter:
    """The FlowFilter the URL describes, over the sidebar's time range (bad values are left out)."""
    sort = st.query_params.get("sort", FlowSort.START.value)
    return FlowFilter(
        since_unix_nano=since,
        until_unix_nano=until,
        service=st.query_params.get("service") or None,
        operation=st.query_params.get("operation") or None,
        correlation_id=st.query_params.get("correlation_id") or None,
        message_id=st.query_params.get("message_id") or None,
        errors_only=st.query_params.get("status") == "error",
        min_duration_ms=_number(st.query_params.get("min_duration_ms")),
        attributes=_attributes(),
        sort=FlowSort(sort) if sort in SORTS else FlowSort.START,
        limit=_limit(),
    )


def search_form(criteria: FlowFilter, services: list[str]) -> None:
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
        limit = second[3].number_input("Limit", min_value=1, max_value=1000, value=criteria.limit)
        errors_only = st.toggle("Errors only", value=criteria.errors_only)
        if st.form_submit_button("Search", icon=":material/search:", type="primary"):
            values: dict[str, str | list[str]] = {
                "service": service or "",
                "operation": operation.strip(),
                "correlation_id": correlation_id.strip(),
                "message_id": message_id.strip(),
                "status": "error" if errors_only else "",
                "min_duration_ms": f"{min_duration:g}" if min_duration else "",
                "attr": [pair.strip() for pair in attribute.split(",") if ":" in pair],
                "sort": FlowSort.DURATION.value if sort == FlowSort.DURATION.value else "",
                "limit": str(limit) if limit != DEFAULT_LIMIT else "",
            }
            for name, value in values.items():
                if value:
                    st.query_params[name] = value
                elif name in st.query_params:
                    del st.query_params[name]
            st.rerun()


def describe(criteria: FlowFilter) -> str:
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
    if criteria.min_duration_ms:
        parts.append(f"lasting {criteria.min_duration_ms:g} ms or more")
    if criteria.errors_only:
        parts.append("with errors")
    return " " + ", ".join(parts) if parts else ""


def open_flow(flow_id: int) -> None:
    """Switch to the flow page, keeping the time range and auto-refresh of this page's URL."""
    keep = {name: st.query_params[name] for name in ("range", "refresh") if name in st.query_params}
    st.switch_page("views/flow_detail.py", query_params={**keep, "flow": str(flow_id)})


@st.fragment(run_every=refresh_interval())
def flows() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    criteria = criteria_from_url(since, until)
    services = data.services_frame(context.db, since, until)["service"].tolist()
    search_form(criteria, services)
    found = data.flows_frame(context.db, criteria)
    if found.empty:
        st.caption("No flows match in this time range.")
        return
    more = " (the limit: there may be more)" if len(found) == criteria.limit else ""
    st.caption(f"{len(found)} flow(s){describe(criteria)}{more}. Choose a row to open the flow.")
    table = found.assign(link=[f"flow_detail?flow={flow_id}" for flow_id in found["flow_id"]])
    longest = float(found["duration_ms"].max()) or 1.0
    event = st.dataframe(
        table[["link", "start", "duration_ms", "entry", "services", "spans", "traces", "errors",
               "max_receive_count", "correlation_ids"]],
        hide_index=True,
        width="stretch",
        key="flows_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "link": st.column_config.LinkColumn("Flow", display_text=r"flow_detail\?flow=(\d+)"),
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
            "correlation_ids": st.column_config.TextColumn("Correlation ids"),
        },
    )  # fmt: skip
    rows = event.selection.rows
    if rows and rows[0] < len(found):
        open_flow(int(found["flow_id"].iloc[rows[0]]))


flows()
