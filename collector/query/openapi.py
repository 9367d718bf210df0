"""The OpenAPI description of the collector's HTTP API, served at ``/openapi.json``.

A test checks that every route of the app is described here and that the document is valid OpenAPI 3.1;
another runs schemathesis against it (every answer must match the schema given here).
"""

from __future__ import annotations

from typing import Any

# Upper bounds the query API enforces (see query/params.py); kept here as literals so the document is data.
_MAX_UNIX_NANO = 2**63 - 1
_MAX_OFFSET = 2**62
_MAX_DURATION_MS = _MAX_UNIX_NANO // 1_000_000


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _nullable(type_name: str) -> dict[str, Any]:
    return {"type": [type_name, "null"]}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(required: list[str], properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ERROR = _ref("responses", "Error")
_TIME = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": _MAX_UNIX_NANO},
        {"type": "string", "format": "date-time"},
    ],
    "description": "unix nanoseconds, or an ISO 8601 date-time (UTC unless it says otherwise); "
    "1970-01-01 to 2262-04-11",
}
_RANGE = [
    _query("since", _TIME, "start of the range (default: an hour before until)"),
    _query("until", _TIME, "end of the range (default: now)"),
]
_FLOW_ID = {
    "name": "flow_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_UNIX_NANO},
    "description": "a flow id; an id that was merged into another flow answers for that flow",
}
_HEX = {"type": "string", "pattern": "^[0-9a-fA-F]*$"}
_UNIX_NANO = {"type": "integer", "minimum": 0}
# OTLP JSON writes 64-bit integers as strings (proto3 JSON) and reads numbers as well.
_INT64 = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}]}
_UINT64 = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}
_RED = _schema("RedStats")


def _resource_items(scopes_key: str, items_key: str, item: str) -> dict[str, Any]:
    """OTLP's resource -> scopes -> items nesting (ResourceSpans, ResourceLogs) around ``item``'s schema."""
    scope = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "attributes": _array(_schema("KeyValue")),
            "droppedAttributesCount": {"type": "integer", "minimum": 0},
        },
    }
    return {
        "type": "object",
        "properties": {
            "resource": {
                "type": "object",
                "properties": {
                    "attributes": _array(_schema("KeyValue")),
                    "droppedAttributesCount": {"type": "integer", "minimum": 0},
                },
            },
            scopes_key: _array(
                {
                    "type": "object",
                    "properties": {
                        "scope": scope,
                        items_key: _array(_schema(item)),
                        "schemaUrl": {"type": "string"},
                    },
                }
            ),
            "schemaUrl": {"type": "string"},
        },
    }


# -- OTLP JSON (ExportTraceServiceRequest in, TracesData out) ----------------------------------------------

