"""Span limits applied on receipt, like the OpenTelemetry SDK's span limits: over-limit items are dropped and
counted in the span's own ``dropped_*`` counts, never a rejected batch.

A client can send a span with a million attributes inside one legal body; every read of it (the flow page,
``GET /api/traces/...``) would then cost gigabytes. The limits keep each stored span bounded. Defaults follow
the SDK's (128 attributes, events and links, and 128 attributes per event or link); values longer than
``max_value_length`` characters (strings) or bytes (byte values) are cut, as the SDK's
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` does, also inside arrays and maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the defaults without the [collector] extra
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

DEFAULT_MAX_ATTRIBUTES = 128
DEFAULT_MAX_EVENTS = 128
DEFAULT_MAX_LINKS = 128
DEFAULT_MAX_ATTRIBUTES_PER_ITEM = 128
# The SDK has no default value length limit; a collector needs one. 64 KiB keeps long stack traces whole.
DEFAULT_MAX_VALUE_LENGTH = 64 * 1024


@dataclass(frozen=True)
class SpanLimits:
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_events: int = DEFAULT_MAX_EVENTS
    max_links: int = DEFAULT_MAX_LINKS
    max_attributes_per_event: int = DEFAULT_MAX_ATTRIBUTES_PER_ITEM
    max_attributes_per_link: int = DEFAULT_MAX_ATTRIBUTES_PER_ITEM
    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH


def apply_count_limits(request: ExportTraceServiceRequest, limits: SpanLimits) -> None:
    """Cut every span of ``request`` that has too many attributes, events or links, in place.

    Spans within the limits (nearly all) cost a few length checks in C: this is the hot path of ingest.
    Value lengths are the store's to check (``limit_span`` in its ``prepare``), where each span's encoded
    size is known for free: only a span that long can hold a value over the limit.
    """
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if _over_counts(span, limits):
                    limit_span(span, limits)


def _over_counts(span: Span, limits: SpanLimits) -> bool:
    events, links = span.events, span.links
    if (
        len(span.attributes) > limits.max_attributes
        or len(events) > limits.max_events
        or len(links) > limits.max_links
    ):
        return True
    if events:
        for event in events:
            if len(event.attributes) > limits.max_attributes_per_event:
                return True
    if links:
        for link in links:
            if len(link.attributes) > limits.max_attributes_per_link:
                return True
    return False


def limit_span(span: Span, limits: SpanLimits) -> None:
    """Cut one span to every limit, in place."""
    span.dropped_attributes_count += _cut_attributes(
        span.attributes, limits.max_attributes, limits.max_value_length
    )
    over = len(span.events) - limits.max_events
    if over > 0:
        del span.events[limits.max_events :]
        span.dropped_events_count += over
    over = len(span.links) - limits.max_links
    if over > 0:
        del span.links[limits.max_links :]
        span.dropped_links_count += over
    for event in span.events:
        event.dropped_attributes_count += _cut_attributes(
            event.attributes, limits.max_attributes_per_event, limits.max_value_length
        )
    for link in span.links:
        link.dropped_attributes_count += _cut_attributes(
            link.attributes, limits.max_attributes_per_link, limits.max_value_length
        )


def limit_log_record(record: LogRecord, limits: SpanLimits) -> None:
    """Cut one log record to the span limits, in place: at most ``max_attributes`` attributes (the others
    counted in ``dropped_attributes_count``), each value and the body cut to ``max_value_length``."""
    record.dropped_attributes_count += _cut_attributes(
        record.attributes, limits.max_attributes, limits.max_value_length
    )
    _shorten(record.body, limits.max_value_length)


def _cut_attributes(attributes: RepeatedCompositeFieldContainer[KeyValue], limit: int, length: int) -> int:
    """Keep the first ``limit`` attributes (as the SDK keeps the first ones set), each value cut to
    ``length``; returns how many attributes went."""
    over = len(attributes) - limit
    if over > 0:
        del attributes[limit:]
    for attribute in attributes:
        _shorten(attribute.value, length)
    return max(over, 0)


def _shorten(value: AnyValue, length: int) -> None:
    """Cut string and bytes values to ``length``, inside arrays and maps at any depth (without recursion:
    nesting is the client's choice)."""
    stack = [value]
    while stack:
        item = stack.pop()
        which = item.WhichOneof("value")
        if which == "string_value":
            if len(item.string_value) > length:
                item.string_value = item.string_value[:length]
        elif which == "bytes_value":
            if len(item.bytes_value) > length:
                item.bytes_value = item.bytes_value[:length]
        elif which == "array_value":
            stack.extend(item.array_value.values)
        elif which == "kvlist_value":
            stack.extend(pair.value for pair in item.kvlist_value.values)
