"""A ClickHouse store whose span feed cannot be read logs it once with the traceback, not every second."""

from __future__ import annotations

import logging

import pytest

from hopscope.collector.store.clickhouse import store as clickhouse_store
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.url import open_store


def test_an_unreadable_span_feed_is_logged_once_until_it_can_be_read_again(
    chdb_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a ClickHouse store (chdb) whose span feed table is renamed away, and a writer looking every time
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    monkeypatch.setattr(clickhouse_store, "FEED_POLL_SECONDS", 0.0)
    db = store.client.database
    store.client.command(f"RENAME TABLE {db}.hopscope_span_feed TO {db}.hopscope_span_feed_away")
    try:
        with caplog.at_level(logging.INFO, logger=clickhouse_store.__name__):
            # WHEN the writer looks at the feed many times while it is gone
            looks = [store.flows_pending for _ in range(10)]
            # THEN nothing is pending, and the failure is logged once, with the engine's error attached
            assert looks == [False] * 10
            failures = [r for r in caplog.records if "cannot look at the span feed" in r.getMessage()]
            assert len(failures) == 1
            assert failures[0].levelno == logging.WARNING
            assert failures[0].exc_info is not None
            # AND once the feed is back, one line says so
            store.client.command(f"RENAME TABLE {db}.hopscope_span_feed_away TO {db}.hopscope_span_feed")
            assert store.flows_pending is False
            assert store.flows_pending is False
            again = [r for r in caplog.records if "span feed can be read again" in r.getMessage()]
            assert len(again) == 1
    finally:
        store.close()