_OTLP_SCHEMAS: dict[str, Any] = {
    "AnyValue": {
        "type": "object",
        "description": "one of the value fields (an empty object is an empty value)",
        "properties": {
            "stringValue": {"type": "string"},
            "boolValue": {"type": "boolean"},
            "intValue": _INT64,
            "doubleValue": {
                "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
            },
            "bytesValue": {"type": "string", "contentEncoding": "base64"},
            "arrayValue": {"type": "object", "properties": {"values": _array(_schema("AnyValue"))}},
            "kvlistValue": {"type": "object", "properties": {"values": _array(_schema("KeyValue"))}},
        },
    },
    "KeyValue": {
        "type": "object",
        "properties": {"key": {"type": "string"}, "value": _schema("AnyValue")},
    },
    "OtlpSpan": {
        "type": "object",
        "description": "an OTLP span; ids are hex strings (OTLP JSON), enums integers",
        "properties": {
            "traceId": _HEX,
            "spanId": _HEX,
            "parentSpanId": _HEX,
            "traceState": {"type": "string"},
            "flags": {"type": "integer", "minimum": 0},
            "name": {"type": "string"},
            "kind": {"type": "integer"},
            "startTimeUnixNano": _UINT64,
            "endTimeUnixNano": _UINT64,
            "attributes": _array(_schema("KeyValue")),
            "droppedAttributesCount": {"type": "integer", "minimum": 0},
            "events": _array(
                {
                    "type": "object",
                    "properties": {
                        "timeUnixNano": _UINT64,
                        "name": {"type": "string"},
                        "attributes": _array(_schema("KeyValue")),
                        "droppedAttributesCount": {"type": "integer", "minimum": 0},
                    },
                }
            ),
            "droppedEventsCount": {"type": "integer", "minimum": 0},
            "links": _array(
                {
                    "type": "object",
                    "properties": {
                        "traceId": _HEX,
                        "spanId": _HEX,
                        "traceState": {"type": "string"},
                        "flags": {"type": "integer", "minimum": 0},
                        "attributes": _array(_schema("KeyValue")),
                        "droppedAttributesCount": {"type": "integer", "minimum": 0},
                    },
                }
            ),
            "droppedLinksCount": {"type": "integer", "minimum": 0},
            "status": {
                "type": "object",
                "properties": {"message": {"type": "string"}, "code": {"type": "integer"}},
            },
        },
    },
    "ResourceSpans": _resource_items("scopeSpans", "spans", "OtlpSpan"),
    "ExportTraceServiceRequest": {
        "type": "object",
        "description": "OTLP JSON as the OTLP specification says: hex ids, integer enums, unknown fields "
        "ignored",
        "properties": {"resourceSpans": _array(_schema("ResourceSpans"))},
    },
    "ExportTraceServiceResponse": {
        "type": "object",
        "properties": {
            "partialSuccess": {
                "type": "object",
                "properties": {"rejectedSpans": _INT64, "errorMessage": {"type": "string"}},
            }
        },
    },
    "OtlpLogRecord": {
        "type": "object",
        "description": "an OTLP log record; ids are hex strings (OTLP JSON), enums integers",
        "properties": {
            "timeUnixNano": _UINT64,
            "observedTimeUnixNano": _UINT64,
            "severityNumber": {"type": "integer"},
            "severityText": {"type": "string"},
            "body": _schema("AnyValue"),
            "attributes": _array(_schema("KeyValue")),
            "droppedAttributesCount": {"type": "integer", "minimum": 0},
            "flags": {"type": "integer", "minimum": 0},
            "traceId": _HEX,
            "spanId": _HEX,
            "eventName": {"type": "string"},
        },
    },
    "ResourceLogs": _resource_items("scopeLogs", "logRecords", "OtlpLogRecord"),
    "ExportLogsServiceRequest": {
        "type": "object",
        "description": "OTLP JSON as the OTLP specification says: hex ids, integer enums, unknown fields "
        "ignored",
        "properties": {"resourceLogs": _array(_schema("ResourceLogs"))},
    },
    "ExportLogsServiceResponse": {
        "type": "object",
        "properties": {
            "partialSuccess": {
                "type": "object",
                "properties": {"rejectedLogRecords": _INT64, "errorMessage": {"type": "string"}},
            }
        },
    },
    "OtlpLogs": {
        "type": "object",
        "description": "OTLP JSON LogsData (hex ids, integer enums), importable into any OTLP backend; "
        "when the records were cut at the read cap (at most 5,000, the earliest kept), it also holds "
        "hopscope's truncated: true",
        "properties": {
            "resourceLogs": _array(_schema("ResourceLogs")),
            "truncated": {"type": "boolean", "const": True},
        },
    },
    "RpcStatus": {
        "type": "object",
        "description": "google.rpc.Status, the body of every failed OTLP/HTTP request",
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "details": _array({"type": "object"}),
        },
    },
    "OtlpTraces": {
        "type": "object",
        "description": "OTLP JSON TracesData (hex ids, integer enums), importable into any OTLP backend; "
        "when the spans were cut at the read cap (at most 10,000 spans and 4 MiB of stored spans per answer, "
        "the earliest kept), it also holds hopscope's truncated: true, which OTLP JSON receivers ignore as "
        "they ignore every unknown key",
        "properties": {
            "resourceSpans": _array(_schema("ResourceSpans")),
            "truncated": {"type": "boolean", "const": True},
        },
    },
}

# -- the query API's own answers ---------------------------------------------------------------------------

_SPAN_REF = _object(["trace_id", "span_id"], {"trace_id": _HEX, "span_id": _HEX})
_ATTRIBUTES = {
    "type": "object",
    "description": "attribute values as JSON: bytes as base64, NaN and infinite doubles as the strings "
    '"NaN", "Infinity" and "-Infinity" (as OTLP JSON writes them)',
}

