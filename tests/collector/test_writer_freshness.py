"""The writer's stitching budget and the lag it reports, on a real SQLite file (issue 15: fresh flows).

Steady ingest gets a chunk every quarter second of up to a share of the writer, so flows keep up; a burst
(spans arriving faster than that share can stitch) gets the bounded share; the lag in health() is the age of
the oldest stored span not yet stitched, from the store's own stitching position.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopscope.collector.ingest import writer as writer_module
from hopscope.collector.ingest.writer import SpanWriter
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "spans.db")
    yield store
    store.close()


def _submit(writer: SpanWriter, store: SQLiteStore, requests: int) -> None:
    """``requests`` requests of 20 spans each, committed before this returns."""
    futures = [writer.submit(store.prepare(full_request(spans=10)), 20) for _ in range(requests)]
    for future in futures:
        future.result(timeout=30)


def _steady_ingest(writer: SpanWriter, store: SQLiteStore, seconds: float) -> float:
    """20 spans every 20 ms (1,000 spans/s) for ``seconds``, as paced exporters send; the largest lag seen."""
    lag = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _submit(writer, store, 1)
        lag = max(lag, writer.health().flows_lag_seconds)
        time.sleep(0.02)
    return lag


def test_ingest_starts_as_a_burst_and_turns_steady_when_its_rate_allows(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a writer that measures the rate over half a second and probes it again every second
    monkeypatch.setattr(writer_module, "INGEST_RATE_WINDOW_SECONDS", 0.5)
    monkeypatch.setattr(writer_module, "STITCH_PROBE_INTERVAL_SECONDS", 1.0)
    writer = SpanWriter(store, max_pending_spans=100_000)
    writer.start()
    try:
        # WHEN ingest starts THEN it counts as a burst (bounded share) until its rate is known
        _submit(writer, store, 1)
        assert not writer.steady
        budget = writer.stitch_budget(time.monotonic())
        assert budget == (writer_module.STITCH_BUSY_CHUNK_SPANS, writer_module.STITCH_BUSY_GAP_SECONDS, False)
        # WHEN it goes on at 1,000 spans/s, which keeping up with takes a few % of the writer
        _steady_ingest(writer, store, 2.0)  # the bounded share's next chunk, a second on, measures the rate
        # THEN it is steady (a chunk every quarter second), and flows keep up, probes included
        assert writer.steady
        assert _steady_ingest(writer, store, 2.0) < 1.5
        assert writer.steady
        # WHEN the same rate would take more than the whole writer (as a burst's does)
        monkeypatch.setattr(writer_module, "STITCH_BURST_NEED", 1e-9)
        monkeypatch.setattr(writer_module, "STITCH_STEADY_NEED", 1e-9)
        # THEN the next probe (no stitching for a moment, to see the rate spans arrive at) finds a burst
        _steady_ingest(writer, store, 2.0)
        assert not writer.steady
    finally:
        writer.close(timeout=30)


def test_idle_time_stitches_chunk_after_chunk(store: SQLiteStore) -> None:
    writer = SpanWriter(store, max_pending_spans=100_000)
    idle = time.monotonic() + writer_module.INGEST_IDLE_SECONDS
    assert writer.stitch_budget(idle) == (writer_module.STITCH_IDLE_CHUNK_SPANS, 0.0, False)
    assert writer.ingest_rate(idle) == 0.0


def test_the_lag_is_the_age_of_the_oldest_unstitched_span_and_ends_when_caught_up(store: SQLiteStore) -> None:
    # GIVEN spans a previous run stored but did not stitch, 0.3 s ago
    store.write_prepared([store.prepare(full_request(spans=10))])
    time.sleep(0.3)
    # WHEN a writer opens on the store
    writer = SpanWriter(store, max_pending_spans=100_000)
    # THEN its health reports them at once, with their age
    health = writer.health()
    assert health.flows_pending
    assert 0.3 <= health.flows_lag_seconds < 10
    # WHEN it runs (idle: it stitches everything) THEN the lag ends
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while writer.health().flows_pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.health().flows_lag_seconds == 0.0
        assert writer.spans_stitched == 20
        assert store.unstitched_since_unix_nano() is None
    finally:
        writer.close(timeout=30)


def test_a_backlog_is_drained_while_steady_ingest_goes_on(store: SQLiteStore) -> None:
    # GIVEN 6,000 stored spans left unstitched, and a writer receiving 20 spans every 20 ms (1,000/s)
    for _ in range(30):
        store.write_prepared([store.prepare(full_request(spans=100))])
    writer = SpanWriter(store, max_pending_spans=100_000)
    backlog_lag = writer.health().flows_lag_seconds
    assert backlog_lag > 0
    writer.start()
    try:
        # WHEN ingest goes on for up to 10 s (never idle long enough for the idle budget)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and store.flows_pending:
            _submit(writer, store, 1)
            time.sleep(0.02)
        # THEN the backlog was stitched while it went on, and the lag is under a second
        assert writer.spans_stitched >= 6_000
        assert writer.health().flows_lag_seconds < 1.0
    finally:
        writer.close(timeout=30)
