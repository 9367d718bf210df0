"""RED rollups in SQLite: per service, operation, span kind and minute, kept up to date while stitching.

Queries over hours or days read a few rows per minute instead of every span. Spans of each role
(``model/red.py``: invocation, per-record, other entry) have rows of their own, told apart in the ``kind``
column, which holds the span kind plus ``ROLE_STEP`` times the role, so that no migration was needed: an
invocation span and its per-record spans share a name, kind and service (``process orders``, CONSUMER)
and would otherwise fold into one row. Rows folded before this rule have the ENTRY role.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.model.red import FAAS_INVOCATION_ID, Rollup, RollupRow, SpanRole, span_role
from hopscope.collector.stitch.facts import Attribute
from hopscope.collector.stitch.guard import saturating_add

BUCKET_NS = 60 * 1_000_000_000
_INT64_MAX = 2**63 - 1
_ERROR = Status.StatusCode.STATUS_CODE_ERROR
_CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER
_SERVER = Span.SpanKind.SPAN_KIND_SERVER  # span_role is asked about these two kinds
# The ``kind`` column holds kind + ROLE_STEP * role (OTLP kinds are 0 to 5).
ROLE_STEP = 256

RollupKey = tuple[str, str, int, int]  # service, operation, kind, bucket start


class RedRollups:
    """Collects one stitching chunk's spans into rollups, then folds them into the table."""

    def __init__(self) -> None:
        self.rollups: dict[RollupKey, Rollup] = {}

    def add(self, span: Span, service_name: str, attributes: Iterable[Attribute] | None = None) -> None:
        """Count a span; ``attributes``: its attributes as (key, value), or any part of them holding those
        that ``span_role`` reads, when the caller has them at hand."""
        start = span.start_time_unix_nano
        kind = span.kind
        role = SpanRole.ENTRY
        if kind == _CONSUMER:
            if attributes is None:
                names = {kv.key for kv in span.attributes}
            else:
                names = {name for name, _ in attributes}
            role = span_role(True, names)
        elif kind == _SERVER:  # span_role reads only FAAS_INVOCATION_ID of a server span: stop at it
            for name in (
                (kv.key for kv in span.attributes) if attributes is None else (a[0] for a in attributes)
            ):
                if name == FAAS_INVOCATION_ID:
                    role = span_role(False, (FAAS_INVOCATION_ID,))
                    break
        key = (service_name, span.name, kind + ROLE_STEP * role, start - start % BUCKET_NS)
        rollup = self.rollups.get(key)
        if rollup is None:
            rollup = self.rollups[key] = Rollup()
        duration = max(0, span.end_time_unix_nano - start)
        rollup.span_count += 1
        rollup.duration_sum_ns = saturating_add(rollup.duration_sum_ns, duration)
        rollup.histogram[latency_histogram.bin_of(duration)] += 1
        if span.status.code == _ERROR:
            rollup.error_count += 1

    def apply(self, conn: sqlite3.Connection) -> None:
        rows = []
        for key, delta in self.rollups.items():
            existing = conn.execute(
                "SELECT span_count, error_count, duration_sum_ns, histogram FROM red_rollups "
                "WHERE bucket_start_unix_nano = ? AND service_name = ? AND operation = ? AND kind = ?",
                (key[3], key[0], key[1], key[2]),
            ).fetchone()
            if existing is not None:
                count, errors, total, histogram = existing
                delta.add(Rollup(count, errors, total, latency_histogram.decode(histogram)))
            rows.append(
                (
                    *key,
                    delta.span_count,
                    delta.error_count,
                    delta.duration_sum_ns,
                    latency_histogram.encode(delta.histogram),
                )
            )
        conn.executemany(
            "INSERT OR REPLACE INTO red_rollups (service_name, operation, kind, bucket_start_unix_nano, "
            "span_count, error_count, duration_sum_ns, histogram) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def read_rollups(
    conn: sqlite3.Connection,
    since_unix_nano: int,
    until_unix_nano: int,
    *,
    service: str | None = None,
    operation: str | None = None,
    kinds: Iterable[int] = (),
    step_ns: int | None = None,
) -> list[RollupRow]:
    """Rollup rows whose minute starts in [since, until), filtered (``kinds`` takes their rows of every
    role: each row says its ``role``).

    With ``step_ns``, rows are merged per service, operation, kind and step: steps of ``step_ns`` from
    ``since``, each row's start being its step's (the minute ``since`` falls in belongs to the first step).
    """
    lo = since_unix_nano - since_unix_nano % BUCKET_NS
    where = ["bucket_start_unix_nano >= ?", "bucket_start_unix_nano < ?"]
    params: list[object] = []
    if service is not None:
        where.append("service_name = ?")
        params.append(service)
    if operation is not None:
        where.append("operation = ?")
        params.append(operation)
    kind_list = [kind + ROLE_STEP * role for kind in kinds for role in SpanRole]
    if kind_list:
        where.append(f"kind IN ({','.join('?' * len(kind_list))})")
        params.extend(kind_list)
    if step_ns is not None:
        return _read_steps(
            conn,
            " AND ".join(where),
            params,
            since_unix_nano=since_unix_nano,
            until_unix_nano=until_unix_nano,
            step_ns=step_ns,
        )
    query = (
        "SELECT service_name, operation, kind, bucket_start_unix_nano, span_count, error_count, "
        f"duration_sum_ns, histogram FROM red_rollups WHERE {' AND '.join(where)}"
    )
    return [
        RollupRow(
            s,
            o,
            k % ROLE_STEP,
            b,
            Rollup(count, errors, total, latency_histogram.decode(histogram)),
            SpanRole(k // ROLE_STEP),
        )
        for s, o, k, b, count, errors, total, histogram in conn.execute(query, [lo, until_unix_nano, *params])
    ]


# Minutes one statement merges at most (a week): the concatenated histograms of one merged row stay far under
# SQLite's longest string (a billion bytes) whatever range is asked for.
_MERGE_NS = 7 * 24 * 3600 * 1_000_000_000


def merge_windows(conn: sqlite3.Connection, table: str, lo: int, until: int) -> Iterator[tuple[int, int]]:
    """Stretches [lo, hi) of at most a week that cover every minute row of ``table`` in [lo, until), the
    empty ones between them skipped (a range since 1970 is a few reads, not one per week)."""
    while lo < until:
        first = conn.execute(
            f"SELECT bucket_start_unix_nano FROM {table} WHERE bucket_start_unix_nano >= ? "
            "AND bucket_start_unix_nano < ? ORDER BY bucket_start_unix_nano LIMIT 1",
            (lo, until),
        ).fetchone()
        if first is None:
            return
        hi = min(until, first[0] + _MERGE_NS)
        yield first[0], hi
        lo = hi


def _read_steps(
    conn: sqlite3.Connection,
    where: str,
    params: list[object],
    *,
    since_unix_nano: int,
    until_unix_nano: int,
    step_ns: int,
) -> list[RollupRow]:
    """The rows of ``where`` (its first two parameters: the minutes' bounds, then ``params``), merged per
    service, operation, kind and step by SQLite.

    Decoding each minute's histogram was the cost (a day of 20 services' entry spans: 40,000 rows, 0.5 s):
    SQLite sums the counts and concatenates the histograms of each merged row, parsed once
    (``merge_encoded``). Durations are summed as whole seconds and the nanoseconds left over, so that no
    SUM overflows (a sum at the 64-bit limit stays there, as ``Rollup.add`` keeps it). Steps are merged a
    week of minutes at a time (a step longer than that comes back in parts, each with the step's start).
    """
    since, step_ns = int(since_unix_nano), int(step_ns)  # written into the statement: numbers only
    step = (
        f"CASE WHEN bucket_start_unix_nano <= {since} THEN {since} "
        f"ELSE {since} + (bucket_start_unix_nano - {since}) / {step_ns} * {step_ns} END"
    )
    query = (
        f"SELECT service_name, operation, kind, {step} AS step, SUM(span_count), SUM(error_count), "
        "SUM(duration_sum_ns / 1000000000), SUM(duration_sum_ns % 1000000000), group_concat(histogram, '') "
        f"FROM red_rollups WHERE {where} GROUP BY service_name, operation, kind, step"
    )
    rows: list[RollupRow] = []
    first_minute = since_unix_nano - since_unix_nano % BUCKET_NS
    for lo, hi in merge_windows(conn, "red_rollups", first_minute, until_unix_nano):
        rows.extend(
            RollupRow(
                s,
                o,
                k % ROLE_STEP,
                b,
                Rollup(
                    count,
                    errors,
                    min(seconds * 1_000_000_000 + nanoseconds, _INT64_MAX),
                    latency_histogram.merge_encoded(histograms),
                ),
                SpanRole(k // ROLE_STEP),
            )
            for s, o, k, b, count, errors, seconds, nanoseconds, histograms in conn.execute(
                query, [lo, hi, *params]
            )
        )
    return rows