_LOG_LINE = _object(
    [
        "time_unix_nano",
        "observed_unix_nano",
        "trace_id",
        "span_id",
        "severity_number",
        "severity_text",
        "severity",
        "service",
        "scope",
        "body",
        "correlation_id",
        "attributes",
        "resource",
    ],
    {
        "time_unix_nano": {**_UNIX_NANO, "description": "its timestamp, else observed, else received"},
        "observed_unix_nano": _UNIX_NANO,
        "trace_id": {**_HEX, "description": "empty when the record names no trace"},
        "span_id": {**_HEX, "description": "empty when the record names no span"},
        "severity_number": {"type": "integer", "minimum": 0},
        "severity_text": {"type": "string"},
        "severity": {
            "type": "string",
            "description": "the range of severity_number (TRACE, DEBUG, INFO, WARN, ERROR, FATAL), or "
            "the record's own text (upper case) when it has no number, else UNSPECIFIED",
        },
        "service": {"type": "string"},
        "scope": {"type": "string", "description": "the instrumentation scope: the logger's name"},
        "body": {"type": "string", "description": "a string body as is, any other body as JSON text"},
        "correlation_id": {"type": "string"},
        "attributes": {"type": "object"},
        "resource": {"type": "object"},
    },
    "one log record; every text is as the client sent it (untrusted)",
)
_LOG_QUERY = [
    _query(
        "severity",
        {
            "oneOf": [
                {"type": "string", "enum": ["trace", "debug", "info", "warn", "error", "fatal"]},
                {"type": "integer", "minimum": 1, "maximum": 24},
            ]
        },
        "this severity and higher: a range name (any case; warning and critical too) or a number",
    ),
    _query("q", {"type": "string", "maxLength": 1000}, "a substring of the body (ASCII case-insensitive)"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "records at most"),
]

