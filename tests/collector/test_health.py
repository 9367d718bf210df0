"""Health tells the truth: ``/readyz`` says degraded, with the reason, while writes fail (a full disk),
stitching skips spans or lags, or a ``--forward`` upstream fails; ``/healthz`` stays a cheap ``ok``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import code_pb2, status_pb2

from hopscope.collector.health import readiness
from hopscope.collector.ingest.writer import WriterHealth
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import CollectorProcess, serve_in_thread

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


# -- a full disk -------------------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs of its own, so that the test can fill it (needs root: CI and this container run so)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the disk-full test runs as root in CI")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full, down to the last block."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    out.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def test_a_full_disk_makes_the_collector_degraded_and_it_recovers_losing_nothing(
    start_collector: Callable[..., CollectorProcess], small_filesystem: Path
) -> None:
    # GIVEN a collector storing spans on a small filesystem, some spans already acknowledged
    collector = start_collector(db=small_filesystem / "hopscope.db")
    acknowledged: list[bytes] = []
    http = collector.client()

    def post() -> httpx.Response:
        request = full_request(spans=20)
        response = http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
        if response.status_code == 200:
            acknowledged.append(request.SerializeToString())
        return response

    assert post().status_code == 200
    # WHEN the filesystem fills up and clients keep sending
    filler = _fill(small_filesystem)
    refused = None
    for _ in range(200):
        response = post()
        if response.status_code != 200:
            refused = response
            break
    # THEN writes get 503 with Retry-After and a google.rpc.Status that names the cause
    assert refused is not None, "the collector never noticed the full disk"
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    status = status_pb2.Status.FromString(refused.content)
    assert status.code == code_pb2.UNAVAILABLE and "disk is full" in status.message, status
    # AND the readiness answer says degraded with the reason, as 503; liveness stays ok
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "degraded"
    assert ready.json()["accepting_spans"] is False
    writes = [reason for reason in ready.json()["reasons"] if reason["check"] == "writes"]
    assert len(writes) == 1 and "full" in writes[0]["message"], ready.json()
    health = http.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert "full" in health.json()["write_error"]
    # WHEN space frees again
    filler.unlink()
    # THEN writes are taken again and the collector becomes ready (stitching included, after its backoff)
    _wait_for(lambda: post().status_code == 200)
    _wait_for(lambda: http.get("/readyz").json() == {"status": "ok", "accepting_spans": True, "reasons": []})
    assert http.get("/healthz").json()["write_error"] is None
    http.close()
    # AND every acknowledged span is stored
    assert collector.stop() == 0
    store = SQLiteStore(collector.db, read_only=True)
    try:
        requests = [type(full_request()).FromString(body) for body in acknowledged]
        for request in requests:
            stored = store.get_trace(spans_of(request)[0].trace_id)
            assert stored is not None and list(stored.resource_spans) == list(request.resource_spans)
        # (the refused requests were stored by none of their spans)
        assert store.count_spans() == sum(len(spans_of(request)) for request in requests)
    finally:
        store.close()


# -- a failing forward upstream ----------------------------------------------------------------------------


@contextlib.contextmanager
def _refusing_port() -> Iterator[socket.socket]:
    """A port bound but not listening: connections are refused, and no one else takes it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def test_a_failing_forward_upstream_makes_the_collector_degraded_until_it_delivers(
    tmp_path: Path, start_collector: Callable[..., CollectorProcess]
) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    with _refusing_port() as refusing:
        upstream_port = refusing.getsockname()[1]
        settings = CollectorSettings(
            db=tmp_path / "a.db",
            forward_urls=(f"http://127.0.0.1:{upstream_port}/v1/traces",),
            forward_initial_backoff_seconds=0.05,
            forward_max_backoff_seconds=0.2,
        )
        with serve_in_thread(settings, store) as url, httpx.Client(base_url=url) as http:
            # GIVEN a collector forwarding to an upstream that refuses connections
            request = full_request()
            posted = http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
            assert posted.status_code == 200
            # THEN once sends fail 3 times in a row, it is degraded with the upstream and the error, but
            # still takes spans (200: a load balancer keeps sending)
            _wait_for(lambda: http.get("/readyz").json()["status"] == "degraded")
            ready = http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["accepting_spans"] is True
            [reason] = ready.json()["reasons"]
            assert reason["check"] == "forwarding"
            assert f"127.0.0.1:{upstream_port}" in reason["message"]
            assert "ConnectError" in reason["message"]
            stats, logs_stats = http.get("/healthz").json()["forwarding"]
            assert (stats["signal"], logs_stats["signal"]) == ("traces", "logs")
            assert logs_stats["consecutive_failures"] == 0  # no log record was offered
            assert stats["consecutive_failures"] >= 3
            assert stats["failing_seconds"] > 0
            # WHEN the upstream comes up on that port
            refusing.close()
            upstream = start_collector(db=tmp_path / "b.db", port=upstream_port)
            # THEN the batch is delivered and the collector is ready again
            _wait_for(lambda: http.get("/readyz").json()["status"] == "ok")
            stats, _ = http.get("/healthz").json()["forwarding"]
            assert (stats["consecutive_failures"], stats["failing_seconds"]) == (0, None)
            assert stats["forwarded_spans"] == len(spans_of(request))
    assert upstream.stop() == 0
    assert SQLiteStore(upstream.db, read_only=True).count_spans() == len(spans_of(request))
    store.close()


