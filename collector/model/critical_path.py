"""A flow's spans as one tree across its linked traces, and the critical path through it.

Pure functions of a flow's spans and async hops (``FlowSpan`` and ``AsyncHop`` of model/flows.py), for the
dashboard's waterfall and anyone else who reads a flow.

The tree: spans nest under their parent span within each trace. A trace that consumed a message of the flow
hangs under the producer span its hop links to: its ROOT does (the consumer's topmost ancestor in the
flow), so that a per-message process span under a batch invocation keeps its invocation above it. When
several producers of the flow feed one consumer trace (a batch, or several messages to one invocation),
the trace hangs under the producer that ENDED LAST (the message the consumer had to wait for), ties to the
smallest (trace id, span id); a producer that is the consumer trace itself or below it is skipped (no
cycles). A span whose parent is not among the flow's spans is a root. Roots and siblings are ordered by
start time, then trace id, then span id.

The critical path: the chain of span segments and queue waits that determined the flow's end-to-end time,
first span start to last span end, across async hops (Jaeger's backward walk, extended to linked traces).
From the latest end, at each span going back from a cursor: pick the child (its sync children and the
consumer traces hanging under it) whose reach (its own end or any descendant's end, clipped to the cursor)
is latest, walk it, then move the cursor to the child's start; the span's own time between picks is its
segment. A consumer trace that started after its producer ended leaves a ``wait`` segment (producer end to
the consumer trace's root start) and the cursor at the producer's end: for a batch invocation the wait ends
when the invocation starts, its own time before the record's span is the invocation's. A consumer that
started before its producer ended leaves no wait. Ties: of children whose clipped reach is equal, the one
that started EARLIEST wins (it covers the stretch alone), then the smallest (trace id, span id).

Stretches no span covers (between two unrelated traces of the flow, or after a span ended and before a
child that outlived it) are ``gap`` segments, so the segments always tile the flow: contiguous, first start
to last end, their durations summing to the flow's duration.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from hopscope.collector.model import conventions
from hopscope.collector.model.destinations import destination_name
from hopscope.collector.model.flows import AsyncHop, FlowSpan

SpanKey: TypeAlias = tuple[str, str]  # (trace id, span id) in hex
SegmentKind: TypeAlias = Literal["span", "wait", "gap"]


def span_key(span: FlowSpan) -> SpanKey:
    return (span["trace_id"], span["span_id"])


@dataclass(frozen=True)
class TreeRow:
    """One span's row of the flow's tree, in display order (depth first, children by start time).

    ``hop`` is set when the row hangs under a producer of another trace (or is a consumer child of its own
    trace's producer): the hop that placed it, whose ``queue_wait_ms`` is its consumer's wait.
    """

    span: FlowSpan
    key: SpanKey
    depth: int
    parent: SpanKey | None
    child_count: int
    hop: AsyncHop | None

    @property
    def under_producer(self) -> bool:
        return self.hop is not None


@dataclass(frozen=True)
class PathSegment:
    """One stretch of the critical path: a span's own time, a message's queue wait, or a gap.

    ``span`` is the span for a ``span`` segment and the consumer trace's root for a ``wait`` (the row the
    wait leads to); ``hop`` is the hop of a ``wait``; a ``gap`` has neither.
    """

    kind: SegmentKind
    start_unix_nano: int
    end_unix_nano: int
    span: SpanKey | None = None
    hop: AsyncHop | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_unix_nano - self.start_unix_nano


@dataclass
class _Node:
    span: FlowSpan
    key: SpanKey
    parent: SpanKey | None = None
    hop: AsyncHop | None = None  # the hop of the edge from the parent, if any
    reach: int = 0  # the latest end in its subtree

    @property
    def start(self) -> int:
        return self.span["start_unix_nano"]

    @property
    def end(self) -> int:
        return max(self.span["end_unix_nano"], self.span["start_unix_nano"])

    def order(self) -> tuple[int, str, str]:
        return (self.start, self.key[0], self.key[1])


def link_hops(spans: Sequence[FlowSpan], hops: Sequence[AsyncHop]) -> list[AsyncHop]:
    """Hops read from span links that the flow's hops do not name: a consumer span (a batch invocation the
    flow shares with other flows, whose hops the stitcher keeps per message) linking to a span of the flow
    hangs under that span like any consumer, with its wait measured the same way."""
    by_key = {span_key(span): span for span in spans}
    named = {(hop["consumer"]["trace_id"], hop["consumer"]["span_id"]) for hop in hops}
    found: list[AsyncHop] = []
    for span in spans:
        if span["kind"] != "CONSUMER" or span_key(span) in named:
            continue
        for link in span["links"]:
            producer = by_key.get((link["trace_id"], link["span_id"]))
            if producer is None or producer is span:
                continue
            found.append(
                AsyncHop(
                    producer={"trace_id": link["trace_id"], "span_id": link["span_id"]},
                    consumer={"trace_id": span["trace_id"], "span_id": span["span_id"]},
                    producer_service=producer["service"],
                    consumer_service=span["service"],
                    messaging_system=producer["attributes"].get(conventions.MESSAGING_SYSTEM),
                    destination=destination_name(span["attributes"]) or "",
                    queue_wait_ms=(span["start_unix_nano"] - producer["end_unix_nano"]) / 1e6,
                    receive_count=span["attributes"].get(conventions.RECEIVE_COUNT),
                )
            )
    return found


class _Tree:
    """The flow's spans linked into one forest: parents within traces, consumer traces under producers."""

    def __init__(self, spans: Sequence[FlowSpan], hops: Sequence[AsyncHop]) -> None:
        self.nodes: dict[SpanKey, _Node] = {}
        for span in spans:
            self.nodes.setdefault(span_key(span), _Node(span, span_key(span)))
        for node in self.nodes.values():
            parent = node.span["parent_span_id"]
            if parent is not None and (node.key[0], parent) in self.nodes:
                node.parent = (node.key[0], parent)
        self._break_cycles()
        self._attach([*hops, *link_hops(spans, hops)])
        self.children: dict[SpanKey | None, list[_Node]] = {}
        for node in sorted(self.nodes.values(), key=_Node.order):
            self.children.setdefault(node.parent, []).append(node)
        self._reaches()

    def top(self, key: SpanKey) -> SpanKey:
        """The topmost ancestor of ``key`` along the current parents (no cycles by then)."""
        while (parent := self.nodes[key].parent) is not None:
            key = parent
        return key

    def _break_cycles(self) -> None:
        """Malformed parent ids can loop: the earliest span of a loop becomes a root."""
        done: set[SpanKey] = set()
        for node in sorted(self.nodes.values(), key=_Node.order):
            path: list[SpanKey] = []
            on_path: set[SpanKey] = set()
            key: SpanKey | None = node.key
            while key is not None and key not in done:
                if key in on_path:
                    loop = path[path.index(key) :]
                    first = min(loop, key=lambda member: self.nodes[member].order())
                    self.nodes[first].parent = None
                    break
                path.append(key)
                on_path.add(key)
                key = self.nodes[key].parent
            done.update(path)

    def _attach(self, hops: Sequence[AsyncHop]) -> None:
        candidates: dict[SpanKey, list[tuple[_Node, AsyncHop]]] = {}
        for hop in hops:
            producer = self.nodes.get((hop["producer"]["trace_id"], hop["producer"]["span_id"]))
            consumer = self.nodes.get((hop["consumer"]["trace_id"], hop["consumer"]["span_id"]))
            if producer is None or consumer is None:
                continue
            if consumer.parent == producer.key:  # a consumer child of its own producer (one trace)
                if consumer.hop is None:
                    consumer.hop = hop
                continue
            candidates.setdefault(self.top(consumer.key), []).append((producer, hop))
        for root_key in sorted(candidates, key=lambda key: self.nodes[key].order()):
            choices = sorted(
                candidates[root_key], key=lambda pair: (-pair[0].end, pair[0].key[0], pair[0].key[1])
            )
            for producer, hop in choices:
                if self.top(producer.key) != root_key:  # not the consumer trace itself or below it
                    root = self.nodes[root_key]
                    root.parent, root.hop = producer.key, hop
                    break

    def _reaches(self) -> None:
        for node in reversed(list(self._preorder())):
            node.reach = max([node.end, *(child.reach for child in self.children.get(node.key, []))])

    def _preorder(self) -> Iterator[_Node]:
        stack = list(reversed(self.children.get(None, [])))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(self.children.get(node.key, [])))

    def depths(self) -> Iterator[tuple[_Node, int]]:
        stack = [(node, 0) for node in reversed(self.children.get(None, []))]
        while stack:
            node, depth = stack.pop()
            yield node, depth
            stack.extend((child, depth + 1) for child in reversed(self.children.get(node.key, [])))


