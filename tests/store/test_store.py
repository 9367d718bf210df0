"""The SQLite span store on a real file: lossless round trip, idempotent writes, retention, versions."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.store.errors import StoreError
from hopscope.collector.store.sqlite.schema import SCHEMA_VERSION
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "spans.db")


def test_every_field_of_every_span_round_trips(store: SQLiteStore) -> None:
    # GIVEN a request with every span field and every attribute value type set
    request = full_request()
    # WHEN it is written and its trace read back
    assert store.write([request]) == 6
    trace_id = spans_of(request)[0].trace_id
    traces = store.get_trace(trace_id)
    # THEN resources, scopes (with schema urls) and spans are equal message for message
    assert traces is not None
    assert list(traces.resource_spans) == list(request.resource_spans)


def test_a_resent_span_is_stored_once(store: SQLiteStore) -> None:
    request = full_request(spans=2)
    store.write([request])
    store.write([request, request])
    assert store.count_spans() == 4


def test_spans_of_one_trace_from_different_services_come_back_together(store: SQLiteStore) -> None:
    # GIVEN one trace whose spans arrive from two services in two requests
    first = full_request(spans=1, service="orders-api")
    second = full_request(spans=1, service="billing")
    trace_id = spans_of(first)[0].trace_id
    for span in spans_of(second):
        span.trace_id = trace_id
    store.write([second])
    store.write([first])
    # WHEN the trace is read
    traces = store.get_trace(trace_id)
    # THEN both resources are there, each with its own spans
    assert traces is not None
    services = [rs.resource.attributes[0].value.string_value for rs in traces.resource_spans]
    assert sorted(services) == ["billing", "orders-api"]
    assert sum(len(ss.spans) for rs in traces.resource_spans for ss in rs.scope_spans) == 4


def test_an_unknown_trace_is_none(store: SQLiteStore) -> None:
    store.write([full_request()])
    assert store.get_trace(bytes(range(16))) is None


def test_old_spans_are_deleted_in_chunks_and_recent_ones_kept(store: SQLiteStore) -> None:
    # GIVEN 30 spans from two hours ago and 6 recent ones
    old = ExportTraceServiceRequest()
    for _ in range(5):
        old.MergeFrom(full_request(spans=3))
    two_hours_ago = time.time_ns() - 2 * 3600 * 10**9
    for span in spans_of(old):
        span.start_time_unix_nano = two_hours_ago
    recent = full_request(spans=3)
    store.write([old, recent])
    cutoff = time.time_ns() - 3600 * 10**9
    # WHEN expired spans are deleted 8 at a time
    deleted = [store.delete_spans_started_before(cutoff, 8) for _ in range(5)]
    # THEN each chunk is bounded, all old spans go and the recent trace stays whole
    assert deleted == [8, 8, 8, 6, 0]
    assert store.count_spans() == 6
    recent_trace = store.get_trace(spans_of(recent)[0].trace_id)
    assert recent_trace is not None
    assert list(recent_trace.resource_spans) == list(recent.resource_spans)


def test_the_database_is_in_wal_mode_with_the_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "v.db").close()
    conn = sqlite3.connect(tmp_path / "v.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION
    )


def test_a_database_from_a_newer_hopscope_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION + 1)


def test_a_read_only_store_reads_but_refuses_to_write(store: SQLiteStore) -> None:
    request = full_request()
    store.write([request])
    reader = SQLiteStore(store.path, read_only=True)
    assert reader.count_spans() == 6
    with pytest.raises(StoreError, match="read-only"):
        reader.write([request])


def test_a_read_only_store_on_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no hopscope database"):
        SQLiteStore(tmp_path / "absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()


def test_committed_pages_reach_the_database_file_in_the_background(tmp_path: Path) -> None:
    # GIVEN a store that has just committed a few MB (below SQLite's own auto-checkpoint size)
    store = SQLiteStore(tmp_path / "ckpt.db")
    db_file = store.path
    before = db_file.stat().st_size
    for _ in range(10):
        store.write([full_request(spans=100)])
    # WHEN nothing else happens for a moment
    # THEN the pages are checkpointed by the store's own thread (a checkpoint copies page after page, so
    # the file is watched until all of them are there), and closing leaves an empty WAL
    deadline = time.monotonic() + 10
    while db_file.stat().st_size <= before + 1_000_000:
        assert time.monotonic() < deadline, "the background checkpoint never copied the WAL into the file"
        time.sleep(0.05)
    store.close()
    wal = db_file.with_name(db_file.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert SQLiteStore(db_file, read_only=True).count_spans() == 2000