# -- stitching ---------------------------------------------------------------------------------------------


def _writer(**changes: Any) -> WriterHealth:
    healthy: dict[str, Any] = {
        "pending_spans": 0,
        "flows_pending": False,
        "flows_lag_seconds": 0.0,
        "spans_skipped": 0,
        "spans_skipped_by_reason": {},
        "last_skip_error": None,
        "seconds_since_last_skip": None,
        "write_error": None,
        "stitch_error": None,
    }
    return WriterHealth(**{**healthy, **changes})


def test_stitching_that_skips_fails_or_lags_is_degraded_but_accepting() -> None:
    assert readiness(_writer(), []) == {"status": "ok", "accepting_spans": True, "reasons": []}
    skipped = readiness(
        _writer(spans_skipped=2, seconds_since_last_skip=3.0, last_skip_error="integer overflow"), []
    )
    assert skipped["status"] == "degraded" and skipped["accepting_spans"]
    assert [(r["check"], "integer overflow" in r["message"]) for r in skipped["reasons"]] == [
        ("stitching_skips", True)
    ]
    # a skip long ago no longer counts (the total stays in /healthz)
    assert readiness(_writer(spans_skipped=2, seconds_since_last_skip=301.0), [])["status"] == "ok"
    lagging = readiness(_writer(flows_pending=True, flows_lag_seconds=61.0), [])
    assert [r["check"] for r in lagging["reasons"]] == ["stitching_lag"]
    assert readiness(_writer(flows_pending=True, flows_lag_seconds=59.0), [])["status"] == "ok"
    failing = readiness(_writer(stitch_error="OperationalError: database or disk is full"), [])
    assert [r["check"] for r in failing["reasons"]] == ["stitching"] and failing["accepting_spans"]


def test_the_poison_request_of_issue_13_makes_readiness_say_stitching_skips(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN the 2-span request of issue 13 (start 1, end 2^63 - 1), which stitching must leave out of RED
    poison = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "poison-api"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": f"5b8efff798038103d269b633813fc60{i}",
                                "spanId": f"eee19b7ec3c1b17{i}",
                                "name": "GET /poison",
                                "kind": 2,
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "9223372036854775807",
                            }
                            for i in (4, 5)
                        ]
                    }
                ],
            }
        ]
    }
    collector = start_collector()
    with collector.client() as http:
        # WHEN it is posted
        response = http.post(
            "/v1/traces", content=json.dumps(poison), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200
        # THEN readiness says degraded, naming the skipped spans, and still accepts spans
        _wait_for(lambda: http.get("/readyz").json()["status"] == "degraded")
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert [reason["check"] for reason in ready.json()["reasons"]] == ["stitching_skips"]
        assert "2 span(s)" in ready.json()["reasons"][0]["message"]
        assert http.get("/healthz").json()["spans_skipped"] == 2
