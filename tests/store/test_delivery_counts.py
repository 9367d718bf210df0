"""Each delivery once: one async hop per delivery in the flow detail, and RED counting invocations.

GIVEN SQS messages sent by a producer service (real SDK spans) and consumed by a Lambda handler under
hopscope's ``@traced_handler`` + ``process_batch`` (an invocation span and one per-record span per message),
WHEN the spans are stored (SQLite and chdb, through ``new_store``),
THEN each delivery is one hop of its message's flow, the consumer's RED counts its invocations (not the
per-record spans too), and the consume edge of the service graph counts the messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan

from hopscope.collector.model.flows import AsyncHop
from hopscope.collector.model.red import SpanRole
from hopscope.collector.query.layer import QueryLayer
from hopscope.instrumentation import process_batch, traced_handler
from tests.helpers.flow_chains import Services, SpanKind, post
from tests.helpers.lambda_shapes import ACCOUNT, LambdaContext, sqs_record
from tests.helpers.servers import GlobalSpans

QUEUE = "orders"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{QUEUE}"
CONSUMER = "tests"  # the service name of the session's global provider, which the handler traces with
HOUR_NS = 3600 * 10**9


class Shop:
    """An orders API that sends SQS messages (its own SDK provider) and a consumer Lambda (the global one)."""

    def __init__(self, spans: GlobalSpans) -> None:
        self.producers = Services()
        self.spans = spans
        self.sent: dict[str, ReadableSpan] = {}

    def send(self, message_id: str) -> dict[str, Any]:
        """A producer span for ``message_id`` and the boto3 ReceiveMessage message carrying its context."""
        tracer = self.producers.tracer("orders-api")
        with tracer.start_as_current_span(
            "send orders",
            context=context.Context(),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "aws_sqs",
                "messaging.destination.name": QUEUE,
                "messaging.message.id": message_id,
            },
        ) as producer:
            producer_context = producer.get_span_context()
        self.sent[message_id] = self.producers.spans()[-1]
        traceparent = f"00-{producer_context.trace_id:032x}-{producer_context.span_id:016x}-01"
        return {
            "MessageId": message_id,
            "ReceiptHandle": f"receipt-{message_id}",
            "Body": "{}",
            "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
            "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(time.time_ns() // 10**6)},
            "MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": traceparent}},
        }

    def deliver(self, messages: list[dict[str, Any]], *, fail: bool = False, in_lambda: bool = True) -> None:
        """One Lambda invocation of the consumer with these messages as its batch (outside Lambda: the
        handler called without a context, so no span carries ``faas.invocation_id``)."""

        def record_handler(record: dict[str, Any]) -> None:
            if fail:
                raise RuntimeError("carrier down")

        @traced_handler
        def handler(event: dict[str, Any], lambda_context: Any) -> Any:
            return process_batch(event, record_handler)

        handler(
            {"Records": [sqs_record(message, QUEUE_ARN) for message in messages]},
            LambdaContext(function_name="shipping") if in_lambda else None,
        )

    def store_all(self, store: Any) -> QueryLayer:
        post(store, self.producers.spans() + self.spans.finished())
        return QueryLayer(store)

    def hops_of(self, layer: QueryLayer, message_id: str) -> list[AsyncHop]:
        producer = self.sent[message_id].context
        flow_id = layer.flow_of_trace(producer.trace_id.to_bytes(16, "big"))
        assert flow_id is not None
        detail = layer.flow(flow_id)
        assert detail is not None
        return detail.hops


@pytest.fixture
def shop(spans: GlobalSpans) -> Iterator[Shop]:
    yield Shop(spans)
    spans.exporter.clear()


def record_spans(spans: GlobalSpans) -> list[ReadableSpan]:
    return [s for s in spans.finished() if "faas.trigger" not in (s.attributes or {})]


def invocation_spans(spans: GlobalSpans) -> list[ReadableSpan]:
    return [s for s in spans.finished() if "faas.trigger" in (s.attributes or {})]


def window() -> tuple[int, int]:
    now = time.time_ns()
    return now - HOUR_NS, now + 60 * 10**9


def consume_edge_count(layer: QueryLayer) -> int:
    since, until = window()
    edges = layer.graph(since, until, ("consume",)).edges
    return sum(edge.red.span_count for edge in edges if edge.target == f"service:{CONSUMER}")


def test_seven_single_record_invocations_are_seven_hops_seven_invocations_seven_messages(
    shop: Shop, spans: GlobalSpans, new_store: Callable[..., Any]
) -> None:
    # GIVEN 7 messages, each delivered alone: 7 invocation spans and 7 per-record spans
    for index in range(7):
        shop.deliver([shop.send(f"m-{index}")])
    assert len(invocation_spans(spans)) == 7 and len(record_spans(spans)) == 7
    layer = shop.store_all(new_store("single"))
    # THEN each message's flow has one hop, the per-record span's (the message's own processing)
    records = {str((s.attributes or {})["messaging.message.id"]): s for s in record_spans(spans)}
    for index in range(7):
        message_id = f"m-{index}"
        (hop,) = shop.hops_of(layer, message_id)
        assert hop["consumer"]["span_id"] == f"{records[message_id].context.span_id:016x}"
        assert hop["producer"]["span_id"] == f"{shop.sent[message_id].context.span_id:016x}"
        assert (hop["producer_service"], hop["consumer_service"]) == ("orders-api", CONSUMER)
        assert hop["destination"] == QUEUE and hop["receive_count"] == 1
    # AND the consumer's RED counts 7 invocations, not 14 spans; the queue's consume edge 7 messages
    since, until = window()
    services = {service.service: service for service in layer.services(since, until)}
    assert services[CONSUMER].red.span_count == 7
    assert services[CONSUMER].operations == [f"process {QUEUE}"]
    points = layer.latency(CONSUMER, since, until, 3600)
    assert sum(point.red.span_count for point in points) == 7
    by_operation = layer.latency(CONSUMER, since, until, 3600, operation=f"process {QUEUE}")
    assert sum(point.red.span_count for point in by_operation) == 7
    assert sum(count for _, count in layer.latency_histogram(CONSUMER, since, until)) == 7
    assert consume_edge_count(layer) == 7


def test_a_batch_of_three_records_is_one_invocation_and_three_messages(
    shop: Shop, spans: GlobalSpans, new_store: Callable[..., Any]
) -> None:
    # GIVEN one invocation with 3 records from 3 producer traces
    shop.deliver([shop.send(f"b-{index}") for index in range(3)])
    (invocation,) = invocation_spans(spans)
    assert len(invocation.links) == 3 and len(record_spans(spans)) == 3
    layer = shop.store_all(new_store("batch"))
    # THEN each message's flow has one hop, its own record span's
    records = {str((s.attributes or {})["messaging.message.id"]): s for s in record_spans(spans)}
    for index in range(3):
        (hop,) = shop.hops_of(layer, f"b-{index}")
        assert hop["consumer"]["span_id"] == f"{records[f'b-{index}'].context.span_id:016x}"
    # AND the service counts 1 invocation, the consume edge 3 messages
    since, until = window()
    services = {service.service: service for service in layer.services(since, until)}
    assert services[CONSUMER].red.span_count == 1
    assert consume_edge_count(layer) == 3


def test_a_retried_delivery_is_a_second_hop_and_a_second_invocation(
    shop: Shop, spans: GlobalSpans, new_store: Callable[..., Any]
) -> None:
    # GIVEN a message whose first delivery fails and whose second (receive count 2) succeeds
    message = shop.send("retried")
    shop.deliver([message], fail=True)
    shop.deliver([{**message, "Attributes": {**message["Attributes"], "ApproximateReceiveCount": "2"}}])
    layer = shop.store_all(new_store("retry"))
    # THEN its flow has a hop per delivery, with their receive counts, from the per-record spans
    hops = shop.hops_of(layer, "retried")
    assert sorted(hop["receive_count"] for hop in hops) == [1, 2]  # type: ignore[type-var]
    record_ids = {f"{s.context.span_id:016x}" for s in record_spans(spans)}
    assert {hop["consumer"]["span_id"] for hop in hops} == record_ids
    # AND RED counts 2 invocations, one failed
    since, until = window()
    services = {service.service: service for service in layer.services(since, until)}
    assert (services[CONSUMER].red.span_count, services[CONSUMER].red.error_count) == (2, 1)
    assert consume_edge_count(layer) == 2


def test_outside_lambda_a_delivery_is_one_hop_by_its_receive_count(
    shop: Shop, spans: GlobalSpans, new_store: Callable[..., Any]
) -> None:
    # GIVEN a handler called without a Lambda context: no invocation id on any span
    shop.deliver([shop.send("local")], in_lambda=False)
    assert not any("faas.invocation_id" in (s.attributes or {}) for s in spans.finished())
    layer = shop.store_all(new_store("local"))
    # THEN the delivery is still one hop (same producer, consumer and receive count), the record span's
    (hop,) = shop.hops_of(layer, "local")
    (record,) = record_spans(spans)
    assert hop["consumer"]["span_id"] == f"{record.context.span_id:016x}"


LAMBDA_SPAN: dict[str, str | bool] = {
    "faas.trigger": "pubsub",
    "faas.invocation_id": "request-1",
    "faas.coldstart": False,
}


@pytest.mark.parametrize(
    ("shape", "expected_roles"),
    [
        # vanilla's Lambda span is the CONSUMER span, with the FaaS attributes
        ("consumer-invocation", [("process orders", SpanRole.INVOCATION)]),
        # opentelemetry-instrumentation-aws-lambda 0.66: a SERVER invocation span, the batch CONSUMER beneath
        ("server-invocation", [("process orders", SpanRole.ENTRY), ("shipping", SpanRole.INVOCATION)]),
        # no Lambda at all: a worker's consumer span
        ("no-lambda", [("process orders", SpanRole.ENTRY)]),
    ],
)
def test_a_vanilla_consumer_span_linking_its_records_is_one_invocation(
    shop: Shop, new_store: Callable[..., Any], shape: str, expected_roles: list[tuple[str, SpanRole]]
) -> None:
    # GIVEN vanilla OpenTelemetry's shape: one CONSUMER span per invocation with a link per record and no
    # per-record spans, as the Lambda span itself or beneath it, or in a service outside Lambda
    messages = [shop.send(f"v-{index}") for index in range(3)]
    vanilla = shop.producers.tracer("vanilla-shipping")
    attributes: dict[str, Any] = {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": QUEUE,
        "messaging.operation.type": "process",
        "messaging.batch.message_count": 3,
    }
    parent = context.Context()
    if shape == "consumer-invocation":
        attributes.update(LAMBDA_SPAN)
    elif shape == "server-invocation":
        invocation = vanilla.start_span("shipping", parent, SpanKind.SERVER, LAMBDA_SPAN)
        parent = trace.set_span_in_context(invocation)
    links = [trace.Link(shop.sent[message["MessageId"]].context) for message in messages]
    with vanilla.start_as_current_span(
        f"process {QUEUE}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        pass
    if shape == "server-invocation":
        invocation.end()
    store = new_store("vanilla")
    layer = shop.store_all(store)
    # THEN no span is a per-record span, and the service counts one invocation
    since, until = window()
    rows = store.red_rollups(since, until, service="vanilla-shipping")
    assert sorted((row.operation, row.role) for row in rows) == expected_roles
    services = {service.service: service for service in layer.services(since, until)}
    assert services["vanilla-shipping"].red.span_count == 1


def test_per_record_spans_count_when_their_invocation_spans_never_arrived(
    shop: Shop, spans: GlobalSpans, new_store: Callable[..., Any]
) -> None:
    # GIVEN the per-record spans of 3 single-record invocations, but not the invocation spans
    for index in range(3):
        shop.deliver([shop.send(f"lost-{index}")])
    store = new_store("records-only")
    post(store, shop.producers.spans() + record_spans(spans))
    # THEN they are per-record rows, and the service, having nothing else, counts its 3 messages
    since, until = window()
    rows = store.red_rollups(since, until, service=CONSUMER)
    assert sum(row.rollup.span_count for row in rows if row.role is SpanRole.PER_RECORD) == 3
    services = {service.service: service for service in QueryLayer(store).services(since, until)}
    assert services[CONSUMER].red.span_count == 3
