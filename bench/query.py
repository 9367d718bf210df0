"""Query benchmark: the HTTP query API over a store of a million spans, built through the real ingest path.

A generated shop of 20 services on AWS Lambda, 4 SNS topics and 6 SQS queues sends about 100,000 flows
(synchronous calls, DynamoDB and S3 calls, topics fanning out to 2-3 consumers that each start a linked
trace; 1% of spans fail) to a ``hopscope collector`` subprocess over OTLP/HTTP. Spans start over the last
20 hours. Three ``--window``s of spans are timed (into the empty store, with one window stored, and the
last one): the last one's ingest speed over the early ones (same run, same collector) says whether ingest
slows down as the store grows. An in-process store without stitching gets the same spans and windows first,
as the baseline. Then each query of the issue's list is repeated with different ids or parameters; medians
and p90 are printed against the targets. See bench/README.md.

    .venv/bin/python bench/query.py [--spans 1000000] [--window 100000] [--clients 4] [--repeat 21]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.store.sqlite.store import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
import ingest

# Median latency targets from the issue (ms), and the ingest ratio late / early.
TARGET_CORRELATION_MS = 50.0
TARGET_FLOW_PAGE_MS = 300.0
TARGET_FLOW_DETAIL_MS = 100.0
TARGET_GRAPH_MS = 1_000.0
TARGET_LATENCY_MS = 500.0
TARGET_INGEST_RATIO = 0.8

MS = 1_000_000
SECOND_NS = 1_000_000_000
HOUR_NS = 3_600 * SECOND_NS
SPREAD_NS = 20 * HOUR_NS  # span start times cover the 20 hours before the run
BATCH = 512
TEMPLATES = 2_000
WINDOW_FLOWS = 64  # flows whose spans are interleaved (sorted by end time, as SDKs export them)
DETAIL_SPANS = 50
LATENCY_STEP_SECONDS = 600
MAX_DEPTH = 4
ERROR_RATE = 0.01
FILL_REQUESTS_PER_WRITE = 8  # the baseline store's untimed middle part
HTTP_TIMEOUT_SECONDS = 120.0

Attrs = ingest.Attrs

# ---------------------------------------------------------------------------------------------------------
# The system: 20 services, 4 SNS topics fanning out to 6 SQS queues, AWS dependencies.
# ---------------------------------------------------------------------------------------------------------

SERVICES = (
    "orders-api", "checkout", "billing", "payments", "fraud-check", "inventory", "pricing", "catalog",
    "shipping", "carrier-gateway", "notifications", "email-sender", "sms-sender", "loyalty", "analytics",
    "audit-log", "customers", "search", "recommendations", "returns",
)  # fmt: skip
ENTRY_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "orders-api": (("POST", "/orders"), ("GET", "/orders/{id}"), ("POST", "/orders/{id}/cancel")),
    "checkout": (("POST", "/checkout"),),
    "customers": (("GET", "/customers/{id}"), ("PUT", "/customers/{id}")),
    "catalog": (("GET", "/products"), ("GET", "/products/{id}")),
    "search": (("GET", "/search"),),
    "returns": (("POST", "/returns"),),
}
ENTRY_SERVICES = tuple(ENTRY_ROUTES)
# Synchronous calls (HTTP between Lambdas behind API Gateway): caller -> callees.
CALLS: dict[str, tuple[str, ...]] = {
    "orders-api": ("checkout", "catalog", "customers", "pricing"),
    "checkout": ("pricing", "inventory", "fraud-check", "payments"),
    "payments": ("fraud-check",),
    "billing": ("payments", "customers"),
    "shipping": ("carrier-gateway", "inventory"),
    "notifications": ("email-sender", "sms-sender", "customers"),
    "returns": ("inventory", "payments"),
    "search": ("catalog", "recommendations"),
    "recommendations": ("catalog",),
    "catalog": ("pricing",),
    "customers": ("loyalty",),
}
# SNS topics -> (subscribed SQS queue, its consumer); the queues, also sent to directly.
TOPICS: dict[str, tuple[tuple[str, str], ...]] = {
    "order-events": (("billing-jobs", "billing"), ("inventory-updates", "inventory"),
                     ("analytics-ingest", "analytics")),
    "payment-events": (("shipping-requests", "shipping"), ("notification-jobs", "notifications"),
                       ("audit-trail", "audit-log")),
    "shipment-events": (("notification-jobs", "notifications"), ("analytics-ingest", "analytics"),
                        ("audit-trail", "audit-log")),
    "customer-events": (("audit-trail", "audit-log"), ("analytics-ingest", "analytics"),
                        ("notification-jobs", "notifications")),
}  # fmt: skip
QUEUES: dict[str, str] = {
    "billing-jobs": "billing",
    "inventory-updates": "inventory",
    "shipping-requests": "shipping",
    "notification-jobs": "notifications",
    "analytics-ingest": "analytics",
    "audit-trail": "audit-log",
}
PUBLISHES: dict[str, tuple[str, ...]] = {
    "orders-api": ("order-events", "audit-trail"),
    "checkout": ("order-events",),
    "returns": ("order-events", "audit-trail"),
    "payments": ("payment-events",),
    "billing": ("payment-events",),
    "shipping": ("shipment-events",),
    "customers": ("customer-events",),
    "inventory": ("analytics-ingest",),
    "carrier-gateway": ("shipment-events",),
}
EXTERNAL_CALLS = (
    ("DynamoDB", "GetItem"), ("DynamoDB", "PutItem"), ("DynamoDB", "Query"), ("DynamoDB", "UpdateItem"),
    ("S3", "GetObject"),
)  # fmt: skip
TABLES = ("orders", "payments", "stock", "customers", "shipments", "prices")
INTERNAL_STEPS = ("validate", "enrich", "persist", "render")
# Spans per flow: (lowest, highest, share of templates). About 10 on average; a few flows have exactly 50.
FLOW_SIZES = (
    (3, 5, 0.36),
    (6, 12, 0.41),
    (13, 24, 0.19),
    (25, 40, 0.035),
    (DETAIL_SPANS, DETAIL_SPANS, 0.005),
)


@dataclass
class Node:
    """One span of a flow template while it is built: its content, then its place in time."""

    service: str
    scope: str
    name: str
    kind: Span.SpanKind.ValueType
    attrs: Attrs
    self_ns: int  # time of its own, besides its children
    depth: int
    children: list[Node] = field(default_factory=list)
    consumers: list[tuple[Node, int]] = field(default_factory=list)  # (consumer root, queue wait ns)
    shares_message_id: bool = False  # a consumer of a direct SQS send sees the producer's message id
    start_ns: int = 0
    end_ns: int = 0


class FlowBuilder:
    """Builds one flow of exactly ``target`` spans from a random walk over the system."""

    def __init__(self, r: random.Random, target: int) -> None:
        self.r = r
        self.target = target
        self.count = 0
        self.hosts: list[Node] = []  # server, consumer and internal spans: where more work can go
        self.region = r.choice(ingest.REGIONS)

    @property
    def room(self) -> int:
        return self.target - self.count

    def node(
        self, service: str, scope: str, name: str, kind: Span.SpanKind.ValueType, attrs: Attrs, ms: float
    ) -> Node:
        self.count += 1
        return Node(service, scope, name, kind, attrs, int(ms * MS), depth=0)

    def build(self) -> Node:
        service = self.r.choice(ENTRY_SERVICES)
        method, route = self.r.choice(ENTRY_ROUTES[service])
        root = self.server(service, method, route, depth=0)
        self.work(root)
        while self.room > 1:
            self.work(self.r.choice(self.hosts))
        while self.room > 0:
            self.external(self.r.choice(self.hosts))
        return root

    def server(self, service: str, method: str, route: str, depth: int) -> Node:
        path = route.replace("{id}", str(self.r.randrange(10**6)))
        attrs = ingest.lambda_attrs(self.r, service, "http") | ingest.http_server_attrs(
            self.r, method, route, path, 201 if method == "POST" else 200
        )
        server = self.node(
            service, ingest.LAMBDA_SCOPE, f"{method} {route}", Span.SPAN_KIND_SERVER, attrs,
            self.r.uniform(2, 30),
        )  # fmt: skip
        server.depth = depth
        self.hosts.append(server)
        return server

    def work(self, host: Node) -> None:
        for _ in range(self.r.randint(1, 3)):
            if self.room <= 0:
                return
            roll = self.r.random()
            if roll < 0.35:
                self.external(host)
            elif roll < 0.5:
                self.internal(host)
            elif roll < 0.78 and host.depth < MAX_DEPTH:
                self.call(host)
            elif host.depth < MAX_DEPTH:
                self.publish(host)
            else:
                self.external(host)

    def external(self, host: Node) -> None:
        service, method = self.r.choice(EXTERNAL_CALLS)
        attrs = ingest.aws_call_attrs(service, method, self.region)
        if service == "DynamoDB":
            attrs |= {"db.system.name": "aws.dynamodb", "aws.dynamodb.table_names": [self.r.choice(TABLES)]}
        else:
            attrs |= {"aws.s3.bucket": "shop-assets", "aws.s3.key": f"img/{self.r.randrange(10**5)}.jpg"}
        host.children.append(
            self.node(
                host.service, ingest.BOTO_SCOPE, f"{service}.{method}", Span.SPAN_KIND_CLIENT, attrs,
                self.r.uniform(3, 25),
            )
        )  # fmt: skip

    def internal(self, host: Node) -> None:
        step = self.r.choice(INTERNAL_STEPS)
        attrs: Attrs = {
            "code.function.name": f"{host.service.replace('-', '_')}.handlers.{step}",
            "code.file.path": f"/var/task/{host.service.replace('-', '_')}/handlers.py",
            "code.line.number": self.r.randrange(20, 600),
        }
        internal = self.node(
            host.service, ingest.APP_SCOPE, f"{host.service} {step}", Span.SPAN_KIND_INTERNAL, attrs,
            self.r.uniform(1, 20),
        )  # fmt: skip
        internal.depth = host.depth
        host.children.append(internal)
        self.hosts.append(internal)

    def call(self, host: Node) -> None:
        callees = CALLS.get(host.service)
        if not callees or self.room < 2:
            self.external(host)
            return
        callee = self.r.choice(callees)
        method, route = self.r.choice((("GET", f"/v1/{callee}/{{id}}"), ("POST", f"/v1/{callee}")))
        url = f"https://{callee}.internal{route.replace('{id}', str(self.r.randrange(10**6)))}"
        client = self.node(
            host.service, ingest.HTTP_SCOPE, method, Span.SPAN_KIND_CLIENT,
            ingest.http_client_attrs(self.r, method, url, f"{callee}.internal", 200), self.r.uniform(1, 5),
        )  # fmt: skip
        host.children.append(client)
        server = self.server(callee, method, route, depth=host.depth + 1)
        client.children.append(server)
        self.work(server)

    def publish(self, host: Node) -> None:
        destinations = PUBLISHES.get(host.service)
        if not destinations or self.room < 2:
            self.external(host)
            return
        destination = self.r.choice(destinations)
        if destination in TOPICS:
            fan_out = min(self.r.choice((2, 2, 3)), self.room - 1)
            subscribers = self.r.sample(TOPICS[destination], k=fan_out)
            attrs = ingest.messaging_attrs(self.r, "aws_sns", "publish", destination) | ingest.aws_call_attrs(
                "SNS", "Publish", self.region
            )
        else:
            subscribers = [(destination, QUEUES[destination])]
            attrs = ingest.messaging_attrs(self.r, "aws_sqs", "send", destination) | ingest.aws_call_attrs(
                "SQS", "SendMessage", self.region
            )
        if len(subscribers) < 2 and destination in TOPICS:
            self.external(host)
            return
        producer = self.node(
            host.service, ingest.BOTO_SCOPE, f"{destination} publish", Span.SPAN_KIND_PRODUCER, attrs,
            self.r.uniform(5, 30),
        )  # fmt: skip
        host.children.append(producer)
        consumers = []
        for queue, service in subscribers:
            consumer = self.consumer(queue, service, host.depth + 1)
            consumer.shares_message_id = destination not in TOPICS
            producer.consumers.append((consumer, self.queue_wait_ns(consumer)))
            consumers.append(consumer)
        for consumer in consumers:
            self.work(consumer)

    def consumer(self, queue: str, service: str, depth: int) -> Node:
        roll = self.r.random()
        receive_count = 3 if roll < 0.005 else 2 if roll < 0.025 else 1
        attrs = (
            ingest.lambda_attrs(self.r, service, "pubsub")
            | ingest.messaging_attrs(self.r, "aws_sqs", "process", queue)
            | {"hopscope.receive_count": receive_count, "messaging.consumer.group.name": service}
        )
        consumer = self.node(
            service, ingest.LAMBDA_SCOPE, f"{queue} process", Span.SPAN_KIND_CONSUMER, attrs,
            self.r.uniform(2, 20),
        )  # fmt: skip
        consumer.depth = depth
        self.hosts.append(consumer)
        return consumer

    def queue_wait_ns(self, consumer: Node) -> int:
        receive_count = consumer.attrs["hopscope.receive_count"]
        assert isinstance(receive_count, int)
        roll = self.r.random()
        wait_ms = self.r.uniform(5, 80) if roll < 0.7 else self.r.uniform(80, 800) if roll < 0.95 else 3_000
        return int((wait_ms + 30_000 * (receive_count - 1)) * MS)  # a retry waits out the visibility timeout


def layout(node: Node, start_ns: int, r: random.Random) -> None:
    """Times of a tree: children one after another inside their parent; consumers after their producer."""
    node.start_ns = start_ns
    cursor = start_ns + r.randrange(100_000, 2_000_000)
    for child in node.children:
        layout(child, cursor, r)
        cursor = child.end_ns + r.randrange(100_000, 2_000_000)
    node.end_ns = cursor + node.self_ns
    for consumer, wait_ns in node.consumers:
        layout(consumer, node.end_ns + wait_ns, r)


@dataclass(frozen=True)
class TemplateSpan:
    service: str
    scope: str
    span: Span  # name, kind, attributes and events; no ids or times
    parent: int  # index of the parent span in the template, -1 for the root of a trace
    link: int  # index of the producer a consumer links to, -1 for none
    trace: int  # which of the flow's traces
    offset_ns: int
    duration_ns: int
    correlation_index: int  # attribute index of hopscope.correlation_id
    message_index: int  # attribute index of messaging.message.id, -1 for none
    message_of: int  # a direct SQS consumer repeats this producer's message id, -1 for a fresh one
    fresh_indices: tuple[int, ...]  # attribute indices with a fresh random value in every span


@dataclass(frozen=True)
class FlowTemplate:
    spans: tuple[TemplateSpan, ...]
    traces: int


FRESH_KEYS = ("faas.invocation_id", "aws.request_id")


def span_proto(r: random.Random, node: Node) -> Span:
    attrs: Attrs = {"hopscope.correlation_id": "", **node.attrs}
    target = r.randint(max(10, len(attrs)), max(20, len(attrs)))
    for key, make in r.sample(ingest.EXTRA_ATTRS, k=len(ingest.EXTRA_ATTRS)):
        if len(attrs) >= target:
            break
        attrs.setdefault(key, make(r))
    span = Span(name=node.name, kind=node.kind, attributes=ingest.key_values(attrs))
    for offset, (event_name, event_attrs) in enumerate(ingest.plain_events(r)):
        span.events.add(name=event_name, time_unix_nano=offset + 1, attributes=ingest.key_values(event_attrs))
    if node.kind == Span.SPAN_KIND_SERVER and r.random() < 0.3:
        span.status.code = Status.STATUS_CODE_OK
    return span


def flatten(r: random.Random, root: Node) -> FlowTemplate:
    spans: list[TemplateSpan] = []
    traces = 0

    def visit(node: Node, parent: int, link: int, trace: int) -> int:
        nonlocal traces
        proto = span_proto(r, node)
        keys = [kv.key for kv in proto.attributes]
        message_index = keys.index(ingest.PER_SPAN_KEYS[1]) if ingest.PER_SPAN_KEYS[1] in keys else -1
        index = len(spans)
        spans.append(
            TemplateSpan(
                service=node.service,
                scope=node.scope,
                span=proto,
                parent=parent,
                link=link,
                trace=trace,
                offset_ns=node.start_ns - root.start_ns,
                duration_ns=node.end_ns - node.start_ns,
                correlation_index=keys.index("hopscope.correlation_id"),
                message_index=message_index,
                message_of=link if node.shares_message_id else -1,
                fresh_indices=tuple(i for i, key in enumerate(keys) if key in FRESH_KEYS),
            )
        )
        for child in node.children:
            visit(child, index, -1, trace)
        for consumer, _ in node.consumers:
            traces += 1
            visit(consumer, -1, index, traces)
        return index

    visit(root, -1, -1, 0)
    return FlowTemplate(tuple(spans), traces + 1)


def flow_templates(seed: int) -> list[FlowTemplate]:
    r = random.Random(seed)
    templates = []
    for low, high, share in FLOW_SIZES:
        for _ in range(max(1, round(share * TEMPLATES))):
            root = FlowBuilder(r, r.randint(low, high)).build()
            layout(root, 0, r)
            templates.append(flatten(r, root))
    return templates


# ---------------------------------------------------------------------------------------------------------
# Flows in time order, their spans exported as they end, in requests of 512 spans.
# ---------------------------------------------------------------------------------------------------------


class Planned(NamedTuple):
    end_ns: int
    template: TemplateSpan
    flow: int
    instance: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    link: tuple[bytes, bytes] | None
    order_id: str
    message_id: str
    error: bool


@dataclass
class FlowPlan:
    """Every generated flow: its correlation id, spans and traces, and how many of its spans were sent."""

    order_ids: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    traces: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    sent_traces: set[bytes] = field(default_factory=set)
    errors: int = 0

    def complete(self, size: int | None = None) -> list[int]:
        return [
            flow
            for flow, (n, sent) in enumerate(zip(self.sizes, self.sent, strict=True))
            if sent == n and (size is None or n == size)
        ]


def plan_flow(
    template: FlowTemplate, r: random.Random, flow: int, start_ns: int, order_id: str
) -> list[Planned]:
    scale = r.uniform(0.7, 1.5)  # the same shape, faster or slower
    instance = r.randrange(ingest.INSTANCES_PER_SERVICE)
    trace_ids = [r.randbytes(16) for _ in range(template.traces)]
    span_ids = [r.randbytes(8) for _ in template.spans]
    message_ids: dict[int, str] = {}
    planned = []
    for index, t in enumerate(template.spans):
        if t.message_index >= 0:
            message_ids[index] = message_ids[t.message_of] if t.message_of >= 0 else r.randbytes(16).hex()
        start = start_ns + int(t.offset_ns * scale)
        end = start + int(t.duration_ns * scale)
        planned.append(
            Planned(
                end_ns=end,
                template=t,
                flow=flow,
                instance=instance,
                trace_id=trace_ids[t.trace],
                span_id=span_ids[index],
                parent_span_id=span_ids[t.parent] if t.parent >= 0 else b"",
                start_ns=start,
                link=(trace_ids[template.spans[t.link].trace], span_ids[t.link]) if t.link >= 0 else None,
                order_id=order_id,
                message_id=message_ids.get(index, ""),
                error=r.random() < ERROR_RATE,
            )
        )
    return planned


def planned_spans(seed: int, total: int, plan: FlowPlan, now_ns: int) -> Iterator[Planned]:
    """``total`` spans of whole flows, starting over the SPREAD_NS before ``now_ns``, in export order."""
    r = random.Random(seed + 1)
    templates = flow_templates(seed)
    mean_spans = statistics.mean(len(t.spans) for t in templates)
    interval = max(1, SPREAD_NS // math.ceil(total / mean_spans))
    first_start = now_ns - SPREAD_NS - 60 * SECOND_NS  # the last flows end about a minute before now
    emitted = planned_so_far = 0
    for window in itertools.count():
        batch: list[Planned] = []
        for flow in range(window * WINDOW_FLOWS, (window + 1) * WINDOW_FLOWS):
            template = r.choice(templates)
            order_id = f"ord-{flow:07d}-{r.randbytes(4).hex()}"
            # Time moves with the spans planned, so the last flow starts at the end of the spread.
            start = first_start + planned_so_far * SPREAD_NS // total + r.randrange(interval)
            planned_so_far += len(template.spans)
            batch.extend(plan_flow(template, r, flow, start, order_id))
            plan.order_ids.append(order_id)
            plan.sizes.append(len(template.spans))
            plan.traces.append(template.traces)
            plan.sent.append(0)
        batch.sort(key=lambda p: p.end_ns)
        for planned in batch:
            if emitted == total:
                return
            plan.sent[planned.flow] += 1
            plan.sent_traces.add(planned.trace_id)
            plan.errors += planned.error
            emitted += 1
            yield planned


def fill_span(span: Span, p: Planned, r: random.Random) -> None:
    t = p.template
    span.CopyFrom(t.span)
    span.trace_id = p.trace_id
    span.span_id = p.span_id
    span.parent_span_id = p.parent_span_id
    span.start_time_unix_nano = p.start_ns
    span.end_time_unix_nano = p.end_ns
    attributes = span.attributes
    attributes[t.correlation_index].value.string_value = p.order_id
    if t.message_index >= 0:
        attributes[t.message_index].value.string_value = p.message_id
    for index in t.fresh_indices:
        attributes[index].value.string_value = r.randbytes(16).hex()
    middle = p.start_ns + (p.end_ns - p.start_ns) // 2
    for event in span.events:
        event.time_unix_nano += middle
    if p.link is not None:
        link = span.links.add(trace_id=p.link[0], span_id=p.link[1])
        link.attributes.add(key="messaging.operation.type").value.string_value = "receive"
    if p.error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = "downstream call failed"
        name, attrs = ingest.exception_event(r, t.service, "ServiceError", "downstream call failed")
        span.events.add(name=name, time_unix_nano=middle, attributes=ingest.key_values(attrs))


def build_request(
    planned: Sequence[Planned], resources: dict[tuple[str, int], Resource], r: random.Random
) -> bytes:
    """One ExportTraceServiceRequest body: spans grouped by resource, then by instrumentation scope."""
    request = ExportTraceServiceRequest()
    groups: dict[tuple[str, int], dict[str, list[Planned]]] = {}
    for p in planned:
        groups.setdefault((p.template.service, p.instance), {}).setdefault(p.template.scope, []).append(p)
    for key, scopes in groups.items():
        resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.27.0")
        resource_spans.resource.CopyFrom(resources[key])
        for scope_name, spans in scopes.items():
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope_name
            scope_spans.scope.version = "0.48b0"
            for p in spans:
                fill_span(scope_spans.spans.add(), p, r)
    return request.SerializeToString()


class Bodies:
    """Request bodies made on demand from one stream of planned spans."""

    def __init__(self, seed: int, total: int, now_ns: int) -> None:
        self.plan = FlowPlan()
        self._spans = planned_spans(seed, total, self.plan, now_ns)
        self._r = random.Random(seed + 2)
        self._resources = {
            (s, i): ingest.make_resource(s, i) for s in SERVICES for i in range(ingest.INSTANCES_PER_SERVICE)
        }

    def take(self, spans: int) -> Iterator[tuple[bytes, int]]:
        """Bodies of the next ``spans`` spans, made as they are asked for."""
        stream = itertools.islice(self._spans, spans)
        while chunk := list(itertools.islice(stream, BATCH)):
            yield build_request(chunk, self._resources, self._r), len(chunk)


# ---------------------------------------------------------------------------------------------------------
# Ingest.
# ---------------------------------------------------------------------------------------------------------


def send(address: tuple[str, int], work: Iterator[tuple[bytes, int]], clients: int) -> tuple[float, int]:
    """Send every body with ``clients`` keep-alive connections; (seconds, acknowledged spans)."""
    lock = threading.Lock()
    workers = [ingest.Client(address, work, lock, None) for _ in range(clients)]
    threads = [threading.Thread(target=w.run, name=f"client-{i}") for i, w in enumerate(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for worker in workers:
        if worker.error is not None:
            raise RuntimeError(f"a client failed: {worker.error!r}") from worker.error
        if worker.stats.rejected:
            raise RuntimeError(f"the collector rejected {worker.stats.rejected} spans")
    return elapsed, sum(w.stats.acknowledged for w in workers)


def short(spans: int) -> str:
    """0, 100k, 1M."""
    if spans and spans % 1_000_000 == 0:
        return f"{spans // 1_000_000}M"
    return f"{spans // 1000}k" if spans else "0"


@dataclass(frozen=True)
class Window:
    """One timed stretch of ingest: from the first request until acknowledged, then until stitched."""

    stored_before: int
    spans: int
    elapsed: float
    stitched_after: float  # seconds from the last acknowledgement until flows_pending is false
    cpu_seconds: float  # the collector's, from the first request to the last acknowledgement
    written_bytes: int  # what the collector handed to write() and pwrite() in that time (WAL, checkpoints)

    @property
    def label(self) -> str:
        return f"{short(self.stored_before)} -> {short(self.stored_before + self.spans)}"

    @property
    def rate(self) -> float:
        return self.spans / self.elapsed

    @property
    def stitched_rate(self) -> float:
        return self.spans / (self.elapsed + self.stitched_after)


@dataclass
class IngestResult:
    windows: list[Window]
    acknowledged: int = 0
    untimed_seconds: float = 0.0  # the parts between the windows, made while sent
    backlog_seconds: float = 0.0  # stitching what those parts left behind, before each window
    generated_seconds: float = 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def window_starts(total: int, window: int) -> list[int]:
    """Where the timed windows start: the empty store, one window stored (the issue's "with 100k stored")
    and the last window; the second only when it fits before the last."""
    return [0, window, total - window] if total >= 3 * window else [0, total - window]


def timed_window(
    collector: ingest.Collector, bodies: list[tuple[bytes, int]], clients: int, before: int
) -> Window:
    process = psutil.Process(collector.process.pid)
    cpu, written = sum(process.cpu_times()[:2]), process.io_counters().write_chars
    elapsed, acknowledged = send(collector.address, iter(bodies), clients)
    cpu, written = sum(process.cpu_times()[:2]) - cpu, process.io_counters().write_chars - written
    stitched = ingest.wait_for_flows(collector.address)
    return Window(before, acknowledged, elapsed, stitched, cpu, written)


def ingest_all(
    collector: ingest.Collector, bodies: Bodies, total: int, window: int, clients: int
) -> IngestResult:
    """Every span, the windows timed; each window starts with every earlier span stitched."""
    result = IngestResult([])
    position = 0
    for start in window_starts(total, window):
        if start > position:
            started = time.perf_counter()
            _, acknowledged = send(collector.address, bodies.take(start - position), clients)
            result.untimed_seconds += time.perf_counter() - started
            result.acknowledged += acknowledged
            log(f"{start - position:,} spans made and sent in {time.perf_counter() - started:.1f} s")
            position = start
        started = time.perf_counter()
        window_bodies = list(bodies.take(window))
        result.generated_seconds += time.perf_counter() - started
        backlog = ingest.wait_for_flows(collector.address)
        result.backlog_seconds += backlog
        log(f"made {window:,} spans; stitching caught up {backlog:.1f} s after the last ack; sending")
        timed = timed_window(collector, window_bodies, clients, position)
        del window_bodies
        result.windows.append(timed)
        result.acknowledged += timed.spans
        position += window
        log(f"window {timed.label}: {timed.rate:,.0f} spans/s, stitched {timed.stitched_after:.1f} s later")
    return result


@dataclass(frozen=True)
class StoreBaseline:
    """The store alone, in-process, without stitching: the same windows, one request a write."""

    rates: list[float]
    seconds: float


def write_timed(store: SQLiteStore, bodies: Iterator[tuple[bytes, int]]) -> float:
    """Spans/s of prepare + write_prepared, one request per call; requests parsed before the clock runs."""
    requests = [(ExportTraceServiceRequest.FromString(body), n) for body, n in bodies]
    elapsed = 0.0
    for request, n in requests:
        started = time.perf_counter()
        written = store.write_prepared([store.prepare(request)])
        elapsed += time.perf_counter() - started
        if written != n:
            raise RuntimeError(f"the baseline store wrote {written} of {n} spans")
    return sum(n for _, n in requests) / elapsed


def measure_baseline(args: argparse.Namespace, now_ns: int, db: Path) -> StoreBaseline:
    """The same spans (same seed, same clock) into an in-process store, the same windows timed."""
    started = time.perf_counter()
    bodies = Bodies(args.seed, args.spans, now_ns)
    store = SQLiteStore(db)
    rates = []
    try:
        position = 0
        for start in window_starts(args.spans, args.window):
            untimed = bodies.take(start - position)
            while chunk := list(itertools.islice(untimed, FILL_REQUESTS_PER_WRITE)):
                requests = [store.prepare(ExportTraceServiceRequest.FromString(b)) for b, _ in chunk]
                store.write_prepared(requests)
            rates.append(write_timed(store, bodies.take(args.window)))
            position = start + args.window
    finally:
        store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return StoreBaseline(rates, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------
# Queries.
# ---------------------------------------------------------------------------------------------------------


class Api:
    """GET over one keep-alive connection; the time is from sending the request to the last body byte."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._conn = http.client.HTTPConnection(*address, timeout=HTTP_TIMEOUT_SECONDS)

    def get(self, path: str, params: dict[str, object] | None = None) -> tuple[float, Any]:
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        started = time.perf_counter()
        self._conn.request("GET", url)
        response = self._conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self._conn.close()


@dataclass
class QueryResult:
    label: str
    target_ms: float | None  # None: measured for context, no target in the issue
    seconds: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # answers that do not match what was sent
    note: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p90_ms(self) -> float:
        return ingest.percentile(self.seconds, 0.9) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.seconds) * 1000


