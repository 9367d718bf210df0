"""schemathesis against the collector's own ``/openapi.json``: no input makes an endpoint answer 5xx, and
every answer matches the schema the document gives for it (status, content type, body).

A real collector (uvicorn on 127.0.0.1) over a real SQLite file holding flows made by the real OpenTelemetry
SDK, a span with NaN and infinite doubles, and a polled queue. Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hopscope.collector.model.queues import DepthSample, QueueState
from hopscope.collector.query.openapi import OPENAPI
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, order_chain
from tests.helpers.servers import serve_in_thread

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 30
NON_FINITE = {"d.nan": math.nan, "d.inf": math.inf, "d.-inf": -math.inf}


def _fill(store: SQLiteStore) -> None:
    """Three order flows from the SDK (one failed), one span carrying NaN/Inf doubles, one polled queue."""
    services = Services()
    for order_id, fail in (("o-1", False), ("o-2", True), ("o-3", False)):
        order_chain(services, order_id, fail=fail)
    request = encode_spans(services.spans())
    odd = request.resource_spans[0].scope_spans[0].spans[0]
    odd.attributes.extend(KeyValue(key=k, value=AnyValue(double_value=v)) for k, v in NON_FINITE.items())
    store.write([request])
    store.write_logs([_logs_of(request)])
    now = time.time_ns()
    queues = [
        QueueState("shipping", "http://127.0.0.1/q/shipping", "arn:shipping", "shipping-dlq", 3),
        QueueState("shipping-dlq", "http://127.0.0.1/q/shipping-dlq", "arn:shipping-dlq"),
    ]
    samples = [DepthSample("shipping", now - i * 60_000_000_000, i, 1, 0, 12.5, "estimate") for i in range(5)]
    store.record_queue_poll(now, queues, samples)


def _logs_of(request: ExportTraceServiceRequest) -> ExportLogsServiceRequest:
    """A log record in each span of the request (an error with NaN among them, a map body), as OTLP."""
    logs = ExportLogsServiceRequest()
    for resource_spans in request.resource_spans:
        resource_logs = logs.resource_logs.add()
        resource_logs.resource.CopyFrom(resource_spans.resource)
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = "orders"
        for number, span in enumerate(s for scope in resource_spans.scope_spans for s in scope.spans):
            record = scope_logs.log_records.add(
                time_unix_nano=span.start_time_unix_nano + 1,
                trace_id=span.trace_id,
                span_id=span.span_id,
                severity_number=17 if number % 3 == 0 else 9,
                severity_text="ERROR" if number % 3 == 0 else "INFO",
            )
            if number % 2:
                record.body.kvlist_value.values.add(key="d.nan", value=AnyValue(double_value=math.nan))
            else:
                record.body.string_value = f"<b>line {number}</b> of {span.name}"
            record.attributes.extend(span.attributes)
    return logs


@pytest.fixture(scope="module")
def collector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "hopscope.db"
    store = SQLiteStore(db)
    _fill(store)
    with serve_in_thread(CollectorSettings(db=db), store) as url:
        assert httpx.get(f"{url}/openapi.json").json() == OPENAPI  # what is fuzzed is what is served
        yield url
    store.close()


# Loaded from the module (schemathesis' lazy fixture loader does not work with this pytest); the fixture
# above checks that it is what /openapi.json serves.
schema = schemathesis.openapi.from_dict(OPENAPI)
# Generated protobuf bodies are arbitrary bytes (format: binary), sent as they are.
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error_and_every_answer_matches_the_schema(
    case: schemathesis.Case[Any], collector_url: str
) -> None:
    # GIVEN a collector over real data, WHEN schemathesis sends what the schema allows (and what it does not)
    # THEN no answer is 5xx and each matches the documented status, content type and body schema
    case.call_and_validate(base_url=collector_url, checks=CHECKS)


def test_answers_about_real_flows_traces_and_queues_match_the_schema(collector_url: str) -> None:
    # GIVEN the ids that really exist (random ids mostly find nothing)
    with httpx.Client(base_url=collector_url) as http:
        flows = http.get("/api/flows").json()["flows"]
        detail = http.get(f"/api/flows/{flows[0]['flow_id']}").json()
    trace_ids = {span["trace_id"] for flow in flows for span in [*detail["spans"]]}
    assert len(flows) == 3 and trace_ids
    calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("/api/flows", {}, {"status": "error", "attr": ["hopscope.correlation_id:o-2"]}),
        *(("/api/flows/{flow_id}", {"flow_id": flow["flow_id"]}, {}) for flow in flows),
        *(("/api/flows/{flow_id}/otlp", {"flow_id": flow["flow_id"]}, {}) for flow in flows),
        *(("/api/flows/{flow_id}/logs", {"flow_id": flow["flow_id"]}, {}) for flow in flows),
        *(("/api/flows/{flow_id}/logs/otlp", {"flow_id": flow["flow_id"]}, {}) for flow in flows),
        ("/api/logs", {}, {"correlation_id": "o-2"}),
        ("/api/logs", {}, {"severity": "error", "q": "LINE"}),
        ("/api/logs", {}, {"order": "oldest", "limit": 3}),
        *(("/api/traces/{trace_id}", {"trace_id": trace_id}, {}) for trace_id in trace_ids),
        ("/api/services", {}, {"since": "2000-01-01T00:00:00Z"}),
        ("/api/latency", {}, {"service": "shipping", "step": 600}),
        ("/api/graph", {}, {"since": 0}),
        ("/api/queues", {}, {}),
        ("/api/queues/{name}/depth", {"name": "shipping"}, {}),
    ]
    for path, path_parameters, query in calls:
        # WHEN each is asked for
        case = schema[path]["GET"].Case(path_parameters=path_parameters, query=query)
        response = case.call_and_validate(base_url=collector_url, checks=CHECKS)
        # THEN it is found, and matches the schema
        assert response.status_code == 200, (path, path_parameters, response.text)
        if "logs" in path and "otlp" not in path:  # and log searches find real records
            assert response.json()["logs"], (path, query)


def test_nan_and_infinite_doubles_are_strings_in_the_flat_spans_as_in_otlp_json(collector_url: str) -> None:
    # GIVEN a stored span whose attributes hold NaN, +Inf and -Inf doubles (valid OTLP)
    with httpx.Client(base_url=collector_url) as http:
        flows = http.get("/api/flows").json()["flows"]
        # WHEN its flow is read, flat and as OTLP JSON
        details = [http.get(f"/api/flows/{flow['flow_id']}") for flow in flows]
        documents = [http.get(f"/api/flows/{flow['flow_id']}/otlp") for flow in flows]
    # THEN both answers are strict JSON, the doubles written as OTLP JSON writes them
    flat = [
        span["attributes"]
        for answer in details
        for span in answer.json()["spans"]
        if "d.nan" in span["attributes"]
    ]
    assert flat == [{**flat[0], "d.nan": "NaN", "d.inf": "Infinity", "d.-inf": "-Infinity"}]
    for answer in [*details, *documents]:
        assert b"NaN," not in answer.content and b":Infinity" not in answer.content
    otlp = [
        attribute["value"]
        for answer in documents
        for resource in answer.json()["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
        for attribute in span.get("attributes", [])
        if attribute["key"] in NON_FINITE
    ]
    assert sorted(value["doubleValue"] for value in otlp) == ["-Infinity", "Infinity", "NaN"]
