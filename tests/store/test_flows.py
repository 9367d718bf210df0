"""Flow stitching on a real SQLite store, from spans made by the real OpenTelemetry SDK."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, SpanKind, flows_by_trace, order_chain, post


@pytest.fixture
def store(new_store: Callable[..., Any]) -> Any:
    """The shared store suite: every test that takes ``store`` runs on SQLite and on ClickHouse (chdb)."""
    return new_store("flows")


def test_a_chain_of_linked_traces_is_one_flow_with_its_summary(store: Any) -> None:
    # GIVEN an API -> SNS -> SQS -> consumer chain in three traces joined by links
    services = Services()
    order_chain(services, "o-1", fail=True)
    spans = services.spans()
    assert len({span.context.trace_id for span in spans}) == 3
    # WHEN its spans are stored
    post(store, spans)
    # THEN the three traces form one flow, and its summary says what happened end to end
    flows = flows_by_trace(store, spans)
    assert len(flows) == 1
    (flow_id,) = flows
    summary = QueryLayer(store).flow_summary(flow_id)
    assert summary is not None
    assert summary.trace_count == 3
    assert summary.span_count == 5
    assert summary.services == ["billing", "orders-api", "shipping"]
    assert (summary.entry_service, summary.entry_operation) == ("orders-api", "POST /orders")
    assert summary.error_count == 1
    assert summary.correlation_ids == ["o-1"]
    assert summary.max_receive_count == 3
    assert summary.start_unix_nano == min(span.start_time for span in spans)  # type: ignore[type-var]
    assert summary.end_unix_nano == max(span.end_time for span in spans)  # type: ignore[type-var]


def _flow_shape(store: Any, spans: Sequence[ReadableSpan]) -> list[tuple[object, ...]]:
    """Everything about the flows except their ids, to compare stores filled in different orders."""
    layer = QueryLayer(store)
    shape = []
    for flow_id, trace_ids in flows_by_trace(store, spans).items():
        summary = layer.flow_summary(flow_id)
        assert summary is not None
        shape.append(
            (
                sorted(trace_ids),
                summary.span_count,
                summary.trace_count,
                summary.error_count,
                summary.start_unix_nano,
                summary.end_unix_nano,
                summary.entry_operation,
                tuple(summary.services),
                tuple(summary.correlation_ids),
                summary.max_receive_count,
            )
        )
    return sorted(shape)  # type: ignore[type-var]


@pytest.mark.parametrize("arrival", ["reversed", "shuffled one span per request", "shuffled batches"])
def test_arrival_order_does_not_change_the_flows(new_store: Callable[..., Any], arrival: str) -> None:
    # GIVEN two chains stored in the order they were made
    services = Services()
    order_chain(services, "o-1")
    order_chain(services, "o-2", fail=True)
    spans = services.spans()
    in_order = new_store("in-order")
    post(in_order, spans)
    # WHEN the same spans arrive in another order, over other requests
    other = new_store("other")
    shuffled = list(spans)
    random.Random(7).shuffle(shuffled)
    if arrival == "reversed":
        for span in reversed(spans):
            post(other, [span])
    elif arrival == "shuffled one span per request":
        for span in shuffled:
            post(other, [span])
    else:
        for start in range(0, len(shuffled), 3):
            post(other, shuffled[start : start + 3])
    # THEN the flows are the same: two of them, with the same traces and summaries
    assert len(flows_by_trace(other, spans)) == 2
    assert _flow_shape(other, spans) == _flow_shape(in_order, spans)


def test_a_shared_message_id_alone_joins_producer_and_consumer(store: Any) -> None:
    services = Services()
    order_chain(services, "o-9", links=False)
    spans = services.spans()
    post(store, spans[::-1])
    assert len(flows_by_trace(store, spans)) == 1


def test_a_message_id_on_another_destination_does_not_join(store: Any) -> None:
    # GIVEN a producer and a consumer with the same message id but on different destinations
    services = Services()
    tracer = services.tracer("svc")
    for destination, kind in (("queue-a", SpanKind.PRODUCER), ("queue-b", SpanKind.CONSUMER)):
        attributes = {"messaging.message.id": "same", "messaging.destination.name": destination}
        with tracer.start_as_current_span("x", context=context.Context(), kind=kind, attributes=attributes):
            pass
    post(store, services.spans())
    assert len(flows_by_trace(store, services.spans())) == 2


def test_unrelated_chains_stay_separate_flows(store: Any) -> None:
    services = Services()
    order_chain(services, "o-1")
    order_chain(services, "o-2")
    spans = services.spans()
    post(store, spans)
    flows = flows_by_trace(store, spans)
    assert len(flows) == 2
    assert sorted(len(traces) for traces in flows.values()) == [3, 3]


def test_a_late_link_merges_two_flows_and_the_old_id_still_resolves(store: Any) -> None:
    # GIVEN trace A, and trace C that links to a trace B not stored yet: two flows
    services = Services()
    tracer = services.tracer("svc")
    b_context = trace.SpanContext(
        int("b" * 32, 16),
        int("b" * 16, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with tracer.start_as_current_span("a", context=context.Context(), kind=SpanKind.PRODUCER) as a:
        pass
    with tracer.start_as_current_span(
        "c", context=context.Context(), kind=SpanKind.CONSUMER, links=[trace.Link(b_context)]
    ):
        pass
    post(store, services.spans())
    flow_ids = flows_by_trace(store, services.spans())
    assert len(flow_ids) == 2
    # WHEN B arrives, linked to A
    b_span = services.tracer("svc").start_span(
        "b",
        context=trace.set_span_in_context(trace.NonRecordingSpan(b_context)),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(a.get_span_context())],
    )
    b_span.end()
    post(store, services.spans()[2:])
    # THEN A, B and C are one flow, and both old ids resolve to it
    merged = flows_by_trace(store, services.spans())
    assert len(merged) == 1
    (standing,) = merged
    assert {store.resolve_flow(flow_id) for flow_id in flow_ids} == {standing}
    summary = QueryLayer(store).flow_summary(min(flow_ids))
    assert summary is not None and summary.trace_count == 3 and summary.span_count == 3


def test_a_batch_trace_linking_many_messages_merges_none_of_their_flows(store: Any) -> None:
    # GIVEN two orders, two flows
    services = Services()
    tracer = services.tracer("svc")
    with tracer.start_as_current_span("first", context=context.Context(), kind=SpanKind.PRODUCER) as first:
        pass
    with tracer.start_as_current_span("second", context=context.Context(), kind=SpanKind.PRODUCER) as second:
        pass
    post(store, services.spans())
    # WHEN one consumer invocation processes both (a batch span linking both producers)
    links = [trace.Link(first.get_span_context()), trace.Link(second.get_span_context())]
    with tracer.start_as_current_span(
        "batch", context=context.Context(), kind=SpanKind.CONSUMER, links=links
    ):
        pass
    post(store, services.spans()[2:])
    # THEN the orders keep their own flows (the batch trace is a flow of its own)
    assert len(flows_by_trace(store, services.spans())) == 3


def test_resent_spans_are_not_counted_twice(store: Any) -> None:
    services = Services()
    order_chain(services, "o-1")
    spans = services.spans()
    post(store, spans)
    post(store, spans[:2])
    post(store, spans)
    (flow_id,) = flows_by_trace(store, spans)
    summary = QueryLayer(store).flow_summary(flow_id)
    assert summary is not None
    assert (summary.span_count, summary.trace_count) == (5, 3)


def test_flows_are_found_by_correlation_id_message_id_service_and_status(store: Any) -> None:
    services = Services()
    order_chain(services, "o-1")
    order_chain(services, "o-2", fail=True)
    post(store, services.spans())
    layer = QueryLayer(store)

    def correlation_ids(**criteria: object) -> list[list[str]]:
        return [summary.correlation_ids for summary in layer.search_flows(FlowFilter(**criteria))]  # type: ignore[arg-type]

    assert correlation_ids(correlation_id="o-2") == [["o-2"]]
    assert correlation_ids(message_id="sqs-o-1") == [["o-1"]]
    assert correlation_ids(errors_only=True) == [["o-2"]]
    assert correlation_ids(service="shipping") == [["o-2"], ["o-1"]]  # newest first
    assert correlation_ids(correlation_id="nope") == []


def test_spans_stored_but_not_yet_stitched_are_stitched_after_a_restart(tmp_path: Path) -> None:
    # GIVEN spans committed by the writer path (acknowledged) but never stitched before the store closed
    services = Services()
    order_chain(services, "o-7")
    spans = services.spans()
    store = SQLiteStore(tmp_path / "restart.db")
    store.write_prepared([store.prepare(encode_spans(spans))])
    assert store.flows_pending
    store.close()
    # WHEN the store opens again (as a restarted collector does)
    reopened = SQLiteStore(tmp_path / "restart.db")
    assert reopened.flows_pending
    while reopened.stitch_flows(2):  # small chunks, as the writer does while spans keep arriving
        pass
    # THEN the flow is whole, and stitching again adds nothing
    assert not reopened.flows_pending
    (flow_id,) = flows_by_trace(reopened, spans)
    summary = QueryLayer(reopened).flow_summary(flow_id)
    assert summary is not None and (summary.span_count, summary.trace_count) == (5, 3)
    assert reopened.stitch_flows(100) == 0
    assert QueryLayer(reopened).flow_summary(flow_id) == summary
