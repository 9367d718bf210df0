"""The service map's layout, its figure and where its clicks lead, as pure functions; and the sidebar's
"Find a flow" over the shop's real database."""

from __future__ import annotations

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from hopscope.collector.model.graph import GraphEdge, GraphNode, ServiceGraph
from hopscope.collector.model.red import RedStats
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.dashboard.find_flow import find, trace_id_in
from hopscope.dashboard.service_map_figure import EDGE_FONT_PX, NODE_FONT_PX, service_map_figure
from hopscope.dashboard.service_map_layout import NODE_HEIGHT, NODE_PADDING, layers_of, layout
from hopscope.dashboard.service_map_routes import Route, route_for
from tests.helpers.servers import ShopDatabase

# The demo's system: an API publishes to a topic that fans out to two queues and a function; shipping sends
# to an event bus whose rule feeds the notifier's queue.
DEMO_EDGES = [
    ("service:orders-api", "aws.sns:order-events"),
    ("aws.sns:order-events", "aws_sqs:billing"),
    ("aws.sns:order-events", "aws_sqs:shipping"),
    ("aws.sns:order-events", "service:audit"),
    ("aws_sqs:billing", "service:billing"),
    ("aws_sqs:shipping", "service:shipping"),
    ("service:shipping", "aws.eventbridge:orders"),
    ("aws.eventbridge:orders", "aws_sqs:notifications"),
    ("aws_sqs:notifications", "service:notifier"),
]


def _nodes(edges: list[tuple[str, str]]) -> list[str]:
    return list(dict.fromkeys(node for edge in edges for node in edge))


def test_the_demo_system_is_layered_by_its_hops_with_a_fan_out_in_one_layer() -> None:
    layers = layers_of(_nodes(DEMO_EDGES), DEMO_EDGES)
    assert [sorted(layer) for layer in layers] == [
        ["service:orders-api"],
        ["aws.sns:order-events"],
        ["aws_sqs:billing", "aws_sqs:shipping", "service:audit"],
        ["service:billing", "service:shipping"],
        ["aws.eventbridge:orders"],
        ["aws_sqs:notifications"],
        ["service:notifier"],
    ]
    # each function stands under its own queue: the barycentre order keeps the two hops from crossing
    queues, functions = layers[2], layers[3]
    assert queues.index("aws_sqs:billing") < queues.index("aws_sqs:shipping")
    assert functions == ["service:billing", "service:shipping"]


def test_a_long_chain_runs_top_to_bottom_and_a_short_one_left_to_right() -> None:
    widths = {node: 100.0 for node in _nodes(DEMO_EDGES)}
    deep = layout(_nodes(DEMO_EDGES), DEMO_EDGES, widths, fit_width=1000)
    assert deep.direction == "TB"
    short_edges = DEMO_EDGES[:4]
    short = layout(_nodes(short_edges), short_edges, widths, fit_width=1000)
    assert short.direction == "LR"
    assert short.width <= 1000
    # nothing is scaled down to fit: the deep drawing is as tall as its seven layers need
    assert deep.height >= 7 * NODE_HEIGHT


def test_an_edge_that_skips_layers_bends_between_the_nodes_of_the_layers_it_crosses() -> None:
    edges = [*DEMO_EDGES, ("service:orders-api", "service:notifier")]
    widths = {node: 100.0 for node in _nodes(edges)}
    drawn = layout(_nodes(edges), edges, widths, fit_width=1000)
    bends = drawn.bends[("service:orders-api", "service:notifier")]
    assert len(bends) == 5  # layers 1..5 between orders-api (0) and notifier (6)
    rows = sorted({y for _, y in drawn.positions.values()})
    assert [y for _, y in bends] == rows[1:6]
    for x, y in bends:  # never through a node's box
        for node, (node_x, node_y) in drawn.positions.items():
            if node_y == y:
                assert abs(x - node_x) >= (widths[node] + NODE_PADDING) / 2, node
    assert set(drawn.bends) == {("service:orders-api", "service:notifier")}  # the others join neighbours


def test_a_cycle_of_hops_still_gets_a_drawing() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")]
    layers = layers_of(["a", "b", "c", "d"], edges)
    assert layers == [["a"], ["b"], ["c"], ["d"]]
    assert layers == layers_of(["a", "b", "c", "d"], edges)  # the same graph, the same drawing


graphs = st.integers(1, 12).flatmap(
    lambda size: st.tuples(
        st.just([f"n{index}" for index in range(size)]),
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)), max_size=3 * size),
        st.lists(st.floats(10, 300), min_size=size, max_size=size),
    )
)


