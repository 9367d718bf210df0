"""Bad input gets the right status and a clear message; the collector keeps serving and loses nothing."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import CollectorProcess

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    db = tmp_path_factory.mktemp("bad") / "hopscope.db"
    collector = CollectorProcess(db=db, args=["--max-body-bytes", str(MAX_BODY)]).start()
    yield collector
    assert collector.stop() == 0


@pytest.fixture(scope="module")
def stored(collector: CollectorProcess) -> bytes:
    """A trace stored before any bad input; every test checks that it is still there afterwards."""
    request = full_request()
    with collector.client() as http:
        assert (
            http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF).status_code == 200
        )
    return request.SerializeToString()


@pytest.fixture
def http(collector: CollectorProcess, stored: bytes) -> Iterator[httpx.Client]:
    with collector.client() as client:
        yield client
    # THEN, whatever the test sent: the collector still serves, still stores, and lost nothing
    with collector.client() as client:
        assert client.get("/healthz").status_code == 200
        fresh = full_request(spans=1)
        assert (
            client.post("/v1/traces", content=fresh.SerializeToString(), headers=PROTOBUF).status_code == 200
        )
    reader = SQLiteStore(collector.db, read_only=True)
    for request_bytes in (stored, fresh.SerializeToString()):
        request = type(fresh).FromString(request_bytes)
        traces = reader.get_trace(spans_of(request)[0].trace_id)
        assert traces is not None and list(traces.resource_spans) == list(request.resource_spans)
    reader.close()


def _status(response: httpx.Response) -> status_pb2.Status:
    if response.headers["content-type"] == "application/json":
        body = response.json()
        return status_pb2.Status(code=body.get("code", 0), message=body.get("message", ""))
    return status_pb2.Status.FromString(response.content)


def test_truncated_protobuf_is_400_with_a_status_body(http: httpx.Client) -> None:
    body = full_request().SerializeToString()[:-7]
    response = http.post("/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/x-protobuf"
    status = _status(response)
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "protobuf" in status.message


def test_json_with_base64_ids_is_400(http: httpx.Client) -> None:
    span = {"traceId": base64.b64encode(bytes(range(1, 17))).decode(), "spanId": "AQIDBAUGBwg=", "name": "x"}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    response = http.post("/v1/traces", content=json.dumps(document), headers=JSON)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "hex" in _status(response).message


def test_json_that_is_not_json_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/traces", content=b'{"resourceSpans": [', headers=JSON)
    assert response.status_code == 400
    assert "not valid JSON" in _status(response).message


def test_json_of_the_wrong_shape_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/traces", content=b'{"resourceSpans": {"oops": 1}}', headers=JSON)
    assert response.status_code == 400


def test_wrong_content_type_is_415(http: httpx.Client) -> None:
    response = http.post("/v1/traces", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/x-protobuf" in _status(response).message


def test_unsupported_content_encoding_is_415(http: httpx.Client) -> None:
    body = full_request().SerializeToString()
    response = http.post("/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "br"})
    assert response.status_code == 415


def test_other_methods_are_405(http: httpx.Client) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = http.request(method, "/v1/traces")
        assert response.status_code == 405
        assert "POST" in response.headers["allow"]


def test_an_oversized_plain_body_is_413(http: httpx.Client) -> None:
    request = full_request(spans=1)
    while request.ByteSize() <= MAX_BODY:
        request.MergeFrom(full_request(spans=20))
    response = http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 413
    assert "limit" in _status(response).message


def test_an_oversized_chunked_body_without_length_is_413(http: httpx.Client) -> None:
    chunks = (b"\x0a" * 65536 for _ in range(MAX_BODY // 65536 + 2))  # no Content-Length: chunked
    response = http.post("/v1/traces", content=chunks, headers=PROTOBUF)
    assert response.status_code == 413


def test_a_gzip_bomb_is_cut_off_while_inflating(http: httpx.Client, collector: CollectorProcess) -> None:
    # GIVEN 512 MiB of zeros that gzip squeezes to about half a MiB... of which we send a quarter of the limit
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflater.compress(zeros) for _ in range(128)) + deflater.flush()
    assert len(bomb) < MAX_BODY
    rss_before = psutil.Process(collector.proc.pid).memory_info().rss  # type: ignore[union-attr]
    # WHEN it is posted as a gzip body
    response = http.post("/v1/traces", content=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    # THEN it is refused as too large, and the collector never held the inflated body
    assert response.status_code == 413
    assert "inflates to more than" in _status(response).message
    rss_after = psutil.Process(collector.proc.pid).memory_info().rss  # type: ignore[union-attr]
    assert rss_after - rss_before < 64 * 1024 * 1024


def test_truncated_gzip_is_400(http: httpx.Client) -> None:
    body = gzip.compress(full_request().SerializeToString())[:-20]
    response = http.post("/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status_code == 400


def test_invalid_ids_mixed_with_valid_spans_is_a_partial_success(
    http: httpx.Client, collector: CollectorProcess
) -> None:
    # GIVEN six spans of which two have broken ids (short trace id, zero span id), and one a link of an
    # invalid context (short span id), which SDKs may send and is stored as sent
    request = full_request(spans=3)
    spans = spans_of(request)
    spans[1].trace_id = b"\x01" * 15
    spans[3].span_id = bytes(8)
    spans[5].links[0].span_id = b"\x02" * 4
    valid = [spans[i].span_id for i in (0, 2, 4, 5)]
    # WHEN posted
    response = http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    # THEN 200 with partial_success counting the rejected spans, and the valid ones stored
    assert response.status_code == 200
    result = ExportTraceServiceResponse.FromString(response.content)
    assert result.partial_success.rejected_spans == 2
    assert "trace_id must be 16 bytes" in result.partial_success.error_message
    reader = SQLiteStore(collector.db, read_only=True)
    traces = reader.get_trace(spans[0].trace_id)
    assert traces is not None
    assert sorted(span.span_id for span in spans_of(traces)) == sorted(valid)  # type: ignore[arg-type]
    [linking] = [span for span in spans_of(traces) if span.span_id == spans[5].span_id]  # type: ignore[arg-type]
    assert linking.links[0].span_id == b"\x02" * 4
    reader.close()


def test_partial_success_in_json(http: httpx.Client) -> None:
    span = {"traceId": "00" * 16, "spanId": "01" * 8, "name": "zero trace id"}
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    response = http.post("/v1/traces", content=json.dumps(document), headers=JSON)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_query_api_rejects_malformed_ids_and_404s_unknown_ones(http: httpx.Client) -> None:
    assert http.get("/api/traces/not-a-trace-id").status_code == 400
    assert http.get("/api/traces/" + "0" * 32).status_code == 400
    missing = http.get("/api/traces/" + "ab" * 16)
    assert missing.status_code == 404
    assert "no trace" in missing.json()["message"]


def test_bearer_token_is_required_when_configured(start_collector: Callable[..., CollectorProcess]) -> None:
    collector = start_collector("--auth-token", "s3cret")
    body = full_request().SerializeToString()
    with collector.client() as http:
        missing = http.post("/v1/traces", content=body, headers=PROTOBUF)
        wrong = http.post("/v1/traces", content=body, headers={**PROTOBUF, "Authorization": "Bearer nope"})
        api = http.get("/api/traces/" + "ab" * 16)
        good = http.post("/v1/traces", content=body, headers={**PROTOBUF, "Authorization": "Bearer s3cret"})
        health = http.get("/healthz", headers={"Authorization": "Bearer s3cret"})
    for refused in (missing, wrong, api):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert _status(missing).code == code_pb2.UNAUTHENTICATED
    assert good.status_code == 200
    assert health.status_code == 200
    assert SQLiteStore(Path(collector.db), read_only=True).count_spans() == 6
