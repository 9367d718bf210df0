"""What the SQLite store takes on disk (``StorageReader``), and the retention the collector records.

Cheap enough for a health check: a few ``stat`` calls, one ``statvfs``, the first start time of each span
table and one ``meta`` row.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from hopscope.collector.model.storage import StorageFacts
from hopscope.collector.store.sqlite.windows import oldest_start

# The meta key of the --retention the collector writing this file runs with (seconds; 0: kept for ever).
RETENTION_KEY = "collector_retention_seconds"


def store_files(path: Path) -> list[Path]:
    """Every file of the store: the database file and each file beside it whose name starts with the
    database file's name (its ``-wal``, ``-shm`` and ``-journal``, and any other file it adds there)."""
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    return [entry for entry in entries if entry.name.startswith(path.name)]


def _size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder; 0 for what vanished meanwhile."""
    try:
        if path.is_dir():
            return sum(_size(child) for child in path.iterdir())
        return path.stat().st_size
    except OSError:
        return 0


def storage_facts(conn: sqlite3.Connection, path: Path) -> StorageFacts:
    """The store's files' size, its oldest span (one index seek per span table), the
    free space of the filesystem holding it and the recorded retention."""
    oldest = oldest_start(conn)
    recorded = conn.execute("SELECT value FROM meta WHERE key = ?", (RETENTION_KEY,)).fetchone()
    free: int | None
    disk: int | None
    try:
        usage = shutil.disk_usage(path.parent)
        free, disk = usage.free, usage.total
    except OSError:
        free = disk = None
    return StorageFacts(
        location=str(path.resolve()),
        size_bytes=sum(_size(file) for file in store_files(path)),
        oldest_span_unix_nano=None if oldest is None else int(oldest),
        free_bytes=free,
        disk_bytes=disk,
        retention_seconds=None if recorded is None else int(recorded[0]),
    )


def record_retention(conn: sqlite3.Connection, retention_seconds: int | None) -> None:
    """Note the collector's ``--retention`` (None: kept for ever) for readers in other processes."""
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (RETENTION_KEY, str(retention_seconds or 0))
    )
