"""The flow's tree and critical path (model/critical_path.py) on hand-built flows with hand-computed answers,
and a property over random flows: the path tiles the flow, and each segment lies inside its span.

Times are in milliseconds in the cases (``MS`` nanoseconds each); span ids name the spans."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hopscope.collector.model.critical_path import PathSegment, critical_path, flow_tree
from hopscope.collector.model.flows import AsyncHop, FlowSpan

MS = 1_000_000


def span(
    span_id: str,
    start: float,
    end: float,
    *,
    trace: str = "t1",
    parent: str | None = None,
    kind: str = "INTERNAL",
    service: str = "svc",
) -> FlowSpan:
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": span_id,
        "kind": kind,
        "service": service,
        "start_unix_nano": int(start * MS),
        "end_unix_nano": int(end * MS),
        "duration_ms": end - start,
        "status": {"code": "UNSET", "message": ""},
        "attributes": {},
        "events": [],
        "links": [],
        "resource": {},
        "scope": {"name": "tests", "version": ""},
    }


def hop(producer: FlowSpan, consumer: FlowSpan, destination: str = "q") -> AsyncHop:
    return {
        "producer": {"trace_id": producer["trace_id"], "span_id": producer["span_id"]},
        "consumer": {"trace_id": consumer["trace_id"], "span_id": consumer["span_id"]},
        "producer_service": producer["service"],
        "consumer_service": consumer["service"],
        "messaging_system": "aws_sqs",
        "destination": destination,
        "queue_wait_ms": (consumer["start_unix_nano"] - producer["end_unix_nano"]) / MS,
        "receive_count": None,
    }


def path(spans: list[FlowSpan], hops: list[AsyncHop] | None = None) -> list[tuple[str, float, float]]:
    """The critical path as (span id, or "wait <consumer id>", or "gap"; start ms; end ms)."""
    return [_named(segment) for segment in critical_path(spans, hops or [])]


def _named(segment: PathSegment) -> tuple[str, float, float]:
    if segment.kind == "span":
        assert segment.span is not None
        name = segment.span[1]
    elif segment.kind == "wait":
        assert segment.span is not None and segment.hop is not None
        name = f"wait {segment.span[1]}"
    else:
        name = "gap"
    return (name, segment.start_unix_nano / MS, segment.end_unix_nano / MS)


def tree(spans: list[FlowSpan], hops: list[AsyncHop] | None = None) -> list[tuple[str, int, str | None, int]]:
    """The tree's rows as (span id, depth, parent span id, child count), in display order."""
    return [
        (row.key[1], row.depth, row.parent[1] if row.parent else None, row.child_count)
        for row in flow_tree(spans, hops or [])
    ]


def test_a_single_trace_with_nested_children() -> None:
    spans = [
        span("b", 50, 90, parent="r"),
        span("r", 0, 100),
        span("a1", 15, 30, parent="a"),
        span("a", 10, 40, parent="r"),
    ]
    assert tree(spans) == [("r", 0, None, 2), ("a", 1, "r", 1), ("a1", 2, "a", 0), ("b", 1, "r", 0)]
    assert path(spans) == [
        ("r", 0, 10),
        ("a", 10, 15),
        ("a1", 15, 30),
        ("a", 30, 40),
        ("r", 40, 50),
        ("b", 50, 90),
        ("r", 90, 100),
    ]


def test_overlapping_children_are_clipped_to_the_cursor() -> None:
    spans = [span("r", 0, 100), span("a", 10, 60, parent="r"), span("b", 40, 80, parent="r")]
    assert path(spans) == [("r", 0, 10), ("a", 10, 40), ("b", 40, 80), ("r", 80, 100)]
    # a child that outlives its parent ends the flow: the parent's time stops where the child starts
    spans = [span("r", 0, 50), span("c", 30, 70, parent="r")]
    assert path(spans) == [("r", 0, 30), ("c", 30, 70)]


