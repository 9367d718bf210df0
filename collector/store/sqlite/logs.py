"""Log records in SQLite: prepared as rows, inserted, searched, read back as OTLP, deleted by age.

Each record is kept whole as its serialized OTLP ``LogRecord`` (lossless), next to the columns searches
filter on; resources and scopes are the spans' tables (stored once each). A record sent again (the same
resource, scope and record bytes: an exporter's retry) is stored once.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, LogsData, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from hopscope.collector.model.logs import LogFilter, LogLine
from hopscope.collector.stitch.log_records import (
    body_text,
    correlation_id,
    log_line,
    record_time,
    service_name,
)
from hopscope.collector.store.base import PreparedLogs, ReadBudget
from hopscope.collector.store.limits import SpanLimits, limit_log_record
from hopscope.collector.store.sqlite.spans import InternedIds, PreparedScope, resource_row_of, scope_row_of

# Trace ids bound in one ``IN (...)``.
_IDS_PER_QUERY = 500
# Records a retention step looks at for their arrival time (the first keys are the earliest arrivals).
_ARRIVALS_PER_STEP = 256

# Schema version 10: log records. The record's time (``record_time``) orders and places it; retention goes
# by the earlier of that time and its arrival (keys follow arrival), so a record dated in the future still
# expires.
LOGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    log_pk INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,               -- of resource, scope and record: a re-sent record is stored once
    time_unix_nano INTEGER NOT NULL,
    trace_id BLOB,                      -- NULL when the record names no trace
    severity_number INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    correlation_id TEXT,                -- NULL when the record has none
    body TEXT NOT NULL,                 -- the body as text, for searches
    resource_id INTEGER NOT NULL REFERENCES resources (resource_id),
    scope_id INTEGER NOT NULL REFERENCES scopes (scope_id),
    received_unix_nano INTEGER NOT NULL,
    record BLOB NOT NULL                -- serialized opentelemetry.proto.logs.v1.LogRecord
);
CREATE UNIQUE INDEX IF NOT EXISTS logs_by_digest ON logs (digest);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (time_unix_nano);
CREATE INDEX IF NOT EXISTS logs_by_trace ON logs (trace_id, time_unix_nano) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_by_correlation ON logs (correlation_id, time_unix_nano)
    WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS logs_by_service ON logs (service_name, time_unix_nano);
CREATE INDEX IF NOT EXISTS logs_by_resource ON logs (resource_id);
CREATE INDEX IF NOT EXISTS logs_by_scope ON logs (scope_id);
"""


@dataclass(frozen=True, slots=True)
class PreparedLogGroups(PreparedLogs):
    """One request's log records as SQLite rows, a group per (resource, scope)."""

    groups: list[PreparedScope]
    records: int


def prepare_logs(request: ExportLogsServiceRequest, limits: SpanLimits | None = None) -> PreparedLogGroups:
    """Turn a request into rows; pure CPU (the receiver's thread), cut to ``limits`` when given."""
    received = time.time_ns()
    groups: list[PreparedScope] = []
    records = 0
    for resource_logs in request.resource_logs:
        service = service_name(resource_logs.resource)
        resource_digest, resource_row = resource_row_of(resource_logs.resource, resource_logs.schema_url)
        for scope_logs in resource_logs.scope_logs:
            scope_digest, scope_row = scope_row_of(scope_logs.scope, scope_logs.schema_url)
            rows: list[tuple[object, ...]] = []
            for record in scope_logs.log_records:
                if limits is not None and _over_limits(record, limits):
                    limit_log_record(record, limits)
                blob = record.SerializeToString()
                at = record_time(record, received)
                rows.append(
                    (
                        hashlib.blake2b(resource_digest + scope_digest + blob, digest_size=16).digest(),
                        at,
                        record.trace_id if any(record.trace_id) else None,
                        int(record.severity_number),
                        service,
                        correlation_id(record) or None,
                        body_text(record.body),
                        received,
                        blob,
                    )
                )
            if rows:
                records += len(rows)
                groups.append(PreparedScope(resource_digest, resource_row, scope_digest, scope_row, rows))
    return PreparedLogGroups(groups, records)


def _over_limits(record: LogRecord, limits: SpanLimits) -> bool:
    """Only a record this long (or with this many attributes) can hold something to cut: most are not."""
    return len(record.attributes) > limits.max_attributes or record.ByteSize() > limits.max_value_length


