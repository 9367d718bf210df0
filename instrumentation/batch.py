"""``process_batch``: each record of a batch event in its own consumer span, and the partial batch response.

A record's failure never stops the others: its exception is recorded on its span and the record is
returned in ``batchItemFailures``, so that Lambda redelivers only what failed (report-batch-item-failures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from hopscope.instrumentation import carriers, correlation
from hopscope.instrumentation.conventions import CONVERSATION_ID, CORRELATION_ID, RECORD_SPANS
from hopscope.instrumentation.handler import record_attributes, tracer
from hopscope.instrumentation.records import MessageRecord, record_payload

logger = logging.getLogger("hopscope.instrumentation")


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


def process_batch(
    event: Mapping[str, Any],
    record_handler: Callable[[dict[str, Any]], Any],
    *,
    correlation_id_path: str | None = None,
    parent_on_producer: bool = False,
) -> PartialBatchResponse:
    """Call ``record_handler(record)`` once per record and return ``{"batchItemFailures": [...]}``.

    Each call runs inside a ``process {destination}`` CONSUMER span linked to the record's producer, with
    that record's correlation id current. That span starts a trace of its own (it carries the invocation's
    ``faas.invocation_id``), so that each message's flow holds its own processing and no other message's.
    ``correlation_id_path`` (JMESPath) is read from the record's payload. With ``parent_on_producer=True``
    a single-record event's span continues its producer's trace instead.
    FIFO queues: after a failure, the rest of that message group is returned unprocessed, in order.
    """
    raw_records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(raw_records, list):
        raise ValueError("process_batch expects a Lambda batch event with a 'Records' list")
    search = None
    if correlation_id_path:
        import jmespath  # noqa: PLC0415

        search = jmespath.compile(correlation_id_path).search
    batch_span = trace.get_current_span()
    invocation_id = _invocation_id(batch_span)
    if batch_span.is_recording():
        batch_span.set_attribute(RECORD_SPANS, True)
    failures: list[BatchItemFailure] = []
    failed_groups: set[str] = set()
    single = len(raw_records) == 1
    for raw in raw_records:
        record = MessageRecord.of(raw)
        group = record.message_group_id if record is not None else None
        if group is not None and group in failed_groups:
            _add_failure(failures, record)  # FIFO: keep the group's order; Lambda redelivers the rest
            continue
        if _process_one(
            raw,
            record,
            record_handler,
            search=search,
            parent_on_producer=parent_on_producer and single,
            invocation_id=invocation_id,
        ):
            continue
        _add_failure(failures, record)
        if group is not None:
            failed_groups.add(group)
    if raw_records and len(failures) == len(raw_records) and batch_span.is_recording():
        batch_span.set_status(Status(StatusCode.ERROR, f"all {len(raw_records)} records failed"))
    return {"batchItemFailures": failures}


_NO_PARENT = context.Context()


def _invocation_id(span: trace.Span) -> str | None:
    """The invocation id of the batch's span (an SDK span shows its attributes), for each record's span."""
    value = (getattr(span, "attributes", None) or {}).get("faas.invocation_id")
    return value if isinstance(value, str) else None


def _add_failure(failures: list[BatchItemFailure], record: MessageRecord | None) -> None:
    identifier = record.failure_id if record is not None else None
    if identifier is None:
        logger.warning("hopscope: a failed record has no message id or sequence number to report")
        return
    failures.append({"itemIdentifier": identifier})


def _process_one(
    raw: dict[str, Any],
    record: MessageRecord | None,
    record_handler: Callable[[dict[str, Any]], Any],
    *,
    search: Callable[[Any], Any] | None,
    parent_on_producer: bool,
    invocation_id: str | None,
) -> bool:
    """Run the handler on one record inside its span; True when it succeeded."""
    try:
        now_ns = time.time_ns()
        producer = record.producer_context() if record is not None else context.Context()
        correlation_id = (
            _correlation_from_payload(search, raw) or correlation.from_baggage(producer)
        ) or correlation.new_correlation_id()
        attributes: dict[str, Any] = {
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            CORRELATION_ID: correlation_id,
            CONVERSATION_ID: correlation_id,
        }
        links: list[Link] = []
        destination = None
        if record is not None:
            attributes["messaging.system"] = record.system
            destination = record.destination
            if destination:
                attributes["messaging.destination.name"] = destination
            record_attrs = record_attributes(record, now_ns)
            attributes.update(record_attrs)
            if carriers.has_parent(producer):
                links.append(Link(trace.get_current_span(producer).get_span_context(), record_attrs))
        # Each record's span starts a trace of its own (or continues its producer's, when asked), linked to
        # its producer only: as a child of the batch's span, one record's flow would take in all the others.
        parent = producer if parent_on_producer and carriers.has_parent(producer) else _NO_PARENT
        if invocation_id is not None:
            attributes["faas.invocation_id"] = invocation_id
        span = tracer().start_span(
            f"process {destination}" if destination else "process",
            parent,
            SpanKind.CONSUMER,
            attributes,
            links,
            start_time=now_ns,
        )
        current = trace.set_span_in_context(
            span, correlation.with_correlation_id(context.get_current(), correlation_id)
        )
    except Exception:
        logger.warning("hopscope: tracing a record failed; it is processed untraced", exc_info=True)
        try:
            record_handler(raw)
        except Exception:
            logger.exception("hopscope: record handler failed")
            return False
        return True
    token = context.attach(current)
    try:
        record_handler(raw)
    except Exception as error:
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        return False
    else:
        return True
    finally:
        context.detach(token)
        span.end()


def _correlation_from_payload(search: Callable[[Any], Any] | None, raw: dict[str, Any]) -> str | None:
    if search is None:
        return None
    try:
        return correlation.normalize(search(record_payload(raw)))
    except Exception:
        logger.debug("hopscope: correlation_id_path failed on a record", exc_info=True)
        return None