def test_ties_go_to_the_child_that_started_first_then_to_the_smaller_ids() -> None:
    # two children ending together
    spans = [span("r", 0, 100), span("a", 30, 80, parent="r"), span("b", 10, 80, parent="r")]
    assert path(spans) == [("r", 0, 10), ("b", 10, 80), ("r", 80, 100)]
    spans = [span("r", 0, 100), span("b", 10, 80, parent="r"), span("a", 10, 80, parent="r")]
    assert path(spans) == [("r", 0, 10), ("a", 10, 80), ("r", 80, 100)]
    # two children that both reach past the cursor are clipped to it: a tie too
    spans = [
        span("r", 0, 20),
        span("a", 0, 10, parent="r"),
        span("b", 2, 12, parent="r"),
        span("c", 8, 14, parent="r"),
    ]
    assert path(spans) == [("a", 0, 8), ("c", 8, 14), ("r", 14, 20)]


def test_an_async_hop_hangs_the_consumer_trace_under_its_producer_with_its_queue_wait() -> None:
    api, producer = span("api", 0, 30), span("p", 10, 20, parent="api", kind="PRODUCER")
    consumer = span("c", 50, 80, trace="t2", kind="CONSUMER")
    spans = [consumer, span("d", 55, 70, trace="t2", parent="c"), api, producer]
    hops = [hop(producer, consumer)]
    assert tree(spans, hops) == [("api", 0, None, 1), ("p", 1, "api", 1), ("c", 2, "p", 1), ("d", 3, "c", 0)]
    rows = {row.key[1]: row for row in flow_tree(spans, hops)}
    assert rows["c"].hop == hops[0] and rows["c"].under_producer
    assert not rows["d"].under_producer and not rows["p"].under_producer
    assert path(spans, hops) == [
        ("api", 0, 10),
        ("p", 10, 20),
        ("wait c", 20, 50),
        ("c", 50, 55),
        ("d", 55, 70),
        ("c", 70, 80),
    ]
    [wait] = [segment for segment in critical_path(spans, hops) if segment.kind == "wait"]
    assert wait.hop == hops[0]


def test_a_batch_consumer_linked_to_two_producers_hangs_under_the_one_that_ended_last() -> None:
    api = span("api", 0, 40)
    p1 = span("p1", 5, 10, parent="api", kind="PRODUCER")
    p2 = span("p2", 20, 25, parent="api", kind="PRODUCER")
    batch = span("b", 60, 90, trace="t2", kind="CONSUMER")
    hops = [hop(p2, batch), hop(p1, batch)]
    spans = [api, p1, p2, batch]
    assert tree(spans, hops) == [
        ("api", 0, None, 2),
        ("p1", 1, "api", 0),
        ("p2", 1, "api", 1),
        ("b", 2, "p2", 0),
    ]
    assert path(spans, hops) == [
        ("api", 0, 5),
        ("p1", 5, 10),
        ("api", 10, 20),
        ("p2", 20, 25),
        ("wait b", 25, 60),
        ("b", 60, 90),
    ]
    # per-record spans under a batch invocation: the invocation (the trace's root) hangs under the producer,
    # and the wait ends when the invocation starts
    invocation = span("inv", 55, 95, trace="t2")
    r1 = span("r1", 60, 70, trace="t2", parent="inv", kind="CONSUMER")
    r2 = span("r2", 70, 90, trace="t2", parent="inv", kind="CONSUMER")
    hops = [hop(p1, r1), hop(p2, r2)]
    spans = [api, p1, p2, invocation, r1, r2]
    assert tree(spans, hops) == [
        ("api", 0, None, 2),
        ("p1", 1, "api", 0),
        ("p2", 1, "api", 1),
        ("inv", 2, "p2", 2),
        ("r1", 3, "inv", 0),
        ("r2", 3, "inv", 0),
    ]
    assert path(spans, hops) == [
        ("api", 0, 5),
        ("p1", 5, 10),
        ("api", 10, 20),
        ("p2", 20, 25),
        ("wait inv", 25, 55),
        ("inv", 55, 60),
        ("r1", 60, 70),
        ("r2", 70, 90),
        ("inv", 90, 95),
    ]


