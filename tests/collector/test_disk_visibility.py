"""Disk visibility: ``/healthz`` shows the store on disk, ``/readyz`` says ``disk`` while free space is low,
and the collector warns in its log once per fall under the threshold (a real collector, a small tmpfs)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hopscope.collector.health import DiskWatch, readiness
from hopscope.collector.ingest.writer import WriterHealth
from hopscope.collector.model.storage import StorageFacts, low_free_threshold
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_store
from tests.collector.test_health import small_filesystem  # noqa: F401 - the fixture
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import CollectorProcess, serve_in_thread

PROTOBUF = {"Content-Type": "application/x-protobuf"}
LOW = "disk space is low"
BACK = "disk space is back"


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def _healthy() -> WriterHealth:
    return WriterHealth(
        pending_spans=0,
        flows_pending=False,
        flows_lag_seconds=0.0,
        spans_skipped=0,
        spans_skipped_by_reason={},
        last_skip_error=None,
        seconds_since_last_skip=None,
        write_error=None,
        stitch_error=None,
    )


def test_healthz_shows_the_store_on_disk_and_the_retention_is_recorded_for_the_dashboard(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    # GIVEN a collector keeping spans 2 hours
    collector = start_collector("--retention", "2h")
    with collector.client() as http:
        first = http.get("/healthz").json()["storage"]
        # THEN /healthz shows its files' size, no span yet, the retention and the free space beside it
        assert first["size_bytes"] > 0
        assert first["oldest_span_unix_nano"] is None
        assert first["retention_seconds"] == 7200
        assert 0 < first["free_bytes"] <= shutil.disk_usage(collector.db.parent).total
        # WHEN spans are stored, one request started 10 minutes ago
        requests = [full_request(spans=300) for _ in range(5)]
        for span in spans_of(requests[2]):
            span.start_time_unix_nano -= 600 * 10**9
            span.end_time_unix_nano -= 600 * 10**9
        for request in requests:
            assert http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF).is_success
        oldest = min(span.start_time_unix_nano for span in spans_of(requests[2]))

        # THEN within a few seconds (the facts are reused 5 s) /healthz shows the oldest span and more bytes
        def updated() -> bool:
            storage = http.get("/healthz").json()["storage"]
            return bool(
                storage["oldest_span_unix_nano"] == oldest and storage["size_bytes"] > first["size_bytes"]
            )

        _wait_for(updated)
        # AND the status-only answers stay as they were
        assert http.get("/readyz").json()["reasons"] == []
    assert collector.stop() == 0
    # AND the retention is recorded in the database, where the dashboard reads it
    store = SQLiteStore(collector.db, read_only=True)
    try:
        facts = store.storage_facts()
        assert facts.retention_seconds == 7200
        assert facts.oldest_span_unix_nano == oldest
    finally:
        store.close()


def test_healthz_shows_a_clickhouse_store_on_disk(tmp_path: Path, chdb_url: str) -> None:
    # GIVEN a collector over a chdb store, keeping spans an hour
    store = open_store(chdb_url)
    settings = CollectorSettings(db=tmp_path / "unused.db", retention_seconds=3600)
    with serve_in_thread(settings, store) as url, httpx.Client(base_url=url, timeout=30) as http:  # type: ignore[arg-type]
        empty = http.get("/healthz").json()["storage"]
        assert empty["oldest_span_unix_nano"] is None and empty["retention_seconds"] == 3600
        assert empty["free_bytes"] > 0
        # WHEN spans are stored
        request = full_request(spans=200)
        assert http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF).is_success
        oldest = min(span.start_time_unix_nano for span in spans_of(request))

        # THEN /healthz shows the parts' bytes and the oldest span (within the 5 s the facts are reused)
        def updated() -> bool:
            storage = http.get("/healthz").json()["storage"]
            return bool(
                storage["oldest_span_unix_nano"] == oldest and storage["size_bytes"] > empty["size_bytes"]
            )

        _wait_for(updated)
    # AND the retention is recorded in hopscope_meta, for the dashboard
    assert store.storage_facts().retention_seconds == 3600
    store.close()


def _leave_free(directory: Path, free_bytes: int, name: str = "filler") -> Path:
    """Write a file that leaves about ``free_bytes`` free on the filesystem."""
    filler = directory / name
    size = max(0, shutil.disk_usage(directory).free - free_bytes)
    with open(filler, "wb") as out:
        out.write(b"\0" * size)
    return filler


def _disk_reasons(http: httpx.Client) -> list[str]:
    return [
        reason["message"] for reason in http.get("/readyz").json()["reasons"] if reason["check"] == "disk"
    ]


def test_low_free_disk_warns_once_per_fall_and_readyz_says_disk(
    start_collector: Callable[..., CollectorProcess],
    small_filesystem: Path,  # noqa: F811 - the fixture
) -> None:
    # GIVEN a collector storing spans on a 24 MiB tmpfs (low under 5% of it: about 1.2 MiB)
    collector = start_collector(db=small_filesystem / "hopscope.db")
    threshold = low_free_threshold(shutil.disk_usage(small_filesystem).total)
    http = collector.client()
    assert _disk_reasons(http) == []
    assert http.post("/v1/traces", content=full_request(spans=20).SerializeToString(), headers=PROTOBUF)
    # WHEN free space falls to a third of the threshold
    filler = _leave_free(small_filesystem, threshold // 3)
    # THEN /readyz says degraded with a disk reason naming the store, still accepting spans
    _wait_for(lambda: bool(_disk_reasons(http)))
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["accepting_spans"] is True
    [message] = _disk_reasons(http)
    assert str(small_filesystem) in message and "--retention" in message
    # AND the log warns once, with the path and what to do, however often it is asked
    _wait_for(lambda: sum(LOW in line for line in collector.log) == 1)
    deadline = time.monotonic() + 6  # past the 5 s the facts are reused: a second look sees it again
    while time.monotonic() < deadline:
        assert _disk_reasons(http)
        time.sleep(0.5)
    [warning] = [line for line in collector.log if LOW in line]
    assert "WARNING" in warning and str(small_filesystem / "hopscope.db") in warning
    assert "move the store to a larger disk" in warning and "kept for ever" in warning
    # WHEN space is freed
    filler.unlink()
    # THEN the reason goes, the recovery is logged, and no new warning comes
    _wait_for(lambda: _disk_reasons(http) == [])
    _wait_for(lambda: any(BACK in line for line in collector.log))
    assert sum(LOW in line for line in collector.log) == 1
    # WHEN it falls again
    _leave_free(small_filesystem, threshold // 3)
    # THEN it warns a second time
    _wait_for(lambda: sum(LOW in line for line in collector.log) == 2)
    http.close()
    assert collector.stop() == 0


def test_the_disk_watch_looks_on_its_own_thread(
    small_filesystem: Path,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a store on a small filesystem watched every 0.1 s, nobody asking /healthz
    store = SQLiteStore(small_filesystem / "hopscope.db")
    watch = DiskWatch(store, 3600, check_seconds=0.1)
    caplog.set_level(logging.INFO, logger="hopscope.collector.health")
    watch.start()
    try:
        # THEN it records the retention in the store
        _wait_for(lambda: store.storage_facts().retention_seconds == 3600)
        assert not any(LOW in record.getMessage() for record in caplog.records)
        # WHEN free space falls under the threshold, twice over with a recovery between
        threshold = low_free_threshold(shutil.disk_usage(small_filesystem).total)
        filler = _leave_free(small_filesystem, threshold // 2)
        _wait_for(lambda: any(LOW in record.getMessage() for record in caplog.records))
        time.sleep(0.5)  # five more looks
        filler.unlink()
        _wait_for(lambda: any(BACK in record.getMessage() for record in caplog.records))
        _leave_free(small_filesystem, threshold // 2)
        _wait_for(lambda: sum(LOW in record.getMessage() for record in caplog.records) == 2)
        time.sleep(0.5)
        # THEN it warned once per fall, naming the retention
        warnings = [record for record in caplog.records if LOW in record.getMessage()]
        assert len(warnings) == 2 and all(record.levelno == logging.WARNING for record in warnings)
        assert "kept 3600 s (--retention)" in warnings[0].getMessage()
    finally:
        watch.stop()
        store.close()


def test_readiness_says_disk_only_under_the_threshold() -> None:
    disk = 100 << 30

    def facts(free: int | None) -> StorageFacts:
        return StorageFacts("/data/hopscope.db", 5 << 30, 1, free, disk, 3600)

    low = readiness(_healthy(), [], facts((1 << 30) - 1))
    assert low["status"] == "degraded" and low["accepting_spans"] is True
    assert [reason["check"] for reason in low["reasons"]] == ["disk"]
    assert "/data/hopscope.db" in low["reasons"][0]["message"]
    assert readiness(_healthy(), [], facts(1 << 30))["reasons"] == []
    assert readiness(_healthy(), [], facts(None))["reasons"] == []
    assert readiness(_healthy(), [], None)["reasons"] == []
