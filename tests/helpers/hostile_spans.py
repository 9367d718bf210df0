"""A database whose every span name, attribute, event, link, status, scope, queue name and poll error carries
Markdown, HTML, LaTeX, emoji, Streamlit-directive and Graphviz DOT payloads, each aimed at a tracking server:
what the dashboard must show as text. Built through the real SQLite store (write, then stitch)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import conventions
from hopscope.collector.model.queues import DepthSample, QueueState
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_samples import attrs

# The literal pieces a test looks for in the page's text: each must be shown, none rendered.
MARKERS = ("![px](", "[Reset your password](", "<img src=", "$\\frac{1}{2}$", ":red[alert]")


def hostile(tag: str, tracker: str) -> str:
    """``tag`` followed by one payload of each kind, every URL pointing at ``tracker``/``tag``."""
    url = f"{tracker}/{tag}"
    return (
        f"{tag} ![px]({url}.png) [Reset your password]({url}/reset) <img src={url}.gif> "
        f"<script>fetch('{url}/js')</script> <a href=\"{url}/a\">a</a> $\\frac{{1}}{{2}}$ :red[alert] "
        f':material/warning: :smile: **bold** <b>b</b><br>www.example.com "];evil[URL="{url}/dot" label="x" '
        f"\\N\\l &lt;i&gt;"
    )


@dataclass
class Tracker:
    """A tiny HTTP server on 127.0.0.1 that records every request it gets (and answers 204)."""

    url: str
    paths: list[str] = field(default_factory=list)


@contextmanager
def tracking_server() -> Iterator[Tracker]:
    paths: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def _record(self) -> None:
            paths.append(f"{self.command} {self.path}")
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST = do_HEAD = do_OPTIONS = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Tracker(f"http://127.0.0.1:{server.server_address[1]}", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass(frozen=True)
class HostileNames:
    """The names the fixture gave, for tests that look for them."""

    api: str
    worker: str
    queue: str
    dead_letter_queue: str
    long_span: str


def _span(
    scope: object, trace_id: bytes, name: str, kind: int, start: int, end: int, **fields: object
) -> Span:
    span: Span = scope.spans.add(  # type: ignore[attr-defined]
        trace_id=trace_id, span_id=os.urandom(8), name=name, kind=kind,
        start_time_unix_nano=start, end_time_unix_nano=end, **fields,
    )  # fmt: skip
    return span


def hostile_request(tracker: str, now: int) -> tuple[ExportTraceServiceRequest, HostileNames]:
    """Two traces of two services joined by a queue: a failing API span that calls an AWS API and publishes
    a message, and a worker's retried consumer span linked to it, with a very long child span name."""

    def h(tag: str) -> str:
        return hostile(tag, tracker)

    names = HostileNames(h("api"), h("worker"), h("queue"), h("dlq"), "long " + "x" * 300 + h("long"))
    request = ExportTraceServiceRequest()
    ms = 1_000_000

    api = request.resource_spans.add()
    api.resource.attributes.extend(attrs({"service.name": names.api, h("resource-key"): h("resource")}))
    scope = api.scope_spans.add()
    scope.scope.name, scope.scope.version = h("scope"), h("version")
    trace_a = os.urandom(16)
    root = _span(scope, trace_a, h("op"), Span.SpanKind.SPAN_KIND_SERVER, now, now + 40 * ms)
    root.attributes.extend(
        attrs({h("key"): h("value"), conventions.CORRELATION_ID: h("cid"), "list": [h("item"), 3]})
    )
    root.status.CopyFrom(Status(code=Status.StatusCode.STATUS_CODE_ERROR, message=h("status")))
    event = root.events.add(time_unix_nano=now + 5 * ms, name=h("event"))
    event.attributes.extend(attrs({h("event-key"): h("event-value")}))
    client = _span(
        scope, trace_a, h("call"), Span.SpanKind.SPAN_KIND_CLIENT, now + 2 * ms, now + 8 * ms,
        parent_span_id=root.span_id,
    )  # fmt: skip
    client.attributes.extend(attrs({"rpc.system": "aws-api", "rpc.service": h("rpc")}))
    producer = _span(
        scope, trace_a, h("publish"), Span.SpanKind.SPAN_KIND_PRODUCER, now + 10 * ms, now + 12 * ms,
        parent_span_id=root.span_id,
    )  # fmt: skip
    producer.attributes.extend(
        attrs(
            {
                conventions.MESSAGING_SYSTEM: "aws_sqs",
                conventions.DESTINATION_NAME: names.queue,
                conventions.MESSAGE_ID: h("message"),
            }
        )
    )

    worker = request.resource_spans.add()
    worker.resource.attributes.extend(attrs({"service.name": names.worker}))
    scope = worker.scope_spans.add()
    scope.scope.name = h("worker-scope")
    trace_b = os.urandom(16)
    consumer = _span(
        scope, trace_b, h("consume"), Span.SpanKind.SPAN_KIND_CONSUMER, now + 30 * ms, now + 60 * ms
    )
    consumer.attributes.extend(
        attrs(
            {
                conventions.MESSAGING_SYSTEM: "aws_sqs",
                conventions.DESTINATION_NAME: names.queue,
                conventions.MESSAGE_ID: h("message"),
                conventions.RECEIVE_COUNT: 2,
            }
        )
    )
    link = consumer.links.add(trace_id=trace_a, span_id=producer.span_id)
    link.attributes.extend(attrs({h("link-key"): h("link-value")}))
    # a link to a trace that is not stored: the page names it by ids only
    consumer.links.add(trace_id=os.urandom(16), span_id=os.urandom(8))
    _span(
        scope, trace_b, names.long_span, Span.SpanKind.SPAN_KIND_INTERNAL, now + 35 * ms, now + 50 * ms,
        parent_span_id=consumer.span_id,
    )  # fmt: skip
    return request, names


