"""Flows keep up with steady ingest: the writer stitches in the lulls between commits, not only on its beat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hopscope.collector.ingest import writer as writer_module
from hopscope.collector.ingest.writer import SpanWriter
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request


def test_under_a_steady_trickle_flows_catch_up_between_the_scheduled_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a writer whose scheduled stitching chunk comes once and then not for ten minutes, and which
    # counts as busy all along (ingest "idle" only after ten minutes too)
    monkeypatch.setattr(writer_module, "STITCH_BUSY_GAP_SECONDS", 600.0)
    monkeypatch.setattr(writer_module, "INGEST_IDLE_SECONDS", 600.0)
    store = SQLiteStore(tmp_path / "spans.db")
    writer = SpanWriter(store, max_pending_spans=10_000)
    writer.start()
    try:
        # WHEN requests arrive steadily, with room between them (as at a rate below the writer's capacity)
        futures = []
        for _ in range(20):
            futures.append(writer.submit(store.prepare(full_request(spans=50)), 100))
            time.sleep(0.05)
        for future in futures:
            future.result(timeout=30)
        # THEN every committed span is stitched while ingest still counts as busy, long before the next beat
        deadline = time.monotonic() + 20
        while store.flows_pending:
            assert time.monotonic() < deadline, f"{writer.spans_stitched} of {writer.spans_written} stitched"
            time.sleep(0.05)
        assert writer.spans_stitched == writer.spans_written == 2000
    finally:
        writer.close(10)
        store.close()
