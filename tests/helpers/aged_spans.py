"""Real SDK spans made old: shifted two hours back before they are stored, with a resource and a scope of
their own, for the retention tests (tests/store/test_expiry.py and the API and dashboard tests on it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace import ReadableSpan

HOUR_NS = 3600 * 10**9
OLD_SHIFT_NS = 2 * HOUR_NS


def aged(spans: Iterable[ReadableSpan], shift_ns: int) -> ExportTraceServiceRequest:
    """The spans as one OTLP request, every time (start, end, events) moved ``shift_ns`` into the past."""
    request = encode_spans(list(spans))
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.start_time_unix_nano -= shift_ns
                span.end_time_unix_nano -= shift_ns
                for event in span.events:
                    event.time_unix_nano -= shift_ns
    return request


def shifted(spans: Iterable[ReadableSpan], *, old: bool) -> ExportTraceServiceRequest:
    """The spans as an OTLP request; ``old``: two hours back, with a resource and a scope of their own (so
    that nothing recent refers to them)."""
    if not old:
        return encode_spans(list(spans))
    request = aged(spans, OLD_SHIFT_NS)
    for resource_spans in request.resource_spans:
        resource_spans.resource.attributes.append(
            KeyValue(key="deployment.environment.name", value=AnyValue(string_value="old"))
        )
        for scope_spans in resource_spans.scope_spans:
            scope_spans.scope.name = "old-scope"
    return request


def trace_of(span: Any) -> bytes:
    return int(span.get_span_context().trace_id).to_bytes(16, "big")


def first_start(spans: Iterable[ReadableSpan], span: Any) -> int:
    """The earliest start among ``spans`` of the trace of ``span``."""
    trace_id = span.get_span_context().trace_id
    return min(s.start_time or 0 for s in spans if s.context is not None and s.context.trace_id == trace_id)
