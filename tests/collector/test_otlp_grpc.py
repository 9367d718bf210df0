"""``hopscope collector --grpc-port``: OTLP/gRPC behaves as OTLP/HTTP does, with gRPC's status codes."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import HOPSCOPE, CollectorProcess, free_port, serve_in_thread

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_BODY = 64 * 1024
_GRPC_ADDRESS = re.compile(r"OTLP/gRPC on (\S+?),")


def grpc_target(collector: CollectorProcess) -> str:
    """host:port of a collector's OTLP/gRPC receiver, read from its start line."""
    match = next(m for line in collector.log if (m := _GRPC_ADDRESS.search(line)))
    return match.group(1)


def export(
    target: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
    compression: grpc.Compression | None = None,
) -> ExportTraceServiceResponse:
    """One raw ``Export`` call: bytes out, so that tests can send what the SDK never would."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT)  # no serializers: bytes both ways
        answer = call(body, metadata=metadata, compression=compression, timeout=30)
    return ExportTraceServiceResponse.FromString(answer)


def refusal(target: str, body: bytes, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        export(target, body, **kwargs)
    return raised.value


def stored(db: Path, request: ExportTraceServiceRequest) -> TracesData | None:
    reader = SQLiteStore(db, read_only=True)
    try:
        return reader.get_trace(spans_of(request)[0].trace_id)
    finally:
        reader.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    db = tmp_path_factory.mktemp("grpc") / "hopscope.db"
    collector = CollectorProcess(db=db, args=["--grpc-port", "0", "--max-body-bytes", str(MAX_BODY)]).start()
    yield collector
    assert collector.stop() == 0


@pytest.fixture
def target(collector: CollectorProcess) -> Iterator[str]:
    yield grpc_target(collector)
    # THEN, whatever the test sent: the collector still serves gRPC and HTTP, and still stores
    fresh = full_request(spans=1)
    assert not export(grpc_target(collector), fresh.SerializeToString()).HasField("partial_success")
    with collector.client() as http:
        assert http.get("/healthz").status_code == 200
    traces = stored(collector.db, fresh)
    assert traces is not None and list(traces.resource_spans) == list(fresh.resource_spans)


# --- the SDK's gRPC exporter against its HTTP exporter ---


def _emit(providers: list[TracerProvider]) -> None:
    """Two services: an HTTP server span that publishes (link, events, every attribute type, an error),
    and a consumer in its own trace linked back to the producer."""
    api, worker = (provider.get_tracer("hopscope.tests", "1.2.3") for provider in providers)
    remote = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(1),
        trace_state=trace.TraceState([("vendor", "value")]),
    )
    every_type = {
        "s": "text ✓",
        "b": True,
        "i": -(2**62),
        "d": 3.25,
        "ss": ["a", "b"],
        "bs": [True, False],
        "is": [1, 2, 3],
        "ds": [0.5, 1.5],
    }
    with api.start_as_current_span(
        "POST /orders", kind=trace.SpanKind.SERVER, attributes={"http.request.method": "POST"}
    ) as root:
        root.add_event("received", {"bytes": 123, "ratio": 1.5, "ok": True, "tags": ["x"]})
        with api.start_as_current_span(
            "orders publish",
            kind=trace.SpanKind.PRODUCER,
            links=[trace.Link(remote, {"messaging.message.id": "abc", "weight": 0.5})],
            attributes={**every_type, "messaging.system": "aws_sqs", "messaging.message.id": "m-1"},
        ) as producer:
            producer.add_event("sent")
        with api.start_as_current_span("validate") as failing:
            failing.record_exception(ValueError("bad order"))
            failing.set_status(trace.Status(trace.StatusCode.ERROR, "bad order"))
    with worker.start_as_current_span(
        "orders process",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(producer.get_span_context(), {"messaging.message.id": "m-1"})],
        attributes={"messaging.system": "aws_sqs", "hopscope.receive_count": 2},
    ):
        with worker.start_as_current_span("charge", kind=trace.SpanKind.CLIENT, attributes=every_type):
            pass


def _by_span_id(traces: list[TracesData]) -> dict[bytes, tuple[Any, ...]]:
    """Every span with its resource and scope (and their schema URLs), keyed by span id."""
    return {
        span.span_id: (rs.resource, rs.schema_url, ss.scope, ss.schema_url, span)
        for document in traces
        for rs in document.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }


def test_spans_sent_by_the_sdks_grpc_and_http_exporters_are_stored_equal(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN one collector taking OTLP/gRPC and another taking OTLP/HTTP, and two services (two resources)
    # whose spans go to both, through the SDK's own exporters, and to memory
    over_grpc = start_collector("--grpc-port", "0", db=tmp_path / "grpc.db")
    over_http = start_collector(db=tmp_path / "http.db")
    memory = InMemorySpanExporter()
    providers = []
    for service, region in (("orders-api", "eu-west-1"), ("billing-worker", "us-east-2")):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "cloud.region": region}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        grpc_exporter = GrpcSpanExporter(endpoint=grpc_target(over_grpc), insecure=True)
        provider.add_span_processor(BatchSpanProcessor(grpc_exporter))
        provider.add_span_processor(
            BatchSpanProcessor(HttpSpanExporter(endpoint=f"{over_http.url}/v1/traces"))
        )
        providers.append(provider)

    # WHEN the spans are made and flushed
    _emit(providers)
    for provider in providers:
        assert provider.force_flush(10_000)

    # THEN both stores hold every span, field by field equal, and equal to what the SDK itself encodes
    finished = memory.get_finished_spans()
    trace_ids = sorted({span.context.trace_id.to_bytes(16, "big") for span in finished})
    assert len(trace_ids) == 2
    from_grpc = [SQLiteStore(tmp_path / "grpc.db", read_only=True).get_trace(t) for t in trace_ids]
    from_http = [SQLiteStore(tmp_path / "http.db", read_only=True).get_trace(t) for t in trace_ids]
    assert None not in from_grpc and None not in from_http
    assert from_grpc == from_http
    via_grpc = _by_span_id(from_grpc)  # type: ignore[arg-type]
    via_http = _by_span_id(from_http)  # type: ignore[arg-type]
    expected = _by_span_id([encode_spans(finished)])  # type: ignore[list-item]
    assert len(expected) == 5
    assert via_grpc == via_http
    assert via_grpc == expected
    # and through the query API too, the two collectors answer the same documents
    for trace_id in trace_ids:
        with over_grpc.client() as a, over_http.client() as b:
            assert (
                a.get(f"/api/traces/{trace_id.hex()}").json() == b.get(f"/api/traces/{trace_id.hex()}").json()
            )
    for provider in providers:
        provider.shutdown()


# --- answers ---


def test_invalid_ids_mixed_with_valid_spans_is_a_partial_success(
    target: str, collector: CollectorProcess
) -> None:
    # GIVEN six spans of which two have broken ids (short trace id, zero span id), and one a link of an
    # invalid context (short span id), which SDKs may send and is stored as sent
    request = full_request(spans=3)
    spans = spans_of(request)
    spans[1].trace_id = b"\x01" * 15
    spans[3].span_id = bytes(8)
    spans[5].links[0].span_id = b"\x02" * 4
    valid = sorted(spans[i].span_id for i in (0, 2, 4, 5))
    # WHEN exported over gRPC
    answer = export(target, request.SerializeToString())
    # THEN OK with partial_success counting the rejected spans, and the valid ones stored
    assert answer.partial_success.rejected_spans == 2
    assert "trace_id must be 16 bytes" in answer.partial_success.error_message
    traces = stored(collector.db, request)
    assert traces is not None
    assert sorted(span.span_id for span in spans_of(traces)) == valid  # type: ignore[arg-type]


def test_a_full_success_leaves_partial_success_unset(target: str) -> None:
    answer = export(target, full_request().SerializeToString())
    assert not answer.HasField("partial_success")
    # and an empty request is a success too, as the specification asks
    assert not export(target, b"").HasField("partial_success")


def test_a_malformed_message_is_invalid_argument_with_a_clear_message(target: str) -> None:
    for body in (full_request().SerializeToString()[:-7], b"\xff\xff not protobuf"):
        error = refusal(target, body)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "protobuf" in error.details()  # type: ignore[attr-defined]


def test_a_message_over_max_body_bytes_is_resource_exhausted_also_once_inflated(target: str) -> None:
    # GIVEN a request over the limit, and a gzip body under it that inflates to four times the limit
    request = full_request(spans=1)
    while request.ByteSize() <= MAX_BODY:
        request.MergeFrom(full_request(spans=20))
    bomb = bytes(4 * MAX_BODY)
    # WHEN each is exported
    errors = [
        refusal(target, request.SerializeToString()),
        refusal(target, bomb, compression=grpc.Compression.Gzip),
    ]
    # THEN RESOURCE_EXHAUSTED without RetryInfo: a client must not send the same message again
    for error in errors:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "larger than max" in error.details()  # type: ignore[attr-defined]
        assert "google.rpc.retryinfo-bin" not in dict(error.trailing_metadata())  # type: ignore[attr-defined]


def test_gzip_compressed_requests_are_accepted(target: str, collector: CollectorProcess) -> None:
    # GIVEN a request with every field set, sent gzip-compressed by a raw client and by the SDK's exporter
    request = full_request()
    answer = export(target, request.SerializeToString(), compression=grpc.Compression.Gzip)
    provider = TracerProvider(resource=Resource.create({"service.name": "gzip-sdk"}))
    sdk_exporter = GrpcSpanExporter(endpoint=target, insecure=True, compression=grpc.Compression.Gzip)
    provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    with provider.get_tracer("t").start_as_current_span("compressed") as span:
        trace_id = span.get_span_context().trace_id.to_bytes(16, "big")
    provider.shutdown()
    # THEN both are stored whole
    assert not answer.HasField("partial_success")
    traces = stored(collector.db, request)
    assert traces is not None and list(traces.resource_spans) == list(request.resource_spans)
    reader = SQLiteStore(collector.db, read_only=True)
    sdk_trace = reader.get_trace(trace_id)
    reader.close()
    assert sdk_trace is not None and [s.name for s in spans_of(sdk_trace)] == ["compressed"]  # type: ignore[arg-type]


def test_a_bearer_token_is_required_when_configured(start_collector: Callable[..., CollectorProcess]) -> None:
    # GIVEN a collector that requires a token
    collector = start_collector("--grpc-port", "0", "--auth-token", "s3cret")
    target = grpc_target(collector)
    refused, good = full_request(), full_request()
    # WHEN requests come without it, with a wrong one, and with the right one
    missing = refusal(target, refused.SerializeToString())
    wrong = refusal(target, refused.SerializeToString(), metadata=(("authorization", "Bearer nope"),))
    answer = export(target, good.SerializeToString(), metadata=(("authorization", "Bearer s3cret"),))
    # THEN the first two are UNAUTHENTICATED and stored nothing, the third is stored
    assert missing.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert missing.details() == "missing bearer token"  # type: ignore[attr-defined]
    assert wrong.details() == "wrong bearer token"  # type: ignore[attr-defined]
    assert not answer.HasField("partial_success")
    assert stored(collector.db, refused) is None
    assert SQLiteStore(collector.db, read_only=True).count_spans() == len(spans_of(good))
    # and the SDK's exporter with the token in its headers gets through
    provider = TracerProvider()
    sdk_exporter = GrpcSpanExporter(
        endpoint=target, insecure=True, headers={"authorization": "Bearer s3cret"}
    )
    provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    with provider.get_tracer("t").start_as_current_span("with token"):
        pass
    provider.shutdown()
    assert SQLiteStore(collector.db, read_only=True).count_spans() == len(spans_of(good)) + 1


# --- backpressure ---


def _retry_delay_seconds(error: grpc.RpcError) -> tuple[int, int]:
    """RetryInfo's delay as the status details carry it, and as opentelemetry-python's exporter reads it."""
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]  # type: ignore[attr-defined]
    [detail] = status.details
    in_status = error_details_pb2.RetryInfo()
    assert detail.Unpack(in_status)
    alone = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    return in_status.retry_delay.seconds, alone.retry_delay.seconds


def _wait_for_pending(url: str, spans: int) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/healthz").json()["pending_spans"] != spans:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_saturated_write_path_answers_unavailable_with_retry_info(tmp_path: Path) -> None:
    # GIVEN a collector whose queue holds 10 spans, and another process holding SQLite's write lock
    store = SQLiteStore(tmp_path / "busy.db")
    port = free_port()
    settings = CollectorSettings(db=store.path, grpc_port=port, max_pending_spans=10)
    target = f"127.0.0.1:{port}"
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    waiting = [full_request(spans=3), full_request(spans=2)]  # 6 + 4 spans: the queue's 10
    with serve_in_thread(settings, store) as url, ThreadPoolExecutor(2) as pool:
        # WHEN 6 spans wait on the lock and 6 more arrive (the queue would overflow)
        first = pool.submit(export, target, waiting[0].SerializeToString())
        _wait_for_pending(url, 6)
        overflow = refusal(target, full_request(spans=3).SerializeToString())
        # and when 4 spans fill the queue and a malformed message arrives
        second = pool.submit(export, target, waiting[1].SerializeToString())
        _wait_for_pending(url, 10)
        saturated = refusal(target, b"\xff not protobuf")
        # THEN both are told to come back later: UNAVAILABLE with RetryInfo, the malformed one refused
        # before it was even decoded; and the waiting spans are stored once the lock goes
        for error in (overflow, saturated):
            assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert "collector busy" in error.details()  # type: ignore[attr-defined]
            assert _retry_delay_seconds(error) == (1, 1)
        locker.execute("ROLLBACK")
        for answer in (first, second):
            assert not answer.result(timeout=30).HasField("partial_success")
    for request in waiting:
        traces = store.get_trace(spans_of(request)[0].trace_id)
        assert traces is not None and list(traces.resource_spans) == list(request.resource_spans)
    assert store.count_spans() == 10
    store.close()


def test_requests_over_the_shared_memory_budget_are_resource_exhausted_with_retry_info(
    tmp_path: Path,
) -> None:
    # GIVEN a collector with a 1 KB budget for requests in memory, 900 bytes of it held by an OTLP/HTTP
    # request whose body is still arriving
    store = SQLiteStore(tmp_path / "budget.db")
    port = free_port()
    settings = CollectorSettings(db=store.path, grpc_port=port, max_inflight_bytes=1024)
    with serve_in_thread(settings, store) as url:
        http_port = int(url.rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", http_port))
        slow.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 5000\r\n\r\n" + b"\n" * 900
        )
        time.sleep(0.5)  # the receiver has read (and charged) those 900 bytes
        # WHEN a 3 KB request arrives, THEN it is refused as retryable (RetryInfo)
        body = full_request().SerializeToString()
        error = refusal(f"127.0.0.1:{port}", body)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert _retry_delay_seconds(error) == (1, 1)
        # and once the other request is gone, the same request gets in alone, though it costs more than
        # the whole budget: any request within the size limit is taken, one at a time
        slow.close()
        time.sleep(0.5)
        assert not export(f"127.0.0.1:{port}", body).HasField("partial_success")
    assert store.count_spans() == len(spans_of(full_request()))
    store.close()


# --- the rest of the write path and the command ---


def test_batches_accepted_over_grpc_are_forwarded(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN collector A taking OTLP/gRPC and forwarding to collector B
    b = start_collector(db=tmp_path / "b.db")
    a = start_collector("--grpc-port", "0", "--forward", b.url, db=tmp_path / "a.db")
    # WHEN a request with one invalid span is exported to A over gRPC
    request = full_request()
    spans_of(request)[0].span_id = bytes(8)
    assert export(grpc_target(a), request.SerializeToString()).partial_success.rejected_spans == 1
    # THEN B stores the five valid spans, as A did
    deadline = time.monotonic() + 10
    while SQLiteStore(b.db, read_only=True).count_spans() < 5:
        assert time.monotonic() < deadline, "the batch was not forwarded"
        time.sleep(0.05)
    assert stored(b.db, request) == stored(a.db, request)


def test_a_taken_grpc_port_fails_at_once_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [HOPSCOPE, "collector", "--port", "0", "--grpc-port", str(port), "--db", str(tmp_path / "x.db")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"hopscope collector: cannot listen on 127.0.0.1:{port} (OTLP/gRPC): Address already in use"
    ]


def test_without_grpcio_the_flag_names_the_grpc_extra_in_one_line() -> None:
    # grpcio is installed here, so its absence is simulated: None in sys.modules makes find_spec fail.
    script = (
        "import sys; sys.modules['grpc'] = None; from hopscope.cli import main; "
        "main(['collector', '--grpc-port', '0'])"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hopscope collector needs the 'grpc' extra (missing module 'grpc'): pip install 'hopscope[grpc]'"
    ]


def test_grpcio_is_imported_only_with_a_grpc_port(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; "
        "from hopscope.collector import server; from hopscope.collector.app import create_app; "
        "from hopscope.collector.settings import CollectorSettings; "
        "from hopscope.collector.store.sqlite.store import SQLiteStore; "
        f"create_app(CollectorSettings(), SQLiteStore(Path({str(tmp_path / 'x.db')!r}))); "
        "print('grpc' in sys.modules, end=' '); "
        f"create_app(CollectorSettings(grpc_port=0), SQLiteStore(Path({str(tmp_path / 'x.db')!r}))); "
        "print('grpc' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
