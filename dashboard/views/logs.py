"""Logs: search the log lines of every function by correlation id, service, lowest severity and text, over
the sidebar's time range, newest first; each line links to its flow.

The search is kept in the URL with the names of ``GET /api/logs`` (``?correlation_id=o-3&severity=error&q=
card``), so a link opens the page already searching. Bodies, loggers and services are shown as text (table
cells, ``st.code``), never as Markdown.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from hopscope.collector.model.logs import MAX_ANSWER_LOGS, SEVERITY_RANGES, LogFilter, LogLine
from hopscope.collector.query.params import DEFAULT_LOG_LIMIT, MAX_LOG_TEXT
from hopscope.dashboard import data, url_state
from hopscope.dashboard.log_lines import LOGS_OFF_HINT, emphasised, level_text, line_details
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.plain_text import markdown_label
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Logs")

# ``?severity=`` takes a range's name, lower-case as GET /api/logs does: that range and every higher one.
SEVERITIES = ["", *(name.lower() for name in SEVERITY_RANGES)]


def criteria_from_url(since: int, until: int) -> LogFilter:
    """The LogFilter the URL describes over the sidebar's time range, newest first; what ``GET /api/logs``
    would refuse (an unknown severity, a limit out of range) is left out, too long a text cut."""
    severity = url_state.choice("severity", SEVERITIES, "")
    limit = url_state.positive_int("limit") or DEFAULT_LOG_LIMIT
    return LogFilter(
        correlation_id=url_state.text("correlation_id").strip() or None,
        service=url_state.text("service").strip() or None,
        min_severity=SEVERITY_RANGES[severity.upper()] if severity else None,
        text=url_state.text("q")[:MAX_LOG_TEXT] or None,
        since_unix_nano=since,
        until_unix_nano=until,
        limit=min(limit, MAX_ANSWER_LOGS),
        newest_first=True,
    )


def _severity_name(criteria: LogFilter) -> str:
    return next(
        (name.lower() for name, first in SEVERITY_RANGES.items() if first == criteria.min_severity), ""
    )


def search_form(criteria: LogFilter, services: list[str]) -> None:
    """The form mirrors the LogFilter; submitting writes it to the URL (and the page searches again)."""
    with st.form("log_search", border=True):
        first = st.columns([3, 2, 2, 3, 1])
        correlation_id = first[0].text_input("Correlation id", criteria.correlation_id or "")
        options = ["", *sorted({*services, *([criteria.service] if criteria.service else [])})]
        service = first[1].selectbox(
            "Service",
            options,
            index=options.index(criteria.service or ""),
            format_func=lambda name: name or "any",
            accept_new_options=True,
            help="A service that sent spans in this time range, or type any service name.",
        )
        severity = first[2].selectbox(
            "Severity",
            SEVERITIES,
            index=SEVERITIES.index(_severity_name(criteria)),
            format_func=lambda name: f"{name.upper()} and above" if name else "any",
        )
        text = first[3].text_input(
            "Text", criteria.text or "", max_chars=MAX_LOG_TEXT, help="A part of the body, any case."
        )
        limit = first[4].number_input("Limit", min_value=1, max_value=MAX_ANSWER_LOGS, value=criteria.limit)
        if st.form_submit_button("Search", icon=":material/search:", type="primary"):
            url_state.put_all(
                {
                    "correlation_id": correlation_id.strip(),
                    "service": (service or "").strip(),
                    "severity": severity,
                    "q": text,
                    "limit": str(limit) if limit != DEFAULT_LOG_LIMIT else None,
                }
            )
            st.rerun()


def describe(criteria: LogFilter) -> str:
    """The active search in words (its values come from the URL: Markdown-escaped)."""
    parts = [
        f"{label} {markdown_label(value)}"
        for label, value in (
            ("with correlation id", criteria.correlation_id),
            ("from service", criteria.service),
            ("containing", criteria.text),
        )
        if value
    ]
    if criteria.min_severity is not None:
        parts.append(f"at {_severity_name(criteria).upper()} or above")
    return " " + ", ".join(parts) if parts else ""


def flow_links(lines: list[LogLine]) -> dict[str, str | None]:
    """Each trace's flow page link (None for a line without a trace, or of a trace in no flow)."""
    links: dict[str, str | None] = {}
    for line in lines:
        if line.trace_id and line.trace_id not in links:
            flow_id = data.flow_of_trace(context.db, line.trace_id)
            links[line.trace_id] = None if flow_id is None else url_state.flow_link(flow_id)
    return links


def lines_frame(lines: list[LogLine]) -> pd.DataFrame:
    links = flow_links(lines)
    frame = pd.DataFrame(
        [
            {
                "flow": links.get(line.trace_id),
                "time": line.time_unix_nano,
                "level": level_text(line),
                "service": line.service,
                "logger": line.scope,
                "body": line.body,
                "correlation_id": line.correlation_id,
                "trace_id": line.trace_id,
                "span_id": line.span_id,
            }
            for line in lines
        ],
        columns=[
            "flow", "time", "level", "service", "logger", "body", "correlation_id", "trace_id", "span_id",
        ],
    )  # fmt: skip
    frame["time"] = data.to_datetime(frame["time"])
    return frame  # type: ignore[no-any-return]


@st.fragment(run_every=refresh_interval())
def logs() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    criteria = criteria_from_url(since, until)
    services = data.services_frame(context.db, since, until)["service"].tolist()
    search_form(criteria, services)
    with st.spinner("Searching the log lines…"):
        answer = data.search_logs(context.db, criteria)
        lines = answer.lines
        frame = lines_frame(lines) if lines else None
    if frame is None:
        st.caption(f"No log lines{describe(criteria)} in this time range.")
        st.caption(LOGS_OFF_HINT)
        return
    errors = sum(1 for line in lines if line.is_error)
    told = f" · :red[**{errors} error{'s' * (errors != 1)}**]" if errors else ""
    more = " (the limit: there are more; narrow the search or raise the limit)" if answer.truncated else ""
    st.caption(
        f"{len(lines)} line{'s' * (len(lines) != 1)}{describe(criteria)}, newest first{more}{told}. "
        "Click a line to read it whole; its Flow link opens its flow."
    )
    event = st.dataframe(
        emphasised(frame, lines),
        hide_index=True,
        width="stretch",
        # a new table (no line chosen) for another search: a row number names a line of this answer only
        key=f"logs_table_{hash(dataclasses.replace(criteria, since_unix_nano=None, until_unix_nano=None))}",
        on_select="rerun",
        selection_mode=["single-row", "single-cell"],  # a click on any cell picks its line
        column_config={
            "flow": url_state.flow_link_column(),
            "time": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss.SSS"),
            "level": st.column_config.TextColumn("Level"),
            "service": st.column_config.TextColumn("Service"),
            "logger": st.column_config.TextColumn("Logger"),
            "body": st.column_config.TextColumn("Body", width="large"),
            "correlation_id": st.column_config.TextColumn("Correlation id"),
            "trace_id": st.column_config.TextColumn("Trace id"),
            "span_id": st.column_config.TextColumn("Span id"),
        },
    )
    rows = [*event.selection.rows, *(row for row, _ in event.selection.cells)] if event else []
    if rows and 0 <= rows[0] < len(lines):
        line = lines[rows[0]]
        line_details(line, f"{data.to_datetime(line.time_unix_nano):%Y-%m-%d %H:%M:%S.%f} UTC")


logs()