_API_SCHEMAS: dict[str, Any] = {
    "LogLine": _LOG_LINE,
    "Logs": _object(
        ["logs", "limit", "truncated"],
        {
            "logs": _array(_schema("LogLine")),
            "limit": {"type": "integer"},
            "truncated": {"type": "boolean", "description": "more records matched than the limit"},
            "flow_id": {"type": "integer"},
        },
    ),
    "FlowSummary": _object(
        [
            "flow_id",
            "start_unix_nano",
            "end_unix_nano",
            "duration_ms",
            "span_count",
            "trace_count",
            "error_count",
            "max_receive_count",
            "entry_service",
            "entry_operation",
            "services",
            "correlation_ids",
            "dead_lettered",
            "duplicate_deliveries",
        ],
        {
            "flow_id": {"type": "integer", "minimum": 1},
            "start_unix_nano": {"type": "integer"},
            "end_unix_nano": {"type": "integer"},
            "duration_ms": {"type": "number"},
            "span_count": {"type": "integer", "minimum": 0},
            "trace_count": {"type": "integer", "minimum": 0},
            "error_count": {"type": "integer", "minimum": 0},
            "max_receive_count": {"type": "integer"},
            "entry_service": {
                **_nullable("string"),
                "description": "the service of the entry span: the earliest span without a parent that no "
                "message or link caused, else (a flow called with a trace context from outside) the "
                "flow's earliest span",
            },
            "entry_operation": {**_nullable("string"), "description": "the entry span's name"},
            "services": _array({"type": "string"}),
            "correlation_ids": _array({"type": "string"}),
            "dead_lettered": {
                "type": "integer",
                "minimum": 0,
                "description": "messages of the flow in a dead-letter queue now (as the SQS poller's last "
                "peek of each dead-letter queue saw them)",
            },
            "duplicate_deliveries": {
                "type": "integer",
                "minimum": 0,
                "description": "successful processings of a message by a consumer service after its first "
                "(at-least-once delivery: a visibility timeout that ran out during processing)",
            },
        },
    ),
    "MessageFate": _object(
        [
            "message_id",
            "destination",
            "producer",
            "producer_service",
            "fate",
            "summary",
            "deliveries",
            "failed_deliveries",
            "retries",
            "duplicate_deliveries",
            "consumers",
            "dead_letter_queue",
            "dead_lettered_since_unix_nano",
            "left_dead_letter_queue_unix_nano",
            "redriven_to",
            "redrive_spans",
            "retry_spans",
        ],
        {
            "message_id": _nullable("string"),
            "destination": {"type": "string"},
            "producer": {"oneOf": [_SPAN_REF, {"type": "null"}]},
            "producer_service": _nullable("string"),
            "fate": {
                "type": "string",
                "enum": [
                    "dead_lettered",
                    "redriven",
                    "duplicate_delivery",
                    "retried",
                    "processed",
                    "failed",
                    "no_processing",
                ],
            },
            "summary": {"type": "string", "description": "the fate in one plain sentence"},
            "deliveries": {"type": "integer", "minimum": 0},
            "failed_deliveries": {"type": "integer", "minimum": 0},
            "retries": {
                "type": "integer",
                "minimum": 0,
                "description": "deliveries after each consumer's first (a fan-out is no retry)",
            },
            "duplicate_deliveries": {"type": "integer", "minimum": 0},
            "consumers": _array({"type": "string"}),
            "dead_letter_queue": {
                **_nullable("string"),
                "description": "the dead-letter queue it is in now, or was in",
            },
            "dead_lettered_since_unix_nano": {"oneOf": [_UNIX_NANO, {"type": "null"}]},
            "left_dead_letter_queue_unix_nano": {"oneOf": [_UNIX_NANO, {"type": "null"}]},
            "redriven_to": _nullable("string"),
            "redrive_spans": _array(_SPAN_REF),
            "retry_spans": _array(_SPAN_REF),
        },
        "what became of one message of the flow",
    ),
    "FlowSpan": _object(
        [
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "service",
            "start_unix_nano",
            "end_unix_nano",
            "duration_ms",
            "status",
            "attributes",
            "events",
            "links",
            "resource",
            "scope",
        ],
        {
            "trace_id": _HEX,
            "span_id": _HEX,
            "parent_span_id": {"oneOf": [_HEX, {"type": "null"}]},
            "name": {"type": "string"},
            "kind": {
                "type": "string",
                "enum": ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"],
            },
            "service": {"type": "string"},
            "start_unix_nano": _UNIX_NANO,
            "end_unix_nano": _UNIX_NANO,
            "duration_ms": {"type": "number"},
            "status": _object(
                ["code", "message"],
                {
                    "code": {"type": "string", "enum": ["UNSET", "OK", "ERROR"]},
                    "message": {"type": "string"},
                },
            ),
            "attributes": _ATTRIBUTES,
            "events": _array(
                _object(
                    ["name", "time_unix_nano", "attributes"],
                    {"name": {"type": "string"}, "time_unix_nano": _UNIX_NANO, "attributes": _ATTRIBUTES},
                )
            ),
            "links": _array(
                _object(
                    ["trace_id", "span_id", "attributes"],
                    {"trace_id": _HEX, "span_id": _HEX, "attributes": _ATTRIBUTES},
                )
            ),
            "resource": _ATTRIBUTES,
            "scope": _object(
                ["name", "version"], {"name": {"type": "string"}, "version": {"type": "string"}}
            ),
        },
        "one span, flat: ids in hex, kind and status code by name",
    ),
    "AsyncHop": _object(
        [
            "producer",
            "consumer",
            "producer_service",
            "consumer_service",
            "messaging_system",
            "destination",
            "queue_wait_ms",
            "receive_count",
        ],
        {
            "producer": _SPAN_REF,
            "consumer": _SPAN_REF,
            "producer_service": {"type": "string"},
            "consumer_service": {"type": "string"},
            "messaging_system": {"description": "the producer's messaging.system attribute (any value)"},
            "destination": {"type": "string"},
            "queue_wait_ms": {"type": "number", "description": "consumer start minus producer end"},
            "receive_count": {"description": "the consumer's hopscope.receive_count attribute (any value)"},
        },
        "a producer -> destination -> consumer hop of the flow",
    ),
    "FlowDetail": _object(
        [
            "summary",
            "spans",
            "hops",
            "truncated",
            "entry_called_from_outside",
            "shared_traces",
            "messages",
            "expired_span_count",
            "retained_since_unix_nano",
        ],
        {
            "shared_traces": _array(
                _object(
                    ["trace_id", "other_messages", "other_flow_ids"],
                    {
                        "trace_id": {"type": "string"},
                        "other_messages": {
                            "type": "integer",
                            "description": "how many other messages the batch processed (its links to "
                            "traces outside this flow)",
                        },
                        "other_flow_ids": _array({"type": "integer"}),
                    },
                    "a batch trace among spans that the flow shares: one invocation processed this flow's "
                    "message with messages of other flows; its spans are counted in each of them",
                )
            ),
            "messages": _array(_schema("MessageFate")),
            "summary": _schema("FlowSummary"),
            "spans": _array(_schema("FlowSpan")),
            "hops": _array(_schema("AsyncHop")),
            "truncated": {
                "type": "boolean",
                "description": "true when spans was cut at the read cap (at most 10,000 spans and 4 MiB of "
                "stored spans, the earliest kept); the summary still counts every span",
            },
            "entry_called_from_outside": {
                "type": "boolean",
                "description": "true when the entry span has a parent span that is none of the flow's spans: "
                "the entry was called with a trace context (a traceparent) from outside",
            },
            "expired_span_count": {
                "type": "integer",
                "minimum": 0,
                "description": "spans the summary counts that are no longer stored: the collector's "
                "--retention deleted them (the flow is partly expired); 0 when whole, or when truncated",
            },
            "retained_since_unix_nano": {
                **_nullable("integer"),
                "description": "when partly expired: the start of the earliest span kept (the spans that "
                "are gone started before it); else null",
            },
        },
    ),
    "Readiness": _object(
        ["status"],
        {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "accepting_spans": {"type": "boolean"},
            "reasons": _array(
                _object(
                    ["check", "message"],
                    {
                        "check": {
                            "type": "string",
                            "enum": [
                                "writes",
                                "stitching",
                                "stitching_skips",
                                "stitching_lag",
                                "forwarding",
                                "disk",
                            ],
                        },
                        "message": {"type": "string"},
                    },
                )
            ),
        },
    ),
    "RedStats": _object(
        ["span_count", "rate_per_second", "error_count", "error_rate", "p50_ms", "p95_ms", "p99_ms"],
        {
            "span_count": {"type": "integer", "minimum": 0},
            "rate_per_second": {"type": "number", "minimum": 0},
            "error_count": {"type": "integer", "minimum": 0},
            "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
            "p50_ms": _nullable("number"),
            "p95_ms": _nullable("number"),
            "p99_ms": _nullable("number"),
        },
        "rate, errors and duration percentiles (within about 4.5%) over a stretch of time",
    ),
    "Services": _object(
        ["since_unix_nano", "until_unix_nano", "services"],
        {
            "since_unix_nano": _UNIX_NANO,
            "until_unix_nano": _UNIX_NANO,
            "services": _array(
                _object(
                    ["service", "red", "operations"],
                    {"service": {"type": "string"}, "red": _RED, "operations": _array({"type": "string"})},
                )
            ),
        },
    ),
    "Latency": _object(
        ["service", "operation", "step_seconds", "points"],
        {
            "service": {"type": "string"},
            "operation": _nullable("string"),
            "step_seconds": {"type": "integer", "minimum": 60},
            "points": _array(
                _object(
                    ["bucket_start_unix_nano", "red"], {"bucket_start_unix_nano": _UNIX_NANO, "red": _RED}
                )
            ),
        },
    ),
    "ServiceGraph": _object(
        ["since_unix_nano", "until_unix_nano", "nodes", "edges"],
        {
            "since_unix_nano": _UNIX_NANO,
            "until_unix_nano": _UNIX_NANO,
            "nodes": _array(
                _object(
                    ["id", "type", "name"],
                    {
                        "id": {"type": "string", "description": "type-prefixed, e.g. service:billing"},
                        "type": {
                            "type": "string",
                            "description": "service, queue, topic, bus, destination or external",
                        },
                        "name": {"type": "string"},
                    },
                )
            ),
            "edges": _array(
                _object(
                    [
                        "source",
                        "target",
                        "kind",
                        "red",
                        "queue_wait_p50_ms",
                        "queue_wait_p95_ms",
                        "queue_wait_p99_ms",
                        "max_receive_count",
                    ],
                    {
                        "source": {"type": "string"},
                        "target": {"type": "string"},
                        "kind": {
                            "type": "string",
                            "description": "sync, publish, consume, subscription or external",
                        },
                        "red": _RED,
                        "queue_wait_p50_ms": _nullable("number"),
                        "queue_wait_p95_ms": _nullable("number"),
                        "queue_wait_p99_ms": _nullable("number"),
                        "max_receive_count": {"type": "integer"},
                    },
                )
            ),
        },
    ),
    "Queue": _object(
        [
            "name",
            "url",
            "arn",
            "dead_letter_queue",
            "max_receive_count",
            "sources",
            "is_dead_letter_queue",
            "visible",
            "in_flight",
            "delayed",
            "oldest_age_seconds",
            "age_source",
            "sampled_unix_nano",
            "last_polled_unix_nano",
            "last_error",
            "last_error_unix_nano",
        ],
        {
            "name": {"type": "string"},
            "url": {"type": "string"},
            "arn": _nullable("string"),
            "dead_letter_queue": _nullable("string"),
            "max_receive_count": _nullable("integer"),
            "sources": _array({"type": "string"}),
            "is_dead_letter_queue": {"type": "boolean"},
            "visible": _nullable("integer"),
            "in_flight": _nullable("integer"),
            "delayed": _nullable("integer"),
            "oldest_age_seconds": _nullable("number"),
            "age_source": {"type": ["string", "null"], "description": "cloudwatch or estimate"},
            "sampled_unix_nano": _nullable("integer"),
            "last_polled_unix_nano": _nullable("integer"),
            "last_error": _nullable("string"),
            "last_error_unix_nano": _nullable("integer"),
        },
    ),
    "DepthSeries": _object(
        ["queue", "since_unix_nano", "until_unix_nano", "truncated", "samples"],
        {
            "queue": {"type": "string"},
            "since_unix_nano": _UNIX_NANO,
            "until_unix_nano": _UNIX_NANO,
            "truncated": {
                "type": "boolean",
                "description": "true when cut at 10,080 samples (the newest kept)",
            },
            "samples": _array(
                _object(
                    [
                        "polled_unix_nano",
                        "visible",
                        "in_flight",
                        "delayed",
                        "oldest_age_seconds",
                        "age_source",
                    ],
                    {
                        "polled_unix_nano": {"type": "integer"},
                        "visible": {"type": "integer"},
                        "in_flight": {"type": "integer"},
                        "delayed": {"type": "integer"},
                        "oldest_age_seconds": _nullable("number"),
                        "age_source": _nullable("string"),
                    },
                )
            ),
        },
    ),
}

