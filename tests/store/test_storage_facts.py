"""Storage facts (``StorageReader``): the store's size on disk, its oldest span, the free space beside it and
the retention the collector recorded, on a real SQLite file and on chdb."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.model.storage import LOW_FREE_BYTES, StorageFacts, byte_size, low_free_threshold
from hopscope.collector.store.errors import StoreError
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of

HOUR_NS = 3600 * 1_000_000_000


def _request(spans: int, age_ns: int = 0) -> ExportTraceServiceRequest:
    """``full_request``'s spans (2 scopes of ``spans``), started ``age_ns`` earlier than now."""
    request = full_request(spans=spans)
    for span in spans_of(request):
        span.start_time_unix_nano -= age_ns
        span.end_time_unix_nano -= age_ns
    return request


def test_facts_of_an_empty_store_then_of_written_spans(new_store: Callable[..., Any]) -> None:
    # GIVEN an empty store
    store = new_store()
    empty: StorageFacts = store.storage_facts()
    # THEN no span is kept, no retention recorded, and the filesystem is known
    assert empty.oldest_span_unix_nano is None
    assert empty.retention_seconds is None
    assert empty.free_bytes is not None and empty.disk_bytes is not None
    assert 0 < empty.free_bytes <= empty.disk_bytes
    # WHEN spans of an hour ago and of now are written, in that order and then the other way round
    old = _request(3, age_ns=HOUR_NS)
    store.write([_request(200), old, _request(200)])
    facts = store.storage_facts()
    # THEN the oldest span kept is the earliest start, and the store grew on disk
    assert facts.oldest_span_unix_nano == min(span.start_time_unix_nano for span in spans_of(old))
    assert facts.size_bytes > empty.size_bytes
    # WHEN the collector records its retention
    store.record_retention(7 * 24 * 3600)
    # THEN the facts carry it; "kept for ever" is recorded as 0
    assert store.storage_facts().retention_seconds == 7 * 24 * 3600
    store.record_retention(None)
    assert store.storage_facts().retention_seconds == 0


def test_sqlite_facts_count_every_file_of_the_store_and_nothing_else(tmp_path: Path) -> None:
    # GIVEN a SQLite store beside an unrelated file, spans written (so the -wal holds pages)
    (tmp_path / "other.db").write_bytes(b"\0" * 5_000_000)
    path = tmp_path / "hopscope.db"
    store = SQLiteStore(path)
    try:
        before = store.storage_facts()
        store.write([_request(500) for _ in range(4)])
        after = store.storage_facts()
        # THEN the size is the database file, its -wal and its -shm (read now: the checkpointer runs on)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert Path(f"{path}-wal").exists()
        assert after.size_bytes >= path.stat().st_size
        assert after.size_bytes < sum(file.stat().st_size for file in files) + 5_000_000
        assert after.size_bytes > before.size_bytes + 4 * 1000 * 500  # 4,000 spans of well over 500 bytes
        # AND the free space is the filesystem's that holds it
        usage = shutil.disk_usage(tmp_path)
        assert after.disk_bytes == usage.total
        assert (
            after.free_bytes is not None and abs(after.free_bytes - usage.free) < 256 * 1024 * 1024
        )  # others write too
        assert after.location == str(path.resolve())
        # AND a reader in another process sees the retention that the writer recorded
        store.record_retention(120)
        reader = SQLiteStore(path, read_only=True)
        try:
            assert reader.storage_facts().retention_seconds == 120
            assert reader.storage_facts().oldest_span_unix_nano == after.oldest_span_unix_nano
            with pytest.raises(StoreError):
                reader.record_retention(60)
        finally:
            reader.close()
    finally:
        store.close()
    # AND once closed (WAL checkpointed and truncated) the size is what is left on disk, the unrelated file
    # still not counted
    closed = SQLiteStore(path, read_only=True)
    try:
        remaining = sum(file.stat().st_size for file in tmp_path.iterdir() if file.name.startswith(path.name))
        assert closed.storage_facts().size_bytes == remaining
    finally:
        closed.close()


def test_oldest_span_follows_retention_deletes(new_store: Callable[..., Any]) -> None:
    # GIVEN spans of two hours ago, of an hour ago and of now
    store = new_store()
    oldest, middle = _request(2, age_ns=2 * HOUR_NS), _request(2, age_ns=HOUR_NS)
    store.write([oldest, middle, _request(2)])
    assert store.storage_facts().oldest_span_unix_nano == min(
        s.start_time_unix_nano for s in spans_of(oldest)
    )
    # WHEN retention deletes what started before 90 minutes ago
    store.delete_spans_started_before(time.time_ns() - 90 * 60 * 1_000_000_000, 1_000)
    # THEN the oldest span kept is the hour-old one
    assert store.storage_facts().oldest_span_unix_nano == min(
        s.start_time_unix_nano for s in spans_of(middle)
    )


def test_the_low_free_space_rule() -> None:
    # 1 GiB on a large disk; 5% of a small one (so a 24 MiB tmpfs is not low from its first byte)
    assert low_free_threshold(500 * LOW_FREE_BYTES) == LOW_FREE_BYTES
    assert low_free_threshold(24 << 20) == int((24 << 20) * 0.05)
    facts = StorageFacts(
        "x", 0, None, free_bytes=LOW_FREE_BYTES - 1, disk_bytes=100 * LOW_FREE_BYTES, retention_seconds=None
    )
    assert facts.disk_low
    assert not StorageFacts("x", 0, None, LOW_FREE_BYTES, 100 * LOW_FREE_BYTES, None).disk_low
    assert not StorageFacts("x", 0, None, None, None, None).disk_low
    assert [byte_size(n) for n in (512, 1536, 3 << 30)] == ["512 B", "1.5 KiB", "3.0 GiB"]
