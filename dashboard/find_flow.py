"""The sidebar's "Find a flow" box: one field for whatever id a person has at hand during an incident.

It takes a flow id, a trace id (32 hex digits, or a W3C ``traceparent`` or X-Ray ``Root=`` header that holds
one), a correlation id or a message id, over all stored time (not the page's range: an id is exact), and
opens the flow; when a correlation or message id matches several flows, it opens the Flows page searching
for them. ``find`` is pure over the query layer, so a test can drive it on a real store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import streamlit as st

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.dashboard import data, url_state
from hopscope.dashboard.plain_text import markdown_label
from hopscope.dashboard.time_range import URL_PARAMS

# 32 hex digits on their own, in a traceparent (00-<trace>-<span>-01) or an X-Ray id (1-<8>-<24>).
_TRACE_ID = re.compile(r"(?:^|[^0-9a-f])([0-9a-f]{32})(?:$|[^0-9a-f])")
_XRAY_ID = re.compile(r"1-([0-9a-f]{8})-([0-9a-f]{24})")
MAX_ID_CHARS = 512


@dataclass(frozen=True)
class Found:
    """A flow to open, or a Flows search to open (several flows matched), or neither, with why."""

    flow_id: int | None = None
    flows_params: dict[str, str] = field(default_factory=dict)
    note: str = ""


def trace_id_in(text: str) -> str | None:
    """The trace id that ``text`` is or holds (hex, lower case), or None."""
    lowered = text.lower()
    xray = _XRAY_ID.search(lowered)
    if xray:
        return xray[1] + xray[2]
    match = _TRACE_ID.search(lowered)
    return match[1] if match else None


def find(layer: QueryLayer, text: str) -> Found:
    """What ``text`` names: tried as a flow id, a trace id, a correlation id, then a message id."""
    wanted = text.strip()
    if not wanted:
        return Found()
    if len(wanted) > MAX_ID_CHARS:
        return Found(note=f"An id is at most {MAX_ID_CHARS} characters.")
    if wanted.isdigit() and int(wanted) < 2**63:
        summary = layer.flow_summary(int(wanted))
        if summary is not None:
            return Found(summary.flow_id)
    trace_id = trace_id_in(wanted)
    if trace_id is not None:
        flow_id = layer.flow_of_trace(bytes.fromhex(trace_id))
        if flow_id is not None:
            return Found(flow_id)
    for param, criteria in (
        ("correlation_id", FlowFilter(correlation_id=wanted, limit=2)),
        ("message_id", FlowFilter(message_id=wanted, limit=2)),
    ):
        flows = layer.search_flows(criteria)
        if len(flows) == 1:
            return Found(flows[0].flow_id)
        if flows:
            return Found(flows_params={param: wanted, "range": "7d"})
    return Found(note="No stored flow has this flow, trace, correlation or message id.")


def find_flow_box() -> None:
    """The sidebar form; a match switches page, keeping the time range and auto-refresh."""
    with st.sidebar.form("find_flow", border=False, clear_on_submit=False):
        text = st.text_input(
            "Find a flow",
            key="find_flow_text",
            placeholder="flow, trace, correlation or message id",
            max_chars=MAX_ID_CHARS,
        )
        submitted = st.form_submit_button("Find", icon=":material/search:")
    if not submitted or not text.strip():
        return
    layer = data.queries()
    found = find(layer, text) if layer is not None else Found(note="No data yet.")
    kept = url_state.kept(URL_PARAMS)
    if found.flow_id is not None:
        st.switch_page(f"views/{url_state.FLOW_PAGE}.py", query_params={**kept, "flow": str(found.flow_id)})
    if found.flows_params:
        st.switch_page("views/flows.py", query_params={**kept, **found.flows_params})
    st.sidebar.warning(f"{found.note} ({markdown_label(text.strip())})", icon=":material/search_off:")