_OTLP_BODY = {
    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": _schema("ExportTraceServiceRequest")},
}
_RPC_STATUS = {
    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": _schema("RpcStatus")},
}


def _rpc_status(description: str) -> dict[str, Any]:
    return {"description": description + " (google.rpc.Status)", "content": _RPC_STATUS}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hopscope collector",
        "version": "1",
        "description": "OTLP/HTTP trace and log receivers and the read-only query API over stored spans, "
        "flows and log records.",
    },
    "paths": {
        "/v1/traces": {
            "post": {
                "summary": "Receive spans (OTLP/HTTP, protobuf or JSON, optionally gzip); the answer uses "
                "the request's content type",
                "requestBody": {"required": True, "content": _OTLP_BODY},
                "responses": {
                    "200": {
                        "description": "ExportTraceServiceResponse; partial_success when spans were rejected",
                        "content": {
                            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": _schema("ExportTraceServiceResponse")},
                        },
                    },
                    "400": _rpc_status("undecodable body"),
                    "401": _rpc_status("missing or wrong bearer token"),
                    "413": _rpc_status("body over the limit, also after inflation"),
                    "415": _rpc_status("unsupported Content-Type or Content-Encoding"),
                    "503": _rpc_status("write path saturated; retry after Retry-After seconds"),
                },
            }
        },
        "/v1/logs": {
            "post": {
                "summary": "Receive log records (OTLP/HTTP, protobuf or JSON, optionally gzip); the same "
                "limits and answers as /v1/traces",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": _schema("ExportLogsServiceRequest")},
                    },
                },
                "responses": {
                    "200": {
                        "description": "ExportLogsServiceResponse; partial_success when some were rejected",
                        "content": {
                            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {"schema": _schema("ExportLogsServiceResponse")},
                        },
                    },
                    "400": _rpc_status("undecodable body"),
                    "401": _rpc_status("missing or wrong bearer token"),
                    "413": _rpc_status("body over the limit, also after inflation"),
                    "415": _rpc_status("unsupported Content-Type or Content-Encoding"),
                    "503": _rpc_status("write path saturated; retry after Retry-After seconds"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness, spans waiting to be stored, forwarding counters, the store on disk",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {
                                "status": {"type": "string"},
                                "storage": {
                                    "oneOf": [
                                        {"type": "null"},
                                        _object(
                                            [
                                                "size_bytes",
                                                "oldest_span_unix_nano",
                                                "retention_seconds",
                                                "free_bytes",
                                            ],
                                            {
                                                "size_bytes": {"type": "integer", "minimum": 0},
                                                "oldest_span_unix_nano": _nullable("integer"),
                                                "retention_seconds": _nullable("integer"),
                                                "free_bytes": _nullable("integer"),
                                            },
                                        ),
                                    ]
                                },
                            },
                        },
                        "ok",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: ok, or degraded with a reason per failing check (writes failing, "
                "stitching skipping spans or lagging, a --forward upstream failing, free disk space low); "
                "the reasons only with the token, when one is set",
                "responses": {
                    "200": _json(_schema("Readiness"), "spans are being stored (status ok or degraded)"),
                    "503": _json(_schema("Readiness"), "spans cannot be stored now (e.g. disk full)"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _json({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")
                },
            }
        },
        "/api/traces/{trace_id}": {
            "get": {
                "summary": "One trace as OTLP JSON (TracesData), cut at the read cap",
                "parameters": [
                    {
                        "name": "trace_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                    }
                ],
                "responses": {"200": _ref("responses", "Otlp"), "400": _ERROR, "404": _ERROR},
            }
        },
        "/api/flows": {
            "get": {
                "summary": "Search flows; newest first unless sorted by duration",
                "parameters": [
                    _query("since", _TIME, "flows that started at or after this moment"),
                    _query("until", _TIME, "flows that started before this moment"),
                    _query("service", {"type": "string"}, "flows with a span of this service"),
                    _query("operation", {"type": "string"}, "flows with a span of this name"),
                    _query(
                        "status", {"type": "string", "enum": ["error"]}, "flows with at least one error span"
                    ),
                    _query(
                        "min_duration_ms",
                        {"type": "number", "minimum": 0, "maximum": _MAX_DURATION_MS},
                        "end-to-end duration at least this",
                    ),
                    _query("correlation_id", {"type": "string"}, "flows that carry this correlation id"),
                    _query("message_id", {"type": "string"}, "flows that carried this messaging.message.id"),
                    _query(
                        "dead_lettered",
                        {"type": "string", "enum": ["true", "false"]},
                        "true: flows with a message in a dead-letter queue now",
                    ),
                    _query(
                        "duplicates",
                        {"type": "string", "enum": ["true", "false"]},
                        "true: flows with a duplicate delivery (a message processed successfully more "
                        "than once by the same consumer)",
                    ),
                    {
                        **_query(
                            "attr",
                            _array({"type": "string", "pattern": "^[^:]+:"}),
                            "key:value of a span attribute; repeatable (the first 10,000 spans of each "
                            "candidate flow are searched, up to 2,000 flows)",
                        ),
                        "style": "form",
                        "explode": True,
                    },
                    _query(
                        "sort", {"type": "string", "enum": ["start", "duration"], "default": "start"}, "order"
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        "page size",
                    ),
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET, "default": 0},
                        "flows to skip",
                    ),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            ["flows", "limit", "offset"],
                            {
                                "flows": _array(_schema("FlowSummary")),
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        ),
                        "a page of flow summaries",
                    ),
                    "400": _ERROR,
                },
            }
        },
        "/api/flows/{flow_id}": {
            "get": {
                "summary": "A flow: summary, every span of every trace (cut at the read cap), async hops "
                "with queue wait; 404 for an unknown flow and for an expired one (none of its spans is "
                "stored any more)",
                "parameters": [_FLOW_ID],
                "responses": {
                    "200": _json(_schema("FlowDetail"), "the flow"),
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/flows/{flow_id}/otlp": {
            "get": {
                "summary": "A flow as OTLP JSON, importable into any OTLP backend; cut at the read cap",
                "parameters": [_FLOW_ID],
                "responses": {"200": _ref("responses", "Otlp"), "400": _ERROR, "404": _ERROR},
            }
        },
        "/api/flows/{flow_id}/logs": {
            "get": {
                "summary": "Every log record of the flow's traces, oldest first, each naming its trace and "
                "span (at most limit, the earliest; truncated when more matched)",
                "parameters": [_FLOW_ID, *_LOG_QUERY],
                "responses": {
                    "200": _json(_schema("Logs"), "the records, flow_id"),
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/flows/{flow_id}/logs/otlp": {
            "get": {
                "summary": "The flow's log records as OTLP JSON LogsData, importable into any OTLP backend "
                "(the logs' half of /api/flows/{flow_id}/otlp)",
                "parameters": [_FLOW_ID],
                "responses": {
                    "200": _json(_schema("OtlpLogs"), "OTLP JSON LogsData and truncated"),
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/logs": {
            "get": {
                "summary": "Search log records by correlation id, service, severity, text and time; newest "
                "first unless order=oldest",
                "parameters": [
                    _query("correlation_id", {"type": "string"}, "the hopscope.correlation_id attribute"),
                    _query("service", {"type": "string"}, "service.name of the record's resource"),
                    *_LOG_QUERY,
                    _query("since", _TIME, "records at or after this time"),
                    _query("until", _TIME, "records before this time"),
                    _query("order", {"type": "string", "enum": ["newest", "oldest"]}, "the default: newest"),
                ],
                "responses": {"200": _json(_schema("Logs"), "the records"), "400": _ERROR},
            }
        },
        "/api/services": {
            "get": {
                "summary": "RED per service: rate, error rate, p50/p95/p99 of its invocations (each Lambda "
                "invocation once; a batch's messages count on its consume edge of /api/graph)",
                "parameters": _RANGE,
                "responses": {
                    "200": _json(_schema("Services"), "one entry per service: red, operations"),
                    "400": _ERROR,
                },
            }
        },
        "/api/latency": {
            "get": {
                "summary": "RED over time of a service (entry spans) or of one of its operations",
                "parameters": [
                    {
                        **_query("service", {"type": "string", "minLength": 1}, "the service"),
                        "required": True,
                    },
                    _query("operation", {"type": "string"}, "one operation (span name) of the service"),
                    *_RANGE,
                    _query(
                        "step",
                        {"type": "integer", "minimum": 60, "maximum": 366 * 86400, "multipleOf": 60},
                        "seconds per point (at most 1,440 points over the range)",
                    ),
                ],
                "responses": {
                    "200": _json(_schema("Latency"), "points: bucket_start_unix_nano and red per step"),
                    "400": _ERROR,
                },
            }
        },
        "/api/graph": {
            "get": {
                "summary": "The service graph: services, queues, topics, buses and external dependencies as "
                "nodes; sync, publish, consume, subscription and external hops as edges",
                "parameters": _RANGE,
                "responses": {
                    "200": _json(_schema("ServiceGraph"), "nodes and edges with their RED and queue wait"),
                    "400": _ERROR,
                },
            }
        },
        "/api/queues": {
            "get": {
                "summary": "Every SQS queue the collector polls (--sqs): latest visible, in-flight and "
                "delayed counts, the oldest message's age, its dead-letter queue and maxReceiveCount, the "
                "queues that dead-letter into it, and the last poll error",
                "responses": {
                    "200": _json(
                        _object(["queues"], {"queues": _array(_schema("Queue"))}), "every polled queue"
                    )
                },
            }
        },
        "/api/queues/{name}/depth": {
            "get": {
                "summary": "One queue's depth over time, one sample per poll, oldest first",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$"},
                        "description": "an SQS queue name",
                    },
                    *_RANGE,
                ],
                "responses": {
                    "200": _json(_schema("DepthSeries"), "the samples of the range"),
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
    },
    "components": {
        "responses": {
            "Error": _json(
                _object(
                    ["code", "message"],
                    {
                        "code": {
                            "type": "integer",
                            "description": "google.rpc.Code: 3 for a 400, 5 for a 404",
                        },
                        "message": {"type": "string"},
                    },
                ),
                "a google.rpc.Status: what is wrong, naming the parameter",
            ),
            "Otlp": _json(
                _schema("OtlpTraces"), "OTLP JSON TracesData (hex ids, integer enums) and truncated"
            ),
        },
        "schemas": {**_OTLP_SCHEMAS, **_API_SCHEMAS},
    },
}
