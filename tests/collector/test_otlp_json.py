"""A hand-built OTLP JSON request is stored and returned identically (in OTLP JSON's canonical form)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from tests.helpers.servers import CollectorProcess

TRACE_ID = "5B8EFFF798038103D269B633813FC60C"  # hex ids are case-insensitive
LINKED_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _request() -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "shipping"}},
                        {"key": "faas.max_memory", "value": {"intValue": 134217728}},  # int64 as a number
                    ],
                    "droppedAttributesCount": 1,
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "hopscope.instrumentation", "version": "0.1.0"},
                        "spans": [
                            {
                                "traceId": TRACE_ID,
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "traceState": "congo=t61rcWkgMzE",
                                "name": "shipping process",
                                "kind": 5,
                                "startTimeUnixNano": "1700000000000000000",  # int64 as a string
                                "endTimeUnixNano": 1700000000250000000,  # int64 as a number
                                "attributes": [
                                    {"key": "messaging.system", "value": {"stringValue": "aws_sqs"}},
                                    {"key": "messaging.batch.message_count", "value": {"intValue": "10"}},
                                    {"key": "retry", "value": {"boolValue": True}},
                                    {"key": "ratio", "value": {"doubleValue": 0.75}},
                                    {"key": "payload", "value": {"bytesValue": "AAEC/w=="}},
                                    {
                                        "key": "tags",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": "2"}]
                                            }
                                        },
                                    },
                                    {
                                        "key": "order",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "id", "value": {"stringValue": "o-1"}},
                                                    {"key": "lines", "value": {"intValue": 3}},
                                                ]
                                            }
                                        },
                                    },
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": "1700000000100000000",
                                        "name": "exception",
                                        "attributes": [
                                            {"key": "exception.type", "value": {"stringValue": "Timeout"}}
                                        ],
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": LINKED_TRACE_ID,
                                        "spanId": "b7ad6b7169203331",
                                        "attributes": [
                                            {"key": "messaging.message.id", "value": {"stringValue": "m-42"}}
                                        ],
                                        "droppedAttributesCount": 2,
                                    }
                                ],
                                "status": {"code": 2, "message": "timed out"},
                                "droppedEventsCount": 1,
                                "someFieldFromTheFuture": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def _canonical(document: dict[str, Any]) -> dict[str, Any]:
    """What OTLP JSON output looks like: lowercase hex, int64 as strings, empty fields omitted."""
    expected = copy.deepcopy(document)
    resource = expected["resourceSpans"][0]["resource"]
    resource["attributes"][1]["value"]["intValue"] = "134217728"
    span = expected["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = TRACE_ID.lower()
    span["spanId"] = span["spanId"].lower()
    del span["parentSpanId"], span["someFieldFromTheFuture"]
    span["endTimeUnixNano"] = "1700000000250000000"
    span["attributes"][6]["value"]["kvlistValue"]["values"][1]["value"]["intValue"] = "3"
    return expected


def test_hand_built_otlp_json_is_stored_and_returned_identically(
    start_collector: Callable[..., CollectorProcess],
) -> None:
    collector = start_collector()
    with collector.client() as http:
        sent = http.post(
            "/v1/traces", content=json.dumps(_request()), headers={"Content-Type": "application/json"}
        )
        assert sent.status_code == 200
        assert sent.headers["content-type"] == "application/json"
        assert sent.json() == {}
        returned = http.get(f"/api/traces/{TRACE_ID}")
    assert returned.status_code == 200
    assert returned.json() == _canonical(_request())
