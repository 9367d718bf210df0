"""Spans in SQLite: prepared as rows, inserted, read back as OTLP, deleted by age.

Each span is kept whole as its serialized OTLP ``Span`` message (lossless by construction: every field,
attribute type, event, link and dropped count survives), next to the columns that queries filter on.
Resources and instrumentation scopes are stored once each and referenced by id. A span sent again (same
trace and span id) is stored once: the first copy stays.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from hopscope.collector.store.base import PreparedSpans, ReadBudget
from hopscope.collector.store.limits import SpanLimits, limit_span
from hopscope.collector.store.sqlite.windows import OTHER, SPAN_PK_HIGH_KEY, SpanWindows, largest_span_pk

_UNKNOWN_SERVICE = "unknown_service"
# Rows of spans_other that a retention step looks at for their arrival time (the first are the oldest).
_ARRIVALS_PER_STEP = 256
# Span keys bound in one ``IN (...)`` of a budgeted read.
_IDS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class PreparedScope:
    """The rows of one (resource, scope) group of a request, ready for the writer thread."""

    resource_digest: bytes
    resource: Mapping[str, object]
    scope_digest: bytes
    scope: Mapping[str, object]
    rows: Sequence[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class PreparedScopes(PreparedSpans):
    """One request's spans as SQLite rows, a group per (resource, scope): what ``prepare`` returns."""

    scopes: list[PreparedScope]


# -- writing -------------------------------------------------------------------------------------------


def prepare_spans(request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> PreparedScopes:
    """Turn a request into rows; pure CPU, so the receiver runs it and the writer thread only writes.

    With ``limits``, a span whose encoding is longer than the value length limit is cut to the limits
    (only such a span can hold a value that long): its size is known here for free.
    """
    received = time.time_ns()
    prepared: list[PreparedScope] = []
    for resource_spans in request.resource_spans:
        service_name = _service_name(resource_spans.resource)
        resource_digest, resource_row = resource_row_of(resource_spans.resource, resource_spans.schema_url)
        for scope_spans in resource_spans.scope_spans:
            rows: list[tuple[object, ...]] = [
                (
                    span.trace_id,
                    span.span_id,
                    span.parent_span_id or None,
                    span.name,
                    span.kind,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    span.status.code,
                    service_name,
                    received,
                    span.SerializeToString(),
                )
                for span in scope_spans.spans
            ]
            if limits is not None:
                _limit_long_spans(rows, scope_spans.spans, limits)
            if rows:
                scope_digest, scope_row = scope_row_of(scope_spans.scope, scope_spans.schema_url)
                prepared.append(PreparedScope(resource_digest, resource_row, scope_digest, scope_row, rows))
    return PreparedScopes(prepared)


def resource_row_of(resource: Resource, schema_url: str) -> tuple[bytes, dict[str, object]]:
    """A resource's digest and its row of ``resources`` (stored once, for spans and log records alike)."""
    blob = resource.SerializeToString()
    row: dict[str, object] = {"service_name": _service_name(resource), "schema_url": schema_url}
    row["resource"] = blob
    return digest(blob, schema_url), row


def scope_row_of(scope: InstrumentationScope, schema_url: str) -> tuple[bytes, dict[str, object]]:
    """An instrumentation scope's digest and its row of ``scopes``."""
    blob = scope.SerializeToString()
    row: dict[str, object] = {"name": scope.name, "version": scope.version, "schema_url": schema_url}
    row["scope"] = blob
    return digest(blob, schema_url), row


class InternedIds:
    """The ids of the resources and scopes stored so far, so that each is looked up once per process.

    Cleared when a write transaction rolls back: ids cached during it may point at rows that are gone.
    """

    def __init__(self) -> None:
        self._resource_ids: dict[bytes, int] = {}
        self._scope_ids: dict[bytes, int] = {}

    def clear(self) -> None:
        self._resource_ids.clear()
        self._scope_ids.clear()

    def resource_id(self, conn: sqlite3.Connection, group: PreparedScope) -> int:
        cached = self._resource_ids.get(group.resource_digest)
        if cached is None:
            cached = _intern(conn, "resources", "resource_id", group.resource_digest, group.resource)
            self._resource_ids[group.resource_digest] = cached
        return cached

    def scope_id(self, conn: sqlite3.Connection, group: PreparedScope) -> int:
        cached = self._scope_ids.get(group.scope_digest)
        if cached is None:
            cached = _intern(conn, "scopes", "scope_id", group.scope_digest, group.scope)
            self._scope_ids[group.scope_digest] = cached
        return cached


def insert_spans(
    conn: sqlite3.Connection,
    batches: Iterable[PreparedScopes],
    ids: InternedIds,
    windows: SpanWindows,
    now_unix_nano: int | None = None,
) -> int:
    """Insert the spans of ``batches`` into their windows' tables (inside the caller's transaction);
    returns how many were given.

    A span already stored (same trace and span id) is ignored, so a re-sent span is stored once.
    """
    rows: list[tuple[object, ...]] = []
    for batch in batches:
        for group in batch.scopes:
            group_ids = (ids.resource_id(conn, group), ids.scope_id(conn, group))
            rows.extend(row + group_ids for row in group.rows)
    if rows:
        windows.insert(conn, rows, time.time_ns() if now_unix_nano is None else now_unix_nano)
    return len(rows)


def last_span_pk(conn: sqlite3.Connection) -> int:
    """The key of the newest span stored (spans are stitched in key order); 0 for none."""
    return largest_span_pk(conn)


def delete_other_spans_before(conn: sqlite3.Connection, cutoff_unix_nano: int, limit: int) -> int:
    """Delete at most ``limit`` rows of ``spans_other`` (windows.py) that started, or arrived, before the
    cutoff (inside the caller's transaction). Keys never go back: the largest is noted in ``meta`` first.
    """
    high = str(largest_span_pk(conn))
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SPAN_PK_HIGH_KEY, high))
    deleted = conn.execute(
        f"DELETE FROM {OTHER} WHERE span_pk IN "
        f"(SELECT span_pk FROM {OTHER} WHERE start_unix_nano < ? LIMIT ?)",
        (cutoff_unix_nano, limit),
    ).rowcount
    # rows from the future go by their arrival, which follows the keys: the first ones by key are the oldest
    arrived = conn.execute(
        f"SELECT span_pk, received_unix_nano FROM {OTHER} ORDER BY span_pk LIMIT ?",
        (min(_ARRIVALS_PER_STEP, max(0, limit - deleted)),),
    ).fetchall()
    old = [(span_pk,) for span_pk, received in arrived if received < cutoff_unix_nano]
    conn.executemany(f"DELETE FROM {OTHER} WHERE span_pk = ?", old)
    return deleted + len(old)


