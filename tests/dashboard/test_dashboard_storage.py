"""The overview shows the store on disk: its size, the oldest span kept and the retention the collector
recorded in it (AppTest on a real SQLite file, and on chdb)."""

from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st

from hopscope.collector.model.storage import byte_size, low_free_threshold
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_store
from hopscope.dashboard.format import format_ago
from tests.collector.test_health import small_filesystem  # noqa: F401 - the fixture
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.otlp_samples import full_request, spans_of

HOUR_NS = 3600 * 10**9


def _requests() -> list:  # type: ignore[type-arg]
    """Spans of now, and one request of spans started 3 hours ago."""
    old = full_request(spans=5)
    for span in spans_of(old):
        span.start_time_unix_nano -= 3 * HOUR_NS
        span.end_time_unix_nano -= 3 * HOUR_NS
    return [full_request(spans=50), old, full_request(spans=50)]


def _storage_metrics(db: Path, store: str | None = None) -> dict[str, str]:
    with dashboard_env(db, store=store):
        app = run_page(query={"range": "24h"})
    assert not app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    return {label: metrics[label] for label in ("Size on disk", "Oldest span kept", "Retention")}


def test_the_overview_shows_size_oldest_span_and_the_recorded_retention(tmp_path: Path) -> None:
    # GIVEN a store of spans, the oldest 3 hours old, whose collector recorded --retention 7d
    db = tmp_path / "hopscope.db"
    store = SQLiteStore(db)
    requests = _requests()
    store.write(requests)
    store.record_retention(7 * 86_400)
    store.close()
    # WHEN the overview opens it
    shown = _storage_metrics(db)
    # THEN it shows the query layer's figures, in words
    reader = SQLiteStore(db, read_only=True)
    facts = QueryLayer(reader).storage()
    reader.close()
    oldest = min(span.start_time_unix_nano for span in spans_of(requests[1]))
    assert facts.oldest_span_unix_nano == oldest
    assert shown == {
        "Size on disk": byte_size(facts.size_bytes),
        "Oldest span kept": format_ago(oldest),
        "Retention": "7 d",
    }
    assert shown["Oldest span kept"] == "3.0 h ago"
    assert shown["Size on disk"].endswith("KiB") or shown["Size on disk"].endswith("MiB")


def test_a_retention_never_recorded_says_where_it_is_set_and_none_says_kept_for_ever(tmp_path: Path) -> None:
    # GIVEN a database whose writer recorded no retention (a database from before, an import)
    db = tmp_path / "hopscope.db"
    store = SQLiteStore(db)
    store.write(_requests())
    store.close()
    # THEN the overview says it is set on the collector
    assert _storage_metrics(db)["Retention"] == "set on the collector"
    # WHEN a collector without --retention recorded that it keeps spans for ever
    store = SQLiteStore(db)
    store.record_retention(None)
    store.close()
    # THEN the overview says so (once its figures, cached 10 s, are read again)
    st.cache_data.clear()
    assert _storage_metrics(db)["Retention"] == "kept for ever"


def test_the_overview_shows_the_clickhouse_store_on_disk(tmp_path: Path, chdb_url: str) -> None:
    # GIVEN a chdb store whose collector recorded --retention 2h
    store = open_store(chdb_url)
    requests = _requests()
    store.write(requests)
    store.record_retention(2 * 3600)
    facts = store.storage_facts()
    store.close()
    # WHEN the overview opens it, THEN it shows the parts' size, the oldest span and the retention
    shown = _storage_metrics(tmp_path / "unused.db", store=chdb_url)
    assert facts.size_bytes > 0
    assert shown == {
        "Size on disk": byte_size(facts.size_bytes),
        "Oldest span kept": format_ago(min(span.start_time_unix_nano for span in spans_of(requests[1]))),
        "Retention": "2 h",
    }


def test_the_overview_warns_when_the_stores_disk_is_low(small_filesystem: Path) -> None:  # noqa: F811
    # GIVEN a store on a 24 MiB tmpfs
    db = small_filesystem / "hopscope.db"
    store = SQLiteStore(db)
    store.write(_requests())
    store.close()
    with dashboard_env(db):
        assert not run_page(query={"range": "24h"}).warning
        # WHEN free space falls under the threshold (5% of it)
        threshold = low_free_threshold(shutil.disk_usage(small_filesystem).total)
        (small_filesystem / "filler").write_bytes(
            b"\0" * (shutil.disk_usage(small_filesystem).free - threshold // 2)
        )
        st.cache_data.clear()
        app = run_page(query={"range": "24h"})
    # THEN the overview says so, naming the store and what to do
    assert not app.exception
    [warning] = app.warning
    assert "free on the disk holding" in warning.value and "shorten --retention" in warning.value
    assert "hopscope.db" in warning.value
