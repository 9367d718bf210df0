"""Property-based: OTLP requests with extreme values never get a 5xx, never stop stitching, and never keep
an ordinary span from its flow.

The requests go through the real receiver of a ``hopscope collector`` process, as protobuf and as OTLP JSON;
hypothesis picks the values (timestamps at the edges of fixed64, reversed times, NaN and infinite doubles,
the extremes of int64, empty and 100 kB names, nested arrays and maps, out-of-range enums).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from hopscope.collector.otlp.codec import traces_to_json
from tests.helpers.servers import CollectorProcess

NOW = time.time_ns()
EDGE_TIMES = [0, 1, 2**32, NOW - 10**9, NOW, NOW + 10**9, 2**63 - 1, 2**63, 2**64 - 1]
STORABLE = 2**63  # times from here on cannot be stored (64-bit signed nanoseconds)

scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
    st.sampled_from([-(2**63), 2**63 - 1, 0, -1]).map(lambda v: AnyValue(int_value=v)),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]).map(
        lambda v: AnyValue(double_value=v)
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: AnyValue(double_value=v)),
    st.text(max_size=40).map(lambda v: AnyValue(string_value=v)),
    st.sampled_from(["![px](http://127.0.0.1:9/t.png)", "<script>x</script>", "$\\frac{1}{2}$", ""]).map(
        lambda v: AnyValue(string_value=v)
    ),
    st.binary(max_size=40).map(lambda v: AnyValue(bytes_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
)


def _nest(value: AnyValue, depth: int) -> AnyValue:
    for level in range(depth):
        outer = AnyValue()
        if level % 2:
            outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        else:
            outer.array_value.values.add().CopyFrom(value)
        value = outer
    return value


# deeper than about 45 levels, upb itself refuses to build the message on the client side
values = st.one_of(scalars, st.builds(_nest, scalars, st.integers(1, 30)))
attributes = st.lists(st.tuples(st.text(max_size=12), values), max_size=8)
names = st.one_of(st.text(max_size=30), st.just(""), st.just("n" * 100_000), st.just("é🙂\u0000\u202e"))


@st.composite
def hostile_spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name=draw(names),
        kind=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 99])),  # 99: an enum value from a newer schema
        start_time_unix_nano=draw(st.sampled_from(EDGE_TIMES)),
        end_time_unix_nano=draw(st.sampled_from(EDGE_TIMES)),
        status=Status(code=draw(st.sampled_from([0, 1, 2, 7])), message=draw(st.text(max_size=20))),
    )
    for key, value in draw(attributes):
        span.attributes.add(key=key).value.CopyFrom(value)
    if draw(st.booleans()):
        event = span.events.add(name=draw(names), time_unix_nano=draw(st.sampled_from(EDGE_TIMES[:-2])))
        event.attributes.add(key="exception.message").value.CopyFrom(draw(values))
    if draw(st.booleans()):
        link = span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8))
        link.attributes.add(key="messaging.message.id").value.CopyFrom(draw(values))
    for key in ("hopscope.receive_count", "messaging.message.id", "hopscope.correlation_id"):
        if draw(st.booleans()):
            span.attributes.add(key=key).value.CopyFrom(draw(values))
    return span


def ordinary_span(order: str) -> Span:
    now = time.time_ns()
    return Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="POST /orders",
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 2_000_000,
        attributes=[KeyValue(key="hopscope.correlation_id", value=AnyValue(string_value=order))],
    )


@pytest.fixture(scope="module", params=["sqlite", "chdb"])
def collector(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    """A collector process on either store (chdb: ClickHouse's engine, in that process)."""
    folder = tmp_path_factory.mktemp("hostile")
    store = [] if request.param == "sqlite" else ["--store", f"chdb://{folder / 'chdb'}?database=hostile"]
    collector = CollectorProcess(db=folder / "hopscope.db", args=store).start()
    yield collector
    assert collector.stop() == 0


def test_extreme_values_get_200_or_400_and_ordinary_spans_still_reach_their_flows(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    ordinary: list[str] = []
    answers: dict[int, int] = {}
    http = httpx.Client(base_url=collector.url, timeout=60)

    @settings(
        max_examples=50 if collector.args else 150,  # about 5 s on SQLite, 15 s on chdb
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spans=st.lists(hostile_spans(), min_size=1, max_size=4), as_json=st.booleans())
    def post(spans: list[Span], as_json: bool) -> None:
        # GIVEN a request of hostile spans with an ordinary span among them
        order = f"o-{os.urandom(6).hex()}"
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name").value.string_value = "hostile"
        scope = resource_spans.scope_spans.add()
        scope.spans.extend([*spans[:1], ordinary_span(order), *spans[1:]])
        unstorable = sum(
            span.start_time_unix_nano >= STORABLE
            or span.end_time_unix_nano >= STORABLE
            or any(event.time_unix_nano >= STORABLE for event in span.events)
            for span in spans
        )
        # WHEN it is posted in either encoding
        if as_json:
            body = json.dumps(traces_to_json(TracesData.FromString(request.SerializeToString()))).encode()
            answer = http.post("/v1/traces", content=body, headers={"Content-Type": "application/json"})
        else:
            body = request.SerializeToString()
            answer = http.post("/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"})
        # THEN it is 200 (the unstorable spans refused through partial success) or a 400, never a 5xx
        answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200:
            if as_json:
                rejected = int(answer.json().get("partialSuccess", {}).get("rejectedSpans", 0))
            else:
                rejected = ExportTraceServiceResponse.FromString(
                    answer.content
                ).partial_success.rejected_spans
            assert rejected == unstorable
            ordinary.append(order)
        else:  # only a body that cannot be decoded: nesting past the protobuf parser's depth
            assert (
                "nest" in answer.text.lower()
                or "depth" in answer.text.lower()
                or "recurs" in answer.text.lower()
            )

    post()

    # THEN the stitcher reaches the end, and every ordinary span that was accepted is in its own flow
    assert answers.get(200, 0) >= len(ordinary) > 0
    deadline = time.monotonic() + 60
    while http.get("/healthz").json()["flows_pending"]:
        assert time.monotonic() < deadline, "stitching did not catch up"
        time.sleep(0.1)
    for order in ordinary:
        flows = http.get("/api/flows", params={"correlation_id": order}).json()["flows"]
        assert len(flows) == 1, order
        assert flows[0]["entry_operation"] == "POST /orders"
        detail = http.get(f"/api/flows/{flows[0]['flow_id']}")
        assert detail.status_code == 200
    # and every read of what was stored answers
    for flow in http.get("/api/flows", params={"limit": 1000}).json()["flows"]:
        assert http.get(f"/api/flows/{flow['flow_id']}").status_code == 200
        assert http.get(f"/api/flows/{flow['flow_id']}/otlp").status_code == 200
    for path in ("/api/services", "/api/graph", "/api/latency?service=hostile"):
        assert http.get(path).status_code == 200, path
    http.close()
