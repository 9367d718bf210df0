"""Links of an invalid context on both stores: stored and read back as sent, joining no flow and no hop.

The specification lets SDKs record a link whose ids are all zeros when it carries attributes (the Python
SDK does); ids of the wrong length or empty come from hand-written exporters. None of them names a span,
so none may join flows (all zero-context links would otherwise join every such span into one flow) or
count a hop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hopscope.collector.query.layer import QueryLayer
from tests.helpers.otlp_samples import attrs, spans_of

T0 = 1_800_000_000 * 10**9
MS = 10**6
HOUR = 3600 * 10**9
K = Span.SpanKind
# (trace id, span id) of links that name no span: all zeros, empty, wrong lengths, a zero span id only
ODD_CONTEXTS = [
    (bytes(16), bytes(8)),
    (b"", b""),
    (b"\xab" * 8, b"\xcd" * 4),
    (os.urandom(16), bytes(8)),
]
QUEUE = {"messaging.system": "aws_sqs", "messaging.destination.name": "shipping"}


@pytest.fixture
def store(new_store: Callable[..., Any]) -> Any:
    """The shared store suite: every test that takes ``store`` runs on SQLite and on ClickHouse (chdb)."""
    return new_store("odd_links")


def _request(*spans: Span, service: str = "shipping") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(attrs({"service.name": service}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def _span(trace_id: bytes, name: str, kind: int, attributes: dict[str, object], start: int = T0) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + 10 * MS,
    )
    span.attributes.extend(attrs(attributes))
    return span


def _odd_links(span: Span, message_id: str) -> None:
    for trace_id, span_id in ODD_CONTEXTS:
        link = span.links.add(trace_id=trace_id, span_id=span_id, trace_state="vendor=x")
        link.attributes.extend(attrs({"messaging.message.id": message_id}))


def test_a_link_of_an_invalid_context_is_stored_as_sent_and_joins_no_flow(store: Any) -> None:
    # GIVEN two traces whose spans carry only links of an invalid context (all zeros, empty, wrong length),
    # and a third trace linked properly to the first
    first, second, third = os.urandom(16), os.urandom(16), os.urandom(16)
    spans = [
        _span(trace_id, f"batch {n}", K.SPAN_KIND_CONSUMER, {"hopscope.correlation_id": f"o-{n}"})
        for n, trace_id in enumerate((first, second))
    ]
    for n, span in enumerate(spans):
        _odd_links(span, f"m-{n}")
    linked = _span(third, "follow-up", K.SPAN_KIND_CONSUMER, {})
    linked.links.add(trace_id=first, span_id=spans[0].span_id)
    # WHEN they are stored
    store.write([_request(*spans, linked)])
    # THEN the spans read back with every link as sent
    for span in spans:
        traces = store.get_trace(span.trace_id)
        assert traces is not None
        [stored] = spans_of(traces)
        assert [(link.trace_id, link.span_id, link.trace_state) for link in stored.links] == [
            (trace_id, span_id, "vendor=x") for trace_id, span_id in ODD_CONTEXTS
        ]
    # AND the two traces stay flows of their own (a proper link still joins), no flow holds a zero trace
    flows = [store.flow_of_trace(trace_id) for trace_id in (first, second, third)]
    assert None not in flows
    assert flows[0] != flows[1] and flows[0] == flows[2]
    layer = QueryLayer(store)
    summaries = [layer.flow_summary(flow) for flow in flows[:2]]
    assert [summary.trace_count if summary else None for summary in summaries] == [2, 1]
    assert store.flow_of_trace(bytes(16)) is None
    assert store.flow_of_trace(ODD_CONTEXTS[3][0]) is None


def test_a_link_of_an_invalid_context_counts_no_hop(store: Any) -> None:
    # GIVEN a producer, a batch consumer span linked to it and to four invalid contexts, and a batch span
    # with invalid links only (which is then an ordinary consumer span of its destination)
    producer = _span(os.urandom(16), "shipping publish", K.SPAN_KIND_PRODUCER, QUEUE)
    batch = _span(
        os.urandom(16),
        "shipping process",
        K.SPAN_KIND_CONSUMER,
        {**QUEUE, "messaging.batch.message_count": 5},
        start=T0 + 30 * MS,
    )
    batch.links.add(trace_id=producer.trace_id, span_id=producer.span_id)
    _odd_links(batch, "m-1")
    lonely = _span(
        os.urandom(16),
        "shipping process",
        K.SPAN_KIND_CONSUMER,
        {**QUEUE, "messaging.batch.message_count": 4},
        start=T0 + 50 * MS,
    )
    _odd_links(lonely, "m-2")
    # WHEN they are stored
    store.write([_request(producer, service="billing"), _request(batch, lonely)])
    # THEN the batch counts one hop (its one valid link), the other batch one of its own, with no wait
    edges = {(e.source, e.target, e.kind): e for e in QueryLayer(store).graph(T0, T0 + HOUR).edges}
    assert set(edges) == {
        ("service:billing", "aws_sqs:shipping", "publish"),
        ("aws_sqs:shipping", "service:shipping", "consume"),
    }
    consume = edges[("aws_sqs:shipping", "service:shipping", "consume")]
    assert consume.red.span_count == 2