def run_queries(api: Api, plan: FlowPlan, repeat: int, seed: int) -> list[QueryResult]:
    r = random.Random(seed + 3)
    complete = plan.complete()
    results = []

    # (a) flows by correlation id
    result = QueryResult("flows by correlation id", TARGET_CORRELATION_MS)
    for flow in r.sample(complete, k=min(repeat, len(complete))):
        elapsed, body = api.get("/api/flows", {"correlation_id": plan.order_ids[flow]})
        result.seconds.append(elapsed)
        found = body["flows"]
        if len(found) != 1 or found[0]["span_count"] != plan.sizes[flow]:
            result.wrong.append(f"{plan.order_ids[flow]}: {[(f['flow_id'], f['span_count']) for f in found]}")
        elif found[0]["trace_count"] != plan.traces[flow]:
            result.wrong.append(f"{plan.order_ids[flow]}: {found[0]['trace_count']} traces")
    results.append(result)

    # (b) a page of 50 flows by service and status, every service in turn
    result = QueryResult("50 flows by service+error", TARGET_FLOW_PAGE_MS)
    pages: list[int] = []
    by_service: dict[str, float] = {}
    for service in itertools.islice(itertools.cycle(SERVICES), repeat):
        params = {"service": service, "status": "error", "limit": 50}
        elapsed, body = api.get("/api/flows", params)
        result.seconds.append(elapsed)
        by_service[service] = max(elapsed, by_service.get(service, 0.0))
        pages.append(len(body["flows"]))
        for flow in body["flows"]:
            if flow["error_count"] < 1 or service not in flow["services"]:
                result.wrong.append(f"{service}: flow {flow['flow_id']}")
    slowest = max(by_service, key=by_service.__getitem__)
    result.note = f"{min(pages)}-{max(pages)} flows per page; slowest {slowest}"
    results.append(result)

    # (c) the detail of a 50-span flow
    result = QueryResult(f"detail of a {DETAIL_SPANS}-span flow", TARGET_FLOW_DETAIL_MS)
    big = r.sample(plan.complete(DETAIL_SPANS), k=min(repeat, len(plan.complete(DETAIL_SPANS))))
    flow_ids = {}
    for flow in big:  # resolved untimed
        _, body = api.get("/api/flows", {"correlation_id": plan.order_ids[flow]})
        flow_ids[flow] = body["flows"][0]["flow_id"] if body["flows"] else None
    hops: list[int] = []
    for flow, flow_id in flow_ids.items():
        if flow_id is None:
            result.wrong.append(f"{plan.order_ids[flow]}: not found")
            continue
        elapsed, body = api.get(f"/api/flows/{flow_id}")
        result.seconds.append(elapsed)
        hops.append(len(body["hops"]))
        if len(body["spans"]) != DETAIL_SPANS:
            result.wrong.append(f"{plan.order_ids[flow]}: {len(body['spans'])} spans")
    if big:
        result.note = f"e.g. correlation id {plan.order_ids[big[0]]}; {min(hops)}-{max(hops)} async hops"
    results.append(result)

    # (d) the service graph over the last hour
    result = QueryResult("service graph over 1 h", TARGET_GRAPH_MS)
    for _ in range(repeat):
        now = time.time_ns()
        elapsed, body = api.get("/api/graph", {"since": now - HOUR_NS, "until": now})
        result.seconds.append(elapsed)
    nodes = Counter(node["type"] for node in body["nodes"])
    edges = Counter(edge["kind"] for edge in body["edges"])
    result.note = (
        f"{sum(nodes.values())} nodes ({', '.join(f'{n} {k}' for k, n in sorted(nodes.items()))}), "
        f"{sum(edges.values())} edges"
    )
    known = {f"service:{s}" for s in SERVICES} | {f"aws_sqs:{q}" for q in QUEUES}
    known |= {f"aws_sns:{t}" for t in TOPICS} | {f"external:{e}" for e, _ in EXTERNAL_CALLS}
    result.wrong += [f"unknown graph node {node['id']}" for node in body["nodes"] if node["id"] not in known]
    results.append(result)

    # (e) a service's RED series over 24 hours, every service in turn
    result = QueryResult("RED series over 24 h", TARGET_LATENCY_MS)
    for service in itertools.islice(itertools.cycle(SERVICES), repeat):
        now = time.time_ns()
        params = {"service": service, "since": now - 24 * HOUR_NS, "until": now, "step": LATENCY_STEP_SECONDS}
        elapsed, body = api.get("/api/latency", params)
        result.seconds.append(elapsed)
        points = body["points"]
        if len(points) != 24 * 3600 // LATENCY_STEP_SECONDS or not any(
            p["red"]["span_count"] for p in points
        ):
            result.wrong.append(f"{service}: {len(points)} points")
    result.note = f"{24 * 3600 // LATENCY_STEP_SECONDS} points of {LATENCY_STEP_SECONDS // 60} min"
    results.append(result)

    # For context, no target: the same rollups over a whole day (the spans cover 20 hours).
    for label, path in (
        ("service graph over 24 h", "/api/graph"),
        ("services (RED) over 24 h", "/api/services"),
    ):
        result = QueryResult(label, None)
        for _ in range(max(3, repeat // 4)):
            now = time.time_ns()
            elapsed, body = api.get(path, {"since": now - 24 * HOUR_NS, "until": now})
            result.seconds.append(elapsed)
        result.note = (
            f"{len(body['edges'])} edges" if "edges" in body else f"{len(body['services'])} services"
        )
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------------
# The run and its report.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFacts:
    spans: int
    flows: int
    traces: int
    error_spans: int
    db_bytes: int


CLICKHOUSE_FLOW_COUNT = "SELECT count() FROM {db}.hopscope_flows FINAL WHERE MergedInto = 0 AND SpanCount > 0"
CLICKHOUSE_TRACE_COUNT = "SELECT count() FROM {db}.hopscope_trace_flows FINAL WHERE SpanCount > 0"


def clickhouse_store_facts(directory: Path) -> StoreFacts:
    """The same facts from the chdb store, opened in this process once the collector has exited."""
    from hopscope.collector.store.clickhouse.store import ClickHouseStore
    from hopscope.collector.store.url import open_store

    store = open_store(f"chdb://{directory / 'clickhouse'}", read_only=True)
    assert isinstance(store, ClickHouseStore)
    db = store.client.database
    try:
        spans = store.count_spans()
        (flows,) = store.client.query(CLICKHOUSE_FLOW_COUNT.format(db=db))[0]
        (traces,) = store.client.query(CLICKHOUSE_TRACE_COUNT.format(db=db))[0]
        (errors,) = store.client.query(
            f"SELECT countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) FROM {db}.otel_traces"
        )[0]
        (size,) = store.client.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = {db:String}", {"db": db}
        )[0]
    finally:
        store.close()
    return StoreFacts(spans, int(flows), int(traces), int(errors), int(size))


def store_facts(db: Path) -> StoreFacts:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (spans,) = conn.execute("SELECT count(*) FROM spans").fetchone()
        (flows,) = conn.execute(
            "SELECT count(*) FROM flows WHERE merged_into IS NULL AND span_count > 0"
        ).fetchone()
        (traces,) = conn.execute("SELECT count(*) FROM trace_flows WHERE span_count > 0").fetchone()
        (errors,) = conn.execute("SELECT count(*) FROM spans WHERE status_code = 2").fetchone()
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return StoreFacts(spans, flows, traces, errors, size)


def window_row(label: str, values: list[str], ratios: Sequence[str] = ()) -> str:
    return f"  {label:<31}" + "".join(f"{v:>15}" for v in values) + "".join(f"{r:>12}" for r in ratios)


def rate_row(label: str, rates: list[float]) -> str:
    """Spans/s of each window, then the last one's over each earlier one."""
    return window_row(label, [f"{r:,.0f}" for r in rates], [f"{rates[-1] / r:.2f}" for r in rates[:-1]])


def ratio_labels(windows: list[Window]) -> list[str]:
    return ["last/first", "last/2nd"][: len(windows) - 1]


def git_head() -> str:
    """The commit measured, and whether the tree had changes outside bench/."""
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" + uncommitted changes" if changed else "")
    return "unknown"


