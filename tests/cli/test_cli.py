"""The ``hopscope`` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import full_request, spans_of
from tests.helpers.servers import HOPSCOPE, CollectorProcess


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOPSCOPE, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_the_collector() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "collector" in result.stdout


def test_collector_help_documents_every_flag() -> None:
    result = _run("collector", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--db", "--max-body-bytes", "--auth-token", "--retention"):
        assert flag in result.stdout


def test_a_missing_extra_fails_with_one_line_naming_it() -> None:
    # The extra is installed here, so its absence is simulated: None in sys.modules makes find_spec fail.
    script = "import sys; sys.modules['starlette'] = None; from hopscope.cli import main; main(['collector'])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "hopscope collector needs the 'collector' extra (missing module 'starlette'): "
        "pip install 'hopscope[collector]'"
    ]


@pytest.mark.parametrize("bad", ["7x", "0d", "-1h", "forever"])
def test_a_bad_retention_is_refused_before_starting(bad: str) -> None:
    result = _run("collector", f"--retention={bad}")
    assert result.returncode == 2
    assert "invalid duration" in result.stderr


def test_a_taken_port_fails_with_a_clear_message(start_collector: Callable[..., CollectorProcess]) -> None:
    first = start_collector()
    port = first.url.rsplit(":", 1)[1]
    result = _run("collector", "--port", port, "--db", str(first.db.with_name("other.db")))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_an_unusable_db_path_fails_with_a_clear_message(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not sqlite " * 100)
    result = _run("collector", "--port", "0", "--db", str(not_a_db))
    assert result.returncode == 1
    assert "hopscope collector: cannot open" in result.stderr
    assert not_a_db.read_text() == "not sqlite " * 100


def test_the_collector_binds_loopback_by_default(start_collector: Callable[..., CollectorProcess]) -> None:
    assert start_collector().url.startswith("http://127.0.0.1:")


def test_retention_deletes_expired_spans_in_batches_and_keeps_recent_ones(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN a database with 4,800 spans from two days ago and one recent trace
    db = tmp_path / "hopscope.db"
    store = SQLiteStore(db)
    two_days_ago = time.time_ns() - 2 * 86400 * 10**9
    for _ in range(4):
        old = full_request(spans=600)
        for span in spans_of(old):
            span.start_time_unix_nano = two_days_ago
        store.write([old])
    recent = full_request()
    store.write([recent])
    store.close()
    # WHEN a collector with --retention 1d runs on it
    collector = start_collector("--retention", "1d", db=db)
    reader = SQLiteStore(db, read_only=True)
    deadline = time.monotonic() + 30
    while reader.count_spans() > 6:
        assert time.monotonic() < deadline, "expired spans were not deleted"
        time.sleep(0.1)
    # THEN only the recent trace is left, and ingest kept working
    with collector.client() as http:
        fresh = full_request()
        response = http.post(
            "/v1/traces",
            content=fresh.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200
    assert reader.count_spans() == 12
    assert reader.get_trace(spans_of(recent)[0].trace_id) is not None
    assert collector.stop() == 0
