"""Spans in time windows: one table per window of start times, so that retention drops a window whole.

Deleting spans row by row costs a B-tree edit per span and index (14-19k spans/s beside ingest), so at a
higher ingest rate a store with ``--retention`` only grew. Here every span lives in the table of the window
its start falls in (``spans_w<start>_<end>``, nanoseconds since the epoch); once a window's end is older than
the retention, ``DROP TABLE`` frees its pages at once (0.2 s for 500,000 spans on the 2-core dev machine,
with ``secure_delete=FAST``: SQLite as Debian builds it would otherwise overwrite every freed page).
The freed pages are reused by the next windows, so the file stops growing at about the retention's worth.

- **One file, one transaction.** The window tables sit beside the flows and rollups in the same SQLite
  file. A commit that holds spans of three windows is one transaction, acknowledged only after it, as
  before (separate files attached to one connection would commit atomically per file only, in WAL mode).
- **Width.** A twelfth of the retention (at least a second): a day keeps 12-14 windows of two hours; the
  two minutes that tests use, windows of ten seconds. The store never holds much more than retention plus
  a window. Windows are created as spans arrive, from the retention back to two windows ahead of the clock.
- **``spans_other``** holds what no window takes: every span when no retention is set (so a store without
  one is a single table, as before), spans already past the retention on arrival, and spans from further
  in the future than two windows (a skewed clock). Retention deletes its rows one by one, by start time
  and by receive time: they are few. The ``spans`` table of schema version 8 became ``spans_other``.
- **Reading.** The ``spans`` view is ``UNION ALL`` of every span table, rebuilt in the transaction that
  creates or drops a window. SQLite pushes a query's ``WHERE`` into each table's indexes (by trace and span
  id, by start, by key), and merges key-ordered scans, so every query on ``spans`` reads a few index pages
  per window.
- **Keys.** ``span_pk`` is numbered across tables (stitching follows it): the next key is one past the
  largest of every table's and of the ``meta`` row ``span_pk_high``, written before a window is dropped.
- **A span sent again** has the same start, so it finds the window (or ``spans_other``) of its first copy
  and its unique index keeps it once, as before; only a copy sent after that window was dropped, or a
  span first sent from too far in the future, can be stored twice.
"""

from __future__ import annotations

import bisect
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OTHER = "spans_other"
VIEW = "spans"
WINDOWS_PER_RETENTION = 12
# Windows are made for spans that start up to this many windows after the clock (clock skew, batching).
FUTURE_WINDOWS = 2
_NS = 1_000_000_000
_WINDOW_NAME = re.compile(r"^spans_w(\d+)_(\d+)$")
# The meta row holding the largest key a dropped window or deleted row had: keys never go back.
SPAN_PK_HIGH_KEY = "span_pk_high"

_COLUMNS = """(
    span_pk INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_unix_nano INTEGER NOT NULL,
    end_unix_nano INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    resource_id INTEGER NOT NULL REFERENCES resources (resource_id),
    scope_id INTEGER NOT NULL REFERENCES scopes (scope_id),
    received_unix_nano INTEGER NOT NULL,
    span BLOB NOT NULL
)"""

_INSERT_COLUMNS = (
    "span_pk, trace_id, span_id, parent_span_id, name, kind, start_unix_nano, end_unix_nano, status_code, "
    "service_name, received_unix_nano, span, resource_id, scope_id"
)
_START = 5  # a prepared row's start time (spans.py prepare_spans)


@dataclass(frozen=True, slots=True)
class Window:
    """Spans that start in [start, end) nanoseconds since the epoch are in table ``name``."""

    start: int
    end: int

    @property
    def name(self) -> str:
        return f"spans_w{self.start}_{self.end}"


def window_seconds(retention_seconds: int) -> int:
    return max(1, retention_seconds // WINDOWS_PER_RETENTION)


def read_windows(conn: sqlite3.Connection) -> list[Window]:
    """The file's windows, earliest first."""
    windows = []
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'spans_w*'")
    for (name,) in tables:
        match = _WINDOW_NAME.match(name)
        if match:
            windows.append(Window(int(match.group(1)), int(match.group(2))))
    return sorted(windows, key=lambda window: window.start)


def span_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table that holds spans: ``spans_other`` and each window's."""
    return [OTHER, *(window.name for window in read_windows(conn))]


def create_span_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(f"CREATE TABLE {name} {_COLUMNS}")
    conn.execute(f"CREATE UNIQUE INDEX {name}_by_id ON {name} (trace_id, span_id)")
    conn.execute(f"CREATE INDEX {name}_by_start ON {name} (start_unix_nano)")


def rebuild_view(conn: sqlite3.Connection, tables: Sequence[str]) -> None:
    """The ``spans`` view over ``tables`` (inside the caller's transaction, with the change it follows)."""
    conn.execute(f"DROP VIEW IF EXISTS {VIEW}")
    union = " UNION ALL ".join(f"SELECT * FROM {table}" for table in tables)
    conn.execute(f"CREATE VIEW {VIEW} AS {union}")


def largest_span_pk(conn: sqlite3.Connection, tables: Sequence[str] | None = None) -> int:
    """The largest key any span had (one index seek per table), 0 for none."""
    tables = span_tables(conn) if tables is None else tables
    arms = " UNION ALL ".join(f"SELECT max(span_pk) AS k FROM {table}" for table in tables)
    (stored,) = conn.execute(f"SELECT coalesce(max(k), 0) FROM ({arms})").fetchone()
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SPAN_PK_HIGH_KEY,)).fetchone()
    return max(int(stored), int(row[0]) if row else 0)


