"""A database written by an older hopscope opens with this one and keeps working (issue 16, item 3).

The fixture ``tests/fixtures/databases/hopscope-3093a40.db`` was written by a real collector of commit
3093a40 (the code before issue 16), with what that version's API answered about it beside it
(``make_database.py`` there says how). A copy is opened by today's collector: every field the old version
answered is the same, new spans are stitched beside the old flows, and with a ``--retention`` that the old
spans are past, their flows expire and every page keeps answering. Opened, the file is migrated in place
to schema 9 (its spans table becomes ``spans_other``, store/sqlite/windows.py).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.helpers.servers import CollectorProcess

FIXTURES = Path(__file__).parents[1] / "fixtures" / "databases"
OLD_DB = FIXTURES / "hopscope-3093a40.db"
OLD_ANSWERS = json.loads((FIXTURES / "hopscope-3093a40.answers.json").read_text())
PROTOBUF = {"content-type": "application/x-protobuf"}
NEW_SPANS = 500


def _as_before(old: Any, new: Any, where: str) -> None:
    """Every field the old version answered has the same value now (new fields may be added)."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for key, value in old.items():
            assert key in new, f"{where}: {key} is gone"
            _as_before(value, new[key], f"{where}.{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), f"{where}: {len(old)} items before"
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _as_before(a, b, f"{where}[{i}]")
    else:
        assert old == new, f"{where}: {old!r} before, {new!r} now"


def _copy(tmp_path: Path) -> Path:
    db = tmp_path / "old.db"
    shutil.copyfile(OLD_DB, db)
    return db


def _new_spans() -> list[bytes]:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    import workload

    return [body for body, _ in workload.small_shop(seed=99).take(NEW_SPANS, 250)]


def test_the_old_database_answers_as_it_did_and_takes_new_spans(tmp_path: Path) -> None:
    collector = CollectorProcess(_copy(tmp_path), []).start()
    try:
        with collector.client() as http:
            for url, old in OLD_ANSWERS.items():
                answer = http.get(url)
                assert answer.status_code == 200, (url, answer.text[:300])
                _as_before(old, answer.json(), url)
            for body in _new_spans():
                assert http.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
            collector.wait_for_flows()
            since = str(time.time_ns() - 7_200 * 10**9)  # the new spans start an hour ago
            recent = http.get("/api/flows", params={"limit": 500, "since": since}).json()["flows"]
            old_ids = {
                f["flow_id"]
                for f in OLD_ANSWERS[next(u for u in OLD_ANSWERS if u.startswith("/api/flows?"))]["flows"]
            }
            assert recent and not old_ids & {f["flow_id"] for f in recent}, "new spans joined old flows"
            old_list = next(url for url in OLD_ANSWERS if url.startswith("/api/flows?"))
            _as_before(OLD_ANSWERS[old_list], http.get(old_list).json(), old_list)  # old flows untouched
            storage = http.get("/healthz").json()["storage"]
            assert storage["size_bytes"] > 0 and storage["retention_seconds"] is None
    finally:
        assert collector.stop(signal.SIGINT) == 0
    # migrated in place to schema 10: the spans table became spans_other (store/sqlite/windows.py), which
    # holds the new spans too, there being no --retention; the logs table is there, empty
    conn = sqlite3.connect(collector.db)
    try:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        (other,) = conn.execute("SELECT count(*) FROM spans_other").fetchone()
        (windows,) = conn.execute("SELECT count(*) FROM sqlite_master WHERE name GLOB 'spans_w*'").fetchone()
        (logs,) = conn.execute("SELECT count(*) FROM logs").fetchone()
    finally:
        conn.close()
    assert (int(version), other, windows, logs) == (10, 600 + NEW_SPANS, 0, 0)


def test_with_a_retention_the_old_flows_expire_and_every_page_answers(tmp_path: Path) -> None:
    collector = CollectorProcess(_copy(tmp_path), ["--retention", "1h"]).start()
    try:
        with collector.client() as http:
            old_list = next(url for url in OLD_ANSWERS if url.startswith("/api/flows?"))
            deadline = time.monotonic() + 60
            while http.get(old_list).json()["flows"]:
                assert time.monotonic() < deadline, "the old flows did not expire"
                time.sleep(0.2)
            for url in OLD_ANSWERS:
                answer = http.get(url)
                assert answer.status_code in (200, 404), (url, answer.status_code)
                if url.startswith("/api/flows/"):
                    assert answer.status_code == 404 and "expired" in answer.json()["message"]
            assert http.get("/healthz").json()["storage"]["retention_seconds"] == 3600
    finally:
        assert collector.stop(signal.SIGINT) == 0


def test_the_fixture_is_the_old_version_s_file() -> None:
    """The file in the repository is the one written by 3093a40 (schema 8), never migrated in place."""
    conn = sqlite3.connect(f"{OLD_DB.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        (spans,) = conn.execute("SELECT count(*) FROM spans").fetchone()
    finally:
        conn.close()
    assert (int(version), spans) == (8, 600)