def insert_logs(conn: sqlite3.Connection, batches: Iterable[PreparedLogGroups], ids: InternedIds) -> int:
    """Insert the records of ``batches`` (inside the caller's transaction); returns how many were given."""
    rows: list[tuple[object, ...]] = []
    for batch in batches:
        for group in batch.groups:
            group_ids = (ids.resource_id(conn, group), ids.scope_id(conn, group))
            rows.extend(row + group_ids for row in group.rows)
    conn.executemany(
        "INSERT OR IGNORE INTO logs (digest, time_unix_nano, trace_id, severity_number, service_name, "
        "correlation_id, body, received_unix_nano, record, resource_id, scope_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


def delete_logs_before(conn: sqlite3.Connection, cutoff_unix_nano: int, limit: int) -> int:
    """Delete at most ``limit`` records dated, or received, before the cutoff (the caller's transaction):
    by their time's index, then among the earliest keys, which are the earliest arrivals (as spans_other's
    retention does: no index of its own for the arrival time)."""
    deleted = conn.execute(
        "DELETE FROM logs WHERE log_pk IN (SELECT log_pk FROM logs WHERE time_unix_nano < ? "
        "ORDER BY time_unix_nano LIMIT ?)",
        (cutoff_unix_nano, limit),
    ).rowcount
    arrived = conn.execute(
        "SELECT log_pk, received_unix_nano FROM logs ORDER BY log_pk LIMIT ?",
        (min(_ARRIVALS_PER_STEP, max(0, limit - deleted)),),
    ).fetchall()
    old = [(log_pk,) for log_pk, received in arrived if received < cutoff_unix_nano]
    conn.executemany("DELETE FROM logs WHERE log_pk = ?", old)
    return deleted + len(old)


def referenced(conn: sqlite3.Connection, column: str, candidates: Sequence[int]) -> set[int]:
    """Which of these resource or scope ids (``column``) some log record still uses (index seeks)."""
    assert column in ("resource_id", "scope_id")
    query = f"SELECT 1 FROM logs WHERE {column} = ? LIMIT 1"
    return {candidate for candidate in candidates if conn.execute(query, (candidate,)).fetchone()}


# -- reading -------------------------------------------------------------------------------------------


def _where(criteria: LogFilter, trace_ids: Sequence[bytes]) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if trace_ids:
        clauses.append(f"trace_id IN ({','.join('?' * len(trace_ids))})")
        params.extend(trace_ids)
    if criteria.correlation_id is not None:
        clauses.append("correlation_id = ?")
        params.append(criteria.correlation_id)
    if criteria.service is not None:
        clauses.append("service_name = ?")
        params.append(criteria.service)
    if criteria.min_severity is not None:
        clauses.append("severity_number >= ?")
        params.append(criteria.min_severity)
    if criteria.text:
        escaped = criteria.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("body LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    if criteria.since_unix_nano is not None:
        clauses.append("time_unix_nano >= ?")
        params.append(criteria.since_unix_nano)
    if criteria.until_unix_nano is not None:
        clauses.append("time_unix_nano < ?")
        params.append(criteria.until_unix_nano)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def search_logs(
    conn: sqlite3.Connection, criteria: LogFilter, budget: ReadBudget | None = None
) -> list[LogLine]:
    """See ``LogReader.search_logs``: the keys, times and sizes of the matches first (a flow's traces a
    chunk of trace ids at a time, merged), then only the records kept are loaded and decoded."""
    if criteria.limit <= 0:
        return []
    order = "DESC" if criteria.newest_first else "ASC"
    trace_chunks = [
        criteria.trace_ids[first : first + _IDS_PER_QUERY]
        for first in range(0, len(criteria.trace_ids), _IDS_PER_QUERY)
    ] or [()]
    found: list[tuple[int, int, int]] = []
    for trace_ids in trace_chunks:
        where, params = _where(criteria, trace_ids)
        found.extend(
            conn.execute(
                f"SELECT time_unix_nano, log_pk, length(record) FROM logs{where} "
                f"ORDER BY time_unix_nano {order}, log_pk {order} LIMIT ?",
                [*params, criteria.limit],
            ).fetchall()
        )
    if len(trace_chunks) > 1:
        found.sort(reverse=criteria.newest_first)
    found = found[: criteria.limit]
    if budget is not None:
        found = list(itertools.takewhile(lambda row: budget.take(row[2]), found))
    by_pk: dict[int, tuple[int, int, int, bytes]] = {}
    keys = [log_pk for _, log_pk, _ in found]
    for first in range(0, len(keys), _IDS_PER_QUERY):
        chunk = keys[first : first + _IDS_PER_QUERY]
        query = (
            "SELECT log_pk, resource_id, scope_id, received_unix_nano, record FROM logs "
            f"WHERE log_pk IN ({','.join('?' * len(chunk))})"
        )
        by_pk.update({row[0]: row[1:] for row in conn.execute(query, chunk)})
    rows = [by_pk[log_pk] for log_pk in keys if log_pk in by_pk]  # retention may delete meanwhile
    resources = _resources(conn, {row[0] for row in rows})
    scopes = _scopes(conn, {row[1] for row in rows})
    return [
        log_line(LogRecord.FromString(blob), resources[resource_id][1], scopes[scope_id][1], received)
        for resource_id, scope_id, received, blob in rows
    ]


def get_logs(
    conn: sqlite3.Connection, trace_ids: Sequence[bytes], limit: int, budget: ReadBudget | None = None
) -> LogsData:
    """See ``LogReader.get_logs``: the earliest ``limit`` records of the traces (within ``budget``, sizes
    read first), grouped as OTLP."""
    logs = LogsData()
    if not trace_ids or limit <= 0:
        return logs
    found: list[tuple[int, int, int]] = []
    for first in range(0, len(trace_ids), _IDS_PER_QUERY):
        chunk = list(trace_ids[first : first + _IDS_PER_QUERY])
        found.extend(
            conn.execute(
                "SELECT time_unix_nano, log_pk, length(record) FROM logs "
                f"WHERE trace_id IN ({','.join('?' * len(chunk))}) ORDER BY time_unix_nano, log_pk LIMIT ?",
                [*chunk, limit],
            ).fetchall()
        )
    found = sorted(found)[:limit]
    if budget is not None:
        found = list(itertools.takewhile(lambda row: budget.take(row[2]), found))
    keys = [log_pk for _, log_pk, _ in found]
    by_pk: dict[int, tuple[int, int, int, int, int, bytes]] = {}
    for first in range(0, len(keys), _IDS_PER_QUERY):
        wanted = keys[first : first + _IDS_PER_QUERY]
        query = (
            "SELECT time_unix_nano, log_pk, resource_id, scope_id, received_unix_nano, record FROM logs "
            f"WHERE log_pk IN ({','.join('?' * len(wanted))})"
        )
        by_pk.update({row[1]: row for row in conn.execute(query, wanted)})
    rows = [by_pk[log_pk] for log_pk in keys if log_pk in by_pk]
    resources = _resources(conn, {row[2] for row in rows})
    scopes = _scopes(conn, {row[3] for row in rows})
    by_resource: dict[int, ResourceLogs] = {}
    by_scope: dict[tuple[int, int], ScopeLogs] = {}
    for _, _, resource_id, scope_id, _, blob in rows:
        resource_logs = by_resource.get(resource_id)
        if resource_logs is None:
            schema_url, resource = resources[resource_id]
            resource_logs = logs.resource_logs.add(schema_url=schema_url)
            resource_logs.resource.CopyFrom(resource)
            by_resource[resource_id] = resource_logs
        scope_logs = by_scope.get((resource_id, scope_id))
        if scope_logs is None:
            schema_url, scope = scopes[scope_id]
            scope_logs = resource_logs.scope_logs.add(schema_url=schema_url)
            scope_logs.scope.CopyFrom(scope)
            by_scope[(resource_id, scope_id)] = scope_logs
        scope_logs.log_records.append(LogRecord.FromString(blob))
    return logs


def count_logs(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM logs").fetchone()[0])


def _resources(conn: sqlite3.Connection, ids: set[int]) -> dict[int, tuple[str, Resource]]:
    return {
        key: (schema_url, Resource.FromString(blob))
        for key, (schema_url, blob) in _load(
            conn, "resources", "resource_id", "schema_url, resource", ids
        ).items()
    }


def _scopes(conn: sqlite3.Connection, ids: set[int]) -> dict[int, tuple[str, InstrumentationScope]]:
    loaded = _load(conn, "scopes", "scope_id", "schema_url, scope", ids)
    return {
        key: (schema_url, InstrumentationScope.FromString(blob)) for key, (schema_url, blob) in loaded.items()
    }


def _load(
    conn: sqlite3.Connection, table: str, key: str, columns: str, ids: set[int]
) -> dict[int, tuple[str, bytes]]:
    wanted = sorted(ids)
    found: dict[int, tuple[str, bytes]] = {}
    for first in range(0, len(wanted), _IDS_PER_QUERY):
        chunk = wanted[first : first + _IDS_PER_QUERY]
        query = f"SELECT {key}, {columns} FROM {table} WHERE {key} IN ({','.join('?' * len(chunk))})"
        found.update({row[0]: (row[1], row[2]) for row in conn.execute(query, chunk)})
    return found