def flow_tree(spans: Sequence[FlowSpan], hops: Sequence[AsyncHop]) -> list[TreeRow]:
    """Every span of the flow once, in display order: each parent before its children (depth first),
    roots and siblings by start time, then trace id, then span id (see the module's docstring for where
    consumer traces hang)."""
    tree = _Tree(spans, hops)
    return [
        TreeRow(
            span=node.span,
            key=node.key,
            depth=depth,
            parent=node.parent,
            child_count=len(tree.children.get(node.key, [])),
            hop=node.hop,
        )
        for node, depth in tree.depths()
    ]


def critical_path(spans: Sequence[FlowSpan], hops: Sequence[AsyncHop]) -> list[PathSegment]:
    """The flow's critical path, in time order: segments tiling [first span start, last span end].

    Adjacent segments of the same kind and span are merged; empty ones are left out. No spans, no path.
    """
    tree = _Tree(spans, hops)
    roots = tree.children.get(None, [])
    if not roots:
        return []
    start = min(node.start for node in tree.nodes.values())
    end = max(node.reach for node in roots)
    backwards: list[PathSegment] = []
    # The flow itself is the walk's top: a node spanning no time, so all its "own" time is gap.
    top = _Node(roots[0].span, ("", ""), reach=end)
    walks: list[_Steps] = [_walk(tree, top, backwards, children=roots, cursor=end, floor=start, own=False)]
    # A trampoline instead of recursion: a flow's tree may be thousands of spans deep.
    while walks:
        step = next(walks[-1], None)
        if step is None:
            walks.pop()
        else:
            walks.append(step)
    return _merged(reversed(backwards))