# -- reading -------------------------------------------------------------------------------------------


def read_trace(
    conn: sqlite3.Connection, trace_id: bytes, budget: ReadBudget | None = None
) -> TracesData | None:
    """Every stored span of one trace grouped by resource and scope (see ``TraceReader.get_trace``)."""
    rows: list[tuple[int, int, bytes]] | None
    if budget is None:
        rows = conn.execute(
            "SELECT resource_id, scope_id, span FROM spans WHERE trace_id = ? "
            "ORDER BY start_unix_nano, span_pk",
            (trace_id,),
        ).fetchall()
    else:
        rows = _rows_within(conn, trace_id, budget)
    if rows is None or (not rows and budget is None):
        return None
    resources = _load(conn, "resources", "resource_id", "schema_url, resource", {r[0] for r in rows})
    scopes = _load(conn, "scopes", "scope_id", "schema_url, scope", {r[1] for r in rows})
    traces = TracesData()
    by_resource: dict[int, ResourceSpans] = {}
    by_scope: dict[tuple[int, int], ScopeSpans] = {}
    for resource_id, scope_id, span_blob in rows:
        resource_spans = by_resource.get(resource_id)
        if resource_spans is None:
            schema_url, blob = resources[resource_id]
            resource_spans = traces.resource_spans.add(schema_url=schema_url)
            resource_spans.resource.CopyFrom(Resource.FromString(blob))
            by_resource[resource_id] = resource_spans
        scope_spans = by_scope.get((resource_id, scope_id))
        if scope_spans is None:
            schema_url, blob = scopes[scope_id]
            scope_spans = resource_spans.scope_spans.add(schema_url=schema_url)
            scope_spans.scope.CopyFrom(InstrumentationScope.FromString(blob))
            by_scope[(resource_id, scope_id)] = scope_spans
        scope_spans.spans.append(Span.FromString(span_blob))
    return traces


