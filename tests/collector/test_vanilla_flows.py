"""Issue 15's end-to-end acceptance: Lambda functions, each in its own process, on a moto server over HTTP,
export through the real OTLP/HTTP exporter to a real collector; the flows it builds hold what the issue says.

Three small systems share one moto server and one collector (module fixtures), once on each store:

- vanilla: ``AwsLambdaInstrumentor`` + ``BotocoreInstrumentor``. The producer (two invocations, two traces)
  publishes orders v-1 and v-2 to SNS; the queue's subscription is raw, so botocore's injected
  ``traceparent`` arrives as an SQS message attribute; the consumer takes both records in ONE Lambda event.
- mixed: a vanilla producer (m-1, m-2, m-3), SNS envelope delivery (raw off), and a hopscope consumer
  (``@traced_handler`` + ``process_batch``): one invocation with m-1 and m-2, one with m-3 alone.
- hopscope: ``instrument_boto3()`` on the producer (h-1, h-2, h-3, raw delivery), ``@traced_handler`` +
  ``process_batch`` on the consumer: one invocation with h-1 and h-2, one with h-3 alone.

RED follows the rule issue 15 asks to document: a service's rate counts invocations, a hop's counts messages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.helpers.dead_letters import wait_for_flows
from tests.helpers.lambda_shapes import fixture, sqs_event
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import STORE_BACKENDS, CollectorProcess
from tests.helpers.vanilla_lambda import (
    FunctionProcess,
    FunctionRun,
    Instrumentation,
    RecordedSpan,
    start_function,
    wait_until_stored,
)

VANILLA_ORDERS = ("v-1", "v-2")
MIXED_ORDERS = ("m-1", "m-2", "m-3")
HOPSCOPE_ORDERS = ("h-1", "h-2", "h-3")

# service names: one per function
VANILLA_API, VANILLA_CONSUMER = "vanilla-orders-api", "vanilla-shipping"
MIXED_API, MIXED_CONSUMER = "mixed-orders-api", "mixed-billing"
HOPSCOPE_API, HOPSCOPE_CONSUMER = "hop-orders-api", "hop-shipping"

Ref = tuple[str, str]  # (trace id, span id) in hex


@dataclass
class Order:
    order_id: str
    publish: RecordedSpan  # the producer's PRODUCER span for this order
    message_id: str  # the SQS message id the consumer got


@dataclass(repr=False)  # failure reports show the assertion, not every flow
class World:
    """Everything the functions did, and the collector's flows once stitched."""

    http: httpx.Client
    orders: dict[str, Order]
    runs: dict[str, FunctionRun]  # by service
    flows: dict[int, dict[str, Any]]  # flow id -> GET /api/flows/{id}, for every flow /api/flows lists

    def flows_with(self, ref: Ref) -> list[int]:
        """The listed flows that hold this span."""
        return [
            flow_id
            for flow_id, detail in self.flows.items()
            if any((s["trace_id"], s["span_id"]) == ref for s in detail["spans"])
        ]

    def flow_of(self, order_id: str) -> int:
        """The flow of an order: the one listed flow holding its producer span."""
        found = self.flows_with(self.orders[order_id].publish.ref)
        assert len(found) == 1, f"{order_id}: its producer span is in the listed flows {found}"
        return found[0]

    def refs_in(self, flow_id: int) -> set[Ref]:
        return {(s["trace_id"], s["span_id"]) for s in self.flows[flow_id]["spans"]}


def _api_event(order_id: str) -> dict[str, Any]:
    event = fixture("powertools__apiGatewayProxyV2Event.json")
    event["routeKey"] = "POST /orders"
    event["requestContext"]["http"]["method"] = "POST"
    event["body"] = json.dumps({"order_id": order_id, "total": 42})
    return event


