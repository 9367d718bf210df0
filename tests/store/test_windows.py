"""Span windows on SQLite (store/sqlite/windows.py): where each span goes, what retention drops whole, and
that every reader keeps finding every span kept. Real SQLite files; spans built as OTLP protobuf with the
start times each test needs.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.sqlite.windows import (
    FUTURE_WINDOWS,
    OTHER,
    SpanWindows,
    Window,
    read_windows,
    window_seconds,
)

S = 1_000_000_000
RETENTION_S = 120
WIDTH = window_seconds(RETENTION_S) * S  # 10 s


def _request(starts: list[int]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for start in starts:
        scope.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name="work",
            kind=Span.SpanKind.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start,
            end_time_unix_nano=start + 1_000_000,
        )
    return request


def _tables(db: Path) -> dict[str, list[int]]:
    """Every span table and the start times of its spans."""
    conn = sqlite3.connect(db)
    try:
        names = [OTHER, *(window.name for window in read_windows(conn))]
        return {
            name: [row[0] for row in conn.execute(f"SELECT start_unix_nano FROM {name} ORDER BY 1")]
            for name in names
        }
    finally:
        conn.close()


def _assert_each_span_in_its_window(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        windows = read_windows(conn)
    finally:
        conn.close()
    for earlier, later in itertools.pairwise(windows):
        assert earlier.end <= later.start, (earlier, later)  # windows never overlap
    tables = _tables(db)
    for window in windows:
        assert all(window.start <= start < window.end for start in tables[window.name]), window
    for start in tables[OTHER]:  # spans_other holds only what no window covers
        assert not any(window.start <= start < window.end for window in windows), start


def test_spans_go_to_the_window_of_their_start_and_odd_times_to_spans_other(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    now = time.time_ns()
    store = SQLiteStore(db)
    store.use_retention(RETENTION_S)
    recent, earlier = now - 5 * S, now - 65 * S
    expired, future, epoch = now - 200 * S, now + 3_600 * S, 1
    request = _request([recent, earlier, expired, future, epoch])
    try:
        store.write([request])
        assert store.count_spans() == 5
        for span in request.resource_spans[0].scope_spans[0].spans:  # every span reads back through the view
            traces = store.get_trace(span.trace_id)
            assert traces is not None
            assert traces.resource_spans[0].scope_spans[0].spans[0] == span
    finally:
        store.close()
    tables = _tables(db)
    assert sorted(tables[OTHER]) == [epoch, expired, future]
    windows = {name: starts for name, starts in tables.items() if name != OTHER}
    assert sorted(windows.values()) == [[earlier], [recent]]
    for name in windows:  # aligned on the width
        window = next(w for w in read_windows(sqlite3.connect(db)) if w.name == name)
        assert window.start % WIDTH == 0 and window.end - window.start == WIDTH
    _assert_each_span_in_its_window(db)


def test_a_span_sent_again_is_stored_once_whichever_table_took_it(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    now = time.time_ns()
    store = SQLiteStore(db)
    store.use_retention(RETENTION_S)
    request = _request([now - 5 * S, now - 65 * S, now - 500 * S])
    try:
        store.write([request])
        store.write([request, request])  # a retry, twice in one commit
        assert store.count_spans() == 3
    finally:
        store.close()
    store = SQLiteStore(db)  # a restart without retention: the windows still take their spans' copies
    try:
        store.write([request])
        assert store.count_spans() == 3
    finally:
        store.close()


def test_retention_drops_whole_windows_and_readers_keep_reading_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    now = time.time_ns()
    store = SQLiteStore(db)
    store.use_retention(RETENTION_S)
    old = _request([now - age * S for age in (100, 100, 90, 80)])
    young = _request([now - age * S for age in (30, 20, 5)])
    reader = None
    try:
        store.write([old, young])
        reader = SQLiteStore(db, read_only=True)  # opened before the drop, in the collector's readers' way
        assert reader.count_spans() == 7
        cutoff = now - 60 * S
        dropped = []
        while gone := store.delete_spans_started_before(cutoff, 1_000):
            dropped.append(gone)
        assert sorted(dropped) == [1, 1, 2]  # one window a call, its spans counted
        assert reader.count_spans() == 3
        for span in young.resource_spans[0].scope_spans[0].spans:
            assert reader.get_trace(span.trace_id) is not None
        for span in old.resource_spans[0].scope_spans[0].spans:
            assert reader.get_trace(span.trace_id) is None
        assert reader.storage_facts().oldest_span_unix_nano == now - 30 * S
    finally:
        if reader is not None:
            reader.close()
        store.close()
    assert all(window.end > cutoff for window in read_windows(sqlite3.connect(db)))


def test_new_spans_after_a_dropped_window_are_stitched(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    now = time.time_ns()
    store = SQLiteStore(db)
    store.use_retention(RETENTION_S)
    try:
        store.write([_request([now - 100 * S] * 3)])
        assert store.delete_spans_started_before(now - 60 * S, 1_000) == 3
        assert store.count_spans() == 0
        fresh = _request([now - S] * 2)
        store.write([fresh])  # keys go on past the dropped ones: stitching sees them
        assert not store.flows_pending
        for span in fresh.resource_spans[0].scope_spans[0].spans:
            assert store.flow_of_trace(span.trace_id) is not None
    finally:
        store.close()


def test_a_window_made_in_a_transaction_that_rolled_back_is_made_again(tmp_path: Path) -> None:
    # the store rolls back on any failure (a full disk at COMMIT); the windows' cache must not keep the table
    db = tmp_path / "spans.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    windows = SpanWindows()
    windows.use_retention(RETENTION_S)
    now = time.time_ns()
    row = (os.urandom(16), os.urandom(8), None, "work", 1, now, now + 1, 0, "svc", now, b"", 1, 1)
    try:
        conn.execute("BEGIN IMMEDIATE")
        windows.insert(conn, [row], now)
        conn.execute("ROLLBACK")
        assert read_windows(conn) == []
        conn.execute("BEGIN IMMEDIATE")
        windows.insert(conn, [row], now)
        conn.execute("COMMIT")
        assert len(read_windows(conn)) == 1
        (count,) = conn.execute("SELECT count(*) FROM spans").fetchone()
        assert count == 1
    finally:
        conn.close()


def test_a_changed_retention_makes_windows_that_never_overlap(tmp_path: Path) -> None:
    db = tmp_path / "spans.db"
    now = time.time_ns()
    for retention in (RETENTION_S, 3_600, 60):
        store = SQLiteStore(db)
        store.use_retention(retention)
        try:
            store.write([_request([now - age * S for age in range(0, 100, 3)])])
        finally:
            store.close()
    _assert_each_span_in_its_window(db)
    assert sum(len(starts) for starts in _tables(db).values()) == 3 * 34


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(
        st.integers(min_value=-(10**12), max_value=10**12)  # within a quarter hour of the clock
        | st.integers(min_value=-(10**18), max_value=10**18),  # anywhere
        min_size=1,
        max_size=200,
    )
)
def test_no_start_times_make_more_windows_than_the_retention_needs(
    tmp_path: Path, offsets: list[int]
) -> None:
    # whatever times a client sends, the windows cover the retention and FUTURE_WINDOWS ahead, no more
    db = tmp_path / f"spans-{time.monotonic_ns()}.db"
    now = time.time_ns()
    starts = [max(1, min(2**63 - 2, now + offset)) for offset in offsets]
    store = SQLiteStore(db)
    store.use_retention(RETENTION_S)
    try:
        store.write([_request(starts)])
        assert store.count_spans() == len(starts)
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        windows = read_windows(conn)
    finally:
        conn.close()
    most = RETENTION_S * S // WIDTH + FUTURE_WINDOWS + 2  # a window on each edge
    assert len(windows) <= most, windows
    assert all(isinstance(window, Window) and window.end - window.start <= WIDTH for window in windows)
    _assert_each_span_in_its_window(db)
