"""The stitcher process beside a real collector (ingest/stitcher.py): flows follow, a killed stitcher is
replaced without counting a span twice, and it never outlives the collector.

Spans come from the small shop's bodies posted over HTTP to ``hopscope collector`` subprocesses; the
reference is the same spans written in-process by ``SQLiteStore.write`` (stitching on the calling thread).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.servers import CollectorProcess

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import workload  # the benchmarks' span generator

# The restart backoff doubles from 0.5 s while the stitcher keeps dying: 4 kills wait 7.5 s in all.
KILLS = 4
KILLS_WHILE_STITCHING = 20
# At most twice as many parts as kills that must come while stitching; spans of the small shop per part.
PARTS = 2 * KILLS_WHILE_STITCHING
PART_SPANS = 1_500
PROTOBUF = {"content-type": "application/x-protobuf"}
# What stitching made of the spans, compared whole between two databases.
STITCHED_TABLES = {
    "red": "SELECT * FROM red_rollups ORDER BY 1, 2, 3, 4",
    "hops": "SELECT * FROM hop_rollups ORDER BY 1, 2, 3, 4, 5",
    "flows": "SELECT span_count, error_count, start_unix_nano, end_unix_nano FROM flows "
    "WHERE merged_into IS NULL ORDER BY 3, 1, 4",
    "trace_flows": "SELECT count(*), count(DISTINCT flow_id) FROM trace_flows",
    "message_keys": "SELECT count(*) FROM message_keys",
}


def _bodies(spans: int) -> list[tuple[bytes, int]]:
    return list(workload.small_shop(seed=7).take(spans, 250))


def _stitcher_of(collector: CollectorProcess, timeout: float = 30) -> psutil.Process:
    assert collector.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(collector.proc.pid).children():
            if "hopscope.collector.ingest.stitcher" in child.cmdline():
                return child
        time.sleep(0.05)
    raise AssertionError("no stitcher process under the collector:\n" + "".join(collector.log))


def _wait_stitched(client: httpx.Client, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = client.get("/healthz").json()
        if not health["flows_pending"]:
            return dict(health)
        time.sleep(0.1)
    raise AssertionError(f"flows still pending after {timeout} s: {health}")


def _post_all(client: httpx.Client, bodies: list[tuple[bytes, int]]) -> None:
    for body, _ in bodies:
        assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200


def _stitched(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {name: conn.execute(sql).fetchall() for name, sql in STITCHED_TABLES.items()}
    finally:
        conn.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path / "spans.db", []).start()
    yield process
    process.stop(signal.SIGKILL)


def _reference(tmp_path: Path, bodies: list[tuple[bytes, int]]) -> dict[str, list[tuple[object, ...]]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    store = SQLiteStore(tmp_path / "reference.db")
    try:
        store.write([ExportTraceServiceRequest.FromString(body) for body, _ in bodies])
    finally:
        store.close()
    return _stitched(tmp_path / "reference.db")


def test_flows_follow_in_a_process_of_its_own(collector: CollectorProcess, tmp_path: Path) -> None:
    bodies = _bodies(5_000)
    stitcher = _stitcher_of(collector)
    with collector.client() as client:
        _post_all(client, bodies)
        health = _wait_stitched(client)
        flows = client.get("/api/flows", params={"limit": 5}).json()["flows"]
    assert health["stitch_error"] is None and health["flows_lag_seconds"] == 0.0
    assert flows and all(flow["span_count"] > 1 for flow in flows)
    assert stitcher.is_running()
    # the stitcher folded every span, as the writer thread would have
    assert _stitched(collector.db) == _reference(tmp_path, bodies)


def test_a_killed_stitcher_is_replaced_and_counts_each_span_once(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    """SIGKILL the stitcher while it folds, again and again: the collector starts another (with a growing
    backoff, so the kills are spread by it), and each span is folded exactly once in the end."""
    bodies = _bodies(12_000)
    killed = 0
    with collector.client() as client:
        for part in range(KILLS):
            _post_all(client, bodies[part * len(bodies) // KILLS : (part + 1) * len(bodies) // KILLS])
            stitcher = _stitcher_of(collector)
            time.sleep(0.05 * part)  # somewhere in a fold, or between two
            stitcher.send_signal(signal.SIGKILL)
            stitcher.wait(10)
            killed += 1
        health = _wait_stitched(client)
        assert any("stitcher process exited" in line for line in collector.log)
        assert health["stitch_error"] is None
    assert killed == KILLS
    assert _stitched(collector.db) == _reference(tmp_path, bodies)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_the_stitcher_never_outlives_the_collector(tmp_path: Path, sig: signal.Signals) -> None:
    collector = CollectorProcess(tmp_path / "spans.db", []).start()
    stitcher = _stitcher_of(collector)
    with collector.client() as client:
        _post_all(client, _bodies(2_000))
    code = collector.stop(sig)
    assert code == (0 if sig == signal.SIGINT else -signal.SIGKILL)
    stitcher.wait(15)  # raises psutil.TimeoutExpired if it stays
    assert not stitcher.is_running()


def _position(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'flows_through_span_pk'").fetchone()
        (last,) = conn.execute("SELECT coalesce(max(span_pk), 0) FROM spans").fetchone()
        return (int(row[0]) if row else 0), int(last)
    finally:
        conn.close()


def test_sigkill_at_random_moments_while_stitching_counts_every_span_once(tmp_path: Path) -> None:
    """Issue 16, item 4: a collector takes a part of the spans and is killed (SIGKILL, with its stitcher) at a
    random moment after; the next one starts on the same file. A kill that came after everything was
    stitched does not count: parts are sent until 20 kills have come while stitching. In the end flows, RED
    and the graph are a clean run's of the same spans, and every acknowledged span is stored."""
    rng = random.Random(16)
    bodies = _bodies(2 * KILLS_WHILE_STITCHING * PART_SPANS)
    db = tmp_path / "spans.db"
    parts = [bodies[i::PARTS] for i in range(PARTS)]
    sent: list[tuple[bytes, int]] = []
    behind = 0  # kills that left spans unstitched: they came while there was stitching to do
    for part in parts:
        collector = CollectorProcess(db, []).start()
        _stitcher_of(collector)
        with collector.client() as client:
            _post_all(client, part)
        sent.extend(part)
        time.sleep(rng.uniform(0.0, 0.3))
        position, last = _kill_all(collector)
        behind += position < last
        if behind == KILLS_WHILE_STITCHING:
            break
    assert behind == KILLS_WHILE_STITCHING, f"only {behind} of {len(parts)} kills came while stitching"
    final = CollectorProcess(db, []).start()
    final.wait_for_flows(timeout=120)
    assert final.stop(signal.SIGINT) == 0
    store = SQLiteStore(db, read_only=True)
    try:
        assert store.count_spans() == sum(count for _, count in sent)
    finally:
        store.close()
    assert _stitched(db) == _reference(tmp_path, sent)  # in the order they were stored


def _kill_all(collector: CollectorProcess) -> tuple[int, int]:
    """SIGKILL the collector and its stitcher at once: the stitching position they left, the last span."""
    assert collector.proc is not None
    parent = psutil.Process(collector.proc.pid)
    processes = [*parent.children(recursive=True), parent]
    for process in processes:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)
    collector.proc.wait(10)
    return _position(collector.db)
