"""Odd values that are valid OTLP survive the collector: links of an invalid context, NaN and infinities.

The specification lets SDKs record a link whose trace and span ids are all zeros when it carries
attributes (the Python SDK does), and both Node and Python send NaN and infinite double attributes. The
spans go, as Node's OTLP JSON exporter writes them and through the Python SDK's protobuf exporter, to a
real ``hopscope collector`` on SQLite and on chdb that forwards to a second one. Nothing is rejected; every
read (flow detail, the flow's OTLP JSON, the trace, ``hopscope export``, the forwarded copy) gives the
links back as sent and answers strict JSON with the doubles as OTLP JSON writes them; and a link of an
invalid context joins no flow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link, SpanKind
from opentelemetry.util.types import AttributeValue

from hopscope.collector.otlp.codec import traces_from_json
from tests.helpers.servers import HOPSCOPE, CollectorProcess

ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16
NON_FINITE = ["NaN", "Infinity", "-Infinity"]
ODD_KEYS = ["odd.nan", "odd.inf", "odd.ninf", "odd.list"]
QUEUE = {"messaging.system": "aws_sqs", "messaging.destination.name": "odd-queue"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """The collector that the one under test forwards to (SQLite)."""
    collector = CollectorProcess(db=tmp_path_factory.mktemp("upstream") / "up.db", args=[]).start()
    yield collector
    assert collector.stop() == 0


@pytest.fixture(scope="module", params=["sqlite", "chdb"])
def collector(
    request: pytest.FixtureRequest, upstream: CollectorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    """A collector on either store (chdb: ClickHouse's engine, in that process), forwarding upstream."""
    folder = tmp_path_factory.mktemp("odd")
    store = [] if request.param == "sqlite" else ["--store", f"chdb://{folder / 'chdb'}?database=odd"]
    collector = CollectorProcess(db=folder / "hopscope.db", args=[*store, "--forward", upstream.url]).start()
    yield collector
    assert collector.stop() == 0


def _reject_constant(name: str) -> None:
    raise AssertionError(f"the answer is not strict JSON: it holds the bare constant {name}")


def _strict_json(answer: httpx.Response) -> Any:
    """The answer's JSON, asserting a 200 and no bare NaN/Infinity (which strict JSON parsers refuse)."""
    assert answer.status_code == 200, answer.text
    return json.loads(answer.text, parse_constant=_reject_constant)


def _settled(http: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    while http.get("/healthz").json()["flows_pending"]:
        assert time.monotonic() < deadline, "stitching did not catch up"
        time.sleep(0.1)


def _values(document: Any, kind: str) -> list[Any]:
    """Every value of one kind (``doubleValue``, ``stringValue``) in an OTLP JSON document."""
    if isinstance(document, dict):
        found = [document[kind]] if kind in document else []
        return found + [value for item in document.values() for value in _values(item, kind)]
    if isinstance(document, list):
        return [value for item in document for value in _values(item, kind)]
    return []


def _links_of(traces: TracesData, exact: bool = True) -> dict[str, list[object]]:
    """Each span's links, by span name: each as its protobuf encoding (NaN compares unequal to itself), or,
    not ``exact``, as the ClickHouse layout keeps it (ids, trace state, attribute keys; values as text)."""
    return {
        span.name: [
            link.SerializeToString()
            if exact
            else (link.trace_id, link.span_id, link.trace_state, sorted(kv.key for kv in link.attributes))
            for link in span.links
        ]
        for resource_spans in traces.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }


def _wait_for_trace(http: httpx.Client, trace_id: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while (answer := http.get(f"/api/traces/{trace_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"trace {trace_id} never arrived"
        time.sleep(0.1)
    return answer


def _check_reads(
    collector: CollectorProcess, upstream: CollectorProcess, orders: dict[str, str], sent: TracesData
) -> None:
    """Every read of ``orders`` (correlation id -> trace id) answers strict JSON with the links as sent,
    and each order is a flow of its own trace alone."""
    # ClickHouse keeps attribute values as text (README: "What the layout loses"); forwarding sends the
    # request as received, and SQLite keeps each span's encoding
    on_sqlite = "--store" not in collector.args
    sent_links, sent_layout = _links_of(sent), _links_of(sent, exact=False)
    http, up = collector.client(), upstream.client()
    _settled(http)
    flow_ids = set()
    for order, trace_id in orders.items():
        # each order is one flow of one trace: a link of an invalid context joins nothing
        [flow] = http.get("/api/flows", params={"correlation_id": order}).json()["flows"]
        assert flow["trace_count"] == 1, flow
        flow_ids.add(flow["flow_id"])
        detail = _strict_json(http.get(f"/api/flows/{flow['flow_id']}"))
        assert {span["trace_id"] for span in detail["spans"]} == {trace_id}
        [span] = detail["spans"]
        [link, *_] = span["links"]
        assert (link["trace_id"], link["span_id"]) == (ZERO_TRACE, ZERO_SPAN)
        assert link["attributes"]["messaging.message.id"] == f"m-{order}"
        for attributes in (span["attributes"], span["events"][0]["attributes"], link["attributes"]):
            odd_list = ["NaN", 1.5] if on_sqlite else "[NaN,1.5]"
            assert [attributes[key] for key in ODD_KEYS] == [*NON_FINITE, odd_list]
        exported = _strict_json(http.get(f"/api/flows/{flow['flow_id']}/otlp"))
        stored = _strict_json(http.get(f"/api/traces/{trace_id}"))
        forwarded = _strict_json(_wait_for_trace(up, trace_id))
        assert set(NON_FINITE) <= set(_values(forwarded, "doubleValue"))
        assert set(NON_FINITE) <= set(_values(exported, "doubleValue" if on_sqlite else "stringValue"))
        for document, exact in ((exported, on_sqlite), (stored, on_sqlite), (forwarded, True)):
            links = _links_of(traces_from_json(document), exact)
            assert links == {name: (sent_links if exact else sent_layout)[name] for name in links}
            assert links
        if on_sqlite:  # the CLI reads the SQLite file beside the process
            out = subprocess.run(
                [HOPSCOPE, "export", "--trace", trace_id, "--db", str(collector.db)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            links = _links_of(traces_from_json(json.loads(out, parse_constant=_reject_constant)))
            assert links == {name: sent_links[name] for name in links} and links
    assert len(flow_ids) == len(orders)
    # AND the graph counts each consumer span's hop from its queue (a NaN or infinite receive count is none)
    edges = _strict_json(http.get("/api/graph"))["edges"]
    consume = [edge for edge in edges if edge["source"] == "aws_sqs:odd-queue" and edge["kind"] == "consume"]
    assert consume, edges
    for path in ("/api/services", f"/api/latency?service={span['service']}", "/api/flows?limit=1000"):
        _strict_json(http.get(path))
    http.close()
    up.close()


# -- Node's OTLP JSON exporter -------------------------------------------------------------------------------


def _value(value: object) -> dict[str, Any]:
    """An AnyValue as Node's exporter writes it; a str that names a non-finite double stays a double."""
    if isinstance(value, str) and value in NON_FINITE:
        return {"doubleValue": value}
    if value is None:
        return {"doubleValue": None}  # NaN through JSON.stringify: Node's exporter sends null
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _attributes(values: Mapping[str, object]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in values.items()]


def _node_span(trace_id: str, name: str, order: str, now: int) -> dict[str, Any]:
    """A span as @opentelemetry/exporter-trace-otlp-http writes it, with odd links and doubles."""
    odd = {"odd.nan": "NaN", "odd.inf": "Infinity", "odd.ninf": "-Infinity", "odd.list": ["NaN", 1.5]}
    return {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "name": name,
        "kind": 5,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 3_000_000),
        "attributes": _attributes(
            {
                "hopscope.correlation_id": order,
                **odd,
                "odd.null": None,
                "messaging.batch.message_count": 2.0,
                "hopscope.receive_count": "NaN",
                **QUEUE,
            }
        ),
        "droppedAttributesCount": 0,
        "events": [
            {
                "timeUnixNano": str(now + 1),
                "name": "odd",
                "attributes": _attributes(odd),
                "droppedAttributesCount": 0,
            }
        ],
        "droppedEventsCount": 0,
        "status": {"code": 0},
        "links": [
            {  # new SpanContext all zeros, as Node records one it was given
                "traceId": ZERO_TRACE,
                "spanId": ZERO_SPAN,
                "traceState": "vendor=x",
                "attributes": _attributes({"messaging.message.id": f"m-{order}", **odd}),
                "droppedAttributesCount": 0,
            },
            {"traceId": "", "spanId": "", "attributes": _attributes({"link.note": "empty"})},
            {"traceId": "ab" * 8, "spanId": "cd" * 4, "attributes": _attributes({"link.note": "short"})},
        ],
        "droppedLinksCount": 0,
    }


def test_node_json_with_zero_context_links_and_non_finite_doubles_is_stored_whole_and_read_back(
    collector: CollectorProcess, upstream: CollectorProcess
) -> None:
    # GIVEN two traces as Node's OTLP JSON exporter writes them: batch consumer spans whose only links have
    # an invalid context (all zeros, empty, too short), and NaN/Infinity doubles everywhere
    now = time.time_ns()
    orders = {f"o-{os.urandom(4).hex()}": os.urandom(16).hex() for _ in range(2)}
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": _attributes({"service.name": "node-shop"}),
                    "droppedAttributesCount": 0,
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "@opentelemetry/instrumentation-aws-lambda", "version": "0.50.0"},
                        "spans": [
                            _node_span(trace_id, f"batch {order}", order, now)
                            for order, trace_id in orders.items()
                        ],
                    }
                ],
            }
        ]
    }
    # WHEN it is posted
    with collector.client() as http:
        answer = http.post(
            "/v1/traces", content=json.dumps(document), headers={"Content-Type": "application/json"}
        )
    # THEN nothing is rejected
    assert answer.status_code == 200, answer.text
    assert "partialSuccess" not in answer.json()
    # AND every read gives the spans back as sent, and each trace is a flow of its own
    sent = traces_from_json(document)
    [[span, _]] = [list(scope.spans) for scope in sent.resource_spans[0].scope_spans]
    assert [link.trace_id for link in span.links] == [bytes(16), b"", bytes.fromhex("ab" * 8)]
    _check_reads(collector, upstream, orders, sent)


