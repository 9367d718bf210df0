"""Spans in ClickHouse: prepared as rows of ``otel_traces``, inserted, read back as OTLP, deleted by age.

Spans are converted the way the OpenTelemetry Collector's ClickHouse exporter converts them, so that rows
hopscope writes and rows a Collector writes are alike. A span sent again is stored again (an INSERT does not
look at what is there); trace reads keep one row per trace and span id.

The layout keeps attribute values as text (pdata's ``AsString``): ints, doubles and booleans come back as
their text except for the attributes listed in ``TYPED_ATTRIBUTES``, whose OpenTelemetry type is known.
Dropped counts, flags and schema URLs have no column and are not kept.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from hopscope.collector.model import conventions
from hopscope.collector.otlp.values import any_value
from hopscope.collector.store.base import PreparedSpans, ReadBudget
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.limits import SpanLimits, limit_span

# The exporter's insert statement, in its column order.
SPAN_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
    "Links.TraceState", "Links.Attributes",
)  # fmt: skip
DATETIME_COLUMNS = frozenset({"Timestamp", "Events.Timestamp"})

# pdata's SpanKind.String() and StatusCode.String(), which the exporter writes; older exporter versions
# wrote the proto names (SPAN_KIND_SERVER, STATUS_CODE_ERROR), which are read as well.
_KIND_NAMES = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_NAMES = ("Unset", "Ok", "Error")
KIND_BY_NAME: dict[str, int] = {
    **{name: i for i, name in enumerate(_KIND_NAMES)},
    **{name: int(value) for name, value in Span.SpanKind.items()},
}
STATUS_BY_NAME: dict[str, int] = {
    **{name: i for i, name in enumerate(_STATUS_NAMES)},
    **{name: int(value) for name, value in Status.StatusCode.items()},
}
ERROR_STATUS_NAMES = ("Error", "STATUS_CODE_ERROR")


def kind_names(kind: int) -> tuple[str, str]:
    """Both spellings of a span kind, for SQL that must match rows of any exporter version."""
    return _KIND_NAMES[kind], Span.SpanKind.Name(kind)  # type: ignore[arg-type]


# Attributes whose OpenTelemetry type is known, given back with it instead of as text.
TYPED_ATTRIBUTES: dict[str, type] = {
    conventions.RECEIVE_COUNT: int,
    conventions.BATCH_MESSAGE_COUNT: int,
    conventions.RECORD_SPANS: bool,
    "faas.coldstart": bool,
    "http.response.status_code": int,
    "http.status_code": int,
    "server.port": int,
    "messaging.message.body.size": int,
    "hopscope.queue_wait_ms": float,
}


def value_text(value: AnyValue) -> str:
    """pdata's ``Value.AsString``: what the exporter puts in a Map(String, String)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format(Decimal(repr(value.double_value)), "f")
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind is None:
        return ""
    return json.dumps(any_value(value), separators=(",", ":"))


def attribute_map(attributes: Iterable[KeyValue]) -> dict[str, str]:
    text: dict[str, str] = {}
    for kv in attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":  # most attributes: skip the call
            text[kv.key] = value.string_value
        elif kind == "int_value":
            text[kv.key] = str(value.int_value)
        else:
            text[kv.key] = value_text(value)
    return text


def _hex(raw: bytes) -> str:
    return raw.hex() if any(raw) else ""


