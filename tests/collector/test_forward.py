"""``hopscope collector --forward URL``: accepted batches reach upstream collectors, in the background."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from hopscope.collector.app import FORWARD_FLUSH_TIMEOUT_SECONDS
from hopscope.collector.ingest.forward import Forwarder
from hopscope.collector.otlp.codec import traces_to_json
from hopscope.collector.settings import DEFAULT_FORWARD_QUEUE_BYTES, CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import HOPSCOPE, CollectorProcess, serve_in_thread

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _wait_for(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _forwarding(url: str, signal: str = "traces") -> list[dict[str, Any]]:
    stats: list[dict[str, Any]] = httpx.get(f"{url}/healthz").json()["forwarding"]
    return [upstream for upstream in stats if upstream["signal"] == signal]


def _refusing_port() -> socket.socket:
    """A socket bound to a free port but not listening: connections are refused, and no one else binds it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _trace_id(request: ExportTraceServiceRequest) -> str:
    return spans_of(request)[0].trace_id.hex()


def _sdk_trace(endpoint: str) -> tuple[str, int]:
    """Three spans made and exported by the real OpenTelemetry SDK; returns the trace id and span count."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("hopscope.tests")
    with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.SERVER) as root:
        with tracer.start_as_current_span("orders publish", kind=trace.SpanKind.PRODUCER):
            pass
        with tracer.start_as_current_span("validate") as failing:
            failing.set_status(trace.Status(trace.StatusCode.ERROR, "bad order"))
    assert provider.force_flush(10_000)
    provider.shutdown()
    return f"{root.get_span_context().trace_id:032x}", 3


def test_every_span_accepted_by_a_reaches_every_upstream_as_a_stored_it(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN two upstream collectors, and collector A forwarding to both (one URL without a path)
    b1 = start_collector(db=tmp_path / "b1.db")
    b2 = start_collector(db=tmp_path / "b2.db")
    a = start_collector("--forward", b1.url, "--forward", f"{b2.url}/v1/traces", db=tmp_path / "a.db")

    # WHEN A receives spans from the SDK, as protobuf, as OTLP JSON, and with one invalid span
    sdk_trace, sdk_spans = _sdk_trace(f"{a.url}/v1/traces")
    as_protobuf = full_request(spans=4)
    as_json = full_request(spans=2, service="billing")
    with_invalid = full_request(spans=3, service="shipping")
    spans_of(with_invalid)[-1].span_id = bytes(8)
    with a.client() as http:
        assert http.post("/v1/traces", content=as_protobuf.SerializeToString(), headers=PROTOBUF).is_success
        json_body = traces_to_json(TracesData.FromString(as_json.SerializeToString()))
        assert http.post("/v1/traces", json=json_body).is_success
        partial = http.post("/v1/traces", content=with_invalid.SerializeToString(), headers=PROTOBUF)
    assert partial.status_code == 200
    assert ExportTraceServiceResponse.FromString(partial.content).partial_success.rejected_spans == 1
    accepted = sdk_spans + 8 + 4 + 5

    # THEN A's /healthz counts every accepted span as forwarded to each upstream, none dropped
    _wait_for(lambda: all(s["forwarded_spans"] == accepted for s in _forwarding(a.url)))
    stats = _forwarding(a.url)
    assert [s["url"] for s in stats] == [f"{b1.url}/v1/traces", f"{b2.url}/v1/traces"]
    for upstream in stats:
        assert upstream["dropped_spans"] == upstream["queued_spans"] == upstream["queued_bytes"] == 0
        assert upstream["last_error"] is None
    # and each upstream holds every trace exactly as A stored it
    trace_ids = [sdk_trace, _trace_id(as_protobuf), _trace_id(as_json), _trace_id(with_invalid)]
    with a.client() as http_a, b1.client() as http_b1, b2.client() as http_b2:
        for trace_id in trace_ids:
            stored = http_a.get(f"/api/traces/{trace_id}")
            assert stored.status_code == 200
            assert http_b1.get(f"/api/traces/{trace_id}").json() == stored.json()
            assert http_b2.get(f"/api/traces/{trace_id}").json() == stored.json()
    for upstream in (b1, b2):
        assert SQLiteStore(upstream.db, read_only=True).count_spans() == accepted


def test_with_the_upstream_down_a_answers_200_drops_past_its_bound_and_delivers_the_rest_later(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN collector A forwarding to a port where nothing listens yet, with room for four requests
    reserved = _refusing_port()
    port = reserved.getsockname()[1]
    requests = [full_request(spans=5) for _ in range(10)]
    sizes = [len(r.SerializeToString()) for r in requests]
    settings = CollectorSettings(
        db=tmp_path / "a.db",
        forward_urls=(f"http://127.0.0.1:{port}/v1/traces",),
        forward_queue_bytes=sum(sizes[:4]) + min(sizes) // 2,
        forward_initial_backoff_seconds=0.05,
        forward_max_backoff_seconds=0.25,
    )
    store = SQLiteStore(settings.db)
    try:
        with serve_in_thread(settings, store) as a_url:
            # WHEN ten requests of ten spans arrive while the upstream is down
            for request in requests:
                response = httpx.post(
                    f"{a_url}/v1/traces", content=request.SerializeToString(), headers=PROTOBUF
                )
                # THEN every one is answered 200 and stored by A
                assert response.status_code == 200
            assert store.count_spans() == 100
            # and A holds the first four, counts the other six as dropped, and says why it holds them
            _wait_for(lambda: _forwarding(a_url)[0]["last_error"] is not None)
            [down] = _forwarding(a_url)
            assert down["queued_spans"] == 40
            assert down["queued_bytes"] == sum(sizes[:4])
            assert down["dropped_spans"] == 60
            assert down["forwarded_spans"] == 0
            assert "ConnectError" in down["last_error"]

            # WHEN the upstream starts on that port
            reserved.close()
            b = start_collector(db=tmp_path / "b.db", port=port)
            # THEN A delivers everything it still held
            _wait_for(lambda: _forwarding(a_url)[0]["queued_spans"] == 0)
            [up] = _forwarding(a_url)
            assert up["forwarded_spans"] == 40
            assert up["dropped_spans"] == 60
            assert up["forwarded_spans"] + up["dropped_spans"] == store.count_spans()
    finally:
        reserved.close()
        store.close()
    upstream = SQLiteStore(b.db, read_only=True)
    assert upstream.count_spans() == 40
    for request in requests[:4]:
        delivered = upstream.get_trace(spans_of(request)[0].trace_id)
        assert delivered is not None
        assert {s.span_id for s in spans_of(delivered)} == {s.span_id for s in spans_of(request)}  # type: ignore[arg-type]
    assert all(upstream.get_trace(spans_of(r)[0].trace_id) is None for r in requests[4:])


def test_an_upstream_answering_401_gets_batches_dropped_and_a_keeps_working(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN an upstream that requires a token, and collector A forwarding to it without one
    b = start_collector("--auth-token", "s3cret", db=tmp_path / "b.db")
    a = start_collector("--forward", f"{b.url}/v1/traces", db=tmp_path / "a.db")
    # WHEN A receives three requests
    requests = [full_request(spans=2) for _ in range(3)]
    with a.client() as http:
        for request in requests:
            assert http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF).is_success
    # THEN every batch is dropped (not retried: a 401 stays a 401), counted, and logged once
    _wait_for(lambda: _forwarding(a.url)[0]["dropped_spans"] == 12)
    [stats] = _forwarding(a.url)
    assert stats["forwarded_spans"] == stats["queued_spans"] == 0
    assert stats["last_error"].startswith("HTTP 401")
    _wait_for(lambda: any("HTTP 401" in line for line in a.log))
    assert sum("HTTP 401" in line for line in a.log) == 1
    assert SQLiteStore(b.db, read_only=True).count_spans() == 0
    # and A still stores and serves every span
    with a.client() as http:
        for request in requests:
            assert http.get(f"/api/traces/{_trace_id(request)}").status_code == 200
            response = http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
            assert response.status_code == 200


def test_a_stops_within_its_flush_timeout_when_the_upstream_stays_down(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN collector A holding a batch for an upstream that never comes up
    with _refusing_port() as reserved:
        upstream = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        a = start_collector("--forward", upstream, db=tmp_path / "a.db")
        with a.client() as http:
            response = http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
            assert response.status_code == 200
        # WHEN it is stopped
        started = time.monotonic()
        assert a.stop() == 0
    # THEN it gives up on forwarding after its flush timeout, says what it dropped, and kept every span
    assert time.monotonic() - started < FORWARD_FLUSH_TIMEOUT_SECONDS + 5
    assert any("6 spans still queued at shutdown are dropped" in line for line in a.log), a.log
    assert SQLiteStore(a.db, read_only=True).count_spans() == 6


class _ScriptedUpstream(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, headers, body); records when and what it received."""

    script: list[tuple[int, dict[str, str], bytes]]
    received: list[tuple[float, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((time.monotonic(), body))
        status, headers, content = self.script.pop(0) if self.script else (200, {}, b"")
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(content))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted_upstream() -> Iterator[type[_ScriptedUpstream]]:
    handler = type("Handler", (_ScriptedUpstream,), {"script": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_429_and_503_are_retried_honouring_retry_after_and_partial_success_is_counted(
    scripted_upstream: type[_ScriptedUpstream],
) -> None:
    # GIVEN an upstream that answers 429 (Retry-After: 1), then 503, then 200 rejecting two spans
    partial = ExportTraceServiceResponse()
    partial.partial_success.rejected_spans = 2
    partial.partial_success.error_message = "2 spans too old"
    scripted_upstream.script += [
        (429, {"Retry-After": "1"}, b""),
        (503, {}, b""),
        (200, {"Content-Type": "application/x-protobuf"}, partial.SerializeToString()),
    ]
    forwarder = Forwarder(
        [scripted_upstream.url],  # type: ignore[attr-defined]
        max_queue_bytes=DEFAULT_FORWARD_QUEUE_BYTES,
        initial_backoff=0.01,
        max_backoff=5,
    )
    forwarder.start()
    body = full_request(spans=3).SerializeToString()
    try:
        # WHEN one batch of six spans is offered
        forwarder.offer(body, 6)
        _wait_for(lambda: forwarder.stats()[0]["queued_spans"] == 0)
    finally:
        forwarder.close(5)
    # THEN the same body was sent three times, the second a second later, as Retry-After asked
    times = [t for t, _ in scripted_upstream.received]
    assert [b for _, b in scripted_upstream.received] == [body] * 3
    assert times[1] - times[0] >= 0.9
    assert times[2] - times[1] < 0.9
    # and the rejected spans count as dropped, the others as forwarded
    stats, logs_upstream = forwarder.stats()
    assert logs_upstream["signal"] == "logs" and logs_upstream["forwarded_spans"] == 0
    assert stats["forwarded_spans"] == 4
    assert stats["dropped_spans"] == 2
    assert stats["last_error"] == "upstream rejected 2 span(s): 2 spans too old"


@pytest.mark.parametrize("bad", ["ftp://example.com", "localhost:4318", "http://example.com:99999"])
def test_a_bad_forward_url_is_refused_before_starting(bad: str) -> None:
    result = subprocess.run(
        [HOPSCOPE, "collector", "--forward", bad], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid forward URL" in result.stderr