# -- the Python SDK's protobuf exporter --------------------------------------------------------------------


def test_python_sdk_protobuf_with_zero_context_links_and_nan_is_stored_whole_and_read_back(
    collector: CollectorProcess, upstream: CollectorProcess
) -> None:
    # GIVEN two traces from the Python SDK whose consumer spans link to an invalid context (the SDK keeps
    # such a link because it has attributes) and carry NaN and infinities in attributes, events and links
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "py-shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("odd")
    odd: dict[str, AttributeValue] = {
        "odd.nan": math.nan,
        "odd.inf": math.inf,
        "odd.ninf": -math.inf,
        "odd.list": [math.nan, 1.5],
    }
    orders = {}
    for _ in range(2):
        order = f"o-{os.urandom(4).hex()}"
        with tracer.start_as_current_span(
            f"batch {order}",
            kind=SpanKind.CONSUMER,
            links=[Link(INVALID_SPAN_CONTEXT, {"messaging.message.id": f"m-{order}", **odd})],
            attributes={
                "hopscope.correlation_id": order,
                "messaging.batch.message_count": 2,
                "hopscope.receive_count": math.inf,
                **QUEUE,
                **odd,
            },
        ) as span:
            span.add_event("odd", odd)
            orders[order] = format(span.get_span_context().trace_id, "032x")
    spans = memory.get_finished_spans()
    assert [len(span.links) for span in spans] == [1, 1]
    # WHEN the SDK's OTLP/HTTP protobuf exporter sends them
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()  # type: ignore[no-untyped-call]
    # THEN every read gives them back as the exporter encoded them, and each trace is a flow of its own
    sent = TracesData.FromString(encode_spans(spans).SerializeToString())
    _check_reads(collector, upstream, orders, sent)
