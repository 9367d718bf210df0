"""The OpenAPI description of the collector's HTTP API, served at ``/openapi.json``.

A test checks that every route of the app is described here and that the document is valid OpenAPI 3.1.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_TIME = {
    "oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}],
    "description": "unix nanoseconds, or an ISO 8601 date-time (UTC unless it says otherwise)",
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_FLOW_ID = {
    "name": "flow_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "description": "a flow id; an id that was merged into another flow answers for that flow",
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "hopscope collector",
        "version": "1",
        "description": "OTLP/HTTP trace receiver and the read-only query API over stored spans and flows.",
    },
    "paths": {
        "/v1/traces": {
            "post": {
                "summary": "Receive spans (OTLP/HTTP, protobuf or JSON, optionally gzip)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "ExportTraceServiceResponse; partial_success when spans were rejected"
                    },
                    "400": {"description": "undecodable body (google.rpc.Status)"},
                    "401": {"description": "missing or wrong bearer token"},
                    "413": {"description": "body over the limit, also after inflation"},
                    "415": {"description": "unsupported Content-Type or Content-Encoding"},
                    "503": {"description": "write path saturated; retry after Retry-After seconds"},
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness, spans waiting to be stored, forwarding counters",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
        "/api/traces/{trace_id}": {
            "get": {
                "summary": "One trace as OTLP JSON (TracesData)",
                "parameters": [
                    {
                        "name": "trace_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                    }
                ],
                "responses": {
                    "200": {"$ref": "#/components/responses/Otlp"},
                    "400": _ERROR,
                    "404": _ERROR,
                },
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
                    _query("min_duration_ms", {"type": "number"}, "end-to-end duration at least this"),
                    _query("correlation_id", {"type": "string"}, "flows that carry this correlation id"),
                    _query("message_id", {"type": "string"}, "flows that carried this messaging.message.id"),
                    {
                        **_query(
                            "attr",
                            {"type": "array", "items": {"type": "string"}},
                            "key:value of a span attribute; repeatable",
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
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "flows to skip"),
                ],
                "responses": {
                    "200": {
                        "description": "a page of flow summaries",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["flows", "limit", "offset"],
                                    "properties": {
                                        "flows": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/FlowSummary"},
                                        },
                                        "limit": {"type": "integer"},
                                        "offset": {"type": "integer"},
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                },
            }
        },
        "/api/flows/{flow_id}": {
            "get": {
                "summary": "A flow: summary, every span of every trace, async hops with queue wait",
                "parameters": [_FLOW_ID],
                "responses": {
                    "200": {
                        "description": "the flow",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/FlowDetail"}}
                        },
                    },
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/services": {
            "get": {
                "summary": "RED per service: rate, error rate, p50/p95/p99 of server and consumer spans",
                "parameters": [
                    _query("since", _TIME, "start of the range (default: an hour before until)"),
                    _query("until", _TIME, "end of the range (default: now)"),
                ],
                "responses": {
                    "200": {
                        "description": "one entry per service: red, operations",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                },
            }
        },
        "/api/latency": {
            "get": {
                "summary": "RED over time of a service (entry spans) or of one of its operations",
                "parameters": [
                    {**_query("service", {"type": "string"}, "the service"), "required": True},
                    _query("operation", {"type": "string"}, "one operation (span name) of the service"),
                    _query("since", _TIME, "start of the range (default: an hour before until)"),
                    _query("until", _TIME, "end of the range (default: now)"),
                    _query("step", {"type": "integer", "minimum": 60, "multipleOf": 60}, "seconds per point"),
                ],
                "responses": {
                    "200": {
                        "description": "points: bucket_start_unix_nano and red per step",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                },
            }
        },
        "/api/graph": {
            "get": {
                "summary": "The service graph: services, queues, topics, buses and external dependencies as "
                "nodes; sync, publish, consume, subscription and external hops as edges",
                "parameters": [
                    _query("since", _TIME, "start of the range (default: an hour before until)"),
                    _query("until", _TIME, "end of the range (default: now)"),
                ],
                "responses": {
                    "200": {
                        "description": "nodes (id, type, name) and edges (source, target, kind, "
                        "red: span_count, rate_per_second, error_count, error_rate, p50/p95/p99_ms; "
                        "queue_wait_p50/p95/p99_ms, max_receive_count)",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
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
                    "200": {
                        "description": "queues: name, url, arn, dead_letter_queue, max_receive_count, "
                        "sources, is_dead_letter_queue, visible, in_flight, delayed, oldest_age_seconds, "
                        "age_source (cloudwatch or estimate), sampled_unix_nano, last_polled_unix_nano, "
                        "last_error, last_error_unix_nano",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/api/queues/{name}/depth": {
            "get": {
                "summary": "One queue's depth over time, one sample per poll, oldest first",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    _query("since", _TIME, "start of the range (default: an hour before until)"),
                    _query("until", _TIME, "end of the range (default: now)"),
                ],
                "responses": {
                    "200": {
                        "description": "samples (polled_unix_nano, visible, in_flight, delayed, "
                        "oldest_age_seconds, age_source) and truncated (true when cut at 10,080 samples)",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/api/flows/{flow_id}/otlp": {
            "get": {
                "summary": "A flow as OTLP JSON, importable into any OTLP backend",
                "parameters": [_FLOW_ID],
                "responses": {"200": {"$ref": "#/components/responses/Otlp"}, "400": _ERROR, "404": _ERROR},
            }
        },
    },
    "components": {
        "responses": {
            "Error": {
                "description": "what is wrong, naming the parameter",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["error"],
                            "properties": {"error": {"type": "string"}},
                        }
                    }
                },
            },
            "Otlp": {
                "description": "OTLP JSON TracesData (hex ids, integer enums)",
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"resourceSpans": {"type": "array"}}}
                    }
                },
            },
        },
        "schemas": {
            "FlowSummary": {
                "type": "object",
                "required": [
                    "flow_id",
                    "start_unix_nano",
                    "end_unix_nano",
                    "duration_ms",
                    "span_count",
                    "trace_count",
                ],
                "properties": {
                    "flow_id": {"type": "integer"},
                    "start_unix_nano": {"type": "integer"},
                    "end_unix_nano": {"type": "integer"},
                    "duration_ms": {"type": "number"},
                    "span_count": {"type": "integer"},
                    "trace_count": {"type": "integer"},
                    "error_count": {"type": "integer"},
                    "max_receive_count": {"type": "integer"},
                    "entry_service": {"type": ["string", "null"]},
                    "entry_operation": {"type": ["string", "null"]},
                    "services": {"type": "array", "items": {"type": "string"}},
                    "correlation_ids": {"type": "array", "items": {"type": "string"}},
                },
            },
            "FlowDetail": {
                "type": "object",
                "required": ["summary", "spans", "hops"],
                "properties": {
                    "summary": {"$ref": "#/components/schemas/FlowSummary"},
                    "spans": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "description": "trace_id, span_id, parent_span_id, name, kind, service, "
                            "start/end unix nanos, duration_ms, status, attributes, events, links, "
                            "resource, scope",
                        },
                    },
                    "hops": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "description": "producer and consumer span refs, services, messaging_system, "
                            "destination, queue_wait_ms (consumer start minus producer end), receive_count",
                        },
                    },
                },
            },
        },
    },
}
