"""The service map as an interactive Plotly figure: pure (a ``ServiceGraph`` in, a ``Figure`` out).

Why Plotly and not a graph component: ``st.plotly_chart(on_select="rerun")`` gives clicks on nodes and
edges back to the page, Plotly gives zoom and pan, it draws SVG text (so a test can measure a label's size)
and it is already the dashboard's chart library: nothing new to install, no component in an iframe, nothing
fetched from a CDN. Graphviz (``st.graphviz_chart``) gave none of the clicks and scaled the picture into the
page width.

Everything is sized in pixels: node shapes are Plotly shapes in pixel size mode, anchored at the node's
position, and labels have a fixed font size (``NODE_FONT_PX``, ``EDGE_FONT_PX``), so they stay legible at
any width and any zoom; ``service_map_layout`` picks the direction and spacing. The shapes and colours are
those of the Graphviz map (``service_map_dot``, which still writes the DOT text for a download): rounded
boxes for services, cylinders for queues, hexagons for topics, parallelograms for event buses, notes for
other destinations, dashed ellipses for AWS APIs; green, orange and red by error rate.

Clicks: each node's and each edge's label is a point whose ``customdata`` says what it is
(``["node", id]``, ``["edge", index, source, target, kind]``, ``index`` into ``MapFigure.edges``); the
page routes a click with it.
Names are span data: labels go through ``plain_text.plotly_text``, hover boxes through ``plotly_hover``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]

from hopscope.collector.model.graph import GraphEdge, GraphNode, ServiceGraph
from hopscope.dashboard.plain_text import plotly_hover, plotly_text, shorten
from hopscope.dashboard.service_map_dot import (
    ASYNC_KINDS,
    FILLS,
    NEUTRAL,
    NODE_LABEL_CHARS,
    NODE_TYPE_LABELS,
    edge_label,
    edge_tooltip,
    health_colour,
    neighbourhood,
    node_error_rates,
)
from hopscope.dashboard.service_map_layout import NODE_HEIGHT, Layout, layout

NODE_FONT_PX = 12
EDGE_FONT_PX = 10
# An estimate of a character's width in the labels' font (Helvetica, Arial), to size boxes and layers.
CHAR_PX = 0.62 * NODE_FONT_PX
EDGE_CHAR_PX = 0.6 * EDGE_FONT_PX
# The page's usual width in pixels (a 1400 px window less the sidebar): left to right when that fits.
FIT_WIDTH = 880
MARGIN_PX = 24
# More edges than this and their labels are off by default (hover still tells): a dense map reads better
# with its nodes clear; picking services narrows it.
EDGE_LABELS_UP_TO = 30
ARROW_PX = 9
# Where along its line an edge's label sits: past the middle, so that the labels of a fan-out spread apart.
LABEL_AT = 0.6


@dataclass(frozen=True)
class MapFigure:
    """The figure and what its clickable points stand for."""

    figure: go.Figure
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    layout: Layout


def node_label(node: GraphNode) -> str:
    """A node's label as plain text: its name shortened, and its kind on a second line unless a service."""
    name = shorten(node.name, NODE_LABEL_CHARS)
    return name if node.type == "service" else f"{name}\n({NODE_TYPE_LABELS.get(node.type, node.type)})"


def _label_width(label: str) -> float:
    return max(len(line) for line in label.split("\n")) * CHAR_PX


def _ellipse(centre: tuple[float, float], rx: float, ry: float, arc: tuple[float, float]) -> list[str]:
    """Points of an elliptic arc from angle ``arc[0]`` to ``arc[1]`` (degrees, counter-clockwise)."""
    (cx, cy), (start, stop) = centre, arc
    steps = max(2, int(abs(stop - start) / 10))
    return [
        f"{cx + rx * math.cos(math.radians(start + (stop - start) * i / steps)):.1f},"
        f"{cy + ry * math.sin(math.radians(start + (stop - start) * i / steps)):.1f}"
        for i in range(steps + 1)
    ]


