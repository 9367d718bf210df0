"""Where a click on the service map leads: pure, so that a test can check every kind of node and edge.

A service opens its latency page, a queue its queue page, an edge the Flows page searching for the flows
that went through the hop. Flows are found by service, so an edge's search is by the service at its
consuming end (the server of a call, the consumer of a queue), else at its sending end; ``hop=`` in the
link names the edge, for the Flows page to say which hop the search stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hopscope.collector.model.graph import GraphEdge, GraphNode, node_type

HOP_PARAM = "hop"


@dataclass(frozen=True)
class Route:
    """A page to switch to with its URL parameters, or (no page) a note to show instead."""

    page: str | None
    params: dict[str, str] = field(default_factory=dict)
    note: str = ""


def node_name(node_id: str) -> str:
    """The name in a node id (``service:billing`` -> ``billing``)."""
    return node_id.split(":", 1)[1] if ":" in node_id else node_id


def hop_text(hop: str) -> str:
    """``service:a>aws_sqs:q`` as ``a → q``: how the Flows page names the hop of its link."""
    source, _, target = hop.partition(">")
    return f"{node_name(source)} → {node_name(target)}"


def edge_route(edge: GraphEdge) -> Route:
    hop = f"{edge.source}>{edge.target}"
    for end in (edge.target, edge.source):
        if node_type(end) == "service":
            return Route("flows", {"service": node_name(end), HOP_PARAM: hop})
    return Route(None, note="Neither end of this hop is a service, so no flow search stands for it.")


def route_for(customdata: object, nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> Route | None:
    """The route of a clicked point's ``customdata`` (``["node", id]`` or ``["edge", index, ...]``), or None
    when it is neither (a click on the background, a stale selection after the map changed)."""
    if not isinstance(customdata, list) or len(customdata) < 2:
        return None
    what, key = customdata[:2]
    if what == "edge" and isinstance(key, (int, float)) and key == int(key) and 0 <= key < len(edges):
        return edge_route(edges[int(key)])
    if what != "node":
        return None
    node = next((node for node in nodes if node.id == key), None)
    if node is None:
        return None
    if node.type == "service":
        return Route("latency", {"service": node.name})
    if node.type == "queue":
        return Route("queues", {"queue": node.name})
    return Route(None, note="A topic, bus or AWS API has no page of its own: click the edges around it.")
