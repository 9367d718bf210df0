"""Memory stays inside the in-flight budget plus a fixed overhead, whatever clients send at once.

The collector runs as the ``hopscope collector`` command with its default settings (96 MiB budget, 20 MiB
bodies); its peak memory is the kernel's high-water mark (VmHWM) of that process, from /proc.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from hopscope.collector.otlp.codec import traces_to_json
from hopscope.collector.settings import DEFAULT_MAX_BODY_BYTES
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import attrs
from tests.helpers.servers import CollectorProcess

# What the statement of the issue allows with the default settings, and what we state: the collector's
# own footprint (interpreter, protobuf, starlette, SQLite cache) plus one maximum-size JSON request held
# alone, or the budget, whichever is larger (ingest/body.py).
PEAK_LIMIT_BYTES = 600_000_000


def _big_request(target_bytes: int, json_body: bool) -> tuple[bytes, int]:
    """A request just under ``target_bytes`` in its encoding, of ordinary spans; returns (body, spans)."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add()
    scope.resource.attributes.extend(attrs({"service.name": "memory-test"}))
    spans = scope.scope_spans.add().spans
    now = time.time_ns()
    attributes = attrs({f"app.key{i}": f"value {i} " * 4 for i in range(12)})
    one = Span(name="GET /orders/{id}", kind=Span.SpanKind.SPAN_KIND_SERVER, attributes=attributes)
    per_span = len(_encode(_single(one), json_body)) - len(_encode(ExportTraceServiceRequest(), json_body))
    count = int(target_bytes * 0.92) // per_span  # the estimate lacks ids and times
    for _ in range(count):
        spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=one.name,
            kind=one.kind,
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000,
        ).attributes.extend(attributes)
    body = _encode(request, json_body)
    assert len(body) <= target_bytes
    return body, count


def _single(span: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add().CopyFrom(span)
    spans[0].trace_id, spans[0].span_id = os.urandom(16), os.urandom(8)
    return request


def _encode(request: ExportTraceServiceRequest, json_body: bool) -> bytes:
    if not json_body:
        return request.SerializeToString()
    return json.dumps(traces_to_json(TracesData.FromString(request.SerializeToString()))).encode()


def _peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _post_concurrently(url: str, body: bytes, content_type: str, clients: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(timeout=120) as http:
            status = http.post(f"{url}/v1/traces", content=body, headers={"Content-Type": content_type})
        with lock:
            statuses.append(status.status_code)

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return statuses


def test_eight_maximum_bodies_at_once_and_a_widest_span_read_stay_under_600_mb(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector with the default settings, and maximum-size bodies of each encoding
    collector = start_collector()
    assert collector.proc is not None
    pid = collector.proc.pid
    json_body, json_spans = _big_request(DEFAULT_MAX_BODY_BYTES, json_body=True)
    proto_body, proto_spans = _big_request(DEFAULT_MAX_BODY_BYTES, json_body=False)
    # the same spans twice would be stored once: the protobuf body gets fresh ids
    assert json_spans > 10_000 and proto_spans > 10_000

    # WHEN 8 clients send a maximum JSON body at once, then 8 a maximum protobuf body
    json_statuses = _post_concurrently(collector.url, json_body, "application/json", 8)
    proto_statuses = _post_concurrently(collector.url, proto_body, "application/x-protobuf", 8)

    # THEN some are accepted, the others told to retry later, and nothing else
    assert set(json_statuses) <= {200, 503} and json_statuses.count(200) >= 1
    assert set(proto_statuses) <= {200, 503} and proto_statuses.count(200) >= 1

    # WHEN a span with a million attributes arrives and is read back
    wide = Span(name="wide", kind=Span.SpanKind.SPAN_KIND_INTERNAL)
    wide.attributes.extend(attrs({f"k{i}": i for i in range(1_000_000)}))
    wide.start_time_unix_nano = time.time_ns()
    wide.end_time_unix_nano = wide.start_time_unix_nano + 1
    request = _single(wide)
    with collector.client() as http:
        answer = http.post(
            "/v1/traces",
            content=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert answer.status_code == 200
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        stored = http.get(f"/api/traces/{trace_id}").json()
        collector.wait_for_flows()
        flow = http.get("/api/flows", params={"service": "unknown_service"}).json()["flows"][0]
        detail = http.get(f"/api/flows/{flow['flow_id']}")
    # THEN it was cut to the span limit on receipt, the rest counted as dropped, and reads stay small
    span = stored["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["attributes"]) == 128
    assert span["droppedAttributesCount"] == 1_000_000 - 128
    assert detail.status_code == 200 and len(detail.content) < 1_000_000

    # THEN the peak stayed under the stated limit, and every accepted span is stored
    peak = _peak_rss(pid)
    assert peak < PEAK_LIMIT_BYTES, f"peak RSS {peak / 1e6:.0f} MB"
    print(f"collector peak RSS (VmHWM): {peak / 1e6:.0f} MB")
    assert collector.stop() == 0
    stored_spans = SQLiteStore(collector.db, read_only=True).count_spans()
    assert stored_spans == json_spans + proto_spans + 1  # identical bodies are stored once