def _shape_path(node_type: str, half_width: float, half_height: float) -> str:
    """An SVG path around (0, 0) in pixels, y up, for the node's kind (curves as short straight steps, so
    that no arc flag depends on which way y runs)."""
    w, h = half_width, half_height
    if node_type == "queue":  # a standing cylinder: a whole top ellipse, the sides, the bottom's front half
        r = min(7.0, h / 3)
        top = _ellipse((0, h - r), w, r, (0, 360))
        body = [f"{-w},{h - r}", *_ellipse((0, -h + r), w, r, (180, 360)), f"{w},{h - r}"]
        return "M " + " L ".join(top) + " M " + " L ".join(body)
    if node_type == "topic":
        cut = min(14.0, w / 3)
        return f"M {-w},0 L {-w + cut},{h} L {w - cut},{h} L {w},0 L {w - cut},{-h} L {-w + cut},{-h} Z"
    if node_type == "bus":
        slant = min(12.0, w / 4)
        return f"M {-w + slant},{h} L {w},{h} L {w - slant},{-h} L {-w},{-h} Z"
    if node_type == "external":
        return "M " + " L ".join(_ellipse((0, 0), w, h, (0, 360))) + " Z"
    if node_type == "service":
        r = 7.0
        corners = [
            *_ellipse((w - r, h - r), r, r, (0, 90)),
            *_ellipse((-w + r, h - r), r, r, (90, 180)),
            *_ellipse((-w + r, -h + r), r, r, (180, 270)),
            *_ellipse((w - r, -h + r), r, r, (270, 360)),
        ]
        return "M " + " L ".join(corners) + " Z"
    fold = 10.0  # a note, for any other destination
    return f"M {-w},{h} L {w - fold},{h} L {w},{h - fold} L {w},{-h} L {-w},{-h} Z"


def _lines(text: str) -> str:
    """Plain text with line breaks as a Plotly label: each line escaped, joined with ``<br>``."""
    return "<br>".join(plotly_text(line) for line in text.split("\n"))


def _half_size(node: GraphNode, label: str) -> tuple[float, float]:
    """Half a node's width and height in pixels: its label and some room; a queue's top ellipse more."""
    return _label_width(label) / 2 + 14, NODE_HEIGHT / 2 + (6 if node.type == "queue" else 0)


def _boundary(half_width: float, half_height: float, dx: float, dy: float) -> float:
    """How far from a node's centre its box ends in the direction (dx, dy) (a unit vector)."""
    along_x = half_width / abs(dx) if dx else math.inf
    along_y = half_height / abs(dy) if dy else math.inf
    return min(along_x, along_y)


def _label_side(direction: str, lean: float) -> str:
    """Top to bottom, a label goes on the side its edge's first leg leans to (a fan-out's labels part);
    left to right, above its edge."""
    if direction != "TB":
        return "top center"
    return "middle left" if lean < -1 else "middle right"


