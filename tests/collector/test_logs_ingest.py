"""OTLP logs in: ``POST /v1/logs`` and the gRPC ``LogsService`` take what the real SDK's exporters send, and
bad input gets the same answers as on ``/v1/traces`` (a table of them): the right status, nothing stored
lost, the process alive. ``--forward`` sends accepted records on to the upstream's ``/v1/logs``."""

from __future__ import annotations

import gzip
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hopscope.collector.model.logs import LogFilter
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.collector.test_bad_input import _status
from tests.collector.test_otlp_grpc import grpc_target
from tests.helpers.otlp_logs import order_story, sdk_logger
from tests.helpers.otlp_samples import full_request
from tests.helpers.servers import CollectorProcess, serve_app_in_thread

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 256 * 1024


def _story(order_id: str = "o-1", *, fail: bool = True) -> ExportLogsServiceRequest:
    with sdk_logger() as (logger, tracer, drain):
        order_story(logger, tracer, order_id, fail=fail)
        return drain()


def _count(db: Path, **criteria: object) -> int:
    reader = SQLiteStore(db, read_only=True)
    try:
        return len(reader.search_logs(LogFilter(limit=10_000, **criteria)))  # type: ignore[arg-type]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    db = tmp_path_factory.mktemp("logs") / "hopscope.db"
    collector = CollectorProcess(db=db, args=["--max-body-bytes", str(MAX_BODY)]).start()
    with collector.client() as http:  # records stored before any bad input; each case checks they stay
        stored = _story("o-kept").SerializeToString()
        assert http.post("/v1/logs", content=stored, headers=PROTOBUF).status_code == 200
    yield collector
    assert collector.stop() == 0


def _bomb() -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(deflater.compress(zeros) for _ in range(128)) + deflater.flush()  # 128 MiB inflated


def _base64_ids() -> bytes:
    record = {"traceId": "AAECAwQFBgcICQoLDA0ODw==", "body": {"stringValue": "x"}}
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()


# name, body, headers, status, google.rpc code, a piece of the message
BAD_INPUT = [
    ("truncated protobuf", _story().SerializeToString()[:-7], PROTOBUF, 400, 3, "ExportLogsServiceRequest"),
    ("JSON with base64 ids", _base64_ids(), JSON, 400, 3, "hex string"),
    ("not JSON", b'{"resourceLogs": [', JSON, 400, 3, "not valid JSON"),
    ("JSON of the wrong shape", b'{"resourceLogs": {"a": 1}}', JSON, 400, 3, "must be an array"),
    ("wrong content type", _story().SerializeToString(), {"Content-Type": "text/plain"}, 415, 3,
     "Content-Type"),
    ("unknown encoding", b"x", {**PROTOBUF, "Content-Encoding": "br"}, 415, 3, "Content-Encoding"),
    ("oversized", bytes(MAX_BODY + 1), PROTOBUF, 413, 3, "over the limit"),
    ("gzip bomb", _bomb(), {**PROTOBUF, "Content-Encoding": "gzip"}, 413, 3, "inflates to more than"),
    ("truncated gzip", gzip.compress(_story().SerializeToString())[:-20],
     {**PROTOBUF, "Content-Encoding": "gzip"}, 400, 3, "gzip"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "status", "code", "says"), [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])  # fmt: skip
def test_bad_log_input_gets_its_status_and_loses_nothing(
    collector: CollectorProcess, body: bytes, headers: dict[str, str], status: int, code: int, says: str
) -> None:
    kept = _count(collector.db)
    rss_before = psutil.Process(collector.proc.pid).memory_info().rss  # type: ignore[union-attr]
    with collector.client() as http:
        # WHEN the bad body is posted to /v1/logs
        response = http.post("/v1/logs", content=body, headers=headers)
        # THEN its status and a google.rpc.Status saying what is wrong, in the request's encoding
        assert response.status_code == status, response.text
        assert _status(response).code == code
        assert says in _status(response).message
        # and the collector serves on, holding no inflated bomb, and takes the next records
        assert psutil.Process(collector.proc.pid).memory_info().rss - rss_before < 64 * 1024 * 1024  # type: ignore[union-attr]
        assert http.get("/healthz").status_code == 200
        fresh = _story("o-fresh", fail=False)
        assert http.post("/v1/logs", content=fresh.SerializeToString(), headers=PROTOBUF).status_code == 200
    # and nothing stored before is lost
    assert _count(collector.db, correlation_id="o-kept") == 3
    assert _count(collector.db) == kept + 2


def test_broken_records_mixed_with_valid_ones_are_a_partial_success(collector: CollectorProcess) -> None:
    # GIVEN three records of which one names a 15-byte trace and one a 4-byte span
    request = _story("o-partial")
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].trace_id = b"\x01" * 15
    records[2].span_id = b"\x02" * 4
    with collector.client() as http:
        # WHEN posted as protobuf, and one broken record as JSON
        response = http.post("/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
        bad_json = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "0102", "body": {}}]}]}]}
        as_json = http.post("/v1/logs", content=json.dumps(bad_json), headers=JSON)
    # THEN 200 with partial_success counting the rejected records; the valid one is stored
    assert response.status_code == 200
    partial = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert (partial.rejected_log_records, "trace_id must be empty or 16 bytes" in partial.error_message) == (
        2,
        True,
    )
    assert as_json.status_code == 200
    assert as_json.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert _count(collector.db, correlation_id="o-partial") == 1


