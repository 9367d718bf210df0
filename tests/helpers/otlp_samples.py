"""OTLP requests built by hand, covering every field and every attribute value type."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(v)))
    return AnyValue(string_value=str(v))


def attrs(d: dict[str, object]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in d.items()]


EVERY_TYPE = {
    "s": "text",
    "b": True,
    "i": -(2**62),
    "d": 3.25,
    "raw": b"\x00\xffbytes",
    "arr": ["a", 1, 2.5, False],
    "kv": {"nested": {"deeper": [1, 2]}, "flag": False},
}


def full_request(spans: int = 3, service: str = "orders-api") -> ExportTraceServiceRequest:
    """One resource, two scopes, spans with every field set (parents, events, links, status, drops)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    rs.resource.attributes.extend(attrs({"service.name": service, "cloud.provider": "aws"}))
    rs.resource.dropped_attributes_count = 2
    trace_id = os.urandom(16)
    now = time.time_ns()
    parent = b""
    for scope_index in range(2):
        ss = rs.scope_spans.add(schema_url="https://opentelemetry.io/schemas/1.27.0")
        ss.scope.name = f"scope-{scope_index}"
        ss.scope.version = "1.0"
        ss.scope.attributes.extend(attrs({"scope.attr": scope_index}))
        ss.scope.dropped_attributes_count = 1
        for i in range(spans):
            span = ss.spans.add(
                trace_id=trace_id,
                span_id=os.urandom(8),
                parent_span_id=parent,
                trace_state="vendor=value",
                flags=0x301,
                name=f"op-{scope_index}-{i}",
                kind=Span.SpanKind.SPAN_KIND_PRODUCER,
                start_time_unix_nano=now + i * 1000,
                end_time_unix_nano=now + i * 1000 + 500,
                dropped_attributes_count=3,
                dropped_events_count=4,
                dropped_links_count=5,
                status=Status(code=Status.StatusCode.STATUS_CODE_ERROR, message="boom"),
            )
            span.attributes.extend(attrs(EVERY_TYPE))
            event = span.events.add(time_unix_nano=now + 10, name="exception", dropped_attributes_count=1)
            event.attributes.extend(attrs({"exception.type": "ValueError", "exception.escaped": True}))
            link = span.links.add(
                trace_id=os.urandom(16), span_id=os.urandom(8), trace_state="k=v", dropped_attributes_count=6
            )
            link.flags = 0x100
            link.attributes.extend(attrs({"messaging.message.id": "m-1", "n": 7}))
            parent = span.span_id
    return request


def spans_of(message: ExportTraceServiceRequest) -> list[Span]:
    return [span for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans]
