"""Retention that empties the store must not hide the next spans from stitching.

SQLite hands a new row the largest key + 1: once retention had deleted the newest spans, new spans got keys
at or below the stitching position and were never stitched (found in issue 16's work; retention now keeps
the newest span; since spans live in windows, store/sqlite/windows.py, keys go on from the largest ever noted
in ``meta``, whether rows went one by one or in a dropped window). Real SQLite files.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.store.sqlite.store import SQLiteStore

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import workload  # the benchmarks' span generator

FUTURE = time.time_ns() + 10**15


def _requests(seed: int, spans: int) -> list[ExportTraceServiceRequest]:
    return [
        ExportTraceServiceRequest.FromString(b) for b, _ in workload.small_shop(seed=seed).take(spans, 250)
    ]


def _new_traces_in_flows(db: Path, requests: list[ExportTraceServiceRequest]) -> int:
    ids = {
        span.trace_id
        for request in requests
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    conn = sqlite3.connect(db)
    try:
        found = {row[0] for row in conn.execute("SELECT trace_id FROM trace_flows WHERE span_count > 0")}
    finally:
        conn.close()
    return len(ids & found)


def _window_tables(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE name GLOB 'spans_w*_*'")]
    finally:
        conn.close()


def _expire_everything(store: SQLiteStore) -> None:
    while store.delete_spans_started_before(FUTURE, 10_000):
        pass
    assert store.count_spans() == 0


@pytest.mark.parametrize("retention", [None, 3_600], ids=["spans_other", "windows"])
def test_spans_after_retention_emptied_the_store_are_stitched(tmp_path: Path, retention: int | None) -> None:
    store = SQLiteStore(tmp_path / "spans.db")
    store.use_retention(retention)  # with one, the workload's spans (of the last hour) go to windows
    try:
        store.write(_requests(1, 2_000))
        assert bool(_window_tables(tmp_path / "spans.db")) == bool(retention)
        _expire_everything(store)
    finally:
        store.close()
    store = SQLiteStore(tmp_path / "spans.db")  # a restart finds no span: the key goes on from meta
    try:
        later = _requests(2, 1_000)
        store.write(later)  # keys from 2001 on (they were 1..1000 before keys were kept in meta)
        assert not store.flows_pending
    finally:
        store.close()
    assert _new_traces_in_flows(tmp_path / "spans.db", later) > 0
    assert _new_traces_in_flows(tmp_path / "spans.db", later) == len(
        {s.trace_id for r in later for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}
    )
