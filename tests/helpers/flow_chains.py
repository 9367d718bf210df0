"""Services made of real SDK tracer providers, and the order chain most flow tests stitch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SpanKind = trace.SpanKind


class Services:
    """One SDK TracerProvider per service, all recording into one in-memory exporter."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self._providers: dict[str, TracerProvider] = {}

    def tracer(self, service: str) -> trace.Tracer:
        if service not in self._providers:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(self.memory))
            self._providers[service] = provider
        return self._providers[service].get_tracer("hopscope.tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


def order_chain(services: Services, order_id: str, *, links: bool = True, fail: bool = False) -> None:
    """API -> SNS -> SQS -> batch consumer; each hop is its own trace, joined by links (or message ids)."""
    api, billing, shipping = (services.tracer(name) for name in ("orders-api", "billing", "shipping"))
    correlation = {"hopscope.correlation_id": order_id}
    with api.start_as_current_span("POST /orders", kind=SpanKind.SERVER, attributes=correlation):
        with api.start_as_current_span(
            "order-events publish",
            kind=SpanKind.PRODUCER,
            attributes={
                **correlation,
                "messaging.system": "aws_sns",
                "messaging.destination.name": "order-events",
                "messaging.message.id": f"sns-{order_id}",
            },
        ) as publish:
            pass
    # SNS delivers to SQS; billing's Lambda consumes it in a new trace, linked to the publish span.
    with billing.start_as_current_span(
        "order-events process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(publish.get_span_context())] if links else [],
        attributes={
            **correlation,
            "messaging.system": "aws_sns",
            "messaging.destination.name": "order-events",
            "messaging.message.id": f"sns-{order_id}",
            "hopscope.receive_count": 1,
        },
    ):
        with billing.start_as_current_span(
            "billing publish",
            kind=SpanKind.PRODUCER,
            attributes={
                **correlation,
                "messaging.system": "aws_sqs",
                "messaging.destination.name": "shipping",
                "messaging.message.id": f"sqs-{order_id}",
            },
        ) as send:
            pass
    # The shipping function receives a batch: a new trace whose consumer span links to the producer.
    with shipping.start_as_current_span(
        "shipping process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(send.get_span_context())] if links else [],
        attributes={
            **correlation,
            "messaging.system": "aws_sqs",
            "messaging.destination.name": "shipping",
            "messaging.message.id": f"sqs-{order_id}",
            "hopscope.receive_count": 3 if fail else 1,
        },
    ) as consume:
        if fail:
            consume.set_status(trace.Status(trace.StatusCode.ERROR, "carrier down"))


def post(store: Any, spans: Sequence[ReadableSpan]) -> None:
    store.write([encode_spans(list(spans))])


def flows_by_trace(store: Any, spans: Sequence[ReadableSpan]) -> dict[int, set[int]]:
    """Standing flow -> the trace ids in it (as ints), for the traces of ``spans``."""
    flows: dict[int, set[int]] = {}
    for span in spans:
        trace_id = span.context.trace_id
        flow_id = store.flow_of_trace(trace_id.to_bytes(16, "big"))
        assert flow_id is not None
        flows.setdefault(flow_id, set()).add(trace_id)
    return flows


BATCH_QUEUE = "shipping"


def publish_order(services: Services, order: str) -> trace.Span:
    """orders-api receives an order and publishes its message: one trace per order."""
    api = services.tracer("orders-api")
    with api.start_as_current_span(
        "POST /orders", context=context.Context(), kind=SpanKind.SERVER, attributes={"order": order}
    ):
        with api.start_as_current_span(
            f"{BATCH_QUEUE} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "aws_sqs",
                "messaging.destination.name": BATCH_QUEUE,
                "messaging.message.id": f"m-{order}",
                "hopscope.correlation_id": order,
            },
        ) as span:
            return span


def consume_batch(
    services: Services, producers: Sequence[trace.Span], *, orders: Sequence[str], fail: bool = False
) -> trace.Span:
    """One shipping invocation for these messages, as vanilla OpenTelemetry records it: one CONSUMER span
    with a link per record carrying its message id, and a DynamoDB call beneath it."""
    shipping = services.tracer("shipping")
    links = [
        trace.Link(producer.get_span_context(), {"messaging.message.id": f"m-{order}"})
        for producer, order in zip(producers, orders, strict=True)
    ]
    attributes: dict[str, Any] = {"messaging.system": "aws_sqs", "messaging.destination.name": BATCH_QUEUE}
    if len(orders) > 1:
        attributes["messaging.batch.message_count"] = len(orders)
        attributes["hopscope.correlation_id"] = "batch-" + "-".join(orders)
    with shipping.start_as_current_span(
        f"process {BATCH_QUEUE}",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    ) as span:
        with shipping.start_as_current_span(
            "DynamoDB.PutItem", kind=SpanKind.CLIENT, attributes={"rpc.system": "aws-api"}
        ) as call:
            if fail:
                call.set_status(trace.Status(trace.StatusCode.ERROR, "throttled"))
        return span
