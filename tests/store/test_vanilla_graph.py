"""The service graph of vanilla OpenTelemetry's AWS spans: destinations named by their names, one node per
destination whatever spelling, and an AWS SDK call on the node of the queue it names.

GIVEN the real ``BotocoreInstrumentor`` (opentelemetry-instrumentation-botocore 0.66b1) and the real SDK,
calling a moto server over HTTP, WHEN its spans are stored (SQLite and chdb), THEN a direct SQS SendMessage
(a CLIENT span) is a publish edge to ``aws_sqs:<queue>``, an SNS Publish (a PRODUCER span named by the
topic's ARN) one to ``aws.sns:<topic>``, and only calls that name no destination stay ``external:<service>``.

The same run checks what the README says vanilla data cannot join: botocore 0.66b1 injects no trace context
into an SQS message, and an SNS message delivered to SQS without raw delivery carries its context only inside
the envelope in the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hopscope.collector.model.graph import GraphEdge
from hopscope.collector.query.layer import QueryLayer
from tests.helpers.moto_server import MotoServer

MINUTE = 60 * 10**9


@dataclass
class Shop:
    """The moto resources, made before botocore is instrumented (their calls record no span)."""

    moto: MotoServer
    orders_url: str  # subscribed to the topic with SNS's envelope
    billing_url: str  # subscribed with raw message delivery
    jobs_url: str  # a FIFO queue
    topic_arn: str


@pytest.fixture
def shop(moto: MotoServer) -> Shop:
    sqs, sns, events = moto.client("sqs"), moto.client("sns"), moto.client("events")
    orders, billing = (sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("orders", "billing"))
    jobs = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    topic = sns.create_topic(Name="order-events")["TopicArn"]
    for url, raw in ((orders, "false"), (billing, "true")):
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": raw})
    events.create_event_bus(Name="shop")
    return Shop(moto, orders, billing, jobs, topic)


@dataclass
class Vanilla:
    """A service's SDK provider with botocore instrumented the vanilla way, and the spans it ended."""

    provider: TracerProvider
    memory: InMemorySpanExporter

    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests.vanilla")

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def call(self, method: str) -> ReadableSpan:
        """The first span of an AWS operation."""
        return next(s for s in self.spans() if (s.attributes or {}).get("rpc.method") == method)


