"""The real OpenTelemetry SDK and its OTLP/HTTP exporter send to a collector run by the hopscope command."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopscope.collector.otlp.codec import traces_from_json
from tests.helpers.otlp_samples import spans_of
from tests.helpers.servers import CollectorProcess


def _emit_spans(tracer: trace.Tracer) -> int:
    """A small message flow: an HTTP server span, a producer with a link, an error with an event."""
    link_context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
    )
    with tracer.start_as_current_span(
        "POST /orders",
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.response.status_code": 201, "retry": False},
    ) as root:
        with tracer.start_as_current_span(
            "order-events publish",
            kind=trace.SpanKind.PRODUCER,
            links=[trace.Link(link_context, {"messaging.message.id": "abc", "weight": 0.5})],
            attributes={"messaging.system": "aws_sns", "tags": ["a", "b"], "sizes": [1, 2, 3]},
        ) as producer:
            producer.add_event("sent", {"bytes": 123, "ratio": 1.5, "ok": True})
        with tracer.start_as_current_span("validate") as failing:
            failing.record_exception(ValueError("bad order"))
            failing.set_status(trace.Status(trace.StatusCode.ERROR, "bad order"))
    return root.get_span_context().trace_id


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def test_spans_from_the_sdk_come_back_equal_field_by_field(
    start_collector: Callable[..., CollectorProcess], compression: Compression
) -> None:
    # GIVEN a collector and an SDK that exports to it over http/protobuf, and keeps a copy in memory
    collector = start_collector()
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "orders-api", "cloud.region": "eu-west-1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces", compression=compression)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("hopscope.tests", "1.2.3")

    # WHEN spans are made and flushed
    trace_id = _emit_spans(tracer)
    assert provider.force_flush(10_000)

    # THEN the query API returns the trace, and every span equals what the SDK itself encodes
    with collector.client() as http:
        response = http.get(f"/api/traces/{trace_id:032x}")
    assert response.status_code == 200
    document = response.json()
    returned = {span.span_id: span for span in spans_of(traces_from_json(document))}  # type: ignore[arg-type]
    expected = {span.span_id: span for span in spans_of(encode_spans(memory.get_finished_spans()))}
    assert len(expected) == 3
    assert returned == expected
    # and the JSON itself is OTLP JSON: hex ids, integer enums, resource and scope intact
    json_spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {span["traceId"] for span in json_spans} == {f"{trace_id:032x}"}
    assert {span["kind"] for span in json_spans} == {1, 2, 4}
    scope = document["resourceSpans"][0]["scopeSpans"][0]["scope"]
    assert scope == {"name": "hopscope.tests", "version": "1.2.3"}
    resource = {a["key"]: a["value"] for a in document["resourceSpans"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "orders-api"}
    assert resource["cloud.region"] == {"stringValue": "eu-west-1"}
    provider.shutdown()