@settings(max_examples=60, deadline=None)
@given(graphs)
def test_any_graph_puts_every_node_once_with_no_two_boxes_overlapping(
    graph: tuple[list[str], list[tuple[int, int]], list[float]],
) -> None:
    nodes, pairs, label_widths = graph
    edges = [(nodes[a], nodes[b]) for a, b in pairs]
    widths = dict(zip(nodes, label_widths, strict=True))
    drawn = layout(nodes, edges, widths, fit_width=1000)
    assert sorted(node for layer in drawn.layers for node in layer) == sorted(nodes)
    assert set(drawn.positions) == set(nodes)
    boxes = {
        node: (
            x - (widths[node] + NODE_PADDING) / 2,
            y - NODE_HEIGHT / 2,
            x + (widths[node] + NODE_PADDING) / 2,
        )
        for node, (x, y) in drawn.positions.items()
    }
    for node, (left, top, right) in boxes.items():
        assert left >= -1e-6 and right <= drawn.width + 1e-6 and top + 1e-6 >= 0
        for other, (other_left, other_top, other_right) in boxes.items():
            if other != node and abs(top - other_top) < NODE_HEIGHT:
                assert right <= other_left + 1e-6 or other_right <= left + 1e-6, (node, other)


def _edge(source: str, target: str, kind: str) -> GraphEdge:
    return GraphEdge(source, target, kind, RedStats(10, 1.0, 0, 0.0, 1.0, 2.0, 3.0), 1.0, 2.0, 3.0, 1)


def test_clicks_lead_to_the_page_of_what_was_clicked() -> None:
    nodes = [
        GraphNode("service:billing", "service", "billing"),
        GraphNode("aws_sqs:billing", "queue", "billing"),
        GraphNode("aws.sns:order-events", "topic", "order-events"),
    ]
    edges = [
        _edge("aws_sqs:billing", "service:billing", "consume"),
        _edge("service:orders-api", "aws.sns:order-events", "publish"),
        _edge("aws.sns:order-events", "aws_sqs:billing", "subscription"),
    ]
    assert route_for(["node", "service:billing"], nodes, edges) == Route("latency", {"service": "billing"})
    assert route_for(["node", "aws_sqs:billing"], nodes, edges) == Route("queues", {"queue": "billing"})
    hop = {"service": "billing", "hop": "aws_sqs:billing>service:billing"}
    assert route_for(["edge", 0, "x", "y", "consume"], nodes, edges) == Route("flows", hop)
    sender = {"service": "orders-api", "hop": "service:orders-api>aws.sns:order-events"}
    assert route_for(["edge", 1], nodes, edges) == Route("flows", sender)
    for no_page in (["node", "aws.sns:order-events"], ["edge", 2]):
        route = route_for(no_page, nodes, edges)
        assert route is not None and route.page is None and route.note
    for stale in (None, [], ["edge", 3], ["edge", "0"], ["node", "service:gone"], ["what", 1]):
        assert route_for(stale, nodes, edges) is None, stale


def test_the_figure_writes_names_as_text_at_fixed_sizes() -> None:
    name = "<img src=x onerror=alert(1)>$x^2$ & more"
    graph = ServiceGraph(
        [GraphNode(f"service:{name}", "service", name), GraphNode("aws_sqs:q", "queue", "q")],
        [_edge("aws_sqs:q", f"service:{name}", "consume")],
    )
    figure = service_map_figure(graph, None).figure.to_plotly_json()
    texts = [text for trace in figure["data"] for text in trace.get("text") or []]
    assert any("&lt;img src=x onerror=alert(1)&gt;&#36;x^2&#36; &amp; more" in text for text in texts)
    assert not any("<img" in text for text in texts)
    sizes = {trace["name"]: trace["textfont"]["size"] for trace in figure["data"] if trace.get("name")}
    assert sizes == {"nodes": NODE_FONT_PX, "hops": EDGE_FONT_PX}
    assert min(sizes.values()) >= 10


def test_find_a_flow_by_any_id_it_has(shop: ShopDatabase, api: httpx.Client) -> None:
    (summary,) = api.get("/api/flows", params={"correlation_id": "o-3"}).json()["flows"]
    flow_id = int(summary["flow_id"])
    detail = api.get(f"/api/flows/{flow_id}").json()
    trace_id = detail["spans"][0]["trace_id"]
    message_ids = {
        str(span["attributes"]["messaging.message.id"])
        for span in detail["spans"]
        if "messaging.message.id" in span["attributes"] and span["kind"] == "CONSUMER"
    }
    store = SQLiteStore(shop.db, read_only=True)
    try:
        layer = QueryLayer(store)
        assert find(layer, str(flow_id)).flow_id == flow_id
        assert find(layer, f"  {trace_id.upper()} ").flow_id == flow_id
        assert find(layer, f"00-{trace_id}-{'1' * 16}-01").flow_id == flow_id  # a traceparent header
        assert find(layer, "o-3").flow_id == flow_id
        assert message_ids, "the shop's consumers name their messages"
        for message_id in message_ids:
            assert find(layer, message_id).flow_id == flow_id
        missing = find(layer, "no-such-id")
        assert missing.flow_id is None and not missing.flows_params and "No stored flow" in missing.note
        assert find(layer, "x" * 600).note  # too long to be an id: said, not searched
        assert find(layer, "99999999").flow_id is None
    finally:
        store.close()
    assert trace_id_in("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8") == (
        "5759e988bd862e3fe1be46a994272793"
    )
