"""End to end through a real moto server over HTTP: an instrumented publisher sends to SQS, to SNS (envelope
and raw-delivery SQS subscriptions) and to EventBridge (a rule targeting SQS); the test receives the real
messages, builds Lambda events of the real shape from them and runs decorated handlers through process_batch.

THEN every consumer span links to its exact producer span, the correlation id arrives unchanged at every hop,
and queue wait and receive count are recorded; a failing record is reported and, redelivered, counts higher.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from hopscope.instrumentation import (
    get_correlation_id,
    instrument_boto3,
    process_batch,
    record_payload,
    set_correlation_id,
    traced_handler,
    uninstrument_boto3,
)
from tests.helpers.lambda_shapes import LambdaContext, fixture, sns_event_from_envelope, sqs_event
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import GlobalSpans


@pytest.fixture
def instrumented() -> Iterator[None]:
    instrument_boto3()
    yield
    uninstrument_boto3()


class Orders:
    """The AWS side of a small order system on the moto server."""

    def __init__(self, moto: MotoServer) -> None:
        self.sqs = moto.client("sqs")
        self.sns = moto.client("sns")
        self.events = moto.client("events")
        self.queues = {
            name: self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
            for name in ("direct", "billing", "shipping", "notifications")
        }
        self.arns = {
            name: self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            for name, url in self.queues.items()
        }
        self.topic = self.sns.create_topic(Name="order-events")["TopicArn"]
        self.sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=self.arns["billing"])
        self.sns.subscribe(
            TopicArn=self.topic,
            Protocol="sqs",
            Endpoint=self.arns["shipping"],
            Attributes={"RawMessageDelivery": "true"},
        )
        self.events.create_event_bus(Name="orders")
        self.events.put_rule(
            Name="shipped", EventBusName="orders", EventPattern=json.dumps({"source": ["orders"]})
        )
        self.events.put_targets(
            Rule="shipped", EventBusName="orders", Targets=[{"Id": "q", "Arn": self.arns["notifications"]}]
        )

    def receive(self, queue: str, expected: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(messages) < expected and time.monotonic() < deadline:
            answer = self.sqs.receive_message(
                QueueUrl=self.queues[queue],
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                WaitTimeSeconds=1,
            )
            messages.extend(answer.get("Messages", []))
        assert len(messages) == expected, f"{queue}: {len(messages)} of {expected} messages"
        return messages

    def delete(self, queue: str, messages: list[dict[str, Any]], failed: set[str]) -> None:
        """What Lambda does after a batch: delete what succeeded, leave the failures for redelivery."""
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queues[queue], ReceiptHandle=message["ReceiptHandle"])


def span_id(span: ReadableSpan) -> int:
    return span.context.span_id


def consumer_spans(spans: GlobalSpans, destination: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans.finished()
        if s.kind is SpanKind.CONSUMER
        and "faas.trigger"
        not in (s.attributes or {})  # process_batch's record spans, not the invocation span
        and (s.attributes or {}).get("messaging.destination.name") == destination
    ]


def test_a_message_keeps_its_trace_and_correlation_id_across_every_async_hop(
    moto: MotoServer, spans: GlobalSpans, instrumented: None
) -> None:
    # GIVEN an HTTP API handler that publishes an order to SQS, SNS and EventBridge
    orders = Orders(moto)

    @traced_handler(correlation_id_path="body.order_id")
    def orders_api(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        orders.sqs.send_message(QueueUrl=orders.queues["direct"], MessageBody=json.dumps(order))
        orders.sns.publish(TopicArn=orders.topic, Message=json.dumps(order))
        orders.events.put_events(
            Entries=[
                {
                    "Source": "orders",
                    "DetailType": "OrderShipped",
                    "Detail": json.dumps(order),
                    "EventBusName": "orders",
                }
            ]
        )
        return {"statusCode": 201, "body": json.dumps({"order_id": order["order_id"]})}

    request = fixture("powertools__apiGatewayProxyV2Event.json")
    request["body"] = json.dumps({"order_id": "o-1001", "total": 42})
    assert orders_api(request, LambdaContext(function_name="orders-api"))["statusCode"] == 201

    producers = {s.name: s for s in spans.finished() if s.kind is SpanKind.PRODUCER}
    assert set(producers) == {"send direct", "publish order-events", "send orders"}
    for producer in producers.values():
        assert (producer.attributes or {})["hopscope.correlation_id"] == "o-1001"

    # WHEN each queue's consumer runs on the messages moto really delivered
    seen: dict[str, list[Any]] = {}

    def consumer(queue: str) -> Any:
        @traced_handler
        def handler(event: dict[str, Any], context: Any) -> Any:
            def record_handler(record: dict[str, Any]) -> None:
                seen.setdefault(queue, []).append((get_correlation_id(), record_payload(record)))

            return process_batch(event, record_handler)

        return handler

    envelope_messages = orders.receive("billing", 1)
    for queue in ("direct", "billing", "shipping", "notifications"):
        messages = envelope_messages if queue == "billing" else orders.receive(queue, 1)
        response = consumer(queue)(
            sqs_event(messages, orders.arns[queue]), LambdaContext(function_name=queue)
        )
        assert response == {"batchItemFailures": []}
    envelope = json.loads(envelope_messages[0]["Body"])
    audit_event = sns_event_from_envelope(envelope, f"{orders.topic}:audit")
    consumer("audit")(audit_event, LambdaContext(function_name="audit"))

    # THEN every consumer links to its exact producer, with the correlation id and the payload intact
    expected_producer = {
        "direct": "send direct",
        "billing": "publish order-events",
        "shipping": "publish order-events",
        "notifications": "send orders",
        "order-events": "publish order-events",  # the audit function, subscribed to the topic directly
    }
    for destination, producer_name in expected_producer.items():
        (record_span,) = consumer_spans(spans, destination)
        (link,) = record_span.links
        producer = producers[producer_name]
        assert (link.context.trace_id, link.context.span_id) == (producer.context.trace_id, span_id(producer))
        attributes = record_span.attributes or {}
        assert attributes["hopscope.correlation_id"] == "o-1001"
        if destination != "order-events":
            assert attributes["hopscope.receive_count"] == 1
            assert attributes["hopscope.queue_wait_ms"] >= 0
            assert attributes["messaging.system"] == "aws_sqs"
    for queue, values in seen.items():
        assert values == [("o-1001", {"order_id": "o-1001", "total": 42})], queue
    # the producer's own message ids are the consumer's
    assert (producers["send direct"].attributes or {})["messaging.message.id"] == (
        consumer_spans(spans, "direct")[0].attributes or {}
    )["messaging.message.id"]


def test_a_failed_record_is_redelivered_with_a_higher_receive_count(
    moto: MotoServer, spans: GlobalSpans, instrumented: None
) -> None:
    orders = Orders(moto)
    with trace.get_tracer("test").start_as_current_span("checkout"):
        for number in range(3):
            orders.sqs.send_message(QueueUrl=orders.queues["shipping"], MessageBody=json.dumps({"n": number}))
    attempts: list[int] = []

    @traced_handler
    def shipping(event: dict[str, Any], context: Any) -> Any:
        def record_handler(record: dict[str, Any]) -> None:
            attempts.append(record_payload(record)["n"])
            if record_payload(record)["n"] == 1 and int(record["attributes"]["ApproximateReceiveCount"]) == 1:
                raise TimeoutError("carrier API timed out")

        return process_batch(event, record_handler)

    # GIVEN a batch in which one record fails
    messages = orders.receive("shipping", 3)
    response = shipping(sqs_event(messages, orders.arns["shipping"]), LambdaContext(function_name="shipping"))
    failed_id = next(m["MessageId"] for m in messages if json.loads(m["Body"])["n"] == 1)
    assert response == {"batchItemFailures": [{"itemIdentifier": failed_id}]}
    orders.delete("shipping", messages, {failed_id})
    (failed_span,) = [
        s for s in consumer_spans(spans, "shipping") if s.status.status_code is StatusCode.ERROR
    ]
    assert (failed_span.attributes or {})["messaging.message.id"] == failed_id

    # WHEN its visibility times out and it is delivered again
    redelivered = orders.receive("shipping", 1)
    assert redelivered[0]["MessageId"] == failed_id
    assert shipping(sqs_event(redelivered, orders.arns["shipping"]), LambdaContext()) == {
        "batchItemFailures": []
    }

    # THEN the retry's span records the higher receive count and links to the same producer
    retry = [
        s
        for s in consumer_spans(spans, "shipping")
        if (s.attributes or {})["messaging.message.id"] == failed_id
    ]
    assert [(s.attributes or {})["hopscope.receive_count"] for s in retry] == [1, 2]
    assert retry[0].links[0].context.span_id == retry[1].links[0].context.span_id
    assert retry[1].status.status_code is StatusCode.UNSET
    assert sorted(attempts) == [0, 1, 1, 2]


def test_the_collector_counts_each_batched_message_once_in_the_graph_and_flows(
    moto: MotoServer, spans: GlobalSpans, instrumented: None, start_collector: Any
) -> None:
    # GIVEN three orders sent to SQS, and a billing function that takes them in one batch
    orders = Orders(moto)
    for number in range(3):
        with trace.get_tracer("test").start_as_current_span("checkout"):
            set_correlation_id(f"order-{number}")
            orders.sqs.send_message(QueueUrl=orders.queues["billing"], MessageBody=json.dumps({"n": number}))

    @traced_handler
    def billing(event: dict[str, Any], context: Any) -> Any:
        return process_batch(event, lambda record: None)

    billing(
        sqs_event(orders.receive("billing", 3), orders.arns["billing"]),
        LambdaContext(function_name="billing"),
    )

    # WHEN the real OTLP exporter sends every span to a real collector
    collector = start_collector()
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")
    assert exporter.export(spans.finished()) is SpanExportResult.SUCCESS
    http = collector.client()
    deadline = time.monotonic() + 20
    while http.get("/healthz").json()["flows_pending"] and time.monotonic() < deadline:
        time.sleep(0.2)

    # THEN the queue's consume edge counts three messages (the batch span and the record spans beneath it
    # describe the same three), and each order's flow reaches from the checkout to the billing record
    edges = {(e["source"], e["target"], e["kind"]): e for e in http.get("/api/graph").json()["edges"]}

    assert edges[("aws_sqs:billing", "service:tests", "consume")]["red"]["span_count"] == 3
    assert edges[("service:tests", "aws_sqs:billing", "publish")]["red"]["span_count"] == 3
    flow_ids = set()
    for number in range(3):
        (flow,) = http.get("/api/flows", params={"correlation_id": f"order-{number}"}).json()["flows"]
        flow_ids.add(flow["flow_id"])
        assert flow["correlation_ids"] == [f"order-{number}"]  # one batch, yet no order's flow took another
        detail = http.get(f"/api/flows/{flow['flow_id']}").json()
        names = {span["name"] for span in detail["spans"]}
        assert {"checkout", "send billing", "process billing"} <= names
    assert len(flow_ids) == 3
