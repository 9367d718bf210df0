"""RED rollups in ClickHouse: per service, operation, span kind and minute, aggregated from ``otel_traces``
at query time (SQLite keeps them as a table, updated while stitching: ``store/sqlite/red.py``).

A span stored twice (a Collector's retry) counts twice here; SQLite stores it once. Spans of each role
(``model/red.py``: invocation, per-record, other entry) are grouped apart, as in SQLite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hopscope.collector.model.red import FAAS_INVOCATION_ID, FAAS_TRIGGER, Rollup, RollupRow, SpanRole
from hopscope.collector.store.clickhouse import graph as clickhouse_graph
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.spans import ERROR_STATUS_NAMES, KIND_BY_NAME, kind_names

BUCKET_NS = 60 * 1_000_000_000
_BIN = clickhouse_graph.bin_sql("Duration")
_ERROR = "StatusCode IN ('" + "', '".join(ERROR_STATUS_NAMES) + "')"
# model/red.py's span_role, in SQL.
_CONSUMER_SQL = "SpanKind IN ('" + "', '".join(kind_names(Span.SpanKind.SPAN_KIND_CONSUMER)) + "')"
_SERVER_SQL = "SpanKind IN ('" + "', '".join(kind_names(Span.SpanKind.SPAN_KIND_SERVER)) + "')"
_ROLE = (
    f"multiIf(NOT ({_CONSUMER_SQL} OR {_SERVER_SQL}) "
    f"OR NOT mapContains(SpanAttributes, '{FAAS_INVOCATION_ID}'), {SpanRole.ENTRY:d}, "
    f"{_CONSUMER_SQL} "
    f"AND NOT mapContains(SpanAttributes, '{FAAS_TRIGGER}'), {SpanRole.PER_RECORD:d}, "
    f"{SpanRole.INVOCATION:d})"
)


def read_rollups(
    client: ClickHouseClient,
    since_unix_nano: int,
    until_unix_nano: int,
    *,
    service: str | None = None,
    operation: str | None = None,
    kinds: Sequence[int] = (),
) -> list[RollupRow]:
    """Per-minute RED rollups, aggregated from the spans at query time."""
    where = [
        "Timestamp >= fromUnixTimestamp64Nano({since:Int64})",
        "Timestamp < fromUnixTimestamp64Nano({until:Int64})",
        clickhouse_graph.USABLE_TIMES_SQL,
    ]
    params: dict[str, object] = {
        "since": since_unix_nano - since_unix_nano % BUCKET_NS,
        "until": until_unix_nano,
    }
    if service is not None:
        where.append("ServiceName = {service:String}")
        params["service"] = service
    if operation is not None:
        where.append("SpanName = {operation:String}")
        params["operation"] = operation
    if kinds:
        where.append("SpanKind IN {kinds:Array(String)}")
        params["kinds"] = [name for kind in kinds for name in kind_names(kind)]
    rows = client.query(
        f"{clickhouse_graph.bin_floors_sql()} SELECT ServiceName, SpanName, SpanKind, "
        f"intDiv(toUnixTimestamp64Nano(Timestamp), {BUCKET_NS}) * {BUCKET_NS} AS bucket, "
        f"count(), countIf({_ERROR}), sum(Duration), sumMap([{_BIN}], [toUInt64(1)]), "
        f"{_ROLE} AS role "
        f"FROM {client.database}.otel_traces WHERE {' AND '.join(where)} "
        "GROUP BY ServiceName, SpanName, SpanKind, bucket, role",
        params,
    )
    return [
        RollupRow(
            service_name,
            operation_name,
            KIND_BY_NAME.get(kind, 0),
            int(bucket),
            Rollup(int(count), int(errors), int(total), _counter(histogram)),
            SpanRole(int(role)),
        )
        for service_name, operation_name, kind, bucket, count, errors, total, histogram, role in rows
    ]


def _counter(histogram: Any) -> Counter[int]:
    keys, values = histogram
    return Counter({int(k): int(v) for k, v in zip(keys, values, strict=True)})


def merge_steps(rows: Sequence[RollupRow], since_unix_nano: int, step_ns: int) -> list[RollupRow]:
    """Per-minute rows merged per service, operation, kind, role and step of ``step_ns`` from ``since``
    (the minute ``since`` falls in is the first step's), as SQLite merges them (``sqlite/red.py``)."""
    merged: dict[tuple[str, str, int, SpanRole, int], Rollup] = {}
    for row in rows:
        start = since_unix_nano + (row.bucket_start_unix_nano - since_unix_nano) // step_ns * step_ns
        key = (row.service_name, row.operation, row.kind, row.role, max(start, since_unix_nano))
        total = merged.get(key)
        if total is None:
            total = merged[key] = Rollup()
        total.add(row.rollup)
    return [
        RollupRow(service, operation, kind, start, rollup, role)
        for (service, operation, kind, role, start), rollup in merged.items()
    ]