def _receive(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    """What Lambda's poller gets from SQS (real ReceiveMessage answers), gathered into one batch."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len(messages) < expected and time.monotonic() < deadline:
        messages += sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            VisibilityTimeout=300,
            WaitTimeSeconds=1,
        ).get("Messages", [])
    assert len(messages) == expected, f"{url}: {len(messages)} of {expected} messages"
    return messages


def _order_of(message: dict[str, Any]) -> str:
    body = json.loads(message["Body"])
    if "Message" in body and "TopicArn" in body:  # an SNS envelope
        body = json.loads(body["Message"])
    return str(body["order_id"])


def _by_order(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_order_of(m): m for m in messages}


@dataclass(frozen=True)
class System:
    """A producer function, an SNS topic, a queue subscribed to it, and the queue's consumer function."""

    topic: str
    producer: str  # its service name
    consumer: str  # its service name, and its queue's name
    producer_instrumentation: Instrumentation
    consumer_instrumentation: Instrumentation
    raw_delivery: bool
    batches: tuple[tuple[str, ...], ...]  # the consumer's invocations: the orders of each event

    @property
    def orders(self) -> tuple[str, ...]:
        return tuple(order for batch in self.batches for order in batch)


SYSTEMS = (
    System("vanilla-orders", VANILLA_API, VANILLA_CONSUMER, "vanilla", "vanilla", True, (VANILLA_ORDERS,)),
    System(
        "mixed-orders", MIXED_API, MIXED_CONSUMER, "vanilla", "hopscope", False, (("m-1", "m-2"), ("m-3",))
    ),
    System(
        "hop-orders",
        HOPSCOPE_API,
        HOPSCOPE_CONSUMER,
        "hopscope",
        "hopscope",
        True,
        (("h-1", "h-2"), ("h-3",)),
    ),
)


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def world(
    request: pytest.FixtureRequest, moto_session_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The three systems run once per store (SQLite, and ClickHouse's engine in the collector's process)."""
    moto = moto_session_server
    moto.reset()
    sqs, sns = moto.client("sqs"), moto.client("sns")
    topics: dict[str, str] = {}  # system's topic -> ARN
    queues: dict[str, tuple[str, str]] = {}  # system's consumer -> its queue's (URL, ARN)
    for system in SYSTEMS:
        topics[system.topic] = sns.create_topic(Name=system.topic)["TopicArn"]
        url = sqs.create_queue(QueueName=system.consumer)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues[system.consumer] = (url, arn)
        raw = {"RawMessageDelivery": "true" if system.raw_delivery else "false"}
        sns.subscribe(TopicArn=topics[system.topic], Protocol="sqs", Endpoint=arn, Attributes=raw)

    folder = tmp_path_factory.mktemp("vanilla")
    store = [] if request.param == "sqlite" else ["--store", f"chdb://{folder / 'chdb'}?database=vanilla"]
    collector = CollectorProcess(db=folder / "hopscope.db", args=store).start()
    started: list[FunctionProcess] = []
    try:
        # WHEN the producers run, each function in its own process, one invocation (one trace) per order
        processes = [
            start_function(
                s.producer_instrumentation,
                "producer",
                s.producer,
                [_api_event(order_id) for order_id in s.orders],
                moto_url=moto.url,
                collector_url=collector.url,
                env={"ORDER_TOPIC_ARN": topics[s.topic]},
            )
            for s in SYSTEMS
        ]
        started += processes
        runs = {p.service: p.result() for p in processes}

        # and Lambda's poller hands each consumer what SQS really delivered, several records in one event
        received: dict[str, dict[str, dict[str, Any]]] = {}  # consumer -> order -> SQS message
        for s in SYSTEMS:
            url, arn = queues[s.consumer]
            received[s.consumer] = _by_order(_receive(sqs, url, len(s.orders)))
            events = [sqs_event([received[s.consumer][o] for o in batch], arn) for batch in s.batches]
            started.append(
                start_function(
                    s.consumer_instrumentation,
                    "consumer",
                    s.consumer,
                    events,
                    moto_url=moto.url,
                    collector_url=collector.url,
                )
            )
        runs |= {p.service: p.result() for p in started[len(SYSTEMS) :]}

        orders: dict[str, Order] = {}
        for s in SYSTEMS:
            taken = [result["orders"] for result in runs[s.consumer].results]
            assert taken == [list(batch) for batch in s.batches], s.consumer
            # invocations run one after another: the n-th publish span is the n-th order's
            publishes = runs[s.producer].spans_of("PRODUCER")
            assert len(publishes) == len(s.orders), [span.name for span in runs[s.producer].spans]
            for order_id, publish in zip(s.orders, publishes, strict=True):
                orders[order_id] = Order(order_id, publish, received[s.consumer][order_id]["MessageId"])

        # THEN (once every span is stored and stitched) the tests read the flows
        http = collector.client()
        wait_until_stored(http, [span for run in runs.values() for span in run.spans])
        wait_for_flows(collector)
        listed = http.get("/api/flows", params={"limit": 1000}).json()["flows"]
        flows = {f["flow_id"]: http.get(f"/api/flows/{f['flow_id']}").json() for f in listed}
        yield World(http, orders, runs, flows)
        http.close()
    finally:
        for process in started:
            process.kill()
        collector.stop()


def _batch_span(world: World) -> RecordedSpan:
    """The vanilla consumer's one CONSUMER span, ``process vanilla-shipping``, for both records."""
    (span,) = world.runs[VANILLA_CONSUMER].spans_of("CONSUMER")
    return span


def _hopscope_batch_invocations(world: World) -> list[RecordedSpan]:
    """The invocation spans (``faas.trigger``) of hopscope consumers that took several records at once."""
    return [
        s
        for service in (HOPSCOPE_CONSUMER, MIXED_CONSUMER)
        for s in world.runs[service].spans
        if "faas.trigger" in s.attributes and len({link.trace_id for link in s.links}) > 1
    ]


def _red_span_count(world: World, service: str) -> int:
    answer = world.http.get("/api/services")
    assert answer.status_code == 200, answer.text
    services = {s["service"]: s for s in answer.json()["services"]}
    return int(services[service]["red"]["span_count"])


# ---------------------------------------------------------------------------------------------------------
# vanilla: AwsLambdaInstrumentor + BotocoreInstrumentor, SNS -> SQS raw delivery, two traces in one batch


def test_vanilla_batch_span_links_each_record_to_its_producer(world: World) -> None:
    # GIVEN the vanilla consumer's one batch span (what 0.66b1 makes of an SQS event)
    batch = _batch_span(world)
    # THEN it links to each order's publish span, the record's message id on the link, not on the span
    assert batch.name == f"process {VANILLA_CONSUMER}"
    assert batch.attributes["messaging.batch.message_count"] == 2
    assert "messaging.message.id" not in batch.attributes
    expected = {
        (world.orders[o].publish.trace_id, world.orders[o].publish.span_id, world.orders[o].message_id)
        for o in VANILLA_ORDERS
    }
    assert {
        (ln.trace_id, ln.span_id, ln.attributes["messaging.message.id"]) for ln in batch.links
    } == expected
    (invocation,) = world.runs[VANILLA_CONSUMER].spans_of("SERVER")
    assert batch.parent_span_id == invocation.span_id and batch.trace_id == invocation.trace_id
    assert invocation.parent_span_id is None  # an SQS invocation starts a trace of its own


def test_vanilla_each_orders_flow_contains_the_batch_consumer_span(world: World) -> None:
    # GIVEN two orders of two traces, processed in one batch by one vanilla CONSUMER span
    batch = _batch_span(world)
    for order_id in VANILLA_ORDERS:
        # WHEN the order's flow is found by its producer's span in /api/flows
        flow_id = world.flow_of(order_id)
        # THEN it holds the batch's consumer span, and its summary counts the spans it lists
        assert batch.ref in world.refs_in(flow_id), f"{order_id}: batch span not in flow {flow_id}"
        detail = world.flows[flow_id]
        assert detail["summary"]["span_count"] == len(detail["spans"]), order_id


def test_vanilla_orders_of_one_batch_stay_in_distinct_flows(world: World) -> None:
    flows = {world.flow_of(order_id) for order_id in VANILLA_ORDERS}
    assert len(flows) == 2
    for order_id in VANILLA_ORDERS:
        others = {world.orders[o].publish.ref for o in VANILLA_ORDERS if o != order_id}
        assert not others & world.refs_in(world.flow_of(order_id)), f"{order_id}'s flow took another order"


def test_vanilla_message_id_finds_each_orders_flow(world: World) -> None:
    for order_id in VANILLA_ORDERS:
        # WHEN the flows are searched by the SQS message id (only on the batch span's link)
        message_id = world.orders[order_id].message_id
        answer = world.http.get("/api/flows", params={"message_id": message_id})
        # THEN the order's flow, and only it, is found
        assert answer.status_code == 200
        assert [f["flow_id"] for f in answer.json()["flows"]] == [world.flow_of(order_id)], order_id


def test_vanilla_one_hop_per_delivery(world: World) -> None:
    batch = _batch_span(world)
    for order_id in VANILLA_ORDERS:
        publish = world.orders[order_id].publish
        hops = [
            h
            for h in world.flows[world.flow_of(order_id)]["hops"]
            if (h["producer"]["trace_id"], h["producer"]["span_id"]) == publish.ref
        ]
        assert [(h["consumer"]["trace_id"], h["consumer"]["span_id"]) for h in hops] == [batch.ref], order_id
        assert hops[0]["consumer_service"] == VANILLA_CONSUMER


def test_vanilla_batch_is_no_flow_of_its_own_in_the_list(world: World) -> None:
    # GIVEN the consumer's trace: the invocation span and the batch span beneath it
    batch_trace = {s.ref for s in world.runs[VANILLA_CONSUMER].spans}
    # THEN no listed flow is made only of it (it belongs to the orders' flows instead)
    batch_only = [flow_id for flow_id in world.flows if world.refs_in(flow_id) <= batch_trace]
    assert batch_only == [], f"flows made only of the batch: {batch_only}"


def test_vanilla_red_counts_the_consumer_invocation_once(world: World) -> None:
    # GIVEN one invocation of the vanilla consumer (a SERVER invocation span and a CONSUMER batch span)
    # THEN its service's RED counts one, and the producer's its two invocations
    assert _red_span_count(world, VANILLA_CONSUMER) == 1
    assert _red_span_count(world, VANILLA_API) == 2


def test_vanilla_topic_is_one_node_named_as_hopscopes(world: World) -> None:
    # GIVEN botocore's publish span: messaging.system aws.sns, the topic's ARN as its destination
    (publish, *_) = world.runs[VANILLA_API].spans_of("PRODUCER")
    assert publish.attributes["messaging.destination.name"].startswith("arn:aws:sns:")
    edges = world.http.get("/api/graph").json()["edges"]

    def topic_node(service: str) -> str:
        (edge,) = [e for e in edges if e["kind"] == "publish" and e["source"] == f"service:{service}"]
        return str(edge["target"])

    # THEN the graph names the topic by its name, in the form hopscope's own producer gets
    hopscope_kind = topic_node(HOPSCOPE_API).removesuffix(":hop-orders")
    assert topic_node(VANILLA_API) == f"{hopscope_kind}:vanilla-orders"
    subscriptions = {(e["source"], e["target"]) for e in edges if e["kind"] == "subscription"}
    assert (f"{hopscope_kind}:vanilla-orders", f"aws_sqs:{VANILLA_CONSUMER}") in subscriptions


# ---------------------------------------------------------------------------------------------------------
# mixed: a vanilla producer, SNS envelope delivery, a hopscope consumer


def test_sns_envelope_from_a_vanilla_producer_to_a_hopscope_consumer_is_stitched(world: World) -> None:
    records = world.runs[MIXED_CONSUMER].spans_of("CONSUMER", f"process {MIXED_CONSUMER}")
    by_message = {
        s.attributes["messaging.message.id"]: s for s in records if "faas.trigger" not in s.attributes
    }
    flows = set()
    for order_id in MIXED_ORDERS:
        order = world.orders[order_id]
        # THEN the record's consumer span is in the flow of its producer's span
        flow_id = world.flow_of(order_id)
        flows.add(flow_id)
        assert by_message[order.message_id].ref in world.refs_in(flow_id), order_id
        assert {MIXED_API, MIXED_CONSUMER} <= set(world.flows[flow_id]["summary"]["services"])
    assert len(flows) == 3


# ---------------------------------------------------------------------------------------------------------
# hopscope: instrument_boto3() on the producer, @traced_handler + process_batch on the consumer


def test_hopscope_no_flow_is_only_a_batch_invocation_span(world: World) -> None:
    # GIVEN the invocation spans of the hopscope consumers' multi-record batches
    batches = _hopscope_batch_invocations(world)
    assert len(batches) == 2  # hop-shipping's first invocation, mixed-billing's
    batch_refs = {s.ref for s in batches}
    # THEN no flow of the whole list is made only of such a span
    batch_only = {
        flow_id: world.flows[flow_id]["summary"]["entry_operation"]
        for flow_id in world.flows
        if world.refs_in(flow_id) <= batch_refs
    }
    assert batch_only == {}, f"one-span batch flows listed: {batch_only}"


def test_hopscope_batch_invocation_span_is_in_each_orders_flow(world: World) -> None:
    (invocation,) = [s for s in _hopscope_batch_invocations(world) if s.service == HOPSCOPE_CONSUMER]
    for order_id in ("h-1", "h-2"):
        flow_id = world.flow_of(order_id)
        assert invocation.ref in world.refs_in(flow_id), f"{order_id}: batch span not in flow {flow_id}"
        detail = world.flows[flow_id]
        assert detail["summary"]["span_count"] == len(detail["spans"]), order_id
    assert invocation.ref not in world.refs_in(world.flow_of("h-3"))


def test_hopscope_orders_keep_distinct_flows_with_their_record_spans(world: World) -> None:
    records = {
        s.attributes["messaging.message.id"]: s
        for s in world.runs[HOPSCOPE_CONSUMER].spans
        if s.kind == "CONSUMER" and "faas.trigger" not in s.attributes
    }
    flows = {world.flow_of(order_id) for order_id in HOPSCOPE_ORDERS}
    assert len(flows) == 3
    for order_id in HOPSCOPE_ORDERS:
        assert records[world.orders[order_id].message_id].ref in world.refs_in(world.flow_of(order_id))


def test_hopscope_one_hop_per_delivery(world: World) -> None:
    # GIVEN hopscope consumers that took two orders in one batch and a third alone (raw delivery for the
    # h- orders, SNS envelopes for the m- orders): one delivery each
    for order_id in HOPSCOPE_ORDERS + MIXED_ORDERS:
        publish = world.orders[order_id].publish
        hops = [
            (h["consumer"]["trace_id"], h["consumer"]["span_id"])
            for h in world.flows[world.flow_of(order_id)]["hops"]
            if (h["producer"]["trace_id"], h["producer"]["span_id"]) == publish.ref
        ]
        # THEN its flow lists one hop from its publish span
        assert len(hops) == 1, f"{order_id}: {len(hops)} hops for one delivery: {hops}"


def test_hopscope_red_counts_each_invocation_once(world: World) -> None:
    # GIVEN each hopscope consumer invoked twice (3 records), the producer three times
    # THEN a service's RED counts invocations, not its invocation spans plus its record spans
    assert _red_span_count(world, HOPSCOPE_CONSUMER) == 2
    assert _red_span_count(world, MIXED_CONSUMER) == 2
    assert _red_span_count(world, HOPSCOPE_API) == 3


def test_hopscope_hop_red_counts_each_message_once(world: World) -> None:
    # THEN a hop's RED counts messages: three published, three consumed, by each hopscope consumer
    edges = world.http.get("/api/graph").json()["edges"]
    for producer, consumer in ((HOPSCOPE_API, HOPSCOPE_CONSUMER), (MIXED_API, MIXED_CONSUMER)):
        consumed = [e for e in edges if e["kind"] == "consume" and e["target"] == f"service:{consumer}"]
        published = [e for e in edges if e["kind"] == "publish" and e["source"] == f"service:{producer}"]
        assert [e["red"]["span_count"] for e in consumed] == [3], consumed
        assert [e["red"]["span_count"] for e in published] == [3], published


def test_hopscope_correlation_id_finds_the_orders_flow_not_the_batch(world: World) -> None:
    # GIVEN process_batch's correlation_id_path: each record span carries its order id
    for order_id in HOPSCOPE_ORDERS + MIXED_ORDERS:
        # THEN searching by it finds the order's flow alone (not a batch's flow beside it)
        answer = world.http.get("/api/flows", params={"correlation_id": order_id}).json()["flows"]
        assert [f["flow_id"] for f in answer] == [world.flow_of(order_id)], order_id
