"""The service map as Graphviz DOT text: pure, so that it can be tested without Streamlit.

``st.graphviz_chart`` renders the text in the browser (Graphviz compiled to WebAssembly), so no system
Graphviz is needed. Node shapes tell the kinds apart (services, queues, topics, buses, external APIs);
colours tell health (the error rate of the hops); edge labels carry rate, p95 and error %, and for
asynchronous hops the queue wait too.

Node names are span data. Each reaches the DOT text only as a quoted string with every backslash, quote,
``&`` and line break escaped (``dot_string``), so a name can neither end its string (and add attributes
such as ``URL``) nor use Graphviz's ``\\N``-style escapes; no ``URL``, ``href`` or HTML-like label is ever
written. A node's label shows the name shortened (``plain_text.shorten``), so that one long name cannot
shrink the whole map; its tooltip holds the whole name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hopscope.collector.model.graph import GraphEdge, GraphNode, ServiceGraph
from hopscope.collector.model.red import RedStats
from hopscope.dashboard.format import format_error_pct, format_ms, format_rate
from hopscope.dashboard.plain_text import one_line, shorten

# Error rate at or above which a hop (or the node it enters) is drawn red; above zero it is orange.
ERROR_RED = 0.05
GREEN, ORANGE, RED, NEUTRAL = "#2e7d32", "#ef6c00", "#c62828", "#757575"
FILLS = {GREEN: "#e8f5e9", ORANGE: "#fff3e0", RED: "#ffebee", NEUTRAL: "#f5f5f5"}
ASYNC_KINDS = frozenset({"consume", "subscription"})
# A node's label shows at most this many characters of its name; tooltips hold at most TOOLTIP_CHARS.
NODE_LABEL_CHARS = 40
TOOLTIP_CHARS = 2000
_ID_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# shape and extra style per node type (GraphNode.type)
NODE_SHAPES: dict[str, tuple[str, str]] = {
    "service": ("box", "rounded,filled"),
    "queue": ("cylinder", "filled"),
    "topic": ("hexagon", "filled"),
    "bus": ("parallelogram", "filled"),
    "destination": ("note", "filled"),
    "external": ("ellipse", "dashed,filled"),
}
NODE_TYPE_LABELS = {
    "service": "service",
    "queue": "queue",
    "topic": "topic",
    "bus": "event bus",
    "destination": "destination",
    "external": "AWS API",
}


def health_colour(error_rate: float | None) -> str:
    """Red at ``ERROR_RED`` or more, orange for any error, green for none, grey when nothing was seen."""
    if error_rate is None:
        return NEUTRAL
    if error_rate >= ERROR_RED:
        return RED
    return ORANGE if error_rate > 0 else GREEN


def edge_label(edge: GraphEdge) -> str:
    """What an edge says: rate, p95 and error %; an async hop also its queue wait p95 and retries."""
    lines = [f"{format_rate(edge.red.rate_per_second)} · p95 {format_ms(edge.red.p95_ms)}"]
    lines.append(format_error_pct(edge.red.error_rate))
    if edge.kind in ASYNC_KINDS:
        lines.append(f"wait p95 {format_ms(edge.queue_wait_p95_ms)}")
    if edge.max_receive_count > 1:
        lines.append(f"max receives {edge.max_receive_count}")
    return "\n".join(lines)


def neighbourhood(graph: ServiceGraph, services: set[str]) -> tuple[list[GraphNode], list[GraphEdge]]:
    """The chosen services with everything they reach and everything that reaches them.

    The walk goes downstream along outgoing edges and upstream along incoming ones, through queues,
    topics and buses, and stops at the next service: a consumer's queue shows who published into it,
    but not that publisher's other callers.
    """
    by_id = {node.id: node for node in graph.nodes}
    start = {node.id for node in graph.nodes if node.type == "service" and node.name in services}
    kept_nodes = set(start)
    kept_edges: set[int] = set()
    for downstream in (True, False):
        frontier = list(start)
        seen = set(start)
        while frontier:
            current = frontier.pop()
            for index, edge in enumerate(graph.edges):
                near, far = (edge.source, edge.target) if downstream else (edge.target, edge.source)
                if near != current:
                    continue
                kept_edges.add(index)
                kept_nodes.add(far)
                far_node = by_id.get(far)
                if far not in seen and far_node is not None and far_node.type not in ("service", "external"):
                    seen.add(far)
                    frontier.append(far)
    nodes = [node for node in graph.nodes if node.id in kept_nodes]
    edges = [edge for index, edge in enumerate(graph.edges) if index in kept_edges]
    return nodes, edges


def dot_string(text: str, *, lines: bool = False) -> str:
    """A DOT string literal that Graphviz shows as exactly ``text`` (names come from span attributes:
    anything can be in them). Backslashes and quotes are escaped, so the string cannot end early and no
    ``\\N``, ``\\G`` or ``\\l`` escape is read; ``&`` is written as ``&amp;``, since Graphviz reads entities
    in labels. With ``lines``, each line break is a centred line break (``\\n``); otherwise line breaks and
    control characters are spaces.
    """
    parts = text.split("\n") if lines else [text]
    escaped = [
        one_line(part).replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"') for part in parts
    ]
    return '"' + "\\n".join(escaped) + '"'


def _quote_id(node_id: str) -> str:
    """A node id as a DOT string, distinct for distinct ids (ids are never shown: labels and tooltips are).
    Control characters and line separators are written as ``\\uXXXX``, so that each statement is one line."""
    escaped = _ID_CONTROL.sub(
        lambda match: f"\\u{ord(match[0]):04x}", node_id.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def _attributes(values: dict[str, str]) -> str:
    return ", ".join(f"{key}={dot_string(value, lines=True)}" for key, value in values.items())


def _tooltip(text: str) -> str:
    return text if len(text) <= TOOLTIP_CHARS else text[: TOOLTIP_CHARS - 1] + "…"


def node_error_rates(edges: Iterable[GraphEdge]) -> dict[str, float]:
    """A node's health is that of the hops entering it: its own server or consumer spans."""
    counts: dict[str, list[int]] = {}
    for edge in edges:
        total = counts.setdefault(edge.target, [0, 0])
        total[0] += edge.red.span_count
        total[1] += edge.red.error_count
    return {node: errors / count for node, (count, errors) in counts.items() if count}


