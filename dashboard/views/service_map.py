"""Service map: services, queues, topics, buses and AWS APIs, the hops between them and how they fare.

``?service=billing`` (repeatable) narrows the map to those services' neighbourhood.
"""

from __future__ import annotations

import streamlit as st

from hopscope.dashboard import data, url_state
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.service_map_dot import ERROR_RED, service_map_dot
from hopscope.dashboard.time_range import refresh_interval

context = page_context()
st.title("Service map")


def _write_services() -> None:
    url_state.put("service", st.session_state["service_map_services"])


@st.fragment(run_every=refresh_interval())
def service_map() -> None:
    since, until = context.time_range.since_unix_nano, context.time_range.until_unix_nano
    graph = data.graph(context.db, since, until)
    known = sorted(node.name for node in graph.nodes if node.type == "service")
    wanted = url_state.texts("service")
    chosen = st.multiselect(
        "Services",
        sorted({*known, *wanted}),
        default=wanted,
        key="service_map_services",
        on_change=_write_services,
        placeholder="All services: pick some to see only their neighbourhood",
    )
    if not graph.edges:
        st.caption("No hops in this time range.")
        return
    dot = service_map_dot(graph, set(chosen) or None, dark=st.context.theme.type == "dark")
    st.graphviz_chart(dot, width="stretch")
    st.caption(
        "Boxes are services, cylinders queues, hexagons topics, parallelograms event buses, dashed "
        "ellipses AWS APIs. Labels: rate · p95 of the hop (the consumer's processing for a queue), "
        f"error %, and the queue wait p95 of asynchronous hops. Red at {100 * ERROR_RED:.0f}% errors "
        "or more, orange for any error, green for none."
    )


service_map()
