"""Rollups read merged by the store (per edge, per step): the same answers as merging every minute's row,
over ranges longer than the week a SQLite statement merges at most."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.query.layer import QueryLayer
from tests.helpers.otlp_samples import attrs

MINUTE = 60 * 10**9
DAY = 24 * 60 * MINUTE
T0 = 1_800_000_000 * 10**9  # a whole minute
MS = 10**6
HISTOGRAM_ERROR = 0.05  # bins are 2**(1/8) wide: a percentile reads within about 4.5%


def test_concatenated_histograms_merge_as_decoded_ones() -> None:
    # GIVEN histograms as encode writes them, empty ones and one with spaces (JSON allows them) among them
    rng = random.Random(17)
    histograms = [
        Counter({rng.randint(0, 400): rng.randint(1, 10**12) for _ in range(rng.randint(0, 9))})
        for _ in range(300)
    ]
    encoded = [latency_histogram.encode(histogram) for histogram in histograms]
    encoded.append('{"3": 2, "400": 1}')
    # WHEN they are merged from their concatenation (what SQL's group_concat(histogram, '') gives)
    merged = latency_histogram.merge_encoded("".join(encoded))
    # THEN the counts are those of decoding each and adding them up
    assert merged == latency_histogram.merge(latency_histogram.decode(text) for text in encoded)
    assert merged[3] >= 2 and merged[400] >= 1
    assert latency_histogram.merge_encoded("{}{}") == Counter()
    assert latency_histogram.merge_encoded(None) == Counter()


@pytest.mark.parametrize("fractions", [(0.5, 0.95, 0.99), (0.0, 1.0), (0.5, 0.5)])
def test_percentiles_at_once_equal_each_alone(fractions: tuple[float, ...]) -> None:
    histogram = Counter({10: 3, 40: 1, 41: 0, 90: 96})
    assert latency_histogram.percentiles_ms(histogram, fractions) == [
        latency_histogram.percentile_ms(histogram, fraction) for fraction in fractions
    ]
    assert latency_histogram.percentiles_ms(Counter(), fractions) == [None] * len(fractions)


def _span(scope: Any, name: str, kind: int, start: int, duration: int, parent: Span | None = None) -> Span:
    span: Span = scope.spans.add(
        trace_id=parent.trace_id if parent else os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=parent.span_id if parent else b"",
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
    )
    return span


def _calls(offsets: list[int]) -> list[ExportTraceServiceRequest]:
    """At each offset from T0: web's GET /order (server, 30 ms) calls orders' POST /orders (client 20 ms,
    server 10 ms beneath it)."""
    web, orders = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    scopes = []
    for request, service in ((web, "web"), (orders, "orders")):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(attrs({"service.name": service}))
        scopes.append(resource_spans.scope_spans.add())
    for offset in offsets:
        entry = _span(scopes[0], "GET /order", Span.SpanKind.SPAN_KIND_SERVER, T0 + offset, 30 * MS)
        call = _span(scopes[0], "POST /orders", Span.SpanKind.SPAN_KIND_CLIENT, T0 + offset, 20 * MS, entry)
        _span(scopes[1], "POST /orders", Span.SpanKind.SPAN_KIND_SERVER, T0 + offset + MS, 10 * MS, call)
    return [web, orders]


@pytest.fixture
def layer(new_store: Callable[..., Any]) -> QueryLayer:
    # GIVEN calls in the minute of T0 (two, 30 s apart), 8 days and 16 days later: further apart than the week
    # that one SQLite statement merges
    store = new_store("reads")
    store.write(_calls([0, 30 * 10**9, 8 * DAY, 16 * DAY]))
    return QueryLayer(store)


def test_a_range_of_weeks_counts_every_minute_once(layer: QueryLayer) -> None:
    # WHEN three weeks are read, starting inside T0's minute (which counts in the first step)
    since, until = T0 + 10 * 10**9, T0 + 21 * DAY
    services = {service.service: service for service in layer.services(since, until)}
    graph = layer.graph(since, until)
    # THEN each call counts once: 4 requests per service, 4 sync hops
    assert {name: service.red.span_count for name, service in services.items()} == {"web": 4, "orders": 4}
    assert services["web"].red.p50_ms == pytest.approx(30, rel=HISTOGRAM_ERROR)
    (edge,) = graph.edges
    assert (edge.source, edge.target, edge.kind, edge.red.span_count) == (
        "service:web",
        "service:orders",
        "sync",
        4,
    )
    assert edge.red.p99_ms == pytest.approx(10, rel=HISTOGRAM_ERROR)
    assert layer.latency_histogram("orders", since, until) == [(pytest.approx(10, rel=0.1), 4)]
    # per day from since (10 s after T0): the first has T0's minute, the 8th and 16th one call each
    points = layer.latency("web", since, until, 86_400)
    assert [point.red.span_count for point in points] == [2] + [0] * 6 + [1] + [0] * 7 + [1] + [0] * 5
    assert points[0].bucket_start_unix_nano == since
    assert layer.latency("web", since, until, 21 * 86_400)[0].red.span_count == 4
    # and so does all time (since 1970: weeks without a row are skipped, not read one by one)
    assert [service.red.span_count for service in layer.services(0, 2**63 - 1)] == [4, 4]
    assert [edge.red.span_count for edge in layer.graph(0, 2**63 - 1).edges] == [4]


def test_every_service_and_its_series_at_once_equal_each_alone(layer: QueryLayer) -> None:
    since, until = T0 - DAY, T0 + 20 * DAY
    together = layer.services_over_time(since, until, 3_600)
    assert [service for service, _ in together] == layer.services(since, until)
    for service, points in together:
        assert points == layer.latency(service.service, since, until, 3_600)
    assert [sum(point.red.span_count for point in points) for _, points in together] == [4, 4]


def test_a_service_latency_from_one_read_equals_its_three_answers(layer: QueryLayer) -> None:
    since, until = T0 - DAY, T0 + 20 * DAY
    for operation in (None, "GET /order"):
        whole, points, bins = layer.latency_over_range("web", since, until, 3_600, operation)
        assert points == layer.latency("web", since, until, 3_600, operation)
        assert bins == layer.latency_histogram("web", since, until, operation)
        assert [whole] == [point.red for point in layer.latency("web", since, until, 21 * 86_400, operation)]
        assert whole.span_count == 4