def test_a_retry_the_second_receive_ends_the_flow() -> None:
    api, producer = span("api", 0, 25), span("p", 10, 20, parent="api", kind="PRODUCER")
    first = span("c1", 30, 40, trace="t2", kind="CONSUMER")
    second = span("c2", 70, 90, trace="t3", kind="CONSUMER")
    hops = [hop(producer, first), hop(producer, second)]
    spans = [second, first, producer, api]
    assert tree(spans, hops) == [
        ("api", 0, None, 1),
        ("p", 1, "api", 2),
        ("c1", 2, "p", 0),
        ("c2", 2, "p", 0),
    ]
    assert path(spans, hops) == [("api", 0, 10), ("p", 10, 20), ("wait c2", 20, 70), ("c2", 70, 90)]


def test_a_consumer_that_starts_before_its_producer_ends_has_no_wait() -> None:
    api, producer = span("api", 0, 30), span("p", 10, 25, parent="api", kind="PRODUCER")
    consumer = span("c", 20, 50, trace="t2", kind="CONSUMER")
    spans = [api, producer, consumer]
    assert path(spans, [hop(producer, consumer)]) == [("api", 0, 10), ("p", 10, 20), ("c", 20, 50)]


def test_a_consumer_that_is_its_producers_child_in_one_trace_waits_too() -> None:
    # a message sent with its trace context as the parent (one trace): the hop marks the parent edge
    producer = span("p", 0, 10, kind="PRODUCER")
    consumer = span("c", 25, 40, parent="p", kind="CONSUMER")
    hops = [hop(producer, consumer)]
    assert tree([producer, consumer], hops) == [("p", 0, None, 1), ("c", 1, "p", 0)]
    assert flow_tree([producer, consumer], hops)[1].hop == hops[0]
    assert path([producer, consumer], hops) == [("p", 0, 10), ("wait c", 10, 25), ("c", 25, 40)]


def test_spans_whose_parent_is_missing_are_roots_and_what_nothing_covers_is_a_gap() -> None:
    spans = [
        span("b", 30, 60, parent="gone"),
        span("a", 0, 20, parent="also-gone"),
        span("x", 35, 40, trace="t2", parent="nowhere"),
        span("b1", 40, 50, parent="b"),
    ]
    assert tree(spans) == [("a", 0, None, 0), ("b", 0, None, 1), ("b1", 1, "b", 0), ("x", 0, None, 0)]
    assert path(spans) == [("a", 0, 20), ("gap", 20, 30), ("b", 30, 40), ("b1", 40, 50), ("b", 50, 60)]
    # a child that starts after its parent ended, with no hop between them: a gap until it starts
    spans = [span("r", 0, 10), span("late", 20, 30, parent="r")]
    assert path(spans) == [("r", 0, 10), ("gap", 10, 20), ("late", 20, 30)]


def test_hops_both_ways_between_two_traces_make_no_cycle_and_loops_of_parents_are_cut() -> None:
    a, p1 = span("a", 0, 50), span("p1", 10, 20, parent="a", kind="PRODUCER")
    b, p2 = span("b", 5, 60, trace="t2"), span("p2", 30, 40, trace="t2", parent="b", kind="PRODUCER")
    rows = tree([a, p1, b, p2], [hop(p1, b), hop(p2, a)])
    assert sorted(row[0] for row in rows) == ["a", "b", "p1", "p2"]
    assert [row[0] for row in rows if row[1] == 0] == ["b"]  # a (earlier) hangs under p2; b stays a root
    looped = [span("x", 0, 10, parent="y"), span("y", 2, 8, parent="x")]
    assert tree(looped) == [("x", 0, None, 1), ("y", 1, "x", 0)]
    assert path(looped) == [("x", 0, 2), ("y", 2, 8), ("x", 8, 10)]
    assert critical_path([], []) == [] and flow_tree([], []) == []


