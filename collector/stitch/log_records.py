"""An OTLP log record as the query layer shows it: what both stores derive from a ``LogRecord`` (shared, like
the stitching rules, so that SQLite and ClickHouse show a record alike)."""

from __future__ import annotations

import json

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from hopscope.collector.model.logs import CORRELATION_ID_ATTRIBUTE, LogLine
from hopscope.collector.otlp.values import attributes_json, json_value

UNKNOWN_SERVICE = "unknown_service"


def record_time(record: LogRecord, received_unix_nano: int) -> int:
    """The time a record is placed and searched at: its timestamp, else when it was observed (the data
    model says so for records without one), else when the collector received it."""
    return record.time_unix_nano or record.observed_time_unix_nano or received_unix_nano


def body_text(body: AnyValue) -> str:
    """A string body as is; any other body (a map from a structured logger, a number) as JSON text."""
    kind = body.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return body.string_value
    return json.dumps(json_value(body), ensure_ascii=False, default=str)


def correlation_id(record: LogRecord) -> str:
    """The record's ``hopscope.correlation_id`` attribute as text ("" when it has none)."""
    for attribute in record.attributes:
        if attribute.key == CORRELATION_ID_ATTRIBUTE:
            value = json_value(attribute.value)
            return value if isinstance(value, str) else json.dumps(value, default=str)
    return ""


def service_name(resource: Resource) -> str:
    """``service.name`` of a resource, as spans are attributed (``unknown_service`` when missing)."""
    for attribute in resource.attributes:
        if attribute.key == "service.name" and attribute.value.HasField("string_value"):
            return attribute.value.string_value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def log_line(
    record: LogRecord, resource: Resource, scope: InstrumentationScope, received_unix_nano: int
) -> LogLine:
    """The LogLine of a stored record (``received_unix_nano``: when the collector received it)."""
    return LogLine(
        time_unix_nano=record_time(record, received_unix_nano),
        observed_unix_nano=record.observed_time_unix_nano,
        trace_id=record.trace_id.hex() if any(record.trace_id) else "",
        span_id=record.span_id.hex() if any(record.span_id) else "",
        severity_number=int(record.severity_number),
        severity_text=record.severity_text,
        service=service_name(resource),
        scope=scope.name,
        body=body_text(record.body),
        correlation_id=correlation_id(record),
        attributes=attributes_json(record.attributes),
        resource=attributes_json(resource.attributes),
    )
