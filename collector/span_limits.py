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


def apply_span_limits(request: ExportTraceServiceRequest, limits: SpanLimits) -> bool:
    """Cut every span of ``request`` to the limits, in place; True when a span may have changed.

    Spans within the limits (nearly all) cost a few length checks, in C: the hot path of ingest.
    """
    looked = False
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if _may_be_over(span, limits):
                    _limit_span(span, limits)
                    looked = True
    return looked


def _may_be_over(span: Span, limits: SpanLimits) -> bool:
    """A value longer than the length limit makes the span's encoding at least that long."""
    return (
        len(span.attributes) > limits.max_attributes
        or len(span.events) > limits.max_events
        or len(span.links) > limits.max_links
        or span.ByteSize() > limits.max_value_length
        or any(len(event.attributes) > limits.max_attributes_per_event for event in span.events)
        or any(len(link.attributes) > limits.max_attributes_per_link for link in span.links)
    )


def _limit_span(span: Span, limits: SpanLimits) -> None:
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