def row(label: str, value: str) -> str:
    return f"  {label:<30} {value}"


def target(ok: bool, label: str, value: str) -> str:
    return f"  {'PASS' if ok else 'MISS'}  {label:<42} {value}"


def report(
    args: argparse.Namespace,
    plan: FlowPlan,
    ingested: IngestResult,
    baseline: StoreBaseline | None,
    facts: StoreFacts,
    queries: list[QueryResult],
    exit_code: int,
    total_seconds: float,
) -> int:
    lost = ingested.acknowledged - facts.spans
    sent_flows = sum(1 for n in plan.sent if n)
    sent_traces = len(plan.sent_traces)
    wrong = sum(len(q.wrong) for q in queries)
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"hopscope query benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        row("spans", f"{ingested.acknowledged:,} in requests of <= {BATCH}, {args.clients} clients"),
        row(
            "flows sent / stored",
            f"{sent_flows:,} / {facts.flows:,} ({len(plan.complete(DETAIL_SPANS))} of {DETAIL_SPANS} spans)",
        ),
        row("traces sent / stored", f"{sent_traces:,} / {facts.traces:,}"),
        row("error spans sent / stored", f"{plan.errors:,} / {facts.error_spans:,}"),
        row(
            "services / destinations",
            f"{len(SERVICES)} / {len(TOPICS)} SNS topics + {len(QUEUES)} SQS queues",
        ),
        row("store", args.store),
        row(
            "database",
            f"{facts.db_bytes / 1e6:,.0f} MB ({'active parts' if args.store == 'chdb' else 'file + WAL'})",
        ),
        row("acknowledged / stored", f"{ingested.acknowledged:,} / {facts.spans:,}"),
        row("lost spans", f"{lost}"),
        row("collector exit code", f"{exit_code}"),
        row("wrong answers", f"{wrong}"),
        row("code", f"{git_head()}"),
        row("whole run", f"{total_seconds:.0f} s"),
    ]
    windows = ingested.windows
    lines.append(
        window_row(
            f"ingest windows ({args.clients} clients)", [w.label for w in windows], ratio_labels(windows)
        )
    )

    lines.append(rate_row("acknowledged spans/s", [w.rate for w in windows]))
    lines.append(rate_row("spans/s incl. stitching", [w.stitched_rate for w in windows]))
    if baseline is not None:
        lines.append(rate_row("in-process store (no stitching)", baseline.rates))
    lines += [
        window_row("stitched after the last ack", [f"{w.stitched_after:.1f} s" for w in windows]),
        window_row(
            "collector CPU per 1k spans", [f"{w.cpu_seconds * 1e6 / w.spans:.1f} ms" for w in windows]
        ),
        window_row(
            "collector writes per span", [f"{w.written_bytes / w.spans / 1024:.1f} KiB" for w in windows]
        ),
        row(
            "between the windows",
            f"{ingested.untimed_seconds:.1f} s to make and send the rest, "
            f"{ingested.backlog_seconds:.1f} s more to stitch it",
        ),
        f"queries ({args.repeat} each, ms)             median      p90      max",
    ]
    for q in queries:
        runs = "" if q.target_ms is not None else f" ({len(q.seconds)} runs, no target)"
        lines.append(
            f"  {q.label:<34} {q.median_ms:>8.1f} {q.p90_ms:>8.1f} {q.max_ms:>8.1f}   {q.note}{runs}"
        )
    lines.append("targets")
    for q in queries:
        if q.target_ms is not None:
            label = f"{q.label} <= {q.target_ms:,.0f} ms"
            lines.append(target(q.median_ms <= q.target_ms, label, f"{q.median_ms:.1f}"))
    last = windows[-1]
    for early in windows[:-1]:
        ratio = last.rate / early.rate
        label = f"ingest {last.label} / {early.label} >= {TARGET_INGEST_RATIO}"
        lines.append(target(ratio >= TARGET_INGEST_RATIO, label, f"{ratio:.2f}"))
    lines.append(target(lost == 0, "lost spans == 0", f"{lost}"))
    for q in queries:
        for problem in q.wrong[:5]:
            lines.append(f"  wrong answer ({q.label}): {problem}")
    print("\n".join(lines), flush=True)
    return 1 if lost or exit_code != 0 else 0


