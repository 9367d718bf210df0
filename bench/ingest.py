"""Ingest benchmark: OTLP/HTTP protobuf into a real collector process, against the store's own write speed.

N client threads, each with one keep-alive connection, send pre-built batches of realistic spans to a
``hopscope collector`` subprocess until every span is acknowledged (a 200 means committed). In the same
run the same requests are written in-process to a fresh ``SQLiteStore``: the ratio between the two is the
figure to watch, since absolute speeds depend on the machine. See bench/README.md.

    .venv/bin/python bench/ingest.py [--clients 4] [--spans 500000] [--batch 512]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.store.sqlite.store import SQLiteStore

# Targets from the issue, for the 2-core dev machine.
TARGET_SPANS_PER_SECOND = 50_000
TARGET_RATIO = 0.5
TARGET_PEAK_RSS_MB = 300

MB = 1_000_000
RSS_SAMPLE_SECONDS = 0.05
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 120.0
MAX_RECONNECTS = 3
REQUEST_TIMEOUT_SECONDS = 120.0
TRACE_TEMPLATES = 240
HOPSCOPE = Path(sys.executable).with_name("hopscope")
LISTENING = re.compile(r"listening on (http://\S+)")

AttrValue = str | bool | int | float | list[str] | list[int]
Attrs = dict[str, AttrValue]

# ---------------------------------------------------------------------------------------------------------
# Realistic spans: a serverless shop (API Gateway -> Lambda, SQS, SNS, DynamoDB) in three services.
# Trace templates are built once with random content; each generated span copies one and gets fresh ids,
# timestamps and per-span unique attribute values (invocation ids, message ids, request ids).
# ---------------------------------------------------------------------------------------------------------

SERVICES = ("orders-api", "billing", "shipping")
INSTANCES_PER_SERVICE = 3
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
ACCOUNT = "123456789012"
# Attribute keys whose value is fresh in every generated span, and the one shared by a whole trace.
PER_SPAN_KEYS = ("faas.invocation_id", "messaging.message.id", "aws.request_id")
PER_TRACE_KEY = "app.order.id"
EXTRA_ATTRS: tuple[tuple[str, Callable[[random.Random], AttrValue]], ...] = (
    ("app.tenant.id", lambda r: f"tenant-{r.randrange(400):04d}"),
    ("enduser.id", lambda r: f"user-{r.randrange(10**6):06d}"),
    ("app.request.priority", lambda r: r.randrange(1, 5)),
    ("app.cache.hit", lambda r: r.random() < 0.7),
    ("app.retry.count", lambda r: r.choice((0, 0, 0, 1, 2))),
    ("app.sampling.weight", lambda r: round(r.uniform(0.1, 1.0), 3)),
    ("app.experiment.ids", lambda r: [f"exp-{r.randrange(90)}" for _ in range(r.randrange(1, 4))]),
    ("thread.id", lambda r: r.randrange(1, 64)),
    ("thread.name", lambda r: f"worker-{r.randrange(8)}"),
    ("app.build.commit", lambda r: r.randbytes(20).hex()),
    ("app.region.fallback", lambda r: r.random() < 0.05),
    ("app.queue.depth", lambda r: r.randrange(0, 5_000)),
    ("app.shard.ids", lambda r: [r.randrange(64) for _ in range(r.randrange(1, 5))]),
)
STACKTRACE_FRAMES = (
    'File "/var/task/{svc}/handler.py", line {n}, in handle',
    'File "/var/task/{svc}/service.py", line {n}, in process',
    'File "/opt/python/botocore/client.py", line {n}, in _make_api_call',
    'File "/opt/python/urllib3/connectionpool.py", line {n}, in urlopen',
)


@dataclass(frozen=True)
class SpanTemplate:
    service: str
    scope: str
    span: Span  # everything but ids, timestamps and links
    parent: int | None  # index of the parent in the trace template; None for a root
    new_trace: bool  # an async consumer: starts its own trace and links to its parent instead
    offset_ns: int
    duration_ns: int
    per_span_attrs: tuple[int, ...]
    per_trace_attrs: tuple[int, ...]


TraceTemplate = list[SpanTemplate]


def any_value(value: AttrValue) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    return AnyValue(string_value=value)


def key_values(attrs: Attrs) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attrs.items()]


def make_resource(service: str, instance: int) -> Resource:
    region = REGIONS[instance % len(REGIONS)]
    instance_id = random.Random(f"{service}/{instance}").randbytes(16).hex()
    return Resource(
        attributes=key_values(
            {
                "service.name": service,
                "service.namespace": "shop",
                "service.version": f"2026.11.{instance + 20}",
                "deployment.environment.name": "prod",
                "cloud.provider": "aws",
                "cloud.platform": "aws_lambda",
                "cloud.region": region,
                "cloud.account.id": ACCOUNT,
                "faas.name": f"{service}-prod",
                "faas.version": str(40 + instance),
                "faas.instance": f"2026/11/28/[{40 + instance}]{instance_id}",
                "faas.max_memory": 1024 * 1024 * 1024,
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.language": "python",
                "telemetry.sdk.version": "1.45.2",
                "process.runtime.name": "cpython",
                "process.runtime.version": "3.12.7",
            }
        )
    )


def lambda_attrs(r: random.Random, service: str, trigger: str) -> Attrs:
    return {
        "faas.trigger": trigger,
        "faas.invocation_id": "",
        "faas.coldstart": r.random() < 0.03,
        "cloud.resource_id": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{service}-prod",
    }


def http_server_attrs(r: random.Random, method: str, route: str, path: str, status: int) -> Attrs:
    return {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "url.scheme": "https",
        "server.address": "api.shop.example",
        "http.response.status_code": status,
        "user_agent.original": r.choice(
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/605.1.15",
                "shop-ios/7.3.1 (iPhone15,2; iOS 18.1)",
                "python-requests/2.32.3",
            )
        ),
        "client.address": f"203.0.113.{r.randrange(1, 255)}",
        "network.protocol.version": "1.1",
        "http.request.body.size": r.randrange(200, 4_000),
    }


def http_client_attrs(r: random.Random, method: str, url: str, host: str, status: int) -> Attrs:
    return {
        "http.request.method": method,
        "url.full": url,
        "server.address": host,
        "server.port": 443,
        "http.response.status_code": status,
        "network.peer.address": f"10.0.{r.randrange(256)}.{r.randrange(1, 255)}",
        "http.request.resend_count": r.choice((0, 0, 0, 1)),
    }


def aws_call_attrs(service: str, method: str, region: str) -> Attrs:
    return {
        "rpc.system": "aws-api",
        "rpc.service": service,
        "rpc.method": method,
        "cloud.region": region,
        "aws.request_id": "",
        "server.address": f"{service.lower()}.{region}.amazonaws.com",
        "http.response.status_code": 200,
    }


def messaging_attrs(r: random.Random, system: str, operation: str, destination: str) -> Attrs:
    return {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
        "messaging.message.id": "",
        "messaging.message.body.size": r.randrange(300, 6_000),
    }


def exception_event(r: random.Random, service: str, kind: str, message: str) -> tuple[str, Attrs]:
    frames = "\n  ".join(
        f.format(svc=service.replace("-", "_"), n=r.randrange(20, 900)) for f in STACKTRACE_FRAMES
    )
    return "exception", {
        "exception.type": kind,
        "exception.message": message,
        "exception.stacktrace": f"Traceback (most recent call last):\n  {frames}\n{kind}: {message}",
        "exception.escaped": r.random() < 0.5,
    }


def plain_events(r: random.Random) -> list[tuple[str, Attrs]]:
    choices: tuple[tuple[str, Attrs], ...] = (
        ("cache.miss", {"app.cache.key": f"order:{r.randrange(10**6)}"}),
        ("retry", {"app.retry.attempt": 1, "app.retry.delay_ms": r.choice((50, 100, 200))}),
        ("validation.passed", {"app.validation.rules": r.randrange(5, 30)}),
        (
            "checkpoint",
            {"app.step": r.choice(("load", "enrich", "persist")), "app.elapsed_ms": r.random() * 40},
        ),
    )
    return r.sample(choices, k=r.choice((0, 0, 0, 0, 0, 0, 1, 1, 2, 3)))


@dataclass
class TraceBuilder:
    """Builds one trace template span by span, in start order."""

    r: random.Random
    spans: TraceTemplate = field(default_factory=list)
    clock_ns: int = 0

    def add(
        self,
        service: str,
        scope: str,
        name: str,
        kind: Span.SpanKind.ValueType,
        attrs: Attrs,
        *,
        parent: int | None,
        duration_ms: float,
        events: Sequence[tuple[str, Attrs]] = (),
        error: str | None = None,
        new_trace: bool = False,
    ) -> int:
        attrs = dict(attrs)
        attrs[PER_TRACE_KEY] = ""
        target = self.r.randint(max(10, len(attrs)), 20)
        for key, make in self.r.sample(EXTRA_ATTRS, k=len(EXTRA_ATTRS)):
            if len(attrs) >= target:
                break
            attrs.setdefault(key, make(self.r))
        events = list(events) + plain_events(self.r)
        span = Span(name=name, kind=kind, attributes=key_values(dict(list(attrs.items())[:20])))
        for offset, (event_name, event_attrs) in enumerate(events[:3]):
            span.events.add(name=event_name, time_unix_nano=offset + 1, attributes=key_values(event_attrs))
        if error is not None:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
        elif kind == Span.SPAN_KIND_SERVER and self.r.random() < 0.3:
            span.status.code = Status.STATUS_CODE_OK
        keys = [kv.key for kv in span.attributes]
        self.clock_ns += int(self.r.uniform(0.2, 3.0) * 1e6)
        duration_ns = int(duration_ms * 1e6)
        if parent is not None and not new_trace:  # a synchronous child ends before its parent
            above = self.spans[parent]
            duration_ns = min(duration_ns, above.offset_ns + above.duration_ns - self.clock_ns - 100_000)
        self.spans.append(
            SpanTemplate(
                service=service,
                scope=scope,
                span=span,
                parent=parent,
                new_trace=new_trace,
                offset_ns=self.clock_ns,
                duration_ns=max(duration_ns, 50_000),
                per_span_attrs=tuple(i for i, key in enumerate(keys) if key in PER_SPAN_KEYS),
                per_trace_attrs=tuple(i for i, key in enumerate(keys) if key == PER_TRACE_KEY),
            )
        )
        return len(self.spans) - 1


LAMBDA_SCOPE = "opentelemetry.instrumentation.aws_lambda"
BOTO_SCOPE = "opentelemetry.instrumentation.botocore"
HTTP_SCOPE = "opentelemetry.instrumentation.urllib3"
APP_SCOPE = "hopscope.instrumentation"


def checkout_trace(r: random.Random) -> TraceTemplate:
    """POST /orders -> billing over HTTP -> DynamoDB; order event over SQS -> shipping -> carrier, SNS."""
    t = TraceBuilder(r)
    declined = r.random() < 0.08
    region = r.choice(REGIONS)
    order = {"app.order.item_count": r.randrange(1, 12), "app.order.total": round(r.uniform(5, 900), 2)}
    root = t.add(
        "orders-api",
        LAMBDA_SCOPE,
        "POST /orders",
        Span.SPAN_KIND_SERVER,
        lambda_attrs(r, "orders-api", "http")
        | http_server_attrs(r, "POST", "/orders", "/orders", 402 if declined else 201)
        | order,
        parent=None,
        duration_ms=r.uniform(60, 400),
    )
    call = t.add(
        "orders-api",
        HTTP_SCOPE,
        "POST",
        Span.SPAN_KIND_CLIENT,
        http_client_attrs(
            r, "POST", "https://billing.internal/charges", "billing.internal", 402 if declined else 200
        ),
        parent=root,
        duration_ms=r.uniform(30, 200),
    )
    charge = t.add(
        "billing",
        LAMBDA_SCOPE,
        "POST /charges",
        Span.SPAN_KIND_SERVER,
        lambda_attrs(r, "billing", "http")
        | http_server_attrs(r, "POST", "/charges", "/charges", 402 if declined else 200),
        parent=call,
        duration_ms=r.uniform(25, 180),
    )
    process = t.add(
        "billing",
        APP_SCOPE,
        "billing process",
        Span.SPAN_KIND_INTERNAL,
        {
            "app.payment.method": r.choice(("card", "sepa_debit", "paypal")),
            "app.payment.provider": "stripe",
            "app.payment.amount": order["app.order.total"],
            "app.payment.currency": "EUR",
            "app.fraud.score": round(r.random(), 4),
            "app.payment.captured": not declined,
            "code.function.name": "billing.handlers.process_charge",
            "code.file.path": "/var/task/billing/handlers.py",
            "code.line.number": r.randrange(40, 400),
        },
        parent=charge,
        duration_ms=r.uniform(20, 150),
        events=[exception_event(r, "billing", "CardDeclinedError", "card declined: insufficient funds")]
        if declined
        else [],
        error="card declined" if declined else None,
    )
    t.add(
        "billing",
        BOTO_SCOPE,
        "DynamoDB.PutItem",
        Span.SPAN_KIND_CLIENT,
        aws_call_attrs("DynamoDB", "PutItem", region)
        | {
            "db.system.name": "aws.dynamodb",
            "aws.dynamodb.table_names": ["payments"],
            "aws.dynamodb.consumed_capacity": 1.0,
        },
        parent=process,
        duration_ms=r.uniform(4, 25),
    )
    if declined:
        return t.spans
    publish = t.add(
        "orders-api",
        BOTO_SCOPE,
        "order-events publish",
        Span.SPAN_KIND_PRODUCER,
        messaging_attrs(r, "aws_sqs", "send", "order-events")
        | aws_call_attrs("SQS", "SendMessage", region)
        | {"url.full": f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/order-events"},
        parent=root,
        duration_ms=r.uniform(8, 40),
    )
    consume = t.add(
        "shipping",
        LAMBDA_SCOPE,
        "order-events process",
        Span.SPAN_KIND_CONSUMER,
        lambda_attrs(r, "shipping", "pubsub")
        | messaging_attrs(r, "aws_sqs", "process", "order-events")
        | {"messaging.batch.message_count": r.randrange(1, 10), "messaging.consumer.group.name": "shipping"},
        parent=publish,
        new_trace=True,
        duration_ms=r.uniform(80, 600),
    )
    carrier_down = r.random() < 0.1
    t.add(
        "shipping",
        HTTP_SCOPE,
        "POST",
        Span.SPAN_KIND_CLIENT,
        http_client_attrs(
            r,
            "POST",
            "https://api.carrier.example/v2/labels",
            "api.carrier.example",
            503 if carrier_down else 201,
        )
        | ({"error.type": "503"} if carrier_down else {}),
        parent=consume,
        duration_ms=r.uniform(50, 400),
        events=[exception_event(r, "shipping", "CarrierUnavailable", "label service answered 503")]
        if carrier_down
        else [],
        error="carrier answered 503" if carrier_down else None,
    )
    t.add(
        "shipping",
        BOTO_SCOPE,
        "shipment-events publish",
        Span.SPAN_KIND_PRODUCER,
        messaging_attrs(r, "aws_sns", "send", "shipment-events")
        | aws_call_attrs("SNS", "Publish", region)
        | {"messaging.destination.kind": "topic"},
        parent=consume,
        duration_ms=r.uniform(6, 30),
    )
    return t.spans


def lookup_trace(r: random.Random) -> TraceTemplate:
    """GET /orders/{id}: a Lambda behind API Gateway reading DynamoDB, sometimes not found."""
    t = TraceBuilder(r)
    found = r.random() < 0.9
    order_id = r.randrange(10**8)
    root = t.add(
        "orders-api",
        LAMBDA_SCOPE,
        "GET /orders/{id}",
        Span.SPAN_KIND_SERVER,
        lambda_attrs(r, "orders-api", "http")
        | http_server_attrs(r, "GET", "/orders/{id}", f"/orders/{order_id}", 200 if found else 404),
        parent=None,
        duration_ms=r.uniform(10, 80),
    )
    region = r.choice(REGIONS)
    t.add(
        "orders-api",
        BOTO_SCOPE,
        "DynamoDB.GetItem",
        Span.SPAN_KIND_CLIENT,
        aws_call_attrs("DynamoDB", "GetItem", region)
        | {
            "db.system.name": "aws.dynamodb",
            "aws.dynamodb.table_names": ["orders"],
            "aws.dynamodb.consistent_read": True,
        },
        parent=root,
        duration_ms=r.uniform(3, 20),
    )
    return t.spans


def trace_templates(seed: int) -> list[TraceTemplate]:
    r = random.Random(seed)
    return [checkout_trace(r) if r.random() < 0.75 else lookup_trace(r) for _ in range(TRACE_TEMPLATES)]


@dataclass(frozen=True)
class PlannedSpan:
    template: SpanTemplate
    instance: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    links: tuple[tuple[bytes, bytes], ...]
    order_id: str


def plan_spans(seed: int, start_ns: int) -> Iterator[PlannedSpan]:
    """An endless stream of spans with unique random ids, trace after trace."""
    r = random.Random(seed)
    templates = trace_templates(seed)
    previous_producer: tuple[bytes, bytes] | None = None
    for number in itertools.count():
        trace_start = start_ns + number * 2_000_000 + r.randrange(1_000_000)
        root_trace_id, order_id = r.randbytes(16), f"ord_{r.randbytes(8).hex()}"
        instance = r.randrange(INSTANCES_PER_SERVICE)  # the Lambda instance of each service in this trace
        ids: list[tuple[bytes, bytes]] = []  # (trace_id, span_id) of each span so far
        for template in r.choice(templates):
            span_id = r.randbytes(8)
            parent = ids[template.parent] if template.parent is not None else None
            trace_id = parent[0] if parent else root_trace_id
            links: tuple[tuple[bytes, bytes], ...] = ()
            if template.new_trace and parent is not None:
                # An SQS-triggered Lambda: its own trace, linked to the message(s) of its batch.
                batch_mate = previous_producer is not None and r.random() < 0.4
                links = (parent, previous_producer) if batch_mate and previous_producer else (parent,)
                previous_producer, parent, trace_id = parent, None, r.randbytes(16)
            ids.append((trace_id, span_id))
            yield PlannedSpan(
                template=template,
                instance=instance,
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent[1] if parent else b"",
                start_ns=trace_start + template.offset_ns,
                links=links,
                order_id=order_id,
            )


def fill_span(span: Span, planned: PlannedSpan, r: random.Random) -> None:
    template = planned.template
    span.CopyFrom(template.span)
    span.trace_id = planned.trace_id
    span.span_id = planned.span_id
    span.parent_span_id = planned.parent_span_id
    span.start_time_unix_nano = planned.start_ns
    span.end_time_unix_nano = planned.start_ns + template.duration_ns
    for index in template.per_span_attrs:
        span.attributes[index].value.string_value = r.randbytes(16).hex()
    for index in template.per_trace_attrs:
        span.attributes[index].value.string_value = planned.order_id
    for event in span.events:
        event.time_unix_nano += planned.start_ns + template.duration_ns // 2
    for trace_id, span_id in planned.links:
        link = span.links.add(trace_id=trace_id, span_id=span_id)
        link.attributes.add(key="messaging.operation.type").value.string_value = "receive"


def build_request(
    planned: Sequence[PlannedSpan], resources: dict[tuple[str, int], Resource], r: random.Random
) -> bytes:
    """One ExportTraceServiceRequest body: spans grouped by resource, then by instrumentation scope."""
    request = ExportTraceServiceRequest()
    groups: dict[tuple[str, int], dict[str, list[PlannedSpan]]] = {}
    for span in planned:
        key = (span.template.service, span.instance)
        groups.setdefault(key, {}).setdefault(span.template.scope, []).append(span)
    for key, scopes in groups.items():
        resource_spans = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.27.0")
        resource_spans.resource.CopyFrom(resources[key])
        for scope_name, spans in scopes.items():
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope_name
            scope_spans.scope.version = "0.48b0"
            for planned_span in spans:
                fill_span(scope_spans.spans.add(), planned_span, r)
    return request.SerializeToString()


def generate_bodies(total_spans: int, batch: int, seed: int) -> list[tuple[bytes, int]]:
    """(body, span count) for every request, built before anything is timed."""
    r = random.Random(seed + 1)
    resources = {(s, i): make_resource(s, i) for s in SERVICES for i in range(INSTANCES_PER_SERVICE)}
    stream = plan_spans(seed, start_ns=time.time_ns() - 3_600 * 10**9)
    bodies: list[tuple[bytes, int]] = []
    remaining = total_spans
    while remaining:
        planned = list(itertools.islice(stream, min(batch, remaining)))
        bodies.append((build_request(planned, resources, r), len(planned)))
        remaining -= len(planned)
    return bodies


# ---------------------------------------------------------------------------------------------------------
# Baseline: the store's own write speed, in-process, same requests, one write per request.
# ---------------------------------------------------------------------------------------------------------


def measure_store(bodies: Sequence[tuple[bytes, int]], db: Path) -> float:
    """Spans/s of the store alone, doing what the collector does before it acknowledges: prepare, write.

    The requests are parsed before the clock starts; one request per write. (Flow stitching follows
    the acknowledgement; the HTTP run reports how long after the last one the flows caught up.)
    """
    requests = [ExportTraceServiceRequest.FromString(body) for body, _ in bodies]
    store = SQLiteStore(db)
    try:
        written = 0
        elapsed = 0.0
        for request in requests:
            started = time.perf_counter()
            written += store.write_prepared([store.prepare(request)])
            elapsed += time.perf_counter() - started
        stored = store.count_spans()
    finally:
        store.close()
    expected = sum(n for _, n in bodies)
    if written != expected or stored != expected:
        raise RuntimeError(f"in-process store wrote {written} and holds {stored} of {expected} spans")
    return written / elapsed


# ---------------------------------------------------------------------------------------------------------
# The collector process and its memory.
# ---------------------------------------------------------------------------------------------------------


class Collector:
    """A ``hopscope collector`` subprocess on a free port; its stderr is kept for error reports."""

    def __init__(self, db: Path, extra_args: Sequence[str] = ()) -> None:
        self.process = subprocess.Popen(
            [str(HOPSCOPE), "collector", "--host", "127.0.0.1", "--port", "0", "--db", str(db), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_stderr, name="collector-stderr", daemon=True).start()
        if not self._wait_ready():
            self.kill()
            raise RuntimeError("collector did not start:\n" + "".join(self.log))

    def _wait_ready(self) -> bool:
        return self._ready.wait(STARTUP_TIMEOUT_SECONDS) and self._url is not None and self._healthy()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match and self._url is None:
                self._url = match.group(1)
                self._ready.set()
        self._ready.set()  # exited before listening

    def _healthy(self) -> bool:
        """The line is logged once the port is bound; wait until it is also served."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            conn = http.client.HTTPConnection(*self.address, timeout=5)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                time.sleep(0.02)
            finally:
                conn.close()
        return False

    @property
    def address(self) -> tuple[str, int]:
        assert self._url is not None
        host, port = self._url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        """SIGINT, wait for the drain; returns the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("collector did not exit after SIGINT") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RssSampler:
    """Peak resident memory of a process and its children, sampled on a thread.

    On Linux the kernel's own high-water mark (VmHWM) of the main process is read too: it also catches
    peaks shorter than the sampling interval. (``ru_maxrss`` of a waited-for child is no use here: it
    starts from this process's RSS at fork time.)
    """

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._status = Path(f"/proc/{pid}/status")
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.high_water_bytes = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self._process, *self._process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in processes)
                high_water = self._kernel_high_water()
            except (psutil.Error, OSError):  # exiting
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            self.high_water_bytes = max(self.high_water_bytes, high_water)
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def _kernel_high_water(self) -> int:
        if not self._status.exists():
            return 0
        for line in self._status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------------------
# Clients.
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ClientStats:
    latencies: list[float] = field(default_factory=list)
    acknowledged: int = 0
    rejected: int = 0
    retries: int = 0
    reconnects: int = 0


class Client:
    """One keep-alive connection sending bodies taken from a shared iterator until it is empty."""

    def __init__(
        self,
        address: tuple[str, int],
        work: Iterator[tuple[bytes, int]],
        lock: threading.Lock,
        retry_sleep: float | None,
    ) -> None:
        self._address = address
        self._work = work
        self._lock = lock
        self._retry_sleep = retry_sleep
        self._conn = self._connect()
        self.stats = ClientStats()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (item := self._next()) is not None:
                self._send(*item)
        except BaseException as exc:
            self.error = exc
        finally:
            self._conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self._address, timeout=REQUEST_TIMEOUT_SECONDS)

    def _next(self) -> tuple[bytes, int] | None:
        with self._lock:
            return next(self._work, None)

    def _send(self, body: bytes, spans: int) -> None:
        reconnects = 0
        while True:
            started = time.perf_counter()
            try:
                self._conn.request(
                    "POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"}
                )
                response = self._conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                reconnects += 1
                if reconnects > MAX_RECONNECTS:
                    raise
                self.stats.reconnects += 1
                self._conn.close()
                self._conn = self._connect()
                continue
            latency = time.perf_counter() - started
            if response.status == 503:
                self.stats.retries += 1
                # As OTLP exporters should: wait what Retry-After says, unless --retry-sleep overrides it.
                retry_after = float(response.getheader("Retry-After") or 1)
                time.sleep(retry_after if self._retry_sleep is None else self._retry_sleep)
                continue
            if response.status != 200:
                raise RuntimeError(f"collector answered {response.status}: {payload[:300]!r}")
            rejected = ExportTraceServiceResponse.FromString(payload).partial_success.rejected_spans
            self.stats.latencies.append(latency)
            self.stats.acknowledged += spans - rejected
            self.stats.rejected += rejected
            return


@dataclass(frozen=True)
class HttpResult:
    elapsed: float
    stats: ClientStats
    peak_rss_bytes: int
    rss_high_water_bytes: int
    stored: int
    exit_code: int
    flows_lag_seconds: float


def send_all(
    address: tuple[str, int], bodies: Sequence[tuple[bytes, int]], clients: int, retry_sleep: float | None
) -> tuple[float, ClientStats]:
    lock = threading.Lock()
    work = iter(bodies)
    workers = [Client(address, work, lock, retry_sleep) for _ in range(clients)]
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
    total = ClientStats()
    for worker in workers:
        total.latencies += worker.stats.latencies
        total.acknowledged += worker.stats.acknowledged
        total.rejected += worker.stats.rejected
        total.retries += worker.stats.retries
        total.reconnects += worker.stats.reconnects
    return elapsed, total


def measure_http(
    bodies: Sequence[tuple[bytes, int]], db: Path, clients: int, retry_sleep: float | None
) -> HttpResult:
    collector = Collector(db)
    try:
        sampler = RssSampler(collector.process.pid)
        try:
            elapsed, stats = send_all(collector.address, bodies, clients, retry_sleep)
            flows_lag = wait_for_flows(collector.address)
        finally:
            exit_code = collector.stop()
            sampler.stop()
    except BaseException:
        collector.kill()
        sys.stderr.write("".join(collector.log))
        raise
    if exit_code != 0:
        sys.stderr.write("".join(collector.log))
    store = SQLiteStore(db, read_only=True)
    try:
        stored = store.count_spans()
    finally:
        store.close()
    return HttpResult(
        elapsed, stats, sampler.peak_bytes, sampler.high_water_bytes, stored, exit_code, flows_lag
    )


def wait_for_flows(address: tuple[str, int]) -> float:
    """Seconds from the last acknowledgement until every stored span is stitched into its flow."""
    started = time.perf_counter()
    while time.perf_counter() - started < 600:
        conn = http.client.HTTPConnection(*address, timeout=10)
        try:
            conn.request("GET", "/healthz")
            if not json.loads(conn.getresponse().read())["flows_pending"]:
                return time.perf_counter() - started
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError("flows were still not stitched 600 s after the last acknowledgement")


# ---------------------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def row(label: str, value: str) -> str:
    return f"  {label:<28} {value}"


def target(ok: bool, label: str, value: str) -> str:
    return f"  {'PASS' if ok else 'MISS'}  {label:<26} {value}"


def report(
    args: argparse.Namespace, bodies: Sequence[tuple[bytes, int]], baseline: float, http: HttpResult
) -> int:
    """Print the result block; the exit code is 1 only when spans were lost or the collector failed."""
    stats = http.stats
    rate = stats.acknowledged / http.elapsed
    ratio = rate / baseline
    peak_mb = max(http.peak_rss_bytes, http.rss_high_water_bytes) / MB
    lost = stats.acknowledged - http.stored
    latencies_ms = [s * 1000 for s in stats.latencies]
    p50, p99 = percentile(latencies_ms, 0.50), percentile(latencies_ms, 0.99)
    avg_kib = statistics.mean(len(body) for body, _ in bodies) / 1024
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"hopscope ingest benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        row("spans", f"{sum(n for _, n in bodies):,} in {len(bodies)} requests of <= {args.batch} spans"),
        row("avg request body", f"{avg_kib:.0f} KiB (protobuf, uncompressed)"),
        row("clients", f"{args.clients} (keep-alive HTTP/1.1)"),
        row("elapsed (HTTP)", f"{http.elapsed:.2f} s"),
        row("stored spans/s (HTTP)", f"{rate:,.0f}"),
        row("request latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms"),
        row("collector peak RSS", f"{http.peak_rss_bytes / MB:.1f} MB sampled every 50 ms"),
        row("collector RSS high-water", f"{http.rss_high_water_bytes / MB:.1f} MB (kernel VmHWM)"),
        row("in-process store spans/s", f"{baseline:,.0f} (prepare + write_prepared, one request per call)"),
        row("ratio HTTP / in-process", f"{ratio:.2f}"),
        row("retries (503) / reconnects", f"{stats.retries} / {stats.reconnects}"),
        row("acknowledged / stored", f"{stats.acknowledged:,} / {http.stored:,} (rejected {stats.rejected})"),
        row("lost spans", f"{lost}"),
        row("collector exit code", f"{http.exit_code}"),
        row("flows stitched", f"{http.flows_lag_seconds:.1f} s after the last acknowledgement"),
        "targets",
        target(rate >= TARGET_SPANS_PER_SECOND, f"spans/s >= {TARGET_SPANS_PER_SECOND:,}", f"{rate:,.0f}"),
        target(ratio >= TARGET_RATIO, f"ratio >= {TARGET_RATIO}", f"{ratio:.2f}"),
        target(peak_mb <= TARGET_PEAK_RSS_MB, f"peak RSS <= {TARGET_PEAK_RSS_MB} MB", f"{peak_mb:.1f} MB"),
        target(lost == 0, "lost spans == 0", f"{lost}"),
    ]
    print("\n".join(lines), flush=True)
    return 1 if lost > 0 or stats.rejected or http.exit_code != 0 else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--spans", type=int, default=500_000, help="spans to send in all (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=512, help="spans per request (default: %(default)s)")
    parser.add_argument(
        "--db", type=Path, default=None, help="directory for both databases (default: a temp dir)"
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the generated spans (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-sleep",
        type=float,
        default=None,
        help="seconds to wait before re-sending after a 503 (default: the answer's Retry-After)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.spans < 1 or args.batch < 1:
        parser.error("--clients, --spans and --batch must be positive")
    return args


def run(args: argparse.Namespace, directory: Path) -> int:
    for name in ("baseline.db", "http.db"):
        for suffix in ("", "-wal", "-shm"):
            (directory / (name + suffix)).unlink(missing_ok=True)
    started = time.perf_counter()
    bodies = generate_bodies(args.spans, args.batch, args.seed)
    print(
        f"generated {len(bodies)} request bodies in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    baseline = measure_store(bodies, directory / "baseline.db")
    print(f"in-process store: {baseline:,.0f} spans/s; starting the collector", file=sys.stderr, flush=True)
    http = measure_http(bodies, directory / "http.db", args.clients, args.retry_sleep)
    return report(args, bodies, baseline, http)


def in_work_directory(db: Path | None, run: Callable[[Path], int], prefix: str = "hopscope-bench-") -> int:
    """Run a benchmark in ``--db`` (kept) or in a temporary folder (removed afterwards)."""
    if db is not None:
        db.mkdir(parents=True, exist_ok=True)
        return run(db)
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        return run(Path(directory))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return in_work_directory(args.db, lambda directory: run(args, directory))


if __name__ == "__main__":
    sys.exit(main())
