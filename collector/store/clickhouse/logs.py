"""Log records in ClickHouse: prepared as rows of ``otel_logs``, inserted, searched, read back as OTLP,
deleted by age.

Records are converted the way the OpenTelemetry Collector's ClickHouse exporter converts them (its
``pushLogsData``), so rows hopscope writes and rows a Collector writes are alike and both are read: ids as
lowercase hex ("" for none), ``ServiceName`` from the resource's ``service.name``, every attribute value as
text (pdata's ``AsString``, spans.py ``attribute_map``), ``Timestamp`` the record's timestamp or else its
observed timestamp. Where the exporter would then write 0 (a record with neither), hopscope writes when it
received the record, as ``log_records.record_time`` places it, so that time searches find it. A non-string
body is kept as its JSON text (``log_records.body_text``).

The layout has no column for the observed timestamp, dropped counts or a body's type: those are not kept.
A record sent again is stored again (an INSERT does not look at what is there); the readers keep one row
of identical records.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, LogsData

from hopscope.collector.model.logs import CORRELATION_ID_ATTRIBUTE, LogFilter, LogLine
from hopscope.collector.stitch.log_records import UNKNOWN_SERVICE, body_text, record_time
from hopscope.collector.store.base import PreparedLogs, ReadBudget
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.spans import attribute_map, key_values
from hopscope.collector.store.limits import SpanLimits, limit_log_record

# The exporter's insert statement (``logs_insert.sql``), in its column order; EventName goes last and only
# into a table that has it, as the exporter does (otel_logs made by an older Collector has none).
LOG_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceSchemaUrl", "ResourceAttributes", "ScopeSchemaUrl", "ScopeName", "ScopeVersion",
    "ScopeAttributes", "LogAttributes",
)  # fmt: skip
EVENT_NAME = "EventName"
_DATETIME_COLUMNS = frozenset({"Timestamp"})

# Identical rows (a record sent twice) are read once. ClickHouse has no row id: ties in time keep the order
# of the parts they were inserted in (a part's name starts with its partition and its first block number)
# and, within a part, their place in it (inserts in one part are sorted by service first).
_IN_ORDER = ("Timestamp", "toUInt64OrZero(splitByChar('_', _part)[2])", "_part_offset")
# A record's size for a read budget: its fields as stored (not the answer's JSON).
_LOG_BYTES = (
    "byteSize(TraceId, SpanId, SeverityText, ServiceName, Body, ScopeName, LogAttributes, ResourceAttributes)"
)
_ONCE = (
    "LIMIT 1 BY Timestamp, TraceId, SpanId, SeverityNumber, SeverityText, ServiceName, ScopeName, Body, "
    "LogAttributes"
)
_SELECT_LOG = (
    "toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, "
    "ServiceName, Body, ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion, "
    "ScopeAttributes, LogAttributes"
)


class PreparedLogRows(PreparedLogs):
    """One request's log records as ``otel_logs`` rows (``EventName`` last): what ``prepare_logs`` returns."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows


def _hex(raw: bytes) -> str:
    return raw.hex() if any(raw) else ""


def log_rows(request: ExportLogsServiceRequest, received_unix_nano: int) -> list[tuple[object, ...]]:
    """The request's records as otel_logs rows, ``EventName`` last (pure CPU)."""
    rows: list[tuple[object, ...]] = []
    for resource_logs in request.resource_logs:
        resource = attribute_map(resource_logs.resource.attributes)
        service = resource.get("service.name", "")
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            scope_attributes = attribute_map(scope.attributes)
            for record in scope_logs.log_records:
                rows.append(
                    (
                        record_time(record, received_unix_nano),
                        _hex(record.trace_id),
                        _hex(record.span_id),
                        record.flags & 0xFF,  # the W3C trace flags: the low byte (UInt8 column)
                        record.severity_text,
                        min(max(int(record.severity_number), 0), 255),
                        service,
                        body_text(record.body),
                        resource_logs.schema_url,
                        resource,
                        scope_logs.schema_url,
                        scope.name,
                        scope.version,
                        scope_attributes,
                        attribute_map(record.attributes),
                        record.event_name,
                    )
                )
    return rows


def prepare_logs(request: ExportLogsServiceRequest, limits: SpanLimits | None = None) -> PreparedLogRows:
    """The request's records as rows, each cut to ``limits`` first (in place); pure CPU."""
    if limits is not None:
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    limit_log_record(record, limits)
    return PreparedLogRows(log_rows(request, time.time_ns()))