def span_rows(request: ExportTraceServiceRequest) -> list[tuple[object, ...]]:
    """The request's spans as otel_traces rows (pure CPU)."""
    rows: list[tuple[object, ...]] = []
    for resource_spans in request.resource_spans:
        resource = attribute_map(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                start = span.start_time_unix_nano
                rows.append(
                    (
                        start,
                        _hex(span.trace_id),
                        _hex(span.span_id),
                        _hex(span.parent_span_id),
                        span.trace_state,
                        span.name,
                        _KIND_NAMES[span.kind] if span.kind < len(_KIND_NAMES) else "",
                        service,
                        resource,
                        scope.name,
                        scope.version,
                        attribute_map(span.attributes),
                        max(0, span.end_time_unix_nano - start),
                        _STATUS_NAMES[span.status.code] if span.status.code < len(_STATUS_NAMES) else "",
                        span.status.message,
                        [event.time_unix_nano for event in span.events],
                        [event.name for event in span.events],
                        [attribute_map(event.attributes) for event in span.events],
                        # a link's ids as sent, zeros too: a link of an invalid context reads back whole
                        [link.trace_id.hex() for link in span.links],
                        [link.span_id.hex() for link in span.links],
                        [link.trace_state for link in span.links],
                        [attribute_map(link.attributes) for link in span.links],
                    )
                )
    return rows


def typed_value(key: str, text: str) -> AnyValue:
    """An attribute value read back from the text column, with its type where the key's type is known."""
    wanted = TYPED_ATTRIBUTES.get(key)
    try:
        if wanted is int:
            return AnyValue(int_value=int(text))
        if wanted is float:
            return AnyValue(double_value=float(text))
        if wanted is bool and text in ("true", "false"):
            return AnyValue(bool_value=text == "true")
    except ValueError:
        pass
    return AnyValue(string_value=text)


def key_values(attributes: Mapping[str, str]) -> list[KeyValue]:
    return [KeyValue(key=key, value=typed_value(key, text)) for key, text in attributes.items()]


# What get_trace and the stitcher select: the row's columns with times as integer nanoseconds.
SELECT_SPAN = (
    "toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
    "ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, "
    "StatusMessage, arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name, "
    "Events.Attributes, Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes"
)


def row_span(row: Sequence[Any]) -> Span:
    """A selected row (``SELECT_SPAN``) as an OTLP span."""
    (start, trace_id, span_id, parent, state, name, kind, _service, _resource, _scope, _version, attributes,
     duration, status, message, event_times, event_names, event_attrs, link_traces, link_spans, link_states,
     link_attrs) = row  # fmt: skip
    span = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        trace_state=state,
        name=name,
        kind=KIND_BY_NAME.get(kind, 0),  # type: ignore[arg-type]
        start_time_unix_nano=int(start),
        end_time_unix_nano=int(start) + int(duration),
        attributes=key_values(attributes),
        status=Status(code=STATUS_BY_NAME.get(status, 0), message=message),  # type: ignore[arg-type]
    )
    for time_ns, event_name, event_attributes in zip(event_times, event_names, event_attrs, strict=True):
        span.events.add(time_unix_nano=int(time_ns), name=event_name, attributes=key_values(event_attributes))
    for link_trace, link_span, link_state, link_attributes in zip(
        link_traces, link_spans, link_states, link_attrs, strict=True
    ):
        span.links.add(
            trace_id=bytes.fromhex(link_trace),
            span_id=bytes.fromhex(link_span),
            trace_state=link_state,
            attributes=key_values(link_attributes),
        )
    return span


def traces_data(rows: Iterable[Sequence[Any]]) -> TracesData:
    """Selected rows grouped by resource and scope, as OTLP holds them."""
    traces = TracesData()
    by_resource: dict[str, Any] = {}
    by_scope: dict[tuple[str, str, str], Any] = {}
    for row in rows:
        resource_attributes, scope_name, scope_version = row[8], row[9], row[10]
        resource_key = json.dumps(resource_attributes, sort_keys=True)
        resource_spans = by_resource.get(resource_key)
        if resource_spans is None:
            resource_spans = by_resource[resource_key] = traces.resource_spans.add()
            resource_spans.resource.attributes.extend(key_values(resource_attributes))
        scope_key = (resource_key, scope_name, scope_version)
        scope_spans = by_scope.get(scope_key)
        if scope_spans is None:
            scope_spans = by_scope[scope_key] = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope_name
            scope_spans.scope.version = scope_version
        scope_spans.spans.append(row_span(row))
    return traces


# -- writing and reading spans: what ClickHouseStore delegates to --------------------------------------

