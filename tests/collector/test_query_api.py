"""The HTTP query API on a collector fed by the real OpenTelemetry SDK over OTLP/HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from opentelemetry import context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hopscope.collector.app import create_app
from hopscope.collector.otlp.codec import traces_from_json
from hopscope.collector.query.openapi import OPENAPI
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, order_chain
from tests.helpers.servers import CollectorProcess


@pytest.fixture(scope="module", params=["sqlite", "chdb"])
def collector(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    """A collector holding three order chains (o-1 ok, o-2 failed, o-3 ok), sent by the SDK's exporter.

    Part of the shared store suite: every test here runs against a collector storing in SQLite and one
    storing in ClickHouse (``--store chdb://``, in the collector's own process).
    """
    folder = tmp_path_factory.mktemp("api")
    args = [] if request.param == "sqlite" else ["--store", f"chdb://{folder}/clickhouse"]
    collector = CollectorProcess(db=folder / "hopscope.db", args=args).start()
    services = Services()
    for order_id, fail in (("o-1", False), ("o-2", True), ("o-3", False)):
        order_chain(services, order_id, fail=fail)
        time.sleep(0.01)  # distinct start times, so "newest first" has one answer
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")
    assert exporter.export(services.spans()).name == "SUCCESS"
    with collector.client() as http:  # flows are stitched when the writer has a quiet moment
        deadline = time.monotonic() + 10
        while len(http.get("/api/flows").json()["flows"]) < 3:
            assert time.monotonic() < deadline, "flows were not stitched"
            time.sleep(0.05)
    yield collector
    assert collector.stop() == 0


@pytest.fixture
def http(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with collector.client() as client:
        yield client


def _orders(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [",".join(flow["correlation_ids"]) for flow in response.json()["flows"]]


def test_flows_are_listed_newest_first_with_their_summaries(http: httpx.Client) -> None:
    response = http.get("/api/flows")
    assert _orders(response) == ["o-3", "o-2", "o-1"]
    first = response.json()["flows"][0]
    assert first["trace_count"] == 3 and first["span_count"] == 5
    assert first["services"] == ["billing", "orders-api", "shipping"]
    assert (first["entry_service"], first["entry_operation"]) == ("orders-api", "POST /orders")
    assert first["duration_ms"] == pytest.approx((first["end_unix_nano"] - first["start_unix_nano"]) / 1e6)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("correlation_id=o-2", ["o-2"]),
        ("message_id=sqs-o-1", ["o-1"]),
        ("status=error", ["o-2"]),
        ("service=shipping&limit=2", ["o-3", "o-2"]),
        ("service=shipping&limit=2&offset=2", ["o-1"]),
        ("operation=billing+publish&correlation_id=o-3", ["o-3"]),
        ("service=nobody", []),
        ("min_duration_ms=0&correlation_id=o-1", ["o-1"]),
        ("min_duration_ms=600000", []),
        ("attr=hopscope.correlation_id:o-1", ["o-1"]),
        ("attr=hopscope.receive_count:3", ["o-2"]),
        ("attr=messaging.system:aws_sqs&attr=hopscope.correlation_id:o-3", ["o-3"]),
        ("since=2000-01-01T00:00:00Z&correlation_id=o-1", ["o-1"]),
        ("until=2000-01-01T00:00:00Z", []),
        ("since=0&until=9223372036854775807", ["o-3", "o-2", "o-1"]),
    ],
)
def test_every_filter(http: httpx.Client, query: str, expected: list[str]) -> None:
    assert _orders(http.get(f"/api/flows?{query}")) == expected


def test_sort_by_duration_puts_the_longest_first(http: httpx.Client) -> None:
    flows = http.get("/api/flows?sort=duration").json()["flows"]
    durations = [flow["duration_ms"] for flow in flows]
    assert durations == sorted(durations, reverse=True) and len(durations) == 3


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("sort=name", "sort"),
        ("status=ok", "status"),
        ("min_duration_ms=slow", "min_duration_ms"),
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("until=99999999999999999999", "until"),
        ("attr=no-colon", "attr"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(http: httpx.Client, query: str, parameter: str) -> None:
    response = http.get(f"/api/flows?{query}")
    assert response.status_code == 400
    assert f"parameter {parameter!r}" in response.json()["message"]


def test_a_flow_has_every_span_and_its_async_hops_with_queue_wait(http: httpx.Client) -> None:
    (summary,) = http.get("/api/flows?correlation_id=o-2").json()["flows"]
    detail = http.get(f"/api/flows/{summary['flow_id']}").json()
    assert detail["summary"] == summary
    spans = detail["spans"]
    assert [span["name"] for span in spans] == [
        "POST /orders",
        "order-events publish",
        "order-events process",
        "billing publish",
        "shipping process",
    ]
    failed = spans[-1]
    assert failed["status"] == {"code": "ERROR", "message": "carrier down"}
    assert failed["attributes"]["hopscope.receive_count"] == 3
    assert failed["kind"] == "CONSUMER" and failed["service"] == "shipping"
    assert failed["links"][0]["span_id"] == spans[3]["span_id"]
    hops = {
        (hop["destination"], hop["producer_service"], hop["consumer_service"]): hop for hop in detail["hops"]
    }
    assert set(hops) == {("order-events", "orders-api", "billing"), ("shipping", "billing", "shipping")}
    shipping = hops[("shipping", "billing", "shipping")]
    assert shipping["queue_wait_ms"] == pytest.approx(
        (failed["start_unix_nano"] - spans[3]["end_unix_nano"]) / 1e6
    )
    assert shipping["receive_count"] == 3
    assert shipping["messaging_system"] == "aws_sqs"


def test_unknown_and_malformed_flow_ids(http: httpx.Client) -> None:
    for path in ("/api/flows/999999", "/api/flows/999999/otlp"):
        response = http.get(path)
        assert response.status_code == 404
        assert "no flow 999999" in response.json()["message"]
    for path in ("/api/flows/abc", "/api/flows/0/otlp", "/api/flows/-3"):
        response = http.get(path)
        assert response.status_code == 400
        assert "parameter 'flow_id'" in response.json()["message"]


def test_a_flow_exported_as_otlp_json_imports_into_a_fresh_store_unchanged(
    http: httpx.Client, tmp_path: Path
) -> None:
    # GIVEN a flow exported from the API as OTLP JSON
    (summary,) = http.get("/api/flows?correlation_id=o-1").json()["flows"]
    exported = http.get(f"/api/flows/{summary['flow_id']}/otlp").json()
    traces = traces_from_json(exported)
    # WHEN it is imported into a fresh store
    fresh = SQLiteStore(tmp_path / "fresh.db")
    fresh.write([ExportTraceServiceRequest(resource_spans=traces.resource_spans)])
    # THEN the fresh store has the same spans, and the same single flow
    trace_ids = {span.trace_id for rs in traces.resource_spans for ss in rs.scope_spans for span in ss.spans}
    assert len(trace_ids) == 3
    for trace_id in trace_ids:
        original = http.get(f"/api/traces/{trace_id.hex()}").json()
        again = fresh.get_trace(trace_id)
        assert again is not None and again == traces_from_json(original)
    assert len({fresh.flow_of_trace(trace_id) for trace_id in trace_ids}) == 1
    fresh.close()


def test_openapi_is_valid_and_describes_every_route(http: httpx.Client, tmp_path: Path) -> None:
    document = http.get("/openapi.json").json()
    assert document == OPENAPI
    validate(document)
    store = SQLiteStore(tmp_path / "routes.db")
    app = create_app(CollectorSettings(db=store.path), store)
    for route in app.routes:
        path = route.path  # type: ignore[attr-defined]
        assert path in document["paths"], f"{path} is not in /openapi.json"
        for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
            assert method.lower() in document["paths"][path], f"{method} {path} is not in /openapi.json"
    store.close()


def test_services_report_red_of_their_entry_spans(http: httpx.Client) -> None:
    body = http.get("/api/services").json()
    services = {service["service"]: service for service in body["services"]}
    assert set(services) == {"orders-api", "billing", "shipping"}
    shipping = services["shipping"]
    assert shipping["operations"] == ["shipping process"]
    assert shipping["red"]["span_count"] == 3
    assert shipping["red"]["error_count"] == 1
    assert shipping["red"]["error_rate"] == pytest.approx(1 / 3)
    assert shipping["red"]["rate_per_second"] == pytest.approx(3 / 3600)
    assert shipping["red"]["p99_ms"] is not None


def test_latency_series_of_a_service_and_of_an_operation(http: httpx.Client) -> None:
    body = http.get("/api/latency?service=billing&step=600").json()
    assert body["step_seconds"] == 600 and len(body["points"]) == 6
    assert sum(point["red"]["span_count"] for point in body["points"]) == 3
    one = http.get("/api/latency?service=billing&operation=billing+publish").json()
    assert one["step_seconds"] == 60 and len(one["points"]) == 60
    assert sum(point["red"]["span_count"] for point in one["points"]) == 3


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/latency", "service"),
        ("/api/latency?service=billing&step=90", "step"),
        ("/api/latency?service=billing&step=60&since=0", "step"),
        ("/api/latency?service=billing&since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z", "since"),
        ("/api/latency?service=billing&colour=red", "colour"),
        ("/api/services?until=soon", "until"),
        ("/api/services?service=billing", "service"),
    ],
)
def test_bad_red_parameters_are_400(http: httpx.Client, path: str, parameter: str) -> None:
    response = http.get(path)
    assert response.status_code == 400
    assert f"parameter {parameter!r}" in response.json()["message"]


def test_the_graph_endpoint_shows_queues_topics_and_hops(http: httpx.Client) -> None:
    body = http.get("/api/graph").json()
    nodes = {node["id"]: node["type"] for node in body["nodes"]}
    assert nodes["aws.sns:order-events"] == "topic"
    assert nodes["aws_sqs:shipping"] == "queue"
    edges = {(e["source"], e["target"], e["kind"]): e for e in body["edges"]}
    consume = edges[("aws_sqs:shipping", "service:shipping", "consume")]
    assert consume["red"]["span_count"] == 3 and consume["red"]["error_count"] == 1
    assert consume["max_receive_count"] == 3
    assert consume["queue_wait_p50_ms"] is not None
    assert edges[("service:orders-api", "aws.sns:order-events", "publish")]["red"]["span_count"] == 3
    assert http.get("/api/graph?since=later").status_code == 400


@pytest.mark.parametrize("backend", ["sqlite", "chdb"])
def test_an_api_called_with_an_outside_traceparent_is_its_flows_entry(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path, backend: str
) -> None:
    # GIVEN a collector, and an API instrumented with the SDK, exporting to it over OTLP/HTTP
    collector = start_collector(
        *([] if backend == "sqlite" else ["--store", f"chdb://{tmp_path}/clickhouse"])
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "orders-api"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")))
    api = provider.get_tracer("hopscope.tests")
    consumer = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    consumer.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")))
    # WHEN a request comes from outside with a W3C traceparent (its caller's spans never reach hopscope)
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    correlation = {"hopscope.correlation_id": "outside-1"}
    parent = TraceContextTextMapPropagator().extract(headers)
    with api.start_as_current_span(
        "POST /orders", context=parent, kind=SpanKind.SERVER, attributes=correlation
    ):
        with api.start_as_current_span("order-events publish", kind=SpanKind.PRODUCER) as publish:
            pass
    # and a consumer, in a trace of its own linked to the producer, handles the message
    with consumer.get_tracer("hopscope.tests").start_as_current_span(
        "order-events process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[Link(publish.get_span_context())],
        attributes=correlation,
    ):
        pass
    assert consumer.force_flush(10_000) and provider.force_flush(10_000)
    # THEN the flow found by its correlation id has the API's server span as entry, called from outside
    with collector.client() as http:
        deadline = time.monotonic() + 10
        while not (flows := http.get("/api/flows?correlation_id=outside-1").json()["flows"]) or (
            flows[0]["span_count"] < 3
        ):
            assert time.monotonic() < deadline, "the flow was not stitched"
            time.sleep(0.05)
        (summary,) = flows
        assert (summary["entry_service"], summary["entry_operation"]) == ("orders-api", "POST /orders")
        detail = http.get(f"/api/flows/{summary['flow_id']}").json()
    assert detail["entry_called_from_outside"] is True
    assert detail["spans"][0]["parent_span_id"] == "00f067aa0ba902b7"
    provider.shutdown()
    consumer.shutdown()
    assert collector.stop() == 0
