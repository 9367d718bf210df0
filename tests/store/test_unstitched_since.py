"""How far flows trail the spans, read from the database: the writer's /healthz lag and the dashboard's
"flows are N s behind" both come from ``unstitched_since_unix_nano``, on SQLite and on chdb."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hopscope.collector.store.url import open_store
from tests.helpers.otlp_samples import full_request


@pytest.fixture(params=["sqlite", "chdb"])
def url(request: pytest.FixtureRequest, tmp_path: Path, chdb_url: str) -> str:
    return str(tmp_path / "spans.db") if request.param == "sqlite" else chdb_url


def test_the_oldest_unstitched_span_is_read_by_the_writer_and_by_a_read_only_store(url: str) -> None:
    # GIVEN a store with no spans, then two writes a moment apart that nothing has stitched yet
    writer: Any = open_store(url)
    assert writer.unstitched_since_unix_nano() is None
    before = time.time_ns()
    writer.write_prepared([writer.prepare(full_request(spans=3))])
    time.sleep(0.05)
    between = time.time_ns()
    writer.write_prepared([writer.prepare(full_request(spans=3, service="billing"))])
    reader: Any = open_store(url, read_only=True)
    try:
        # THEN both say when the first of them arrived (not the second)
        since = writer.unstitched_since_unix_nano()
        assert since is not None
        assert before <= since < between
        assert reader.unstitched_since_unix_nano() == since
        # WHEN everything is stitched THEN nothing waits, for either of them
        while writer.stitch_flows(1_000):
            pass
        assert writer.unstitched_since_unix_nano() is None
        assert reader.unstitched_since_unix_nano() is None
    finally:
        reader.close()
        writer.close()


def test_a_partly_stitched_backlog_reports_its_first_unstitched_span(tmp_path: Path) -> None:
    # GIVEN three writes (SQLite stitches at most max_spans a call) of which the first is stitched
    writer: Any = open_store(str(tmp_path / "spans.db"))
    writer.write_prepared([writer.prepare(full_request(spans=3))])
    time.sleep(0.02)
    second = time.time_ns()
    writer.write_prepared([writer.prepare(full_request(spans=3, service="billing"))])
    writer.write_prepared([writer.prepare(full_request(spans=3, service="shipping"))])
    assert writer.stitch_flows(6) == 6  # full_request(3) holds 6 spans
    # THEN the lag starts at the second write, not the first
    since = writer.unstitched_since_unix_nano()
    assert since is not None and since >= second
    writer.close()
