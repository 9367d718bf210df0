"""Service map: services, queues, topics, buses and AWS APIs, the hops between them and how they fare.

``?service=billing`` (repeatable) narrows the map to those services' neighbourhood. The map is the way into
the rest of the app: a click on a service opens its latency page, on a queue its queue page, on an edge's
label the flows that went through that hop (``service_map_routes``).
"""

from __future__ import annotations

import streamlit as st

from hopscope.dashboard import data, url_state
from hopscope.dashboard.page_frame import page_context
from hopscope.dashboard.service_map_dot import ERROR_RED, service_map_dot
from hopscope.dashboard.service_map_figure import EDGE_LABELS_UP_TO, service_map_figure
from hopscope.dashboard.service_map_routes import route_for
from hopscope.dashboard.time_range import URL_PARAMS, refresh_interval

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
    labels = st.toggle("Edge labels", value=len(graph.edges) <= EDGE_LABELS_UP_TO, key="service_map_labels")
    drawn = service_map_figure(
        graph, set(chosen) or None, dark=st.context.theme.type == "dark", edge_labels=labels
    )
    event = st.plotly_chart(
        drawn.figure,
        width="stretch",
        key="service_map_chart",
        on_select="rerun",
        selection_mode="points",
        config={"scrollZoom": True, "displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d"]},
    )
    points = event.selection.points if event else []
    if points:
        route = route_for(points[0].get("customdata"), drawn.nodes, drawn.edges)
        if route is not None and route.page:
            params = {**url_state.kept(URL_PARAMS), **route.params}
            st.switch_page(f"views/{route.page}.py", query_params=params)
        elif route is not None:
            st.info(route.note, icon=":material/info:")
    st.caption(
        "Click a service for its latency, a queue for its depth, an edge's ◆ for the flows through that hop; "
        "scroll to zoom, drag to pan, double-click to fit. Boxes are services, cylinders queues, hexagons "
        "topics, parallelograms event buses, dashed ellipses AWS APIs. Edge labels: rate · p95 of the hop "
        "(the consumer's processing for a queue), error %, and the queue wait p95 of asynchronous hops. "
        f"Red at {100 * ERROR_RED:.0f}% errors or more, orange for any error, green for none."
    )
    st.download_button(
        "Download as Graphviz DOT",
        service_map_dot(graph, set(chosen) or None),
        file_name="hopscope-service-map.dot",
        mime="text/vnd.graphviz",
        icon=":material/download:",
    )


service_map()