def oldest_start(conn: sqlite3.Connection) -> int | None:
    """The earliest start of any span kept (one index seek per table; ``min`` over the view would scan)."""
    arms = " UNION ALL ".join(f"SELECT min(start_unix_nano) AS m FROM {table}" for table in span_tables(conn))
    (oldest,) = conn.execute(f"SELECT min(m) FROM ({arms})").fetchone()
    return None if oldest is None else int(oldest)


class SpanWindows:
    """The writer's view of the windows: which table each span goes to, which windows are due to go.

    Cached, and read again whenever the file's schema changed (another writer may have made a window).
    """

    def __init__(self) -> None:
        self._width_ns: int | None = None
        self._retention_ns: int | None = None
        self._schema_version: int | None = None
        self._windows: list[Window] = []
        self._starts: list[int] = []

    def use_retention(self, retention_seconds: int | None) -> None:
        """New windows are made only with a retention: without, every new span goes to ``spans_other``."""
        if retention_seconds:
            self._retention_ns = retention_seconds * _NS
            self._width_ns = window_seconds(retention_seconds) * _NS
        else:
            self._retention_ns = self._width_ns = None

    def forget(self) -> None:
        """Read the windows again next time (the store calls it when a transaction rolls back)."""
        self._schema_version = None

    def _refresh(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        if version != self._schema_version:
            self._windows = read_windows(conn)
            self._starts = [window.start for window in self._windows]
            self._schema_version = version

    def insert(
        self, conn: sqlite3.Connection, rows: Iterable[tuple[object, ...]], now_unix_nano: int
    ) -> None:
        """Insert prepared rows (without their key) into their windows' tables, keys numbered on from the
        largest; inside the caller's transaction, which also holds any window made for them."""
        self._refresh(conn)
        by_table: dict[str, list[tuple[object, ...]]] = defaultdict(list)
        made: list[Window] = []
        for row in rows:
            table = self._table_for(row[_START], now_unix_nano, made)  # type: ignore[arg-type]
            by_table[table].append(row)
        if made:
            self._schema_version = None  # until committed: a rollback must find the windows read again
            for window in made:
                create_span_table(conn, window.name)
            rebuild_view(conn, [OTHER, *(window.name for window in self._windows)])
        next_pk = largest_span_pk(conn, [OTHER, *(window.name for window in self._windows)]) + 1
        for table, table_rows in by_table.items():
            keyed = [(next_pk + index, *row) for index, row in enumerate(table_rows)]
            next_pk += len(keyed)
            conn.executemany(
                f"INSERT OR IGNORE INTO {table} ({_INSERT_COLUMNS}) "
                f"VALUES ({','.join('?' * (len(keyed[0])))})",
                keyed,
            )
        if made:
            (self._schema_version,) = conn.execute("PRAGMA schema_version").fetchone()

    def _table_for(self, start: int, now: int, made: list[Window]) -> str:
        index = bisect.bisect_right(self._starts, start) - 1
        if index >= 0 and start < self._windows[index].end:
            return self._windows[index].name
        width, retention = self._width_ns, self._retention_ns
        if width is None or retention is None or not now - retention <= start < now + FUTURE_WINDOWS * width:
            return OTHER
        # a new window, aligned on the width, cut where it would overlap a window made with another width
        begin = start - start % width
        end = begin + width
        if index >= 0:
            begin = max(begin, self._windows[index].end)
        if index + 1 < len(self._windows):
            end = min(end, self._windows[index + 1].start)
        window = Window(begin, end)
        self._windows.insert(index + 1, window)
        self._starts.insert(index + 1, begin)
        made.append(window)
        return window.name

    def expired(self, conn: sqlite3.Connection, cutoff_unix_nano: int) -> Window | None:
        """The earliest window whose every span started before the cutoff, if any."""
        self._refresh(conn)
        if self._windows and self._windows[0].end <= cutoff_unix_nano:
            return self._windows[0]
        return None

    def drop(self, conn: sqlite3.Connection, window: Window) -> int:
        """Drop the window whole (inside the caller's transaction); returns how many spans it held."""
        tables = [OTHER, *(w.name for w in self._windows)]
        high = largest_span_pk(conn, tables)
        (count,) = conn.execute(f"SELECT count(*) FROM {window.name}").fetchone()
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SPAN_PK_HIGH_KEY, str(high)))
        conn.execute(f"DROP TABLE {window.name}")
        rebuild_view(conn, [table for table in tables if table != window.name])
        self.forget()
        return int(count)