# A walk yields the walks of the children it picks, each run to its end before the walk goes on.
_Steps: TypeAlias = Iterator["_Steps"]


def _walk(
    tree: _Tree,
    node: _Node,
    out: list[PathSegment],
    *,
    children: list[_Node],
    cursor: int,
    floor: int,
    own: bool = True,
) -> _Steps:
    """Walk ``node`` back from ``cursor`` to ``max(node.start, floor)``, appending segments latest first;
    yields the walk of each picked child (run by the trampoline) before going on."""
    low = max(node.start, floor) if own else floor
    node_end = node.end if own else floor
    clipped: list[tuple[int, str, str, _Node]] = []  # reach >= cursor: by start, then ids
    pending = [(-child.reach, child.start, child.key[0], child.key[1], child) for child in children]
    heapq.heapify(pending)
    t = cursor
    while True:
        while pending and -pending[0][0] >= t:
            _, child_start, trace_id, span_id, child = heapq.heappop(pending)
            heapq.heappush(clipped, (child_start, trace_id, span_id, child))
        picked: _Node | None = None
        reach = t
        if clipped:
            if max(clipped[0][0], low) < t:
                picked = heapq.heappop(clipped)[3]
            else:  # every clipped child starts at or after the cursor, which only goes back
                clipped.clear()
        while picked is None and pending:
            candidate = heapq.heappop(pending)[4]
            if candidate.reach > max(candidate.start, low):
                picked, reach = candidate, candidate.reach
        if picked is None:
            _fill(node, out, start=low, end=t, node_end=node_end, own=own)
            return
        _fill(node, out, start=reach, end=t, node_end=node_end, own=own)
        child_low = max(picked.start, low)
        children_of = tree.children.get(picked.key, [])
        yield _walk(tree, picked, out, children=children_of, cursor=reach, floor=low)
        if own and child_low > node_end:
            # the child started after the span ended: a queue wait if a hop links them, else a gap
            gap_start = max(node_end, low)
            if picked.hop is not None:
                out.append(PathSegment("wait", gap_start, child_low, span=picked.key, hop=picked.hop))
            else:
                out.append(PathSegment("gap", gap_start, child_low))
            t = gap_start
        else:
            t = child_low


def _fill(node: _Node, out: list[PathSegment], *, start: int, end: int, node_end: int, own: bool) -> None:
    """[start, end] of ``node``'s walk that no child covers: its own time up to its end, a gap after."""
    if end > node_end:
        out.append(PathSegment("gap", max(start, node_end), end))
    if own and min(end, node_end) > start:
        out.append(PathSegment("span", start, min(end, node_end), span=node.key))


def _merged(segments: Iterator[PathSegment]) -> list[PathSegment]:
    merged: list[PathSegment] = []
    for segment in segments:
        if segment.duration_ns <= 0:
            continue
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.kind == segment.kind
            and last.span == segment.span
            and last.hop == segment.hop
            and last.end_unix_nano == segment.start_unix_nano
        ):
            merged[-1] = PathSegment(
                last.kind, last.start_unix_nano, segment.end_unix_nano, last.span, last.hop
            )
        else:
            merged.append(segment)
    return merged
