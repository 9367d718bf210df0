"""Span limits on receipt, as the OpenTelemetry SDK's: over-limit items dropped and counted, never refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.helpers.servers import CollectorProcess

LIMITS = [
    "--max-span-attributes", "3", "--max-span-events", "2", "--max-span-links", "1",
    "--max-attribute-value-length", "10",
]  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "chdb"])
def test_over_limit_items_are_dropped_and_counted_and_the_batch_is_stored(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path, backend: str
) -> None:
    # GIVEN a collector with small limits (on either store), and the real SDK sending a wide span
    store = [] if backend == "sqlite" else ["--store", f"chdb://{tmp_path / 'chdb'}?database=limits"]
    collector = start_collector(*LIMITS, *store)
    provider = TracerProvider(resource=Resource.create({"service.name": "wide"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")))
    tracer = provider.get_tracer("tests")
    linked = [
        trace.Link(trace.SpanContext(0x1000 + i, 0x2000 + i, is_remote=True, trace_flags=trace.TraceFlags(1)))
        for i in range(2)
    ]
    with tracer.start_as_current_span(
        "wide",
        links=linked,
        attributes={"a": "0123456789abcdef", "b": ["short", "0123456789abcdef"], "c": 3, "d": 4, "e": 5},
    ) as span:
        for i in range(3):
            span.add_event(f"e{i}", {"x": 1, "y": 2, "z": 3, "w": 4})
    # WHEN it is exported
    provider.force_flush()
    provider.shutdown()
    trace_id = f"{span.get_span_context().trace_id:032x}"

    # THEN it is stored, cut to the limits, every cut counted in the span's own dropped counts
    with collector.client() as http:
        document = http.get(f"/api/traces/{trace_id}").json()
    stored = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attributes = {kv["key"]: kv["value"] for kv in stored["attributes"]}
    assert list(attributes) == ["a", "b", "c"]
    assert attributes["a"] == {"stringValue": "0123456789"}
    # values inside arrays are cut too (otel_traces keeps an array as its JSON text)
    assert "0123456789a" not in json.dumps(attributes["b"]) and "0123456789" in json.dumps(attributes["b"])
    assert [event["name"] for event in stored["events"]] == ["e0", "e1"]
    assert all(len(event["attributes"]) == 3 for event in stored["events"])
    assert len(stored["links"]) == 1
    if backend == "sqlite":  # the exporter's otel_traces layout has no column for dropped counts
        assert stored["droppedAttributesCount"] == 2
        assert stored["droppedEventsCount"] == 1 and stored["droppedLinksCount"] == 1
        assert all(event["droppedAttributesCount"] == 1 for event in stored["events"])
