"""The benchmarks' span workload: OTLP request bodies of realistic spans, the same bytes for the same seed.

One pipeline makes every workload. A *shop* (services on AWS Lambda, their calls, queues and topics) gives
flow templates, built once with random content (attributes, events, durations). A planner copies them into
a stream of planned spans with fresh ids and times; ``Workload.take`` fills the planned spans into
``ExportTraceServiceRequest`` bodies, grouped by resource and scope as an SDK exports them. Two shops:

- ``small_shop``: 3 services (``orders-api``, ``billing``, ``shipping``), checkout and lookup traces, one
  trace every 2 ms from ``start_ns`` on. bench/ingest.py and bench/retention.py.
- ``large_shop``: 20 services, 4 SNS topics and 6 SQS queues; ``spans`` spans of whole flows spread over
  the 20 hours before ``now_ns``, exported as they end. bench/query.py (and through its store
  bench/dashboard.py and bench/api_snapshot.py).

Either records in ``Workload.plan`` which flows it made and how many of their spans were taken, so a
benchmark can check the answers it gets. See bench/README.md for what the spans look like.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

BATCH = 512  # spans per request, unless a benchmark says otherwise
MS = 1_000_000
SECOND_NS = 1_000_000_000
HOUR_NS = 3_600 * SECOND_NS

AttrValue = str | bool | int | float | list[str] | list[int]
Attrs = dict[str, AttrValue]

# ---------------------------------------------------------------------------------------------------------
# What every span is made of: semantic-convention attributes, resources, events.
# ---------------------------------------------------------------------------------------------------------

INSTANCES_PER_SERVICE = 3
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
ACCOUNT = "123456789012"
LAMBDA_SCOPE = "opentelemetry.instrumentation.aws_lambda"
BOTO_SCOPE = "opentelemetry.instrumentation.botocore"
HTTP_SCOPE = "opentelemetry.instrumentation.urllib3"
APP_SCOPE = "hopscope.instrumentation"
MESSAGE_ID_KEY = "messaging.message.id"
# Attributes the builders below leave empty, for each copy of a span to get its own value.
INVOCATION_ID_KEY = "faas.invocation_id"
REQUEST_ID_KEY = "aws.request_id"
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
        INVOCATION_ID_KEY: "",
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
        REQUEST_ID_KEY: "",
        "server.address": f"{service.lower()}.{region}.amazonaws.com",
        "http.response.status_code": 200,
    }


def messaging_attrs(r: random.Random, system: str, operation: str, destination: str) -> Attrs:
    return {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
        MESSAGE_ID_KEY: "",
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


def make_span(
    r: random.Random,
    name: str,
    kind: Span.SpanKind.ValueType,
    attrs: Attrs,
    events: Sequence[tuple[str, Attrs]] = (),
    error: str | None = None,
) -> Span:
    """A span's content, no ids or times: ``attrs`` topped up from EXTRA_ATTRS to 10-20 attributes, up to
    3 events (``events``, then 0-3 plain ones), an error status, or OK on 30% of server spans."""
    attrs = dict(attrs)
    target = r.randint(max(10, len(attrs)), max(20, len(attrs)))
    for key, make in r.sample(EXTRA_ATTRS, k=len(EXTRA_ATTRS)):
        if len(attrs) >= target:
            break
        attrs.setdefault(key, make(r))
    span = Span(name=name, kind=kind, attributes=key_values(attrs))
    for offset, (event_name, event_attrs) in enumerate([*events, *plain_events(r)][:3]):
        span.events.add(name=event_name, time_unix_nano=offset + 1, attributes=key_values(event_attrs))
    if error is not None:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    elif kind == Span.SPAN_KIND_SERVER and r.random() < 0.3:
        span.status.code = Status.STATUS_CODE_OK
    return span


def indices(span: Span, keys: Sequence[str]) -> tuple[int, ...]:
    """Where the attributes named ``keys`` stand in ``span``, in attribute order."""
    return tuple(i for i, kv in enumerate(span.attributes) if kv.key in keys)


# ---------------------------------------------------------------------------------------------------------
# The pipeline: flow templates -> planned spans -> request bodies.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSpan:
    """One span of a flow template: its content, its place in the flow, and the values each copy fills in."""

    service: str
    scope: str
    span: Span  # name, kind, attributes, events and status; no ids or times
    parent: int  # index of the parent span in the template, -1 for the root of a trace
    link: int  # index of the producer a consumer links to (it starts a trace of its own), -1 for none
    trace: int  # which of the flow's traces
    offset_ns: int  # start, from the start of the flow
    duration_ns: int
    order_id_attrs: tuple[int, ...]  # attribute indices that carry the flow's order id
    fresh_attrs: tuple[int, ...]  # attribute indices with a fresh random value in every copy
    message_attr: int = -1  # attribute index of a message id chosen by the planner, -1 for none
    message_of: int = -1  # a direct SQS consumer repeats this producer's message id, -1 for a fresh one

    @property
    def failed(self) -> bool:
        return self.span.status.code == Status.STATUS_CODE_ERROR


@dataclass(frozen=True)
class FlowTemplate:
    spans: tuple[TemplateSpan, ...]  # in start order; parents and producers before their children
    traces: int


class PlannedSpan(NamedTuple):
    """One copy of a template span: its ids, times and the values the copy gets."""

    template: TemplateSpan
    flow: int  # index in the plan
    instance: int  # the Lambda instance, one of INSTANCES_PER_SERVICE
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    end_ns: int
    links: tuple[tuple[bytes, bytes], ...]  # (trace id, span id) of the producers a consumer links to
    order_id: str
    message_id: str = ""
    error: bool = False  # the planner made this copy fail: an ERROR status and an exception event


@dataclass
class FlowPlan:
    """Every flow a planner made: its order id, spans and traces, and how many of its spans were taken."""

    order_ids: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    traces: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    sent_traces: set[bytes] = field(default_factory=set)
    errors: int = 0  # spans taken with an ERROR status

    def add(self, order_id: str, template: FlowTemplate) -> int:
        """A new flow; returns its index."""
        self.order_ids.append(order_id)
        self.sizes.append(len(template.spans))
        self.traces.append(template.traces)
        self.sent.append(0)
        return len(self.order_ids) - 1

    def record(self, span: PlannedSpan) -> None:
        """``span`` is about to be taken."""
        self.sent[span.flow] += 1
        self.sent_traces.add(span.trace_id)
        self.errors += span.error or span.template.failed

    def complete(self, size: int | None = None) -> list[int]:
        """The flows whose every span was taken (of ``size`` spans, when given)."""
        return [
            flow
            for flow, (n, sent) in enumerate(zip(self.sizes, self.sent, strict=True))
            if sent == n and (size is None or n == size)
        ]


def fill_span(span: Span, p: PlannedSpan, r: random.Random) -> None:
    t = p.template
    span.CopyFrom(t.span)
    span.trace_id = p.trace_id
    span.span_id = p.span_id
    span.parent_span_id = p.parent_span_id
    span.start_time_unix_nano = p.start_ns
    span.end_time_unix_nano = p.end_ns
    attributes = span.attributes
    for index in t.order_id_attrs:
        attributes[index].value.string_value = p.order_id
    if t.message_attr >= 0:
        attributes[t.message_attr].value.string_value = p.message_id
    for index in t.fresh_attrs:
        attributes[index].value.string_value = r.randbytes(16).hex()
    middle = p.start_ns + (p.end_ns - p.start_ns) // 2
    for event in span.events:
        event.time_unix_nano += middle
    for trace_id, span_id in p.links:
        link = span.links.add(trace_id=trace_id, span_id=span_id)
        link.attributes.add(key="messaging.operation.type").value.string_value = "receive"
    if p.error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = "downstream call failed"
        name, attrs = exception_event(r, t.service, "ServiceError", "downstream call failed")
        span.events.add(name=name, time_unix_nano=middle, attributes=key_values(attrs))


def build_request(
    planned: Sequence[PlannedSpan], resources: dict[tuple[str, int], Resource], r: random.Random
) -> bytes:
    """One ExportTraceServiceRequest body: spans grouped by resource, then by instrumentation scope."""
    request = ExportTraceServiceRequest()
    groups: dict[tuple[str, int], dict[str, list[PlannedSpan]]] = {}
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


class Workload:
    """Request bodies made on demand from one stream of planned spans, in the order they were planned."""

    def __init__(
        self, spans: Iterator[PlannedSpan], plan: FlowPlan, services: Sequence[str], fill_seed: int
    ) -> None:
        self.plan = plan
        self._spans = spans
        self._r = random.Random(fill_seed)  # the fresh attribute values and the planned errors' events
        self._resources = {
            (s, i): make_resource(s, i) for s in services for i in range(INSTANCES_PER_SERVICE)
        }

    def take(self, spans: int, batch: int = BATCH) -> Iterator[tuple[bytes, int]]:
        """(body, span count) of the next ``spans`` spans in requests of ``batch``, made as asked for."""
        stream = itertools.islice(self._spans, spans)
        while chunk := list(itertools.islice(stream, batch)):
            yield build_request(chunk, self._resources, self._r), len(chunk)

    def bodies(self, spans: int, batch: int = BATCH) -> list[tuple[bytes, int]]:
        """Every body of the next ``spans`` spans at once, to be sent before anything is timed."""
        return list(self.take(spans, batch))


# ---------------------------------------------------------------------------------------------------------
# The small shop (ingest, retention): API Gateway -> Lambda, SQS, SNS, DynamoDB in three services.
# ---------------------------------------------------------------------------------------------------------

SMALL_SHOP_SERVICES = ("orders-api", "billing", "shipping")
SMALL_SHOP_TEMPLATES = 240
ORDER_ID_KEY = "app.order.id"  # the small shop's order id: one value in all of a flow's spans
SMALL_SHOP_FRESH_KEYS = (INVOCATION_ID_KEY, MESSAGE_ID_KEY, REQUEST_ID_KEY)


@dataclass
class TraceBuilder:
    """Builds one flow template of the small shop span by span, in start order."""

    r: random.Random
    spans: list[TemplateSpan] = field(default_factory=list)
    traces: int = 1
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
        """A span; ``new_trace``: an async consumer, which starts its own trace and links to ``parent``."""
        span = make_span(self.r, name, kind, {**attrs, ORDER_ID_KEY: ""}, events, error)
        self.clock_ns += int(self.r.uniform(0.2, 3.0) * 1e6)
        duration_ns = int(duration_ms * 1e6)
        trace = 0
        if parent is not None and new_trace:
            trace, self.traces = self.traces, self.traces + 1
        elif parent is not None:  # a synchronous child ends before its parent
            above = self.spans[parent]
            duration_ns = min(duration_ns, above.offset_ns + above.duration_ns - self.clock_ns - 100_000)
            trace = above.trace
        self.spans.append(
            TemplateSpan(
                service=service,
                scope=scope,
                span=span,
                parent=-1 if parent is None or new_trace else parent,
                link=parent if parent is not None and new_trace else -1,
                trace=trace,
                offset_ns=self.clock_ns,
                duration_ns=max(duration_ns, 50_000),
                order_id_attrs=indices(span, (ORDER_ID_KEY,)),
                fresh_attrs=indices(span, SMALL_SHOP_FRESH_KEYS),
            )
        )
        return len(self.spans) - 1

    def template(self) -> FlowTemplate:
        return FlowTemplate(tuple(self.spans), self.traces)


def checkout_trace(r: random.Random) -> FlowTemplate:
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
        return t.template()
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
    return t.template()


def lookup_trace(r: random.Random) -> FlowTemplate:
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
    return t.template()


def small_shop_templates(seed: int) -> list[FlowTemplate]:
    r = random.Random(seed)
    return [checkout_trace(r) if r.random() < 0.75 else lookup_trace(r) for _ in range(SMALL_SHOP_TEMPLATES)]


def small_shop_spans(seed: int, start_ns: int, plan: FlowPlan) -> Iterator[PlannedSpan]:
    """An endless stream of spans with unique random ids, flow after flow, a flow every ~2 ms."""
    r = random.Random(seed)
    templates = small_shop_templates(seed)
    previous_producer: tuple[bytes, bytes] | None = None
    for number in itertools.count():
        flow_start = start_ns + number * 2_000_000 + r.randrange(1_000_000)
        root_trace_id, order_id = r.randbytes(16), f"ord_{r.randbytes(8).hex()}"
        instance = r.randrange(INSTANCES_PER_SERVICE)  # the Lambda instance of each service in this flow
        template = r.choice(templates)
        flow = plan.add(order_id, template)
        ids: list[tuple[bytes, bytes]] = []  # (trace_id, span_id) of each span so far
        for t in template.spans:
            span_id = r.randbytes(8)
            links: tuple[tuple[bytes, bytes], ...] = ()
            parent: tuple[bytes, bytes] | None
            if t.link >= 0:
                # An SQS-triggered Lambda: its own trace, linked to the message(s) of its batch.
                producer = ids[t.link]
                batch_mate = previous_producer is not None and r.random() < 0.4
                links = (producer, previous_producer) if batch_mate and previous_producer else (producer,)
                previous_producer, parent, trace_id = producer, None, r.randbytes(16)
            else:
                parent = ids[t.parent] if t.parent >= 0 else None
                trace_id = parent[0] if parent else root_trace_id
            ids.append((trace_id, span_id))
            start = flow_start + t.offset_ns
            planned = PlannedSpan(
                template=t,
                flow=flow,
                instance=instance,
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=parent[1] if parent else b"",
                start_ns=start,
                end_ns=start + t.duration_ns,
                links=links,
                order_id=order_id,
            )
            plan.record(planned)
            yield planned


def small_shop(seed: int, start_ns: int | None = None) -> Workload:
    """The small shop's endless workload, flows from ``start_ns`` on (default: an hour ago)."""
    start = time.time_ns() - HOUR_NS if start_ns is None else start_ns
    plan = FlowPlan()
    return Workload(small_shop_spans(seed, start, plan), plan, SMALL_SHOP_SERVICES, fill_seed=seed + 1)


