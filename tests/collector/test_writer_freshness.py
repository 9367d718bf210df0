"""The writer's stitching budget and the lag it reports, on a real SQLite file (issue 15: fresh flows).

Steady ingest gets a chunk every quarter second of up to a share of the writer, so flows keep up; a burst
(when keeping up would take more) gets the bounded share; the lag in health() is the age of the oldest stored
span not yet stitched, from the store's own stitching position.
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


def test_steady_ingest_stitches_every_half_second_and_a_burst_gets_the_bounded_share(
    store: SQLiteStore,
) -> None:
    # GIVEN a running writer that committed 2,000 spans just now: 1,000 spans/s over the rate window
    writer = SpanWriter(store, max_pending_spans=100_000)
    writer.start()
    try:
        _submit(writer, store, 100)
        now = time.monotonic()
        assert writer.ingest_rate(now) == pytest.approx(2_000 / writer_module.INGEST_RATE_WINDOW_SECONDS)
        # WHEN a stitched span costs 50 us (keeping up takes 5% of the writer)
        writer.stitch_cost_seconds = 50e-6
        chunk, gap, from_start = writer.stitch_budget(now)
        # THEN a chunk every quarter second, counted from its start, of up to the keep-up share
        assert (gap, from_start) == (writer_module.STITCH_KEEP_UP_GAP_SECONDS, True)
        assert chunk == int(writer_module.STITCH_KEEP_UP_SHARE * gap / 50e-6)
        assert chunk / gap > 10 * writer.ingest_rate(now)  # room to drain a backlog too
        # WHEN keeping up would take more than that share (a burst: 1,000 spans/s at 1 ms each)
        writer.stitch_cost_seconds = 1e-3
        # THEN the bounded share of a busy writer, as before
        assert writer.stitch_budget(now) == (
            writer_module.STITCH_BUSY_CHUNK_SPANS,
            writer_module.STITCH_BUSY_GAP_SECONDS,
            False,
        )
        # WHEN nothing has been committed for a while THEN chunk after chunk
        idle = now + writer_module.INGEST_IDLE_SECONDS + 0.1
        assert writer.stitch_budget(idle) == (writer_module.STITCH_IDLE_CHUNK_SPANS, 0.0, False)
        assert writer.ingest_rate(now + writer_module.INGEST_RATE_WINDOW_SECONDS + 0.1) == 0.0
    finally:
        writer.close(timeout=30)


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
