"""One small client interface over the two ways hopscope talks to ClickHouse.

``chdb`` runs the ClickHouse engine inside this process (one data path per process, so tests share one);
``clickhouse-connect`` talks HTTP to a server or cluster. The store's SQL is the same on both: parameters are
bound server-side with ClickHouse's ``{name:Type}`` syntax, and every query returns plain Python values
(ints, strings, lists, dicts), because the store selects timestamps as integer nanoseconds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import re
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit

from hopscope.collector.store.errors import ClickHouseError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Integers above 2**53 must reach Python exactly: JSON output quotes them unless told not to.
_READ_SETTINGS = "output_format_json_quote_64bit_integers=0"


class ClickHouseClient(Protocol):
    database: str

    def command(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... SELECT, ALTER)."""

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[list[Any]]:
        """Rows of a SELECT as lists of plain Python values."""

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        datetime_columns: Collection[str] = (),
    ) -> None:
        """Insert rows; values of ``datetime_columns`` (and arrays of them) are integer nanoseconds."""

    def close(self) -> None:
        """Release the connection."""


def check_identifier(name: str) -> str:
    """Database and table names go into SQL text, so only plain identifiers are accepted."""
    if not _IDENTIFIER.match(name):
        raise ClickHouseError(f"invalid ClickHouse identifier {name!r}: use letters, digits and _")
    return name


_ESCAPED = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
)


def _literal(value: object) -> str:
    """A parameter value in the text form ClickHouse parses ``{name:Type}`` parameters from."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # parsed in ClickHouse's escaped (TSV) form: backslashes and control characters are escaped
        return value.translate(_ESCAPED)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ",".join(_quoted(item) for item in value) + "]"
    raise ClickHouseError(f"unsupported parameter type {type(value).__name__}")


def _quoted(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _literal(value)


def _column_runs(is_time: Sequence[bool]) -> list[tuple[bool, int, int]]:
    """Consecutive columns of one kind (time or not) as (is_time, start, end) slices of a row."""
    runs: list[tuple[bool, int, int]] = []
    for index, flag in enumerate(is_time):
        if runs and runs[-1][0] == flag:
            runs[-1] = (flag, runs[-1][1], index + 1)
        else:
            runs.append((flag, index, index + 1))
    return runs


def _seconds_text(nanos: int) -> str:
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


class ChdbClient:
    """ClickHouse in-process. chdb allows one data path per process, and its session is not thread-safe,
    so every call holds one process-wide lock."""

    _lock = threading.Lock()
    _sessions: ClassVar[dict[str, Any]] = {}

    def __init__(self, path: str, database: str) -> None:
        from chdb import session  # noqa: PLC0415 - the [clickhouse] extra, only when asked for

        self.database = check_identifier(database)
        with self._lock:
            existing = self._sessions.get("path")
            if existing is not None and existing[0] != path:
                raise ClickHouseError(
                    f"chdb can open one data path per process: {existing[0]} is open, {path} was asked for"
                )
            if existing is None:
                try:
                    self._sessions["path"] = (path, session.Session(path))  # type: ignore[no-untyped-call]
                except Exception as exc:
                    raise ClickHouseError(f"cannot open chdb at {path}: {exc}") from exc
                # Closed before the interpreter tears itself down: left to finalization, the embedded
                # engine can crash the exiting process (seen after Streamlit's script threads used it).
                atexit.register(_close_sessions)
            self._session = self._sessions["path"][1]
            self._run(f"CREATE DATABASE IF NOT EXISTS {self.database}", None, None)

    def _run(self, sql: str, params: Mapping[str, object] | None, fmt: str | None) -> bytes:
        text = {key: _literal(value) for key, value in (params or {}).items()}
        try:
            result = (
                self._session.query(sql, fmt or "CSV", params=text)
                if text
                else self._session.query(sql, fmt or "CSV")
            )
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return bytes(result.bytes()) if result is not None else b""

    def command(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        with self._lock:
            self._run(sql, params, None)

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[list[Any]]:
        with self._lock:
            data = self._run(f"{sql} SETTINGS {_READ_SETTINGS}", params, "JSONCompactEachRow")
        return [json.loads(line) for line in data.splitlines() if line]

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        datetime_columns: Collection[str] = (),
    ) -> None:
        if not rows:
            return
        # Times go in as bare decimal seconds: ClickHouse reads a quoted "0.000000001" as a malformed date
        # (and a quoted "1" as 2026-01-01), so quoting them would make early times fail or lie.
        runs = _column_runs([column in datetime_columns for column in columns])
        lines = []
        for row in rows:
            parts = []
            for is_time, start, end in runs:
                if not is_time:
                    parts.append(json.dumps(row[start:end], separators=(",", ":"))[1:-1])
                    continue
                for value in row[start:end]:
                    parts.append(
                        "[" + ",".join(_seconds_text(v) for v in value) + "]"
                        if isinstance(value, list)
                        else _seconds_text(value)  # type: ignore[arg-type]
                    )
            lines.append("[" + ",".join(parts) + "]")
        names = ", ".join(f"`{column}`" for column in columns)
        # JSONCompactEachRow (a list per row) parses about twice as fast as JSONEachRow here.
        with self._lock:
            self._run(
                f"INSERT INTO {table} ({names}) FORMAT JSONCompactEachRow\n" + "\n".join(lines), None, None
            )

    def close(self) -> None:
        """The chdb session stays open for the life of the process (it cannot be reopened elsewhere)."""


def _close_sessions() -> None:
    with ChdbClient._lock:
        for _path, session in ChdbClient._sessions.values():
            with contextlib.suppress(Exception):
                session.close()
        ChdbClient._sessions.clear()


class HttpClient:
    """A ClickHouse server or cluster over HTTP(S), through clickhouse-connect."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect  # noqa: PLC0415 - the [clickhouse] extra, only when asked for

        # Failures reach the caller as ClickHouseError; the driver's retry warnings would only repeat them.
        for name in ("urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(name).setLevel(logging.ERROR)

        parts = urlsplit(url)
        database = parts.path.strip("/") or "default"
        self.database = check_identifier(database)
        self._lock = threading.Lock()
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname or "localhost",
                port=parts.port or (8443 if parts.scheme == "clickhouses" else 8123),
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                secure=parts.scheme == "clickhouses",
                database="default",
                settings={"output_format_json_quote_64bit_integers": 0},
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        except Exception as exc:
            raise ClickHouseError(f"cannot reach ClickHouse at {parts.hostname}:{parts.port}: {exc}") from exc

    def command(self, sql: str, params: Mapping[str, object] | None = None) -> None:
        try:
            with self._lock:
                self._client.command(sql, parameters=dict(params or {}))
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> list[list[Any]]:
        try:
            with self._lock:
                result = self._client.query(sql, parameters=dict(params or {}))
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return [list(row) for row in result.result_rows]

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[object]],
        datetime_columns: Collection[str] = (),
    ) -> None:
        if not rows:
            return
        database, _, name = table.rpartition(".")
        try:
            with self._lock:
                self._client.insert(name, [list(row) for row in rows], column_names=list(columns),
                                    database=database or self.database)  # fmt: skip
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()
