"""Retention that empties the store must not hide the next spans from stitching.

SQLite hands a new row the largest key + 1: once retention had deleted the newest spans, new spans got keys
at or below the stitching position and were never stitched (found in issue 16's work; retention now keeps
the newest span, store/sqlite/spans.py). Real SQLite files.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

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


def _expire_everything(store: SQLiteStore) -> None:
    while store.delete_spans_started_before(FUTURE, 10_000):
        pass
    assert store.count_spans() == 1  # the newest, whatever its age: keys never go back


def test_spans_after_retention_emptied_the_store_are_stitched(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spans.db")
    try:
        store.write(_requests(1, 2_000))
        _expire_everything(store)
        later = _requests(2, 1_000)
        store.write(later)  # keys from 2001 on (they were 1..1000 before the newest span was kept)
        assert not store.flows_pending
    finally:
        store.close()
    assert _new_traces_in_flows(tmp_path / "spans.db", later) > 0
    assert _new_traces_in_flows(tmp_path / "spans.db", later) == len(
        {s.trace_id for r in later for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}
    )