def edge_tooltip(edge: GraphEdge) -> str:
    red: RedStats = edge.red
    parts = [
        f"{edge.kind}: {one_line(edge.source)} -> {one_line(edge.target)}",
        f"{red.span_count} hops, {red.error_count} errors",
        f"p50 {format_ms(red.p50_ms)}, p95 {format_ms(red.p95_ms)}, p99 {format_ms(red.p99_ms)}",
    ]
    if edge.kind in ASYNC_KINDS:
        parts.append(
            f"queue wait p50 {format_ms(edge.queue_wait_p50_ms)}, p95 {format_ms(edge.queue_wait_p95_ms)},"
            f" p99 {format_ms(edge.queue_wait_p99_ms)}"
        )
    return _tooltip("\n".join(parts))


def service_map_dot(graph: ServiceGraph, services: set[str] | None, *, dark: bool = False) -> str:
    """The DOT text of the map; with ``services``, only their neighbourhood (see ``neighbourhood``).

    Node ids are the graph's ids (``service:billing``), so a test or a reader can match them with
    ``GET /api/graph``; each edge's tooltip starts with its kind.
    """
    if services:
        nodes, edges = neighbourhood(graph, services)
    else:
        nodes, edges = graph.nodes, graph.edges
    text_colour = "#e0e0e0" if dark else "#424242"
    lines = [
        "digraph hopscope {",
        f'  graph [rankdir=LR, bgcolor="transparent", nodesep=0.5, ranksep=1.1, fontcolor="{text_colour}"];',
        '  node [fontname="Helvetica", fontsize=12, fontcolor="#212121", penwidth=1.6];',
        f'  edge [fontname="Helvetica", fontsize=9, fontcolor="{text_colour}", penwidth=1.4];',
    ]
    node_errors = node_error_rates(edges)
    for node in nodes:
        shape, style = NODE_SHAPES.get(node.type, NODE_SHAPES["destination"])
        colour = health_colour(node_errors.get(node.id))
        type_label = NODE_TYPE_LABELS.get(node.type, node.type)
        name = shorten(node.name, NODE_LABEL_CHARS)
        label = name if node.type == "service" else f"{name}\n({type_label})"
        attributes = {
            "label": label,
            "shape": shape,
            "style": style,
            "color": colour,
            "fillcolor": FILLS[colour],
            "tooltip": _tooltip(f"{type_label} {one_line(node.name)}"),
        }
        lines.append(f"  {_quote_id(node.id)} [{_attributes(attributes)}];")
    for edge in edges:
        colour = health_colour(edge.red.error_rate if edge.red.span_count else None)
        attributes = {
            "label": edge_label(edge),
            "color": colour,
            "style": "dashed" if edge.kind in ASYNC_KINDS or edge.kind == "publish" else "solid",
            "tooltip": edge_tooltip(edge),
        }
        lines.append(f"  {_quote_id(edge.source)} -> {_quote_id(edge.target)} [{_attributes(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