# A span's size against a ReadBudget: its own fields' bytes (the resource, shared, is left out).
_SPAN_BYTES = (
    "byteSize(TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanAttributes, StatusMessage, "
    "Events.Timestamp, Events.Name, Events.Attributes, Links.TraceId, Links.SpanId, Links.TraceState, "
    "Links.Attributes)"
)


class PreparedRows(PreparedSpans):
    """One request's spans as ``otel_traces`` rows: what ``prepare`` returns."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows


def prepare_spans(request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> PreparedRows:
    """The request's spans as rows, long spans cut to ``limits`` first; pure CPU."""
    if limits is not None:  # the rows hold text, not encoded spans: sizes are computed here
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.ByteSize() > limits.max_value_length:
                        limit_span(span, limits)
    return PreparedRows(span_rows(request))


def insert_spans(client: ClickHouseClient, rows: Sequence[Sequence[object]]) -> None:
    """One INSERT into ``otel_traces``; a span sent again is stored again (readers deduplicate)."""
    client.insert(f"{client.database}.otel_traces", SPAN_COLUMNS, rows, DATETIME_COLUMNS)


def read_traces(
    client: ClickHouseClient, trace_ids: Iterable[bytes], budget: ReadBudget | None = None
) -> TracesData:
    """Two queries whatever the number of traces: their time bounds from the exporter's
    ``otel_traces_trace_id_ts``, then their spans within those bounds (partitions by day are skipped).

    With a budget, a third one first: the sizes of the earliest spans (``_SPAN_BYTES``), so that the
    spans read are those that fit, earliest start first across the traces."""
    hex_ids = sorted({trace_id.hex() for trace_id in trace_ids})
    if not hex_ids:
        return TracesData()
    bounds = client.query(
        "SELECT toInt64(toUnixTimestamp(min(Start))), toInt64(toUnixTimestamp(max(End))), count() "
        f"FROM {client.database}.otel_traces_trace_id_ts WHERE TraceId IN {{traces:Array(String)}}",
        {"traces": hex_ids},
    )
    if not bounds or not bounds[0][2]:
        return TracesData()
    start, end, _ = bounds[0]
    spans = (
        f"FROM {client.database}.otel_traces "
        "WHERE TraceId IN {traces:Array(String)} "
        "AND Timestamp >= toDateTime({start:Int64}) AND Timestamp < toDateTime({end:Int64}) "
        "ORDER BY Timestamp, SpanId LIMIT 1 BY TraceId, SpanId"
    )
    params: dict[str, object] = {"traces": hex_ids, "start": int(start) - 1, "end": int(end) + 2}
    if budget is not None:
        sizes = client.query(
            f"SELECT {_SPAN_BYTES} {spans} LIMIT {{limit:UInt64}}", {**params, "limit": budget.spans + 1}
        )
        kept = sum(1 for _ in itertools.takewhile(lambda row: budget.take(int(row[0])), sizes))
        if not kept:
            return TracesData()
        spans += " LIMIT {kept:UInt64}"
        params["kept"] = kept
    rows = client.query(f"SELECT {SELECT_SPAN} {spans}", params)
    return traces_data(rows)


def delete_spans_started_before(client: ClickHouseClient, cutoff_unix_nano: int, limit: int) -> int:
    """ClickHouse deletes whole parts best: a lightweight DELETE of everything past the cutoff at once
    (``limit`` is not honoured). At scale, a TTL on the table (the exporter's ``ttl``) is better."""
    where = "Timestamp < fromUnixTimestamp64Nano({cutoff:Int64})"
    params = {"cutoff": cutoff_unix_nano}
    (count,) = client.query(f"SELECT count() FROM {client.database}.otel_traces WHERE {where}", params)[0]
    if count:
        client.command(f"DELETE FROM {client.database}.otel_traces WHERE {where}", params)
    return int(count)


def count_spans(client: ClickHouseClient) -> int:
    """Rows of ``otel_traces``: a span stored twice counts twice."""
    return int(client.query(f"SELECT count() FROM {client.database}.otel_traces")[0][0])


def has_spans(client: ClickHouseClient) -> bool:
    return bool(client.query(f"SELECT 1 FROM {client.database}.otel_traces LIMIT 1"))