def _export_with(exporter: LogRecordExporter, service: str) -> tuple[str, list[str]]:
    """Log three lines of an order through the SDK's LoggingHandler and ``exporter``; the trace id."""
    resource = Resource.create({"service.name": service})
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger(f"tests.logs_ingest.{service}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        trace_id, _ = order_story(
            logger, TracerProvider(resource=resource).get_tracer("t"), service, fail=True
        )
        assert provider.force_flush(10_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return trace_id, [f"order {service} received", f"stock low for order {service}", "payment failed"]


def test_the_sdks_http_and_grpc_exporters_deliver_every_record_once(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN a collector with OTLP/gRPC on
    collector = start_collector("--grpc-port", "0", db=tmp_path / "sdk.db")
    # WHEN the SDK exports through OTLP/HTTP protobuf (gzip) and through OTLP/gRPC
    http_exporter = HttpLogExporter(endpoint=f"{collector.url}/v1/logs", compression=Compression.Gzip)
    over_http, bodies = _export_with(http_exporter, "over-http")
    grpc_exporter = GrpcLogExporter(endpoint=grpc_target(collector), insecure=True)
    over_grpc, _ = _export_with(grpc_exporter, "over-grpc")
    # THEN every record is stored once, in order, with its trace, severity and exception
    reader = SQLiteStore(collector.db, read_only=True)
    for service, trace_id in (("over-http", over_http), ("over-grpc", over_grpc)):
        lines = reader.search_logs(LogFilter(trace_ids=(bytes.fromhex(trace_id),)))
        expected = [b.replace("over-http", service) for b in bodies]
        assert [line.body for line in lines] == expected
        assert [line.severity for line in lines] == ["INFO", "WARN", "ERROR"]
        assert {line.service for line in lines} == {service}
        assert lines[2].attributes["exception.type"] == "ValueError"
    reader.close()


def test_forward_sends_accepted_log_records_to_the_upstreams_v1_logs(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN an upstream collector, and collector A forwarding to it (a URL without a path)
    upstream = start_collector(db=tmp_path / "up.db")
    a = start_collector("--forward", upstream.url, db=tmp_path / "a.db")
    # WHEN A accepts records
    request = _story("o-forwarded")
    with a.client() as http:
        assert http.post("/v1/logs", content=request.SerializeToString(), headers=PROTOBUF).status_code == 200
        # THEN they reach the upstream's /v1/logs, once, and A's health counts them
        deadline = time.monotonic() + 10
        while _count(upstream.db, correlation_id="o-forwarded") < 3:
            assert time.monotonic() < deadline, "records were not forwarded"
            time.sleep(0.1)
        [logs_upstream] = [s for s in http.get("/healthz").json()["forwarding"] if s["signal"] == "logs"]
    assert logs_upstream["url"] == f"{upstream.url}/v1/logs"
    assert logs_upstream["forwarded_spans"] == 3
    assert _count(upstream.db, correlation_id="o-forwarded") == 3


def test_an_upstream_without_v1_logs_gets_no_log_records_and_is_not_failing(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN an upstream that takes traces only (as Jaeger's OTLP receiver), and a collector forwarding to it
    received: list[str] = []

    async def traces(request: Request) -> Response:
        received.append(request.url.path)
        return Response(b"", media_type="application/x-protobuf")

    with serve_app_in_thread(Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])) as url:
        a = start_collector("--forward", url, db=tmp_path / "a.db")
        with a.client() as http:
            # WHEN it accepts log records, then more, then spans
            for order_id in ("o-1", "o-2"):
                body = _story(order_id).SerializeToString()
                assert http.post("/v1/logs", content=body, headers=PROTOBUF).status_code == 200
            spans = full_request(spans=2).SerializeToString()
            assert http.post("/v1/traces", content=spans, headers=PROTOBUF).status_code == 200
            deadline = time.monotonic() + 10
            while "/v1/traces" not in received:
                assert time.monotonic() < deadline, "spans were not forwarded"
                time.sleep(0.05)
            # THEN the records are dropped and counted, once said, and the collector stays ready
            [logs_upstream] = [s for s in http.get("/healthz").json()["forwarding"] if s["signal"] == "logs"]
            ready = http.get("/readyz").json()
    assert logs_upstream["dropped_spans"] == 6 and logs_upstream["forwarded_spans"] == 0
    assert logs_upstream["consecutive_failures"] == 0
    assert "takes no log records" in logs_upstream["last_error"]
    assert ready["status"] == "ok", ready
    assert sum("takes no log records" in line for line in a.log) == 1
