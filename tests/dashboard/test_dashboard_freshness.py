"""Every page says when flows trail the stored spans ("Flows are N s behind"), from a real SQLite file whose
newest spans are stored but not yet stitched; none says it once stitching has caught up."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.otlp_samples import full_request

PAGES = [None, "service_map", "flows", "flow_detail", "logs", "latency", "queues", "dead_letters"]
BEHIND = re.compile(r"Flows are (\d+) s behind")


def _notices(db: Path) -> dict[str | None, list[str]]:
    found: dict[str | None, list[str]] = {}
    with dashboard_env(db):
        for page in PAGES:
            app = run_page(page, {"range": "24h"})
            assert not app.exception, page
            found[page] = [info.value for info in app.info if BEHIND.search(info.value)]
    return found


def test_every_page_says_how_far_flows_are_behind_until_they_catch_up(tmp_path: Path) -> None:
    # GIVEN a database with stitched spans, and newer ones stored 60 s ago that nothing has stitched yet
    db = tmp_path / "spans.db"
    store = SQLiteStore(db)
    store.write([full_request(spans=3)])
    store.write_prepared([store.prepare(full_request(spans=3, service="billing"))])
    store.close()
    with sqlite3.connect(db) as conn:  # as if they had arrived a minute ago (the receive time is the clock's)
        conn.execute(  # without --retention every span is in spans_other (store/sqlite/windows.py)
            "UPDATE spans_other SET received_unix_nano = received_unix_nano - 60000000000 WHERE span_pk > "
            "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'flows_through_span_pk')"
        )
    conn.close()
    # WHEN every page opens THEN each says that flows are about a minute behind
    for page, notices in _notices(db).items():
        assert len(notices) == 1, (page, notices)
        match = BEHIND.search(notices[0])
        assert match is not None and 60 <= int(match.group(1)) < 90, (page, notices)
    # WHEN the collector (here the store itself) stitches them THEN no page says it any more
    store = SQLiteStore(db)
    while store.stitch_flows(1_000):
        pass
    store.close()
    assert _notices(db) == {page: [] for page in PAGES}