# ---------------------------------------------------------------------------------------------------------
# The large shop (query): 20 services, 4 SNS topics fanning out to 6 SQS queues, AWS dependencies.
# ---------------------------------------------------------------------------------------------------------

LARGE_SHOP_SERVICES = (
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
LARGE_SHOP_TEMPLATES = 2_000
DETAIL_SPANS = 50
# Spans per flow: (lowest, highest, share of templates). About 10 on average; a few flows have exactly 50.
FLOW_SIZES = (
    (3, 5, 0.36),
    (6, 12, 0.41),
    (13, 24, 0.19),
    (25, 40, 0.035),
    (DETAIL_SPANS, DETAIL_SPANS, 0.005),
)
MAX_DEPTH = 4
ERROR_RATE = 0.01
SPREAD_NS = 20 * HOUR_NS  # span start times cover the 20 hours before ``now_ns``
WINDOW_FLOWS = 64  # flows whose spans are interleaved (sorted by end time, as SDKs export them)
CORRELATION_KEY = "hopscope.correlation_id"  # the large shop's order id
LARGE_SHOP_FRESH_KEYS = (INVOCATION_ID_KEY, REQUEST_ID_KEY)


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
    """Builds one flow of exactly ``target`` spans from a random walk over the large shop."""

    def __init__(self, r: random.Random, target: int) -> None:
        self.r = r
        self.target = target
        self.count = 0
        self.hosts: list[Node] = []  # server, consumer and internal spans: where more work can go
        self.region = r.choice(REGIONS)

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
        attrs = lambda_attrs(self.r, service, "http") | http_server_attrs(
            self.r, method, route, path, 201 if method == "POST" else 200
        )
        server = self.node(
            service, LAMBDA_SCOPE, f"{method} {route}", Span.SPAN_KIND_SERVER, attrs, self.r.uniform(2, 30)
        )
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
        attrs = aws_call_attrs(service, method, self.region)
        if service == "DynamoDB":
            attrs |= {"db.system.name": "aws.dynamodb", "aws.dynamodb.table_names": [self.r.choice(TABLES)]}
        else:
            attrs |= {"aws.s3.bucket": "shop-assets", "aws.s3.key": f"img/{self.r.randrange(10**5)}.jpg"}
        host.children.append(
            self.node(
                host.service, BOTO_SCOPE, f"{service}.{method}", Span.SPAN_KIND_CLIENT, attrs,
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
            host.service, APP_SCOPE, f"{host.service} {step}", Span.SPAN_KIND_INTERNAL, attrs,
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
            host.service, HTTP_SCOPE, method, Span.SPAN_KIND_CLIENT,
            http_client_attrs(self.r, method, url, f"{callee}.internal", 200), self.r.uniform(1, 5),
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
            attrs = messaging_attrs(self.r, "aws_sns", "publish", destination) | aws_call_attrs(
                "SNS", "Publish", self.region
            )
        else:
            subscribers = [(destination, QUEUES[destination])]
            attrs = messaging_attrs(self.r, "aws_sqs", "send", destination) | aws_call_attrs(
                "SQS", "SendMessage", self.region
            )
        if len(subscribers) < 2 and destination in TOPICS:
            self.external(host)
            return
        producer = self.node(
            host.service, BOTO_SCOPE, f"{destination} publish", Span.SPAN_KIND_PRODUCER, attrs,
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
            lambda_attrs(self.r, service, "pubsub")
            | messaging_attrs(self.r, "aws_sqs", "process", queue)
            | {"hopscope.receive_count": receive_count, "messaging.consumer.group.name": service}
        )
        consumer = self.node(
            service, LAMBDA_SCOPE, f"{queue} process", Span.SPAN_KIND_CONSUMER, attrs, self.r.uniform(2, 20)
        )
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


def flatten(r: random.Random, root: Node) -> FlowTemplate:
    spans: list[TemplateSpan] = []
    traces = 0

    def visit(node: Node, parent: int, link: int, trace: int) -> int:
        nonlocal traces
        proto = make_span(r, node.name, node.kind, {CORRELATION_KEY: "", **node.attrs})
        (message_attr,) = indices(proto, (MESSAGE_ID_KEY,)) or (-1,)
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
                order_id_attrs=indices(proto, (CORRELATION_KEY,)),
                fresh_attrs=indices(proto, LARGE_SHOP_FRESH_KEYS),
                message_attr=message_attr,
                message_of=link if node.shares_message_id else -1,
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


def large_shop_templates(seed: int) -> list[FlowTemplate]:
    r = random.Random(seed)
    templates = []
    for low, high, share in FLOW_SIZES:
        for _ in range(max(1, round(share * LARGE_SHOP_TEMPLATES))):
            root = FlowBuilder(r, r.randint(low, high)).build()
            layout(root, 0, r)
            templates.append(flatten(r, root))
    return templates


def plan_flow(
    template: FlowTemplate, r: random.Random, flow: int, start_ns: int, order_id: str
) -> list[PlannedSpan]:
    scale = r.uniform(0.7, 1.5)  # the same shape, faster or slower
    instance = r.randrange(INSTANCES_PER_SERVICE)
    trace_ids = [r.randbytes(16) for _ in range(template.traces)]
    span_ids = [r.randbytes(8) for _ in template.spans]
    message_ids: dict[int, str] = {}
    planned = []
    for index, t in enumerate(template.spans):
        if t.message_attr >= 0:
            message_ids[index] = message_ids[t.message_of] if t.message_of >= 0 else r.randbytes(16).hex()
        start = start_ns + int(t.offset_ns * scale)
        planned.append(
            PlannedSpan(
                template=t,
                flow=flow,
                instance=instance,
                trace_id=trace_ids[t.trace],
                span_id=span_ids[index],
                parent_span_id=span_ids[t.parent] if t.parent >= 0 else b"",
                start_ns=start,
                end_ns=start + int(t.duration_ns * scale),
                links=((trace_ids[template.spans[t.link].trace], span_ids[t.link]),) if t.link >= 0 else (),
                order_id=order_id,
                message_id=message_ids.get(index, ""),
                error=r.random() < ERROR_RATE,
            )
        )
    return planned


def large_shop_spans(seed: int, total: int, plan: FlowPlan, now_ns: int) -> Iterator[PlannedSpan]:
    """``total`` spans of whole flows, starting over the SPREAD_NS before ``now_ns``, in export order."""
    r = random.Random(seed + 1)
    templates = large_shop_templates(seed)
    mean_spans = statistics.mean(len(t.spans) for t in templates)
    interval = max(1, SPREAD_NS // math.ceil(total / mean_spans))
    first_start = now_ns - SPREAD_NS - 60 * SECOND_NS  # the last flows end about a minute before now
    emitted = planned_so_far = 0
    for window in itertools.count():
        batch: list[PlannedSpan] = []
        for flow in range(window * WINDOW_FLOWS, (window + 1) * WINDOW_FLOWS):
            template = r.choice(templates)
            order_id = f"ord-{flow:07d}-{r.randbytes(4).hex()}"
            # Time moves with the spans planned, so the last flow starts at the end of the spread.
            start = first_start + planned_so_far * SPREAD_NS // total + r.randrange(interval)
            planned_so_far += len(template.spans)
            batch.extend(plan_flow(template, r, plan.add(order_id, template), start, order_id))
        batch.sort(key=lambda p: p.end_ns)
        for planned in batch:
            if emitted == total:
                return
            plan.record(planned)
            emitted += 1
            yield planned


def large_shop(seed: int, spans: int, now_ns: int) -> Workload:
    """The large shop's ``spans`` spans, flows starting over the 20 hours before ``now_ns``."""
    plan = FlowPlan()
    return Workload(
        large_shop_spans(seed, spans, plan, now_ns), plan, LARGE_SHOP_SERVICES, fill_seed=seed + 2
    )