@st.composite
def flows(draw: Any) -> tuple[list[FlowSpan], list[AsyncHop]]:
    """Random flows: up to four traces of random spans (parents earlier in the trace, or missing), starts
    and ends anywhere (children outside their parents too), and hops between any two spans."""
    count = draw(st.integers(1, 14))
    spans: list[FlowSpan] = []
    for index in range(count):
        trace = f"t{draw(st.integers(0, 3))}"
        same = [other["span_id"] for other in spans if other["trace_id"] == trace]
        parent = draw(st.sampled_from([None, "missing", *same]))
        start = draw(st.integers(0, 100))
        spans.append(span(f"s{index}", start, start + draw(st.integers(0, 60)), trace=trace, parent=parent))
    pairs = draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1)), max_size=6))
    return spans, [hop(spans[p], spans[c]) for p, c in pairs if p != c]


@settings(max_examples=150, deadline=None)
@given(flows())
def test_the_critical_path_tiles_the_flow_and_each_segment_lies_inside_its_span(
    flow: tuple[list[FlowSpan], list[AsyncHop]],
) -> None:
    spans, hops = flow
    by_key = {(s["trace_id"], s["span_id"]): s for s in spans}
    segments = critical_path(spans, hops)
    start = min(s["start_unix_nano"] for s in spans)
    end = max(s["end_unix_nano"] for s in spans)
    if end == start:
        assert segments == []
    else:
        assert segments[0].start_unix_nano == start and segments[-1].end_unix_nano == end
    for before, after in pairwise(segments):
        assert before.end_unix_nano == after.start_unix_nano
    assert sum(segment.duration_ns for segment in segments) == end - start
    for segment in segments:
        assert segment.duration_ns > 0
        if segment.kind == "span":
            assert segment.span is not None
            owner = by_key[segment.span]
            assert owner["start_unix_nano"] <= segment.start_unix_nano
            assert segment.end_unix_nano <= owner["end_unix_nano"]
        elif segment.kind == "wait":
            assert segment.hop is not None
            producer = by_key[(segment.hop["producer"]["trace_id"], segment.hop["producer"]["span_id"])]
            assert producer["end_unix_nano"] <= segment.start_unix_nano
    rows = flow_tree(spans, hops)
    assert sorted(row.key for row in rows) == sorted(by_key)
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.parent is None:
            assert row.depth == 0
        else:
            assert seen[row.parent] == row.depth - 1  # each parent comes before its children
        seen[row.key] = row.depth
    assert sum(row.child_count for row in rows) == sum(row.parent is not None for row in rows)


def test_a_shared_batch_that_links_to_the_flows_producer_hangs_under_it_with_its_wait() -> None:
    """A batch invocation the flow shares with other flows has no hop of its own (the stitcher keeps the
    batch's hops per message): its link to the flow's producer places it, and a link to a span outside
    the flow does not."""
    api = span("api", 0, 10, trace="ta", kind="SERVER")
    publish = span("publish", 2, 6, trace="ta", parent="api", kind="PRODUCER")
    batch = span("batch", 40, 90, trace="tb", kind="CONSUMER", service="billing")
    batch["links"] = [
        {"trace_id": "other", "span_id": "elsewhere", "attributes": {}},
        {"trace_id": "ta", "span_id": "publish", "attributes": {}},
    ]
    batch["attributes"] = {"messaging.destination.name": "arn:aws:sqs:us-east-1:123456789012:billing"}
    assert tree([api, publish, batch]) == [
        ("api", 0, None, 1),
        ("publish", 1, "api", 1),
        ("batch", 2, "publish", 0),
    ]
    assert path([api, publish, batch]) == [
        ("api", 0, 2),
        ("publish", 2, 6),
        ("wait batch", 6, 40),
        ("batch", 40, 90),
    ]
    (wait,) = [segment for segment in critical_path([api, publish, batch], []) if segment.kind == "wait"]
    assert wait.hop is not None and wait.hop["destination"] == "billing" and wait.hop["queue_wait_ms"] == 34
