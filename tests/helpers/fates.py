"""The little order shop of the fate tests: SDK spans of checkouts sending to ``orders`` and of ``billing``
processing them the way hopscope's instrumentation records a delivery (an invocation span and
``process_batch``'s per-record span), with each delivery's receive count and outcome chosen by the test."""

from __future__ import annotations

import time

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan

from tests.helpers.flow_chains import Services, SpanKind

MS = 1_000_000
# An hour ago: each span ends when its block does, so its times stay usable (stitch/guard.py).
T0 = time.time_ns() - 3_600_000 * MS


def send(services: Services, order: str, at_ms: int, message_id: str | None = None) -> ReadableSpan:
    """``checkout`` sends message ``m-{order}`` to ``orders``: one trace, its PRODUCER span returned."""
    api = services.tracer("orders-api")
    with api.start_as_current_span("checkout", start_time=T0 + at_ms * MS, attributes={"order": order}):
        with api.start_as_current_span(
            "send orders",
            kind=SpanKind.PRODUCER,
            start_time=T0 + at_ms * MS,
            attributes={
                "messaging.system": "aws_sqs",
                "messaging.destination.name": "orders",
                "messaging.message.id": message_id or f"m-{order}",
                "hopscope.correlation_id": order,
            },
        ) as producer:
            pass
    return next(s for s in services.spans() if s.context.span_id == producer.get_span_context().span_id)


def deliver(
    services: Services,
    producer: ReadableSpan,
    order: str,
    receive_count: int,
    at_ms: int,
    *,
    ok: bool = True,
    message_id: str | None = None,
) -> None:
    """One delivery as hopscope's instrumentation records it: the invocation span (a child of the
    producer) and process_batch's per-record span (a trace of its own, linked), both with the message id
    and the receive count."""
    billing = services.tracer("billing")
    attributes: dict[str, str | int] = {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": "orders",
        "messaging.message.id": message_id or f"m-{order}",
        "hopscope.receive_count": receive_count,
    }
    status = trace.Status(trace.StatusCode.OK if ok else trace.StatusCode.ERROR)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(producer.context))
    with billing.start_as_current_span(
        "process orders",
        context=parent,
        kind=SpanKind.CONSUMER,
        start_time=T0 + at_ms * MS,
        attributes={**attributes, "faas.trigger": "pubsub", "faas.invocation_id": f"inv-{at_ms}"},
    ) as invocation:
        invocation.set_status(status)
        with billing.start_as_current_span(
            "process orders",
            context=context.Context(),
            kind=SpanKind.CONSUMER,
            start_time=T0 + at_ms * MS,
            links=[trace.Link(producer.context)],
            attributes={**attributes, "faas.invocation_id": f"inv-{at_ms}"},
        ) as record:
            record.set_status(status)


def shop(services: Services) -> None:
    """Order 1 is delivered twice successfully (its visibility ran out while it was processed), order 2
    fails once then succeeds, order 3 fails twice (and is dead-lettered), order 4 is processed once."""
    one, two, three, four = (
        send(services, order, at) for order, at in (("1", 0), ("2", 10), ("3", 20), ("4", 30))
    )
    deliver(services, one, "1", 1, 100)
    deliver(services, one, "1", 2, 1_100)
    deliver(services, two, "2", 1, 110, ok=False)
    deliver(services, two, "2", 2, 1_110)
    deliver(services, three, "3", 1, 120, ok=False)
    deliver(services, three, "3", 2, 1_120, ok=False)
    deliver(services, four, "4", 1, 130)
