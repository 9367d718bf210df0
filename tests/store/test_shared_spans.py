"""A batch consumer's span shared by the flows of the messages it processed (issue 15, item 1).

Spans come from the real SDK; every test runs on SQLite and on ClickHouse (chdb) through ``new_store``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from hopscope.collector.model.flows import FlowDetail, FlowFilter
from hopscope.collector.query.layer import QueryLayer
from tests.helpers.flow_chains import Services, post
from tests.helpers.flow_chains import consume_batch as consume
from tests.helpers.flow_chains import publish_order as publish


def trace_bytes(span: trace.Span | ReadableSpan) -> bytes:
    context_ = span.get_span_context()
    assert context_ is not None
    return context_.trace_id.to_bytes(16, "big")


def flow_of(store: Any, span: trace.Span) -> int:
    flow_id = store.flow_of_trace(trace_bytes(span))
    assert flow_id is not None
    return int(flow_id)


def span_ids(detail: FlowDetail) -> set[str]:
    return {span["span_id"] for span in detail.spans}


def test_a_batch_span_is_in_the_flow_of_each_message_it_processed(new_store: Callable[..., Any]) -> None:
    store = new_store()
    layer = QueryLayer(store)
    services = Services()
    # GIVEN three orders: two processed in one batch (whose DynamoDB call fails), one on its own
    one, two, three = (publish(services, order) for order in ("o1", "o2", "o3"))
    batch = consume(services, [one, two], orders=["o1", "o2"], fail=True)
    alone = consume(services, [three], orders=["o3"])
    # WHEN their spans are stored and stitched
    post(store, services.spans())
    # THEN the orders keep distinct flows, and each batch message's flow holds the batch's two spans
    flows = [flow_of(store, producer) for producer in (one, two, three)]
    assert len(set(flows)) == 3
    assert flow_of(store, alone) == flows[2]
    batch_spans = {
        format(span.context.span_id, "016x")
        for span in services.spans()
        if span.context.trace_id == batch.get_span_context().trace_id
    }
    assert len(batch_spans) == 2
    for flow_id, other in ((flows[0], flows[1]), (flows[1], flows[0])):
        detail = layer.flow(flow_id)
        assert detail is not None
        assert batch_spans <= span_ids(detail)
        # ... marked as shared, with the batch's other message and the flow it is in
        assert detail.shared_traces == [
            {"trace_id": trace_bytes(batch).hex(), "other_messages": 1, "other_flow_ids": [other]}
        ]
        # ... counted in its summary: the order's two spans, the batch's two, one of them an error
        assert (detail.summary.span_count, detail.summary.trace_count) == (4, 2)
        assert len(detail.spans) == detail.summary.span_count
        assert detail.summary.error_count == 1
        assert detail.summary.services == ["orders-api", "shipping"]
        assert detail.summary.correlation_ids == sorted(
            {"batch-o1-o2", "o1" if flow_id == flows[0] else "o2"}
        )
        # ... with the delivery as a hop from the order's producer to the batch's consumer span
        assert [(hop["producer"]["span_id"], hop["consumer"]["span_id"]) for hop in detail.hops] == [
            (
                format((one if flow_id == flows[0] else two).get_span_context().span_id, "016x"),
                format(batch.get_span_context().span_id, "016x"),
            )
        ]
    # ... the order processed alone shares nothing
    alone_detail = layer.flow(flows[2])
    assert alone_detail is not None and alone_detail.shared_traces == []
    # ... the flow list holds the three message flows, never a flow of the batch alone
    listed = {summary.flow_id for summary in layer.search_flows(FlowFilter(limit=100))}
    assert listed == set(flows)
    # ... a search by what the batch carries finds the message flows
    assert {s.flow_id for s in layer.search_flows(FlowFilter(correlation_id="batch-o1-o2"))} == set(flows[:2])
    assert {s.flow_id for s in layer.search_flows(FlowFilter(errors_only=True))} == set(flows[:2])
    assert {s.flow_id for s in layer.search_flows(FlowFilter(operation="DynamoDB.PutItem"))} == set(flows)
    # ... and a message id that only a link carries finds its message's flow
    for order, flow_id in zip(("o1", "o2", "o3"), flows, strict=True):
        assert [s.flow_id for s in layer.search_flows(FlowFilter(message_id=f"m-{order}"))] == [flow_id]
    # ... the flow's OTLP export holds the shared spans too
    exported = layer.flow_otlp(flows[0])
    assert exported is not None
    exported_ids = {
        span.span_id.hex()
        for resource in exported.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert batch_spans <= exported_ids


def test_a_message_the_batch_sent_is_found_in_the_flows_sharing_it(new_store: Callable[..., Any]) -> None:
    store = new_store()
    layer = QueryLayer(store)
    services = Services()
    # GIVEN two orders processed in one batch, which sends one shipment message while it runs
    one, two = publish(services, "s1"), publish(services, "s2")
    batch = consume(services, [one, two], orders=["s1", "s2"])
    with services.tracer("shipping").start_as_current_span(
        "shipment-events publish",
        context=trace.set_span_in_context(batch),
        kind=trace.SpanKind.PRODUCER,
        attributes={"messaging.system": "aws.sns", "messaging.destination.name": "shipment-events",
                    "messaging.message.id": "shipment-1"},
    ):  # fmt: skip
        pass
    post(store, services.spans())
    # WHEN its message id is searched
    found = {summary.flow_id for summary in layer.search_flows(FlowFilter(message_id="shipment-1"))}
    # THEN the orders' flows come back (the batch's own flow is none to list)
    assert found == {flow_of(store, one), flow_of(store, two)}


def test_a_batch_that_arrives_before_its_producers_is_shared_when_they_come(
    new_store: Callable[..., Any],
) -> None:
    store = new_store()
    layer = QueryLayer(store)
    services = Services()
    one, two = publish(services, "a1"), publish(services, "a2")
    producers = services.spans()
    consume(services, [one, two], orders=["a1", "a2"])
    batch = [span for span in services.spans() if span not in producers]
    # GIVEN the batch's spans stored first, alone
    post(store, batch)
    assert layer.search_flows(FlowFilter(limit=100)) == []
    # WHEN the producers' spans arrive
    post(store, producers)
    # THEN each order's flow shares the batch
    for producer in (one, two):
        detail = layer.flow(flow_of(store, producer))
        assert detail is not None
        assert len(detail.shared_traces) == 1 and detail.summary.span_count == 4


# -- property: any arrival order and split gives the same flows and hops --------------------------------


@st.composite
def batches(draw: st.DrawFn) -> list[list[int]]:
    """Orders 0..n-1 cut into consumer invocations of one to three messages, in a random order."""
    count = draw(st.integers(min_value=2, max_value=7))
    orders = draw(st.permutations(range(count)))
    cuts: list[list[int]] = []
    index = 0
    while index < count:
        size = draw(st.integers(min_value=1, max_value=3))
        cuts.append(list(orders[index : index + size]))
        index += size
    return cuts


def shape(
    store: Any, producers: Sequence[trace.Span]
) -> list[tuple[frozenset[str], frozenset[tuple[str, str]], int]]:
    """Each order's flow as what does not depend on ids handed out: its spans, its hops, its span count."""
    layer = QueryLayer(store)
    shapes = []
    for producer in producers:
        detail = layer.flow(flow_of(store, producer))
        assert detail is not None
        hops = frozenset((hop["producer"]["span_id"], hop["consumer"]["span_id"]) for hop in detail.hops)
        shapes.append((frozenset(span_ids(detail)), hops, detail.summary.span_count))
    return shapes