@pytest.fixture
def vanilla(shop: Shop) -> Iterator[Vanilla]:
    provider = TracerProvider(resource=Resource.create({"service.name": "orders-api"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = BotocoreInstrumentor()  # type: ignore[no-untyped-call]
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield Vanilla(provider, memory)
    finally:
        instrumentor.uninstrument()


def graph_edges(store: Any, spans: Sequence[ReadableSpan]) -> dict[tuple[str, str, str], GraphEdge]:
    store.write([encode_spans(list(spans))])
    since = min(span.start_time or 0 for span in spans) - MINUTE
    until = max(span.end_time or 0 for span in spans) + MINUTE
    return {(e.source, e.target, e.kind): e for e in QueryLayer(store).graph(since, until).edges}


def receive_all(moto: MotoServer, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (
        moto.client("sqs")
        .receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        )
        .get("Messages", [])
    )
    return messages


def test_vanilla_aws_calls_land_on_the_destinations_they_name(
    shop: Shop, vanilla: Vanilla, new_store: Callable[..., Any]
) -> None:
    sqs, sns, events = (shop.moto.client(name) for name in ("sqs", "sns", "events"))
    with vanilla.tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        sqs.send_message(QueueUrl=shop.orders_url, MessageBody="order 1")
        sqs.send_message(
            QueueUrl=shop.jobs_url, MessageBody="job", MessageGroupId="g", MessageDeduplicationId="1"
        )
        sns.publish(TopicArn=shop.topic_arn, Message="order 2")
        sqs.list_queues()
        sqs.get_queue_attributes(QueueUrl=shop.orders_url, AttributeNames=["All"])
        events.put_events(
            Entries=[{"EventBusName": "shop", "Source": "orders", "DetailType": "placed", "Detail": "{}"}]
        )
        # an AWS SDK span that does name the bus (another instrumentation's PutEvents): on the bus's node
        with vanilla.tracer().start_as_current_span(
            "EventBridge.PutEvents",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "aws-api", "rpc.service": "EventBridge", "rpc.method": "PutEvents",
                        "messaging.destination.name": "arn:aws:events:us-east-1:123456789012:event-bus/shop"},
        ):  # fmt: skip
            pass

    # what the spans are: the rules below rely on it
    send, publish = vanilla.call("SendMessage"), vanilla.call("Publish")
    assert (send.kind, publish.kind) == (SpanKind.CLIENT, SpanKind.PRODUCER)
    assert send.attributes is not None and publish.attributes is not None
    assert {key: send.attributes[key] for key in ("rpc.system", "rpc.service", "messaging.system")} == {
        "rpc.system": "aws-api", "rpc.service": "SQS", "messaging.system": "aws.sqs"
    }  # fmt: skip
    assert "messaging.destination.name" not in send.attributes  # only the older messaging.destination
    assert send.attributes["messaging.destination"] == "orders"
    assert publish.attributes["messaging.destination.name"] == shop.topic_arn

    edges = graph_edges(new_store("vanilla"), vanilla.spans())
    assert {key: edge.red.span_count for key, edge in edges.items()} == {
        ("service:orders-api", "aws_sqs:orders", "publish"): 1,  # SendMessage, not external:SQS
        ("service:orders-api", "aws_sqs:jobs.fifo", "publish"): 1,
        ("service:orders-api", "aws.sns:order-events", "publish"): 1,  # not the topic's ARN
        ("service:orders-api", "aws_sqs:orders", "external"): 1,  # GetQueueAttributes names the queue
        ("service:orders-api", "external:SQS", "external"): 1,  # ListQueues names none
        ("service:orders-api", "external:EventBridge", "external"): 1,  # botocore 0.66b1 names no bus
        ("service:orders-api", "aws.eventbridge:shop", "publish"): 1,
    }


def test_what_vanilla_botocore_puts_in_the_messages(shop: Shop, vanilla: Vanilla) -> None:
    """The README's two limits: no context in a direct SQS message; an SNS message's context inside the
    envelope (the SQS body) unless the subscription delivers raw."""
    sqs, sns = shop.moto.client("sqs"), shop.moto.client("sns")
    sqs.send_message(
        QueueUrl=shop.jobs_url, MessageBody="job", MessageGroupId="g", MessageDeduplicationId="1"
    )
    (direct,) = receive_all(shop.moto, shop.jobs_url)
    assert "traceparent" not in direct.get("MessageAttributes", {})

    sns.publish(TopicArn=shop.topic_arn, Message="order")
    publish = vanilla.call("Publish").get_span_context()
    assert publish is not None
    ids = f"{trace.format_trace_id(publish.trace_id)}-{trace.format_span_id(publish.span_id)}"
    (enveloped,) = receive_all(shop.moto, shop.orders_url)
    assert "traceparent" not in enveloped.get("MessageAttributes", {})
    assert ids in json.loads(enveloped["Body"])["MessageAttributes"]["traceparent"]["Value"]
    (raw,) = receive_all(shop.moto, shop.billing_url)
    assert ids in raw["MessageAttributes"]["traceparent"]["StringValue"]


def test_a_vanilla_publish_and_a_hopscope_one_share_the_topics_node(
    shop: Shop, vanilla: Vanilla, new_store: Callable[..., Any]
) -> None:
    """A vanilla SNS publish (``aws.sns``, the ARN), a producer with the older ``aws_sns`` and the name, and
    the raw-delivered message's consumer, made as AwsLambdaInstrumentor 0.66b1 makes it (``aws_sqs``, the
    queue's name, a link to the context in the message attributes): one topic node, and the subscription
    from it to the queue."""
    tracer = vanilla.tracer()
    shop.moto.client("sns").publish(TopicArn=shop.topic_arn, Message="order 1")
    with tracer.start_as_current_span(
        "order-events publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "aws_sns", "messaging.destination.name": "order-events"},
    ):
        pass
    (message,) = receive_all(shop.moto, shop.billing_url)
    carrier = {key: value["StringValue"] for key, value in message["MessageAttributes"].items()}
    producer = trace.get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    with tracer.start_as_current_span(
        "billing process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(producer, {"messaging.message.id": message["MessageId"]})],
        attributes={
            "messaging.system": "aws_sqs",
            "messaging.destination.name": "billing",
            "messaging.operation.type": "process",
        },
    ):
        pass

    store = new_store("mixed")
    edges = graph_edges(store, vanilla.spans())
    assert {key: edge.red.span_count for key, edge in edges.items()} == {
        ("service:orders-api", "aws.sns:order-events", "publish"): 2,
        ("aws.sns:order-events", "aws_sqs:billing", "subscription"): 1,
        ("aws_sqs:billing", "service:orders-api", "consume"): 1,
        ("service:orders-api", "aws_sqs:billing", "external"): 1,  # the ReceiveMessage above
    }
    assert edges[("aws_sqs:billing", "service:orders-api", "consume")].queue_wait_p50_ms is not None
    # the flow detail's hop names the topic too, not its ARN
    vanilla_publish = vanilla.call("Publish").get_span_context()
    assert vanilla_publish is not None
    layer = QueryLayer(store)
    flow_id = layer.flow_of_trace(vanilla_publish.trace_id.to_bytes(16, "big"))
    detail = layer.flow(flow_id) if flow_id is not None else None
    assert detail is not None
    assert [(hop["destination"], hop["consumer_service"]) for hop in detail.hops] == [
        ("order-events", "orders-api")
    ]


@pytest.mark.parametrize("consumer_first", [True, False])
def test_a_consumer_reporting_the_message_id_waits_on_a_vanilla_send(
    shop: Shop, vanilla: Vanilla, new_store: Callable[..., Any], consumer_first: bool
) -> None:
    """A direct SendMessage carries no context, but its CLIENT span has the message id: a consumer span that
    reports the id (a root CONSUMER span with ``messaging.message.id`` and the queue, as hopscope's
    ``@traced_handler`` makes for one record without a context) pairs with it, so the hop has its queue
    wait, whichever is stored first."""
    sqs = shop.moto.client("sqs")
    with vanilla.tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        sent = sqs.send_message(QueueUrl=shop.orders_url, MessageBody="order 1")
    producer_spans = vanilla.spans()
    vanilla.memory.clear()
    consumer = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    consumer.add_span_processor(SimpleSpanProcessor(vanilla.memory))
    with consumer.get_tracer("tests").start_as_current_span(
        "orders process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "aws_sqs",
            "messaging.destination.name": "orders",
            "messaging.message.id": sent["MessageId"],
            "faas.trigger": "pubsub",
        },
    ):
        pass
    consumer_spans = vanilla.spans()
    store = new_store("message")
    first, second = (consumer_spans, producer_spans) if consumer_first else (producer_spans, consumer_spans)
    store.write([encode_spans(first)])
    edges = graph_edges(store, second)
    assert {key: edge.red.span_count for key, edge in edges.items()} == {
        ("service:orders-api", "aws_sqs:orders", "publish"): 1,
        ("aws_sqs:orders", "service:billing", "consume"): 1,
    }
    wait = edges[("aws_sqs:orders", "service:billing", "consume")].queue_wait_p50_ms
    assert wait is not None and wait >= 0
    # ... and the flow (one, stitched by the message id) shows the send as the delivery's producer
    layer = QueryLayer(store)
    send_span = next(span for span in producer_spans if span.kind == SpanKind.CLIENT)
    flow_id = store.flow_of_trace(send_span.context.trace_id.to_bytes(16, "big"))
    assert flow_id is not None
    assert flow_id == store.flow_of_trace(consumer_spans[0].context.trace_id.to_bytes(16, "big"))
    detail = layer.flow(flow_id)
    assert detail is not None
    assert [
        (hop["producer"]["span_id"], hop["destination"], hop["consumer_service"]) for hop in detail.hops
    ] == [(format(send_span.context.span_id, "016x"), "orders", "billing")]