def has_event_name(client: ClickHouseClient) -> bool:
    """Whether ``otel_logs`` has the ``EventName`` column (tables older Collectors made have none)."""
    rows = client.query(
        "SELECT count() FROM system.columns WHERE database = {db:String} AND table = 'otel_logs' "
        "AND name = {name:String}",
        {"db": client.database, "name": EVENT_NAME},
    )
    return bool(rows[0][0])


def insert_logs(client: ClickHouseClient, rows: Sequence[Sequence[object]], event_name: bool) -> None:
    """One INSERT into ``otel_logs``; ``event_name``: the table has that column (``has_event_name``)."""
    if event_name:
        client.insert(f"{client.database}.otel_logs", (*LOG_COLUMNS, EVENT_NAME), rows, _DATETIME_COLUMNS)
    else:
        cut = [row[: len(LOG_COLUMNS)] for row in rows]
        client.insert(f"{client.database}.otel_logs", LOG_COLUMNS, cut, _DATETIME_COLUMNS)


# -- reading -------------------------------------------------------------------------------------------


def _where(criteria: LogFilter) -> tuple[str, dict[str, object]]:
    """The WHERE clause of a search, every value a bound parameter."""
    clauses: list[str] = []
    params: dict[str, object] = {}
    if criteria.trace_ids:
        clauses.append("TraceId IN {traces:Array(String)}")
        params["traces"] = sorted({trace_id.hex() for trace_id in criteria.trace_ids})
    if criteria.correlation_id is not None:
        clauses.append("LogAttributes[{key:String}] = {correlation:String}")
        params["key"] = CORRELATION_ID_ATTRIBUTE
        params["correlation"] = criteria.correlation_id
    if criteria.service is not None:
        # a resource without service.name: "" in the exporter's column, unknown_service as hopscope shows it
        services = ["", UNKNOWN_SERVICE] if criteria.service == UNKNOWN_SERVICE else [criteria.service]
        clauses.append("ServiceName IN {services:Array(String)}")
        params["services"] = services
    if criteria.min_severity is not None:
        clauses.append("SeverityNumber >= {severity:Int64}")
        params["severity"] = criteria.min_severity
    if criteria.text:
        clauses.append("positionCaseInsensitive(Body, {text:String}) > 0")
        params["text"] = criteria.text
    if criteria.since_unix_nano is not None:
        clauses.append("Timestamp >= fromUnixTimestamp64Nano({since:Int64})")
        params["since"] = _nanos(criteria.since_unix_nano)
    if criteria.until_unix_nano is not None:
        clauses.append("Timestamp < fromUnixTimestamp64Nano({until:Int64})")
        params["until"] = _nanos(criteria.until_unix_nano)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _nanos(value: int) -> int:
    """A time bound clamped into Int64 (a bound past 2262 means "no bound" anyway)."""
    return min(max(value, 0), 2**63 - 1)


def _rows(
    client: ClickHouseClient, where: str, params: dict[str, object], limit: int, newest_first: bool
) -> list[list[Any]]:
    order = "DESC" if newest_first else "ASC"
    ordering = ", ".join(f"{term} {order}" for term in _IN_ORDER)
    return client.query(
        f"SELECT {_SELECT_LOG} FROM {client.database}.otel_logs{where} "
        f"ORDER BY {ordering} {_ONCE} LIMIT {{limit:UInt64}}",
        {**params, "limit": limit},
    )


def _within(
    client: ClickHouseClient,
    where: str,
    params: dict[str, object],
    limit: int,
    newest_first: bool,
    *,
    budget: ReadBudget,
) -> int:
    """How many of the first ``limit`` matches the budget holds, from their sizes (spent on the budget)."""
    order = "DESC" if newest_first else "ASC"
    ordering = ", ".join(f"{term} {order}" for term in _IN_ORDER)
    sizes = client.query(
        f"SELECT {_LOG_BYTES} FROM {client.database}.otel_logs{where} "
        f"ORDER BY {ordering} {_ONCE} LIMIT {{limit:UInt64}}",
        {**params, "limit": limit},
    )
    return sum(1 for _ in itertools.takewhile(lambda row: budget.take(int(row[0])), sizes))


