"""RED rollups: counts, error rates and percentiles equal hand-computed values (within the bin width)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.query.layer import QueryLayer
from tests.helpers.otlp_samples import attrs

MINUTE = 60 * 10**9
T0 = 1_800_000_000 * 10**9  # a whole minute
MS = 10**6
HISTOGRAM_ERROR = 0.05  # bins are 2**(1/8) wide: a percentile reads within about 4.5%


def _request(service: str, spans: list[tuple[str, int, int, int, bool]]) -> ExportTraceServiceRequest:
    """spans: (name, kind, start offset ns, duration ns, error)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(attrs({"service.name": service}))
    scope_spans = resource_spans.scope_spans.add()
    for name, kind, offset, duration, error in spans:
        span = scope_spans.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=name,
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=T0 + offset,
            end_time_unix_nano=T0 + offset + duration,
        )
        if error:
            span.status.code = Status.StatusCode.STATUS_CODE_ERROR
    return request


@pytest.fixture
def layer(new_store: Callable[..., Any]) -> QueryLayer:
    # GIVEN billing: 100 "POST /charges" server spans of 1..100 ms (every 20th failing) in minute 0,
    # 20 "billing process" consumer spans of 200 ms in minute 1, and 50 client spans that RED leaves out
    charges = [
        ("POST /charges", Span.SpanKind.SPAN_KIND_SERVER, i * MS, (i + 1) * MS, (i + 1) % 20 == 0)
        for i in range(100)
    ]
    process = [
        ("billing process", Span.SpanKind.SPAN_KIND_CONSUMER, MINUTE + i * MS, 200 * MS, False)
        for i in range(20)
    ]
    client = [("DynamoDB.PutItem", Span.SpanKind.SPAN_KIND_CLIENT, i * MS, 5 * MS, True) for i in range(50)]
    store = new_store("red")
    store.write([_request("billing", charges + client), _request("billing", process)])
    store.write(
        [_request("shipping", [("shipping process", Span.SpanKind.SPAN_KIND_CONSUMER, 0, 7 * MS, True)])]
    )
    return QueryLayer(store)


def test_red_per_service_counts_entry_spans_with_hand_computed_percentiles(layer: QueryLayer) -> None:
    services = {s.service: s for s in layer.services(T0, T0 + 3600 * 10**9)}
    assert set(services) == {"billing", "shipping"}
    billing = services["billing"]
    assert billing.operations == ["POST /charges", "billing process"]
    assert billing.red.span_count == 120
    assert billing.red.error_count == 5
    assert billing.red.error_rate == pytest.approx(5 / 120)
    assert billing.red.rate_per_second == pytest.approx(120 / 3600)
    # 120 durations: 1..100 ms and 20 x 200 ms -> ranks 60, 114, 119
    assert billing.red.p50_ms == pytest.approx(60, rel=HISTOGRAM_ERROR)
    assert billing.red.p95_ms == pytest.approx(200, rel=HISTOGRAM_ERROR)
    assert billing.red.p99_ms == pytest.approx(200, rel=HISTOGRAM_ERROR)
    assert services["shipping"].red.error_rate == 1.0


def test_red_of_one_operation_over_time(layer: QueryLayer) -> None:
    points = layer.latency("billing", T0, T0 + 3 * MINUTE, 60, operation="POST /charges")
    assert [p.bucket_start_unix_nano for p in points] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    first = points[0].red
    assert (first.span_count, first.error_count) == (100, 5)
    assert first.rate_per_second == pytest.approx(100 / 60)
    assert first.p50_ms == pytest.approx(50, rel=HISTOGRAM_ERROR)
    assert first.p95_ms == pytest.approx(95, rel=HISTOGRAM_ERROR)
    assert first.p99_ms == pytest.approx(99, rel=HISTOGRAM_ERROR)
    assert points[1].red.span_count == 0 and points[1].red.p50_ms is None
    client = layer.latency("billing", T0, T0 + MINUTE, 60, operation="DynamoDB.PutItem")
    assert client[0].red.span_count == 50 and client[0].red.error_rate == 1.0


def test_a_service_series_sums_its_entry_operations_per_step(layer: QueryLayer) -> None:
    (point,) = layer.latency("billing", T0, T0 + 2 * MINUTE, 120)
    assert point.red.span_count == 120
    assert point.red.p95_ms == pytest.approx(200, rel=HISTOGRAM_ERROR)


def test_rollups_are_the_same_whatever_the_chunking(new_store: Callable[..., Any]) -> None:
    spans = [
        ("op", Span.SpanKind.SPAN_KIND_SERVER, i * MS, (i % 37 + 1) * MS, i % 11 == 0) for i in range(300)
    ]
    one = new_store("one")
    one.write([_request("svc", spans)])
    many = new_store("many")
    many.write_prepared([many.prepare(_request("svc", spans[i : i + 7])) for i in range(0, 300, 7)])
    while many.stitch_flows(13):
        pass
    assert QueryLayer(one).services(T0, T0 + MINUTE) == QueryLayer(many).services(T0, T0 + MINUTE)
