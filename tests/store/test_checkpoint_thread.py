"""The SQLite store's WAL checkpoint thread: a failure is logged once with its traceback, never spun on."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from hopscope.collector.store.sqlite.store import CHECKPOINT_INTERVAL_SECONDS, SQLiteStore


def test_a_failing_checkpoint_is_logged_once_with_its_traceback_and_the_thread_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a store whose checkpoint connection is closed under it (a real sqlite3 failure on every round)
    store = SQLiteStore(tmp_path / "spans.db")
    checkpointer = store._checkpointer  # the thread under test
    assert checkpointer is not None
    with caplog.at_level(logging.WARNING, logger="hopscope.collector.store.sqlite.store"):
        checkpointer._conn.close()
        # WHEN it runs for many rounds
        time.sleep(CHECKPOINT_INTERVAL_SECONDS * 12)
        # THEN the failure was logged once, with the exception attached, and the thread still runs
        failures = [r for r in caplog.records if "WAL checkpoints fail" in r.getMessage()]
        assert len(failures) == 1
        assert failures[0].exc_info is not None
        assert "closed database" in str(failures[0].exc_info[1])
        assert checkpointer._thread.is_alive()
    store.close()
