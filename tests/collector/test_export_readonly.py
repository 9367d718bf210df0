"""``hopscope export`` on a database it may only read, and errors that name what is really wrong.

A read-only folder is made for real: a read-only bind mount when the tests run as root (for whom ``chmod``
changes nothing), ``chmod`` otherwise. A file the process may not read is likewise real: ``chmod 000``, and as
root the command runs without the capabilities that let root read anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, order_chain
from tests.helpers.servers import HOPSCOPE

IS_ROOT = os.geteuid() == 0
# As root, run the command without the capabilities that bypass file permissions.
WITHOUT_ROOT_OVERRIDES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if IS_ROOT else []


def _run(*args: str | int | Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*(prefix or []), HOPSCOPE, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _database(folder: Path) -> tuple[Path, int]:
    """A database with two flows, closed as the collector closes it; returns it and o-1's flow id."""
    services = Services()
    order_chain(services, "o-1")
    order_chain(services, "o-2")
    folder.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(folder / "hopscope.db")
    store.write([encode_spans(services.spans())])
    flow_id = store.search_flow_ids(FlowFilter(correlation_id="o-1"), 1, 0)[0]
    store.close()
    return folder / "hopscope.db", flow_id


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` as a read-only folder: a read-only bind mount of it (root), or chmod 555 (anyone else)."""
    if not IS_ROOT:
        modes = {path: path.stat().st_mode for path in [folder, *folder.iterdir()]}
        for path in modes:
            path.chmod(0o555 if path == folder else 0o444)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mount = folder.with_name(folder.name + "-ro")
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        for _ in range(50):  # the exporting process has exited; its files close with it
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"could not unmount {mount}")
        mount.rmdir()


def _assert_read_only(folder: Path) -> None:
    """The folder really is read-only for the command: it cannot create a file there."""
    probe = _run("export", "--flow", "1", "--db", folder / "hopscope.db", "--out", folder / "probe.json")
    assert probe.returncode == 1 and "cannot write" in probe.stderr and not (folder / "probe.json").exists()


def test_export_from_a_read_only_folder_works_and_matches_the_writable_export(tmp_path: Path) -> None:
    # GIVEN a database closed cleanly: no -wal or -shm file beside it
    db, flow_id = _database(tmp_path / "data")
    assert sorted(path.name for path in db.parent.iterdir()) == ["hopscope.db"]
    # WHEN its folder is read-only and a flow is exported
    with read_only(db.parent) as folder:
        _assert_read_only(folder)
        exported = _run("export", "--flow", flow_id, "--db", folder / "hopscope.db")
        # THEN it works, and writes nothing there
        assert exported.returncode == 0, exported.stderr
        assert sorted(path.name for path in folder.iterdir()) == ["hopscope.db"]
    # AND the document is the one exported where the folder is writable
    writable = _run("export", "--flow", flow_id, "--db", db)
    assert writable.returncode == 0, writable.stderr
    assert json.loads(exported.stdout) == json.loads(writable.stdout)
    assert len(json.loads(exported.stdout)["resourceSpans"]) == 3


def test_export_reads_a_read_only_copy_of_a_live_database_with_its_wal(tmp_path: Path) -> None:
    # GIVEN a copy of a database taken while its store was open: -wal and -shm beside it
    services = Services()
    order_chain(services, "o-1")
    store = SQLiteStore(tmp_path / "live" / "hopscope.db")
    store.write([encode_spans(services.spans())])
    (flow_id,) = store.search_flow_ids(FlowFilter(), 10, 0)
    shutil.copytree(tmp_path / "live", tmp_path / "copy")
    store.close()
    assert {"hopscope.db-wal", "hopscope.db-shm"} <= {path.name for path in (tmp_path / "copy").iterdir()}
    # WHEN the copy's folder is read-only and the flow is exported
    with read_only(tmp_path / "copy") as folder:
        exported = _run("export", "--flow", flow_id, "--db", folder / "hopscope.db")
    # THEN every span of the flow is in the document
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    spans = [span for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    assert len(spans) == len(services.spans())


def test_a_wal_that_sqlite_cannot_read_in_a_read_only_folder_is_named(tmp_path: Path) -> None:
    # GIVEN a database whose -wal file holds pages but whose -shm file is gone (a copy made without it)
    db, flow_id = _database(tmp_path / "data")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO meta (key, value) VALUES ('test', 'in the wal only')")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    writer.close()
    (tmp_path / "copy" / "hopscope.db-shm").unlink()
    assert (tmp_path / "copy" / "hopscope.db-wal").stat().st_size > 0
    # WHEN its folder is read-only and it is exported
    with read_only(tmp_path / "copy") as folder:
        result = _run("export", "--flow", flow_id, "--db", folder / "hopscope.db")
    # THEN the command fails in one line that names the cause, instead of reading without the WAL
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "read-only" in line and "hopscope.db-wal" in line and "writable" in line


def test_errors_name_the_real_cause(tmp_path: Path) -> None:
    # GIVEN a missing file, a folder, a text file, an SQLite file of another program, and an unreadable one
    db, flow_id = _database(tmp_path / "data")
    (tmp_path / "notes.txt").write_text("not a database\n")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE things (x)")
    other.close()
    unreadable = tmp_path / "locked" / "hopscope.db"
    shutil.copytree(db.parent, unreadable.parent)
    unreadable.chmod(0)
    cases = [
        (tmp_path / "absent.db", [], "no hopscope database at", "no such file"),
        (tmp_path / "data", [], "is a directory", "not a hopscope database"),
        (tmp_path / "notes.txt", [], "not a hopscope database", "not an SQLite file"),
        (tmp_path / "other.db", [], "not a hopscope database", "no hopscope tables"),
        (unreadable, WITHOUT_ROOT_OVERRIDES, "cannot read", "permission denied"),
    ]
    for path, prefix, *expected in cases:
        # WHEN each is exported from
        result = _run("export", "--flow", flow_id, "--db", path, prefix=prefix)
        # THEN the command fails with one line that says what is wrong with that path
        assert result.returncode == 1, path
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("hopscope export: ") and str(path) in line, line
        for words in expected:
            assert words in line, line
    # AND the readable database still exports with the same restricted process (the cause was the mode)
    unreadable.chmod(0o644)
    again = _run("export", "--flow", flow_id, "--db", unreadable, prefix=WITHOUT_ROOT_OVERRIDES)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("where", ["missing folder", "read-only folder"])
def test_export_to_a_file_that_cannot_be_written_says_why(tmp_path: Path, where: str) -> None:
    db, flow_id = _database(tmp_path / "data")
    out_folder = tmp_path / "out"
    if where == "read-only folder":
        out_folder.mkdir()
        with read_only(out_folder) as folder:
            result = _run("export", "--flow", flow_id, "--db", db, "--out", folder / "flow.json")
        expected = "read-only file system" if IS_ROOT else "permission denied"
    else:
        result = _run("export", "--flow", flow_id, "--db", db, "--out", out_folder / "flow.json")
        expected = "no such file or directory"
    assert result.returncode == 1
    assert result.stderr.strip().startswith("hopscope export: cannot write") and expected in result.stderr