def service_map_figure(
    graph: ServiceGraph, services: set[str] | None, *, dark: bool = False, edge_labels: bool = True
) -> MapFigure:
    """The map; with ``services``, only their neighbourhood (``service_map_dot.neighbourhood``); without
    ``edge_labels``, an edge's numbers are in its hover box only.

    Data coordinates are the layout's pixels (y negated, so that it grows upwards), on axes of equal scale.
    """
    nodes, edges = neighbourhood(graph, services) if services else (list(graph.nodes), list(graph.edges))
    labels = {node.id: node_label(node) for node in nodes}
    half = {node.id: _half_size(node, labels[node.id]) for node in nodes}
    drawing = layout(
        [node.id for node in nodes],
        [(edge.source, edge.target) for edge in edges],
        {node_id: _label_width(label) for node_id, label in labels.items()},
        fit_width=FIT_WIDTH,
    )
    position = {node_id: (x, -y) for node_id, (x, y) in drawing.positions.items()}
    text_colour = "#e0e0e0" if dark else "#424242"
    figure = go.Figure()
    shapes: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    errors = node_error_rates(edges)

    edge_points: list[tuple[float, float, int, GraphEdge, str]] = []
    for index, edge in enumerate(edges):
        if edge.source not in position or edge.target not in position:
            continue
        bends = [(x, -y) for x, y in drawing.bends.get((edge.source, edge.target), [])]
        route = [position[edge.source], *bends, position[edge.target]]
        (x0, y0), (x1, y1) = route[0], route[1]
        length = math.hypot(x1 - x0, y1 - y0)
        if length == 0:  # a node calling itself: a label beside it, no line
            edge_points.append((x0 + half[edge.source][0] + 30, y0, index, edge, "middle right"))
            continue
        dx, dy = (x1 - x0) / length, (y1 - y0) / length
        start = _boundary(*half[edge.source], dx, dy)
        # the last leg, into the target: it ends at the target's box, with the arrow
        (lx0, ly0), (x1, y1) = route[-2], route[-1]
        last = math.hypot(x1 - lx0, y1 - ly0)
        ex, ey = (x1 - lx0) / last, (y1 - ly0) / last
        end_x = x1 - ex * (_boundary(*half[edge.target], ex, ey) + 2)
        end_y = y1 - ey * (_boundary(*half[edge.target], ex, ey) + 2)
        colour = health_colour(edge.red.error_rate if edge.red.span_count else None)
        dashed = edge.kind in ASYNC_KINDS or edge.kind == "publish"
        figure.add_trace(
            go.Scatter(
                x=[x0 + dx * start, *(x for x, _ in bends), end_x],
                y=[y0 + dy * start, *(y for _, y in bends), end_y],
                mode="lines",
                line={"color": colour, "width": 1.6, "dash": "dash" if dashed else "solid"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        annotations.append(
            {
                "x": end_x,
                "y": end_y,
                "ax": end_x - ex * ARROW_PX,
                "ay": end_y - ey * ARROW_PX,
                "xref": "x",
                "yref": "y",
                "axref": "x",
                "ayref": "y",
                "showarrow": True,
                "arrowhead": 2,
                "arrowsize": 1.2,
                "arrowwidth": 1.6,
                "arrowcolor": colour,
                "text": "",
            }
        )
        # the label on the first leg (between the source's layer and the next)
        first_end = length - (_boundary(*half[edge.target], dx, dy) + 2 if not bends else 0)
        at = start + (first_end - start) * LABEL_AT
        edge_points.append((x0 + dx * at, y0 + dy * at, index, edge, _label_side(drawing.direction, dx)))

    for node in nodes:
        x, y = position[node.id]
        colour = health_colour(errors.get(node.id))
        width, height = half[node.id]
        shapes.append(
            {
                "type": "path",
                "path": _shape_path(node.type, width, height),
                "xsizemode": "pixel",
                "ysizemode": "pixel",
                "xanchor": x,
                "yanchor": y,
                "xref": "x",
                "yref": "y",
                "line": {"color": colour, "width": 1.6, "dash": "dash" if node.type == "external" else None},
                "fillcolor": FILLS.get(colour, FILLS[NEUTRAL]),
                "layer": "below",
            }
        )
    figure.add_trace(
        go.Scatter(
            name="nodes",
            x=[position[node.id][0] for node in nodes],
            y=[position[node.id][1] for node in nodes],
            mode="markers+text",
            text=[_lines(labels[node.id]) for node in nodes],
            textposition="middle center",
            textfont={"size": NODE_FONT_PX, "color": "#212121"},
            # the marker is the click target: as large as the box, and invisible
            marker={
                "symbol": "square",
                "size": [2 * min(half[node.id]) for node in nodes],
                "color": "rgba(0,0,0,0)",
            },
            customdata=[["node", node.id] for node in nodes],
            hovertext=[
                plotly_hover(f"{NODE_TYPE_LABELS.get(node.type, node.type)} {node.name}")
                + "<br><i>click to open its page</i>" * (node.type in ("service", "queue"))
                for node in nodes
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    figure.add_trace(
        go.Scatter(
            name="hops",
            x=[x for x, *_ in edge_points],
            y=[y for _, y, *_ in edge_points],
            mode="markers+text" if edge_labels else "markers",
            text=[_lines(edge_label(edge)) for _, _, _, edge, _ in edge_points],
            textposition=[side for *_, side in edge_points],
            textfont={"size": EDGE_FONT_PX, "color": text_colour},
            marker={
                "symbol": "diamond",
                "size": 10,
                "color": [
                    health_colour(edge.red.error_rate if edge.red.span_count else None)
                    for _, _, _, edge, _ in edge_points
                ],
            },
            customdata=[
                ["edge", index, edge.source, edge.target, edge.kind] for _, _, index, edge, _ in edge_points
            ],
            hovertext=[
                "<br>".join(plotly_hover(line) for line in edge_tooltip(edge).split("\n"))
                + "<br><i>click for its flows</i>"
                for _, _, _, edge, _ in edge_points
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    label_room = max((len(edge_label(edge).split("\n")[0]) for edge in edges), default=0) * EDGE_CHAR_PX
    # A drawing wider than the page opens on its middle at full size (drag to see the rest), never shrunk.
    room = label_room if drawing.direction == "TB" and edge_labels else 0
    shown = min(drawing.width + room, FIT_WIDTH)
    left = max(0.0, (drawing.width + room - FIT_WIDTH) / 2)
    x_range = [left - MARGIN_PX, left + shown + MARGIN_PX]
    y_range = [-drawing.height - MARGIN_PX, MARGIN_PX]
    figure.update_layout(
        shapes=shapes,
        annotations=annotations,
        height=int(drawing.height + 2 * MARGIN_PX + 20),
        margin={"l": 0, "r": 0, "t": 10, "b": 10},
        dragmode="pan",
        hovermode="closest",
        clickmode="event+select",
        xaxis={"visible": False, "range": x_range, "constrain": "domain"},
        yaxis={"visible": False, "range": y_range, "scaleanchor": "x", "constrain": "domain"},
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
    )
    return MapFigure(figure, nodes, edges, drawing)