def build_hostile_database(db: Path, tracker: str) -> HostileNames:
    """The spans above, stitched into flows, and two polls of hostile queue names (one failing)."""
    now = time.time_ns() - 120 * 1_000_000_000
    request, names = hostile_request(tracker, now)
    store = SQLiteStore(db)
    try:
        store.write([request])
        while store.stitch_flows(1000):
            pass
        source = QueueState(
            name=names.queue, url=f"{tracker}/queue-url", arn=hostile("arn", tracker),
            dlq_name=names.dead_letter_queue, max_receive_count=3,
        )  # fmt: skip
        dead = QueueState(name=names.dead_letter_queue, url=f"{tracker}/dlq-url")
        failing = QueueState(
            name=hostile("failing-queue", tracker), url=f"{tracker}/f", error=hostile("error", tracker)
        )
        for step in range(3):
            polled = now + step * 10_000_000_000
            samples = [
                DepthSample(names.queue, polled, step, 1, 0, 12.5, hostile("age", tracker)),
                DepthSample(names.dead_letter_queue, polled, 1, 0, 0, 30.0, "estimate"),
            ]
            store.record_queue_poll(polled, [source, dead, failing], samples)
    finally:
        store.close()
    return names


# The request of issue 13, exactly: two SERVER spans of one service and name, start 1, end 2^63 - 1.
POISON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "poison-api"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "GET /poison",
                            "kind": 2,
                            "startTimeUnixNano": "1",
                            "endTimeUnixNano": "9223372036854775807",
                        },
                        {
                            "traceId": "5b8efff798038103d269b633813fc60d",
                            "spanId": "eee19b7ec3c1b175",
                            "name": "GET /poison",
                            "kind": 2,
                            "startTimeUnixNano": "1",
                            "endTimeUnixNano": "9223372036854775807",
                        },
                    ]
                }
            ],
        }
    ]
}
