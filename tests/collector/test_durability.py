"""No acknowledged span is ever lost: SIGKILL, concurrent readers, graceful shutdown, backpressure."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import CollectorProcess, serve_in_thread

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _send_until_killed(collector: CollectorProcess, requests: int) -> list[bytes]:
    """Eight clients post; the collector is SIGKILLed right after the last acknowledgement."""
    acknowledged: list[bytes] = []
    lock = threading.Lock()

    def post(_: int) -> None:
        request = full_request(spans=20)
        with collector.client() as http:
            response = http.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
        if response.status_code == 200:
            with lock:
                acknowledged.extend(span.span_id for span in spans_of(request))
                if len(acknowledged) == requests * 40:
                    collector.proc.kill()  # type: ignore[union-attr]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(requests)))
    collector.proc.wait()  # type: ignore[union-attr]
    return acknowledged


def test_every_acknowledged_span_survives_sigkill(start_collector: Callable[..., CollectorProcess]) -> None:
    # GIVEN a collector that acknowledged 60 requests and was killed with SIGKILL straight after
    collector = start_collector()
    acknowledged = _send_until_killed(collector, 60)
    assert collector.proc is not None and collector.proc.returncode == -signal.SIGKILL
    assert len(acknowledged) == 60 * 40
    # WHEN it restarts on the same database
    restarted = start_collector(db=collector.db)
    # THEN every acknowledged span is there
    with restarted.client() as http:
        assert http.get("/healthz").status_code == 200
    stored = sqlite3.connect(collector.db).execute("SELECT span_id FROM spans").fetchall()
    assert {row[0] for row in stored} >= set(acknowledged)
    assert restarted.stop() == 0


def test_another_process_reads_while_the_collector_writes(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN a collector that is being written to
    collector = start_collector()
    with collector.client() as http:
        http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
    reader_script = textwrap.dedent(
        f"""
        import time
        from hopscope.collector.store.sqlite.store import SQLiteStore
        store = SQLiteStore({str(collector.db)!r}, read_only=True)
        counts = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            counts.append(store.count_spans())
        print(len(counts), min(counts), max(counts))
        """
    )
    # WHEN another process reads the same file in a loop while 40 requests are written
    reader = subprocess.Popen([sys.executable, "-c", reader_script], stdout=subprocess.PIPE, text=True)
    with collector.client() as http:
        for _ in range(40):
            response = http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
            assert response.status_code == 200
            time.sleep(0.02)
    out, _ = reader.communicate(timeout=30)
    # THEN the reader never failed and saw the count grow while the writer kept acknowledging
    assert reader.returncode == 0, out
    reads, first, last = (int(x) for x in out.split())
    assert reads > 10
    assert 6 <= first < last <= 41 * 6


def test_sigint_and_sigterm_drain_and_exit_zero(start_collector: Callable[..., CollectorProcess]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        collector = start_collector()
        with collector.client() as http:
            http.post("/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF)
        assert collector.stop(sig) == 0
        assert any("stopped; 6 spans and log records stored" in line for line in collector.log), collector.log
        assert SQLiteStore(collector.db, read_only=True).count_spans() == 6
        collector.db.unlink()


def test_a_saturated_write_path_answers_503_with_retry_after(tmp_path: Path) -> None:
    # GIVEN a collector whose queue holds 10 spans, and another process holding SQLite's write lock
    store = SQLiteStore(tmp_path / "busy.db")
    settings = CollectorSettings(db=store.path, max_pending_spans=10)
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with serve_in_thread(settings, store) as url:
        first_request = full_request(spans=3)
        with ThreadPoolExecutor(1) as pool:
            # WHEN one request waits on the lock and a second arrives
            first = pool.submit(
                httpx.post, f"{url}/v1/traces", content=first_request.SerializeToString(), headers=PROTOBUF
            )
            deadline = time.monotonic() + 5
            while httpx.get(f"{url}/healthz").json()["pending_spans"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            second = httpx.post(
                f"{url}/v1/traces", content=full_request().SerializeToString(), headers=PROTOBUF
            )
            # THEN the second is told to come back later, and the first is stored once the lock goes
            assert second.status_code == 503
            assert second.headers["retry-after"] == "1"
            locker.execute("ROLLBACK")
            assert first.result(timeout=30).status_code == 200
    assert store.get_trace(spans_of(first_request)[0].trace_id) is not None
    assert store.count_spans() == 6
    store.close()


def test_a_full_queue_refuses_before_reading_the_body(tmp_path: Path) -> None:
    # GIVEN a queue that is already full (3 spans waiting behind another process's write lock)
    store = SQLiteStore(tmp_path / "full.db")
    settings = CollectorSettings(db=store.path, max_pending_spans=3)
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with serve_in_thread(settings, store) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            httpx.post,
            f"{url}/v1/traces",
            content=full_request(spans=3).SerializeToString(),
            headers=PROTOBUF,
        )
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/healthz").json()["pending_spans"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # WHEN a body that is not even valid protobuf arrives
        refused = httpx.post(f"{url}/v1/traces", content=b"\xff not protobuf", headers=PROTOBUF)
        # THEN it is refused as busy (503), not judged as malformed (400): the body was never read
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        locker.execute("ROLLBACK")
        assert first.result(timeout=30).status_code == 200
    store.close()