def search_logs(
    client: ClickHouseClient, criteria: LogFilter, budget: ReadBudget | None = None
) -> list[LogLine]:
    """See ``LogReader.search_logs``. Attribute and resource values are the layout's text (``AsString``).

    With a budget, the sizes of the matches first (``_LOG_BYTES``), so that only the records that fit are
    read (as spans.py reads spans)."""
    if criteria.limit <= 0:
        return []
    where, params = _where(criteria)
    limit = criteria.limit
    if budget is not None:
        limit = _within(client, where, params, limit, criteria.newest_first, budget=budget)
    rows = _rows(client, where, params, limit, criteria.newest_first) if limit else []
    return [_log_line(row) for row in rows]


def _log_line(row: Sequence[Any]) -> LogLine:
    (at, trace_id, span_id, _flags, severity_text, severity_number, service, body, _resource_url, resource,
     _scope_url, scope_name, _scope_version, _scope_attributes, attributes) = row  # fmt: skip
    return LogLine(
        time_unix_nano=int(at),
        observed_unix_nano=0,  # the layout has no column for it
        trace_id=trace_id,
        span_id=span_id,
        severity_number=int(severity_number),
        severity_text=severity_text,
        service=service or UNKNOWN_SERVICE,
        scope=scope_name,
        body=body,
        correlation_id=attributes.get(CORRELATION_ID_ATTRIBUTE, ""),
        attributes=dict(attributes),
        resource=dict(resource),
    )


def get_logs(
    client: ClickHouseClient, trace_ids: Sequence[bytes], limit: int, budget: ReadBudget | None = None
) -> LogsData:
    """See ``LogReader.get_logs``: the earliest ``limit`` records of the traces, rebuilt from the columns.

    What comes back is what the exporter's layout keeps: every attribute value (record, scope, resource) is
    text, except the keys whose type spans.py ``TYPED_ATTRIBUTES`` knows; the body is a string (a map or an
    array sent as the body comes back as its JSON text); observed timestamps and dropped counts are 0.
    """
    logs = LogsData()
    if not trace_ids or limit <= 0:
        return logs
    where, params = _where(LogFilter(trace_ids=tuple(trace_ids)))
    if budget is not None:
        limit = _within(client, where, params, limit, False, budget=budget)
    by_resource: dict[str, Any] = {}
    by_scope: dict[tuple[str, str, str, str, str], Any] = {}
    for row in _rows(client, where, params, limit, newest_first=False):
        (at, trace_id, span_id, flags, severity_text, severity_number, _service, body, resource_url,
         resource, scope_url, scope_name, scope_version, scope_attributes, attributes) = row  # fmt: skip
        resource_key = json.dumps([resource_url, resource], sort_keys=True)
        resource_logs = by_resource.get(resource_key)
        if resource_logs is None:
            resource_logs = by_resource[resource_key] = logs.resource_logs.add(schema_url=resource_url)
            resource_logs.resource.attributes.extend(key_values(resource))
        scope_key = (
            resource_key,
            scope_url,
            scope_name,
            scope_version,
            json.dumps(scope_attributes, sort_keys=True),
        )
        scope_logs = by_scope.get(scope_key)
        if scope_logs is None:
            scope_logs = by_scope[scope_key] = resource_logs.scope_logs.add(schema_url=scope_url)
            scope_logs.scope.name = scope_name
            scope_logs.scope.version = scope_version
            scope_logs.scope.attributes.extend(key_values(scope_attributes))
        scope_logs.log_records.append(
            LogRecord(
                time_unix_nano=int(at),
                trace_id=bytes.fromhex(trace_id),
                span_id=bytes.fromhex(span_id),
                flags=int(flags),
                severity_text=severity_text,
                severity_number=int(severity_number),  # type: ignore[arg-type]
                body=AnyValue(string_value=body),
                attributes=key_values(attributes),
            )
        )
    return logs


def delete_logs_before(client: ClickHouseClient, cutoff_unix_nano: int) -> int:
    """As spans.py ``delete_spans_started_before``: one lightweight DELETE of every record before the cutoff
    (ClickHouse deletes whole parts best; at scale, a TTL on the table, the exporter's ``ttl``, is better)."""
    where = "Timestamp < fromUnixTimestamp64Nano({cutoff:Int64})"
    params = {"cutoff": _nanos(cutoff_unix_nano)}
    (count,) = client.query(f"SELECT count() FROM {client.database}.otel_logs WHERE {where}", params)[0]
    if count:
        client.command(f"DELETE FROM {client.database}.otel_logs WHERE {where}", params)
    return int(count)


def count_logs(client: ClickHouseClient) -> int:
    """Rows of ``otel_logs``: a record stored twice counts twice."""
    return int(client.query(f"SELECT count() FROM {client.database}.otel_logs")[0][0])