_STORE_NUMBERS = itertools.count()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=batches(), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_shared_batch_spans_in_any_order_and_split_give_the_same_flows(
    new_store: Callable[..., Any], cuts: list[list[int]], seed: int
) -> None:
    services = Services()
    count = sum(len(cut) for cut in cuts)
    producers = [publish(services, f"p{order}") for order in range(count)]
    for cut in cuts:
        consume(services, [producers[order] for order in cut], orders=[f"p{order}" for order in cut])
    spans = services.spans()
    # GIVEN the same spans posted in order to one store, and shuffled and split over requests to another
    number = next(_STORE_NUMBERS)  # a store of its own for each example
    in_order, shuffled = new_store(f"in-order-{number}"), new_store(f"shuffled-{number}")
    post(in_order, spans)
    rng = random.Random(seed)
    mixed = rng.sample(spans, len(spans))
    while mixed:
        size = rng.randint(1, len(mixed))
        post(shuffled, mixed[:size])
        mixed = mixed[size:]
    # THEN every order's flow has the same spans, hops and counts in both
    expected = shape(in_order, producers)
    assert shape(shuffled, producers) == expected
    # ... each flow holds its order's two spans, and its consumer's two (shared or not)
    assert all(len(spans_) == 4 and count_ == 4 for spans_, _, count_ in expected)
    # ... and the flow list holds one flow per order, on both
    for store in (in_order, shuffled):
        assert len(QueryLayer(store).search_flows(FlowFilter(limit=100))) == count