def run(args: argparse.Namespace, directory: Path) -> int:
    started = time.perf_counter()
    db = directory / "query.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    now_ns = time.time_ns()
    baseline = None
    if args.store == "chdb":
        shutil.rmtree(directory / "clickhouse", ignore_errors=True)
    if not args.no_baseline:
        log("baseline: the same spans into an in-process store, without stitching")
        baseline = measure_baseline(args, now_ns, directory / "baseline.db")
        rates = " / ".join(f"{rate:,.0f}" for rate in baseline.rates)
        log(f"baseline: {rates} spans/s ({baseline.seconds:.0f} s)")
    bodies = Bodies(args.seed, args.spans, now_ns)
    store_args = ["--store", f"chdb://{directory / 'clickhouse'}"] if args.store == "chdb" else []
    collector = ingest.Collector(db, store_args)
    try:
        ingested = ingest_all(collector, bodies, args.spans, args.window, args.clients)
        api = Api(collector.address)
        try:
            log("querying")
            queries = run_queries(api, bodies.plan, args.repeat, args.seed)
        finally:
            api.close()
        if args.hold:
            log(f"holding the collector at {collector.address} (pid {collector.process.pid}); Enter to stop")
            sys.stdin.readline()
        exit_code = collector.stop()
    except BaseException:
        collector.kill()
        sys.stderr.write("".join(collector.log))
        raise
    if exit_code != 0:
        sys.stderr.write("".join(collector.log))
    facts = clickhouse_store_facts(directory) if args.store == "chdb" else store_facts(db)
    elapsed = time.perf_counter() - started
    return report(args, bodies.plan, ingested, baseline, facts, queries, exit_code, elapsed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in all (default: %(default)s)")
    parser.add_argument(
        "--window", type=int, default=100_000, help="spans in each timed ingest window (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=21, help="runs of each query (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the generated spans (default: %(default)s)"
    )
    parser.add_argument(
        "--db", type=Path, default=None, help="directory for the database (default: a temp dir)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process store baseline (saves about 40 s)"
    )
    parser.add_argument(
        "--hold", action="store_true", help="keep the collector running after the queries, until Enter"
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "chdb"),
        default="sqlite",
        help="the collector's store: SQLite (--db) or ClickHouse in its process (--store chdb://; implies "
        "--no-baseline, which is SQLite's in-process writer)",
    )
    args = parser.parse_args(argv)
    if args.store == "chdb":
        args.no_baseline = True
    if args.clients < 1 or args.repeat < 1 or args.window < 1 or args.spans < 2 * args.window:
        parser.error("--clients, --repeat and --window must be positive, and --spans at least 2 x --window")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return ingest.in_work_directory(args.db, lambda directory: run(args, directory))


if __name__ == "__main__":
    sys.exit(main())
