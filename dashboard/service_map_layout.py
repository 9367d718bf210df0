"""Where each node of the service map goes: a layered drawing, in pixels, chosen from the graph's shape.

Message flows run one way (API -> topic -> queues -> functions -> bus -> ...), so the nodes are put in layers
by their longest path from a source (edges that close a cycle are left out of that count), ordered within
each layer by the mean position of their neighbours (a few sweeps of the barycentre heuristic, which
removes most crossings of a fan-out), and spaced by the widths of their labels. The layers run left to right
when that fits the width the page gives and top to bottom otherwise, so that a long chain of hops keeps
its labels at full size instead of being squeezed into the page (Graphviz, which drew the map before,
scaled the whole picture down: labels came out at 5 px).

Pure (names and pairs in, pixel positions out), so that it can be tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Pixels: the room a node takes across its layer beyond its label, the gap between layers (it holds an
# edge's label), and the gap between neighbours in a layer.
NODE_PADDING = 28
LAYER_GAP_LR = 150
LAYER_GAP_TB = 90
SIBLING_GAP = 26
# Top to bottom, neighbours in a layer stand further apart: the labels of a fan-out's edges sit between them.
SIBLING_GAP_TB = 120
NODE_HEIGHT = 46
# Barycentre sweeps (down and up count one each): a handful settles the graphs of real systems.
SWEEPS = 8


@dataclass(frozen=True)
class Layout:
    """Pixel centres of the nodes (y grows downwards), the drawing's size, and its direction."""

    positions: dict[str, tuple[float, float]]
    width: float
    height: float
    direction: str  # "LR" or "TB"
    layers: list[list[str]]


def layers_of(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Nodes in layers by longest path from a source; within a layer, in an order with few crossings.

    Edges that close a cycle (found by a depth-first walk in the given node order) are ignored for the
    layering, so a cycle of hops still gets a drawing. Deterministic: the same graph gives the same layers.
    """
    known = set(nodes)
    outgoing: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        if source in known and target in known and source != target and target not in outgoing[source]:
            outgoing[source].append(target)
    forward = _acyclic(nodes, outgoing)
    rank = {node: 0 for node in nodes}
    for node in _topological(nodes, forward):
        for target in forward[node]:
            rank[target] = max(rank[target], rank[node] + 1)
    layers: list[list[str]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for node in nodes:
        layers[rank[node]].append(node)
    return _order(layers, outgoing)


def _acyclic(nodes: Sequence[str], outgoing: dict[str, list[str]]) -> dict[str, list[str]]:
    """``outgoing`` without the edges that point back to a node on the walk's stack."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    forward: dict[str, list[str]] = {node: [] for node in nodes}
    for root in nodes:
        if root in state:
            continue
        stack = [(root, iter(outgoing[root]))]
        state[root] = 1
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                state[node] = 2
                stack.pop()
            elif state.get(target) != 1:
                forward[node].append(target)
                if target not in state:
                    state[target] = 1
                    stack.append((target, iter(outgoing[target])))
    return forward


def _topological(nodes: Sequence[str], forward: dict[str, list[str]]) -> list[str]:
    incoming = {node: 0 for node in nodes}
    for targets in forward.values():
        for target in targets:
            incoming[target] += 1
    ready = [node for node in nodes if incoming[node] == 0]
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for target in forward[node]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return order


def _order(layers: list[list[str]], outgoing: dict[str, list[str]]) -> list[list[str]]:
    neighbours: dict[str, set[str]] = {node: set() for layer in layers for node in layer}
    for source, targets in outgoing.items():
        for target in targets:
            neighbours[source].add(target)
            neighbours[target].add(source)
    for sweep in range(SWEEPS):
        indices = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for index in indices:
            fixed = layers[index - 1] if sweep % 2 == 0 else layers[index + 1]
            place = {node: position for position, node in enumerate(fixed)}
            current = layers[index]

            def centre(node: str, position: int, place: dict[str, int] = place) -> float:
                near = [place[other] for other in neighbours[node] if other in place]
                return sum(near) / len(near) if near else float(position)

            layers[index] = [
                node
                for _, _, node in sorted(
                    (centre(node, position), position, node) for position, node in enumerate(current)
                )
            ]
    return layers


def layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    label_widths: dict[str, float],
    *,
    fit_width: float,
) -> Layout:
    """Pixel positions of ``nodes``; ``label_widths`` are each node's label width in pixels.

    Left to right when the layers side by side fit ``fit_width`` (the page's usual width), else top to
    bottom; either way nothing is scaled down: a drawing larger than the page is panned and zoomed.
    """
    layers = layers_of(nodes, edges)

    def width(node: str) -> float:
        return label_widths.get(node, 0.0) + NODE_PADDING

    layer_widths = [max((width(node) for node in layer), default=0.0) for layer in layers]
    lr_width = sum(layer_widths) + LAYER_GAP_LR * max(len(layers) - 1, 0)
    direction = "LR" if lr_width <= fit_width else "TB"
    positions: dict[str, tuple[float, float]] = {}
    if direction == "LR":
        spans = [len(layer) * (NODE_HEIGHT + SIBLING_GAP) - SIBLING_GAP for layer in layers]
        height = max(spans, default=0.0)
        x = 0.0
        for layer, layer_width, span in zip(layers, layer_widths, spans, strict=True):
            y = (height - span) / 2 + NODE_HEIGHT / 2
            for node in layer:
                positions[node] = (x + layer_width / 2, y)
                y += NODE_HEIGHT + SIBLING_GAP
            x += layer_width + LAYER_GAP_LR
        return Layout(positions, lr_width, height, direction, layers)
    rows = [sum(width(node) for node in layer) + SIBLING_GAP_TB * max(len(layer) - 1, 0) for layer in layers]
    total_width = max(rows, default=0.0)
    y = NODE_HEIGHT / 2
    for layer, row in zip(layers, rows, strict=True):
        x = (total_width - row) / 2
        for node in layer:
            positions[node] = (x + width(node) / 2, y)
            x += width(node) + SIBLING_GAP_TB
        y += NODE_HEIGHT + LAYER_GAP_TB
    height = len(layers) * (NODE_HEIGHT + LAYER_GAP_TB) - LAYER_GAP_TB
    return Layout(positions, total_width, height, direction, layers)
