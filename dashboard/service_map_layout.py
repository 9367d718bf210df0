"""Where each node of the service map goes: a layered drawing, in pixels, chosen from the graph's shape.

Message flows run one way (API -> topic -> queues -> functions -> bus -> ...), so this is a small Sugiyama
layout:

- **layers** by longest path from a source (edges that close a cycle are left out of that count);
- an edge that skips layers gets a **bend point** in each layer it crosses, so it is routed between the
  nodes of those layers instead of straight through them;
- nodes and bend points are **ordered** within each layer by the mean position of their neighbours (a few
  sweeps of the barycentre heuristic, which removes most crossings of a fan-out);
- each layer is **placed** as near its neighbours as its order allows, so that chains run straight.

The layers run left to right when that fits the width the page gives, else top to bottom, so that a long
chain of hops keeps its labels at full size instead of being squeezed into the page (Graphviz, which drew
the map before, scaled the whole picture down: labels came out at 5 px).

Pure (names and pairs in, pixel positions out), so that it can be tested without a browser.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Pixels: the room a node takes beyond its label, the gaps between layers (they hold the edges' labels),
# between neighbours in a layer, and the room of an edge's bend point in a layer it crosses.
NODE_PADDING = 28
NODE_HEIGHT = 46
LAYER_GAP_LR = 150
LAYER_GAP_TB = 90
SIBLING_GAP_LR = 26
# Top to bottom, neighbours stand further apart: the labels of a fan-out's edges sit between them.
SIBLING_GAP_TB = 120
BEND_SIZE = 2
BEND_GAP = 10
# Ordering sweeps (down and up count one each) and placement rounds: a handful settles real systems.
SWEEPS = 8
PLACEMENT_ROUNDS = 4


@dataclass(frozen=True)
class Layout:
    """Pixel centres of the nodes (y grows downwards), the bend points of edges that cross layers (keyed by
    the edge's (source, target), in order from source to target), the drawing's size and its direction."""

    positions: dict[str, tuple[float, float]]
    bends: dict[tuple[str, str], list[tuple[float, float]]]
    width: float
    height: float
    direction: str  # "LR" or "TB"
    layers: list[list[str]]  # the nodes (no bend points) of each layer, in their order


@dataclass
class _Graph:
    """The layered graph: vertices 0..n-1 are the nodes, the rest bend points; ``chain`` edges join
    vertices of adjacent layers."""

    node_count: int
    rank: list[int]
    chains: dict[tuple[int, int], list[int]]  # a node pair -> the vertices of its route, ends included
    down: list[list[int]]  # neighbours one layer further
    up: list[list[int]]  # neighbours one layer nearer
    layers: list[list[int]]


def _unique_edges(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    index = {node: position for position, node in enumerate(nodes)}
    pairs: dict[tuple[int, int], None] = {}
    for source, target in edges:
        if source in index and target in index and source != target:
            pairs[(index[source], index[target])] = None
    return list(pairs)


def _ranks(count: int, pairs: list[tuple[int, int]]) -> list[int]:
    """Longest path from a source, over the edges that close no cycle (a depth-first walk in node order
    finds those that point back to a vertex on its stack)."""
    outgoing: list[list[int]] = [[] for _ in range(count)]
    for source, target in pairs:
        outgoing[source].append(target)
    state = [0] * count  # 1 on the stack, 2 done
    forward: list[list[int]] = [[] for _ in range(count)]
    for root in range(count):
        if state[root]:
            continue
        stack: list[tuple[int, Iterator[int]]] = [(root, iter(outgoing[root]))]
        state[root] = 1
        while stack:
            vertex, pending = stack[-1]
            following = next(pending, None)
            if following is None:
                state[vertex] = 2
                stack.pop()
            elif state[following] != 1:
                forward[vertex].append(following)
                if not state[following]:
                    state[following] = 1
                    stack.append((following, iter(outgoing[following])))
    incoming = [0] * count
    for targets in forward:
        for target in targets:
            incoming[target] += 1
    sources = [vertex for vertex in range(count) if not incoming[vertex]]
    ready = list(sources)
    rank = [0] * count
    while ready:
        vertex = ready.pop(0)
        for target in forward[vertex]:
            rank[target] = max(rank[target], rank[vertex] + 1)
            incoming[target] -= 1
            if not incoming[target]:
                ready.append(target)
    # a source sits just above its nearest successor, not at the top: its edges stay short
    for vertex in sources:
        if forward[vertex]:
            rank[vertex] = min(rank[target] for target in forward[vertex]) - 1
    return rank


def _layered(count: int, pairs: list[tuple[int, int]]) -> _Graph:
    rank = _ranks(count, pairs)
    down: list[list[int]] = [[] for _ in range(count)]
    up: list[list[int]] = [[] for _ in range(count)]
    chains: dict[tuple[int, int], list[int]] = {}
    for source, target in pairs:
        if rank[target] <= rank[source]:  # closes a cycle, or joins a layer: drawn straight
            continue
        route = [source]
        for step in range(rank[source] + 1, rank[target]):
            rank.append(step)
            down.append([])
            up.append([])
            route.append(len(rank) - 1)
        route.append(target)
        for near, far in itertools.pairwise(route):
            down[near].append(far)
            up[far].append(near)
        chains[(source, target)] = route
    layers: list[list[int]] = [[] for _ in range(max(rank, default=-1) + 1)]
    for vertex, layer in enumerate(rank):
        layers[layer].append(vertex)
    graph = _Graph(count, rank, chains, down, up, layers)
    _order(graph)
    return graph


def _order(graph: _Graph) -> None:
    layers = graph.layers
    for sweep in range(SWEEPS):
        downwards = sweep % 2 == 0
        for index in range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1):
            fixed = layers[index - 1] if downwards else layers[index + 1]
            place = {vertex: position for position, vertex in enumerate(fixed)}
            neighbours = graph.up if downwards else graph.down

            def centre(
                vertex: int,
                position: int,
                place: dict[int, int] = place,
                neighbours: list[list[int]] = neighbours,
            ) -> float:
                near = [place[other] for other in neighbours[vertex] if other in place]
                return sum(near) / len(near) if near else float(position)

            ordered = sorted(
                (centre(vertex, position), position, vertex) for position, vertex in enumerate(layers[index])
            )
            layers[index] = [vertex for _, _, vertex in ordered]


def layers_of(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[list[str]]:
    """The nodes in layers, each layer in its drawing order (bend points left out). Deterministic."""
    graph = _layered(len(nodes), _unique_edges(nodes, edges))
    return [[nodes[vertex] for vertex in layer if vertex < len(nodes)] for layer in graph.layers]


def _place(graph: _Graph, sizes: list[float], gaps: tuple[float, float]) -> list[float]:
    """Each vertex's centre across its layer: in order, not overlapping, as near as that allows to the mean
    of its neighbours' centres (a few rounds down and up)."""
    node_gap, bend_gap = gaps
    across = [0.0] * len(sizes)

    def gap(left: int, right: int) -> float:
        return node_gap if left < graph.node_count and right < graph.node_count else bend_gap

    def settle(layer: list[int], wanted: list[float]) -> None:
        placed: list[float] = []
        for position, vertex in enumerate(layer):
            lowest = (
                placed[-1]
                + (sizes[layer[position - 1]] + sizes[vertex]) / 2
                + gap(layer[position - 1], vertex)
                if placed
                else -float("inf")
            )
            placed.append(max(wanted[position], lowest))
        shift = sum(w - p for w, p in zip(wanted, placed, strict=True)) / len(placed) if placed else 0.0
        for vertex, centre in zip(layer, placed, strict=True):
            across[vertex] = centre + shift

    for layer in graph.layers:
        settle(layer, [0.0] * len(layer))
    for round_ in range(2 * PLACEMENT_ROUNDS):
        downwards = round_ % 2 == 0
        neighbours = graph.up if downwards else graph.down
        for layer in graph.layers if downwards else reversed(graph.layers):
            wanted = [
                sum(across[other] for other in neighbours[vertex]) / len(neighbours[vertex])
                if neighbours[vertex]
                else across[vertex]
                for vertex in layer
            ]
            settle(layer, wanted)
    left = min((across[vertex] - sizes[vertex] / 2 for vertex in range(len(sizes))), default=0.0)
    return [centre - left for centre in across]


def layout(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    label_widths: dict[str, float],
    *,
    fit_width: float,
) -> Layout:
    """Pixel positions of ``nodes`` and the bends of their edges; ``label_widths``: each node's label width.

    Left to right when the layers side by side fit ``fit_width`` (the page's usual width), else top to
    bottom (or left to right, if that is the narrower of the two); nothing is scaled down: a drawing larger
    than the page is panned and zoomed.
    """
    graph = _layered(len(nodes), _unique_edges(nodes, edges))
    widths = [label_widths.get(node, 0.0) + NODE_PADDING for node in nodes]
    widths += [BEND_SIZE] * (len(graph.rank) - len(nodes))
    layer_widths = [
        max((widths[v] for v in layer if v < len(nodes)), default=BEND_SIZE) for layer in graph.layers
    ]
    lr_width = sum(layer_widths) + LAYER_GAP_LR * max(len(graph.layers) - 1, 0)
    tb_across = _place(graph, widths, (SIBLING_GAP_TB, BEND_GAP))
    tb_width = max((tb_across[v] + widths[v] / 2 for v in range(len(widths))), default=0.0)
    lr = lr_width <= fit_width or lr_width < tb_width
    if lr:
        heights = [float(NODE_HEIGHT)] * len(nodes) + [BEND_SIZE] * (len(graph.rank) - len(nodes))
        across = _place(graph, heights, (SIBLING_GAP_LR, BEND_GAP))
        starts = [sum(layer_widths[:index]) + LAYER_GAP_LR * index for index in range(len(graph.layers))]
        points = [
            (starts[graph.rank[v]] + layer_widths[graph.rank[v]] / 2, across[v])
            for v in range(len(graph.rank))
        ]
        width, height = lr_width, max((across[v] + heights[v] / 2 for v in range(len(heights))), default=0.0)
    else:
        points = [
            (tb_across[v], graph.rank[v] * (NODE_HEIGHT + LAYER_GAP_TB) + NODE_HEIGHT / 2)
            for v in range(len(graph.rank))
        ]
        width = tb_width
        height = len(graph.layers) * (NODE_HEIGHT + LAYER_GAP_TB) - LAYER_GAP_TB if graph.layers else 0.0
    return Layout(
        positions={node: points[index] for index, node in enumerate(nodes)},
        bends={
            (nodes[source], nodes[target]): [points[vertex] for vertex in route[1:-1]]
            for (source, target), route in graph.chains.items()
            if len(route) > 2
        },
        width=width,
        height=height,
        direction="LR" if lr else "TB",
        layers=[[nodes[vertex] for vertex in layer if vertex < len(nodes)] for layer in graph.layers],
    )