def _load(
    conn: sqlite3.Connection, table: str, key: str, columns: str, ids: Iterable[int]
) -> dict[int, tuple[str, bytes]]:
    wanted = sorted(ids)
    marks = ",".join("?" * len(wanted))
    query = f"SELECT {key}, {columns} FROM {table} WHERE {key} IN ({marks})"
    return {row[0]: (row[1], row[2]) for row in conn.execute(query, wanted)}


def _rows_within(
    conn: sqlite3.Connection, trace_id: bytes, budget: ReadBudget
) -> list[tuple[int, int, bytes]] | None:
    """The trace's rows that fit the budget, earliest start first; None when it has no span stored.

    Sizes come first (``length`` reads no blob) and blobs only for the spans kept, so a trace of a
    million spans, or one span of a million attributes, costs no more than the budget.
    """
    sizes = conn.execute(
        "SELECT span_pk, length(span) FROM spans WHERE trace_id = ? "
        "ORDER BY start_unix_nano, span_pk LIMIT ?",
        (trace_id, budget.spans + 1),
    ).fetchall()
    if not sizes:
        return None
    kept = [span_pk for span_pk, size in itertools.takewhile(lambda row: budget.take(row[1]), sizes)]
    by_pk: dict[int, tuple[int, int, bytes]] = {}
    for first in range(0, len(kept), _IDS_PER_QUERY):
        chunk = kept[first : first + _IDS_PER_QUERY]
        query = (
            "SELECT span_pk, resource_id, scope_id, span FROM spans "
            f"WHERE span_pk IN ({','.join('?' * len(chunk))})"
        )
        for span_pk, resource_id, scope_id, span in conn.execute(query, chunk):
            by_pk[span_pk] = (resource_id, scope_id, span)
    return [by_pk[span_pk] for span_pk in kept if span_pk in by_pk]  # retention may delete meanwhile


def read_traces(
    conn: sqlite3.Connection, trace_ids: Iterable[bytes], budget: ReadBudget | None = None
) -> TracesData:
    """Several traces in one document (empty when none is stored); a budget is spent trace by trace."""
    combined = TracesData()
    for trace_id in trace_ids:
        traces = read_trace(conn, trace_id, budget)
        if traces is not None:
            combined.resource_spans.extend(traces.resource_spans)
        if budget is not None and budget.truncated:
            break
    return combined


def count_spans(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT count(*) FROM spans").fetchone()
    return int(count)


def has_spans(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM spans LIMIT 1").fetchone() is not None


# -- helpers -------------------------------------------------------------------------------------------

_BLOB = 10  # the serialized span's place in a prepared row


def _limit_long_spans(rows: list[tuple[object, ...]], spans: Sequence[Span], limits: SpanLimits) -> None:
    longest = limits.max_value_length
    for index, row in enumerate(rows):
        if len(row[_BLOB]) > longest:  # type: ignore[arg-type]
            span = spans[index]
            limit_span(span, limits)
            rows[index] = (*row[:_BLOB], span.SerializeToString())


def span_label(blob: bytes) -> str:
    """A stored span's ``trace/span`` ids in hex, for the log of a span left out of flows."""
    try:
        span = Span.FromString(blob)
    except Exception:  # the label of a span that cannot even be parsed
        return "<unparsable span>"
    return f"{span.trace_id.hex()}/{span.span_id.hex()}"


def digest(blob: bytes, schema_url: str) -> bytes:
    return hashlib.blake2b(blob + b"\0" + schema_url.encode(), digest_size=16).digest()


def _intern(
    conn: sqlite3.Connection, table: str, id_column: str, digest: bytes, columns: Mapping[str, object]
) -> int:
    """The id of the row with this digest, inserted first if new (resources and scopes are stored once)."""
    names = ", ".join(["digest", *columns])
    marks = ", ".join("?" * (len(columns) + 1))
    conn.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", (digest, *columns.values()))
    (row_id,) = conn.execute(f"SELECT {id_column} FROM {table} WHERE digest = ?", (digest,)).fetchone()
    return int(row_id)


def _service_name(resource: Resource) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name" and attribute.value.HasField("string_value"):
            return attribute.value.string_value or _UNKNOWN_SERVICE
    return _UNKNOWN_SERVICE
