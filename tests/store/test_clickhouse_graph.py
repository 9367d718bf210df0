"""The ClickHouse service graph, computed at query time, equals the one SQLite counts while stitching."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.stitch.graph_rules import BUCKET_NS, EXTERNAL_GRACE_NS
from hopscope.collector.store.clickhouse import graph as clickhouse_graph
from hopscope.collector.store.clickhouse import schema as clickhouse_schema
from hopscope.collector.store.clickhouse import spans as clickhouse_rows
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_clickhouse_client, parse_store_url
from tests.helpers.otlp_samples import attrs

K = Span.SpanKind
MS = 10**6
SECOND = 10**9
# Ten minutes ago, on a whole minute: every span ended long before the external grace period.
BASE = (time.time_ns() - 10 * 60 * SECOND) // BUCKET_NS * BUCKET_NS
FLOWS = 8
ACCOUNT = "123456789012"


@dataclass
class Spans:
    """OTLP requests of one span each, and which spans must reach SQLite after which.

    Where SQLite's graph depends on arrival order, the dataset fixes the order that gives the answer
    clickhouse_graph documents: a consumer span beneath a linked batch arrives after the batch (or SQLite,
    which cannot tell yet, counts its hop), a consumer with several candidate producers after the first,
    a consumer joined by message id after its producers.
    """

    rng: random.Random
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    index: dict[bytes, int] = field(default_factory=dict)  # span id -> request
    arrives_after: list[tuple[bytes, bytes]] = field(default_factory=list)  # (span id, span id)

    def trace(self) -> bytes:
        return self.rng.randbytes(16)

    def span(
        self,
        kind: int,
        service: str,
        trace_id: bytes,
        start: int,
        duration: int,
        *,
        parent: bytes = b"",
        links: Sequence[Link] = (),
        attributes: dict[str, object] | None = None,
        error: bool = False,
    ) -> bytes:
        span_id = self.rng.randbytes(8)
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(attrs({"service.name": service}))
        span = resource_spans.scope_spans.add().spans.add(
            trace_id=trace_id, span_id=span_id, parent_span_id=parent, kind=kind,  # type: ignore[arg-type]
            name=f"{service} op", start_time_unix_nano=start, end_time_unix_nano=start + duration,
        )  # fmt: skip
        span.attributes.extend(attrs(attributes or {}))
        for link_trace, link_span, *link_attributes in links:
            added = span.links.add(trace_id=link_trace, span_id=link_span)
            added.attributes.extend(attrs(link_attributes[0] if link_attributes else {}))
        if error:
            span.status.code = Status.StatusCode.STATUS_CODE_ERROR
        self.index[span_id] = len(self.requests)
        self.requests.append(request)
        return span_id

    def client(self, *args: Any, **kwargs: Any) -> bytes:
        return self.span(K.SPAN_KIND_CLIENT, *args, **kwargs)

    def server(self, *args: Any, **kwargs: Any) -> bytes:
        return self.span(K.SPAN_KIND_SERVER, *args, **kwargs)

    def producer(self, *args: Any, **kwargs: Any) -> bytes:
        return self.span(K.SPAN_KIND_PRODUCER, *args, **kwargs)

    def consumer(self, *args: Any, **kwargs: Any) -> bytes:
        return self.span(K.SPAN_KIND_CONSUMER, *args, **kwargs)


# (trace id, span id) or (trace id, span id, attributes)
Link = tuple[bytes, bytes] | tuple[bytes, bytes, dict[str, object]]


def sqs(queue: str, **more: object) -> dict[str, object]:
    return {"messaging.system": "aws_sqs", "messaging.destination.name": queue, **more}


def dataset() -> Spans:
    """Flows 37 s apart (so their spans fall into several minutes), each with every edge kind and rule."""
    s = Spans(random.Random(11))
    for i in range(FLOWS):
        t = BASE + i * 37 * SECOND
        trace, billing_trace, notify_trace, batch_trace = s.trace(), s.trace(), s.trace(), s.trace()
        # web calls orders-api over HTTP (a sync edge; the server fails now and then)
        call = s.client("web", trace, t, 90 * MS, attributes={"server.address": "orders-api"})
        handler = s.server("orders-api", trace, t + MS, (20 + i) * MS, parent=call, error=i % 3 == 0)
        # orders-api publishes to SNS; billing's queue consumer links to the publish, shipping's is its child
        topic = {"messaging.system": "aws_sns", "messaging.destination.name": "order-events"}
        publish = s.producer("orders-api", trace, t + 2 * MS, 4 * MS, parent=handler,
                             attributes={**topic, "messaging.message.id": f"sns-{i}"})  # fmt: skip
        queue = sqs("billing", **{"hopscope.receive_count": 1 + i % 4})
        consume = s.consumer("billing", billing_trace, t + (10 + 7 * i) * MS, 30 * MS,
                             links=[(trace, publish)], attributes=queue, error=i == 5)  # fmt: skip
        s.consumer(
            "shipping", trace, t + (50 + i * 1000) * MS, 12 * MS, parent=publish, attributes=sqs("shipping")
        )
        # billing calls DynamoDB and S3 (AWS SDK), payments (instrumented) and a carrier's API (not)
        dynamodb = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "db.system": "dynamodb"}
        s.client("billing", billing_trace, t + 11 * MS, (3 + i) * MS, parent=consume, attributes=dynamodb)
        s3 = {"rpc.system": "aws-api", "rpc.service": "S3", "server.address": "s3.amazonaws.com"}
        s.client("billing", billing_trace, t + 12 * MS, 8 * MS, parent=consume, attributes=s3, error=i == 2)
        pay = s.client("billing", billing_trace, t + 13 * MS, 15 * MS, parent=consume,
                       attributes={"server.address": "payments"})  # fmt: skip
        s.server("payments", billing_trace, t + 14 * MS, (2 + i) * MS, parent=pay)
        s.client("billing", billing_trace, t + 30 * MS, (200 + 100 * i) * MS, parent=consume,
                 attributes={"server.address": "api.carrier.example"}, error=i == 4)  # fmt: skip
        # billing sends to the notify queue without propagating context: joined by message id alone
        message = sqs("notify", **{"messaging.message.id": f"n-{i}"})
        notify = s.producer("billing", billing_trace, t + 35 * MS, 2 * MS, parent=consume, attributes=message)
        s.consumer("notifier", notify_trace, t + (40 + 3000 * i) * MS, 5 * MS,
                   attributes={**message, "hopscope.receive_count": 2})  # fmt: skip
        # billing sends to the invoices queue through vanilla botocore 0.66b1: a CLIENT span with the older
        # attribute names and no context in the message; accounting's consumer reports the message id, and
        # its ReceiveMessage call (the first message's id on it too) is a call on the queue, not a producer
        vanilla = {"rpc.system": "aws-api", "rpc.service": "SQS", "messaging.system": "aws.sqs",
                   "aws.queue_url": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/invoices",
                   "messaging.destination": "invoices", "messaging.message.id": f"v-{i}"}  # fmt: skip
        s.client("billing", billing_trace, t + 36 * MS, 3 * MS, parent=consume,
                 attributes={**vanilla, "rpc.method": "SendMessage"})  # fmt: skip
        list_queues = {"rpc.system": "aws-api", "rpc.service": "SQS", "rpc.method": "ListQueues"}
        s.client("billing", billing_trace, t + 37 * MS, MS, parent=consume, attributes=list_queues)
        accounting_trace = s.trace()
        s.client("accounting", accounting_trace, t + (45 + i) * MS, MS,
                 attributes={**vanilla, "rpc.method": "ReceiveMessage"})  # fmt: skip
        s.consumer("accounting", accounting_trace, t + (47 + i) * MS, 2 * MS,
                   attributes=sqs("invoices", **{"messaging.message.id": f"v-{i}"}))  # fmt: skip
        # ... and one more consumer of it, in the producer's own trace: not joined by message id
        audit = s.consumer("audit", billing_trace, t + 5 * SECOND, 3 * MS, attributes=message)
        s.arrives_after.append((audit, notify))
        # orders-api sends three messages to the reports queue; a batch consumer links to all three ...
        sent: list[Link] = [
            (trace, s.producer("orders-api", trace, t + (5 + m) * MS, (1 + 400 * m) * MS, parent=handler,
                               attributes=sqs("reports")))
            for m in range(3)
        ]  # fmt: skip
        if (
            i % 2 == 0
        ):  # ... counting one hop per link (the links may name the queue), the spans beneath it none
            links = [
                sent[0],
                (*sent[1][:2], {"hopscope.receive_count": 3}),
                # the link names the queue by its ARN and the deprecated system spelling
                (
                    *sent[2][:2],
                    {
                        "messaging.system": "aws.sqs",
                        "messaging.destination.name": f"arn:aws:sqs:us-east-1:{ACCOUNT}:reports-archive",
                    },
                ),
            ]
            batch = s.consumer("reports", batch_trace, t + 2 * SECOND, 60 * MS, links=links, error=i == 4,
                               attributes=sqs("reports", **{"messaging.batch.message_count": 3}))  # fmt: skip
            for m in range(3):
                queue = sqs("reports-records" if i == 0 else "reports")  # a queue no span that counts names
                record = s.consumer("reports", batch_trace, t + 2 * SECOND + m * MS, 10 * MS, parent=batch,
                                    links=[sent[m]], attributes=queue)  # fmt: skip
                s.arrives_after.append((record, batch))
        else:  # ... or hopscope's process_batch: each record's span of its own counts the hop
            batch_attributes = {"messaging.batch.message_count": 3, "hopscope.batch.record_spans": True}
            s.consumer("reports", batch_trace, t + 3 * SECOND, 60 * MS, links=sent,
                       attributes=sqs("reports", **batch_attributes))  # fmt: skip
            for m in range(3):
                s.consumer("reports", s.trace(), t + 3 * SECOND + m * MS, 9 * MS, links=[sent[m]],
                           attributes=sqs("reports", **{"hopscope.receive_count": m}))  # fmt: skip
        # audit's consumer span names no destination: its link's producer (the first candidate) gives it,
        # not its parent
        audit = s.consumer("audit", trace, t + 4 * SECOND, 3 * MS, parent=publish, links=[sent[0]])
        s.arrives_after.append((audit, sent[0][1]))
    # a consumer whose producer was never traced, one whose link leads nowhere, one with no destination and
    # one with no messaging system
    orphans = s.trace()
    s.consumer("shipping", orphans, BASE + 5 * SECOND, 7 * MS, attributes=sqs("shipping"))
    s.consumer(
        "shipping",
        orphans,
        BASE + 6 * SECOND,
        7 * MS,
        links=[(s.trace(), b"8" * 8)],
        attributes=sqs("shipping"),
    )
    s.consumer("shipping", orphans, BASE + 7 * SECOND, 7 * MS, links=[(s.trace(), b"8" * 8)])
    s.consumer(
        "legacy", orphans, BASE + 9 * SECOND, 7 * MS, attributes={"messaging.destination.name": "jobs"}
    )
    # a queue whose messages were all sent in the first minute and are consumed minutes later, by consumer
    # spans that name no destination, and one whose are consumed at once
    for queue, later in (("backlog", 8 * BUCKET_NS), ("drained", 10 * SECOND)):
        sent_early = s.producer("orders-api", orphans, BASE + SECOND, MS, attributes=sqs(queue))
        s.consumer("reports", s.trace(), BASE + SECOND + later, 4 * MS, links=[(orphans, sent_early)])
    # a message sent twice (from two traces, the second much later): its consumer's producer is the one in
    # the smaller trace id (compared as bytes: these two compare the other way round as little-endian numbers)
    resend = sqs("resend", **{"messaging.message.id": "r-1"})
    first = s.producer("billing", b"\1" + b"\xff" * 15, BASE + 2 * SECOND, MS, attributes=resend)
    second = s.producer("billing", b"\2" + b"\0" * 14 + b"\1", BASE + 2 * SECOND, 400 * MS, attributes=resend)
    resent = s.consumer("notifier", s.trace(), BASE + 3 * SECOND, MS, attributes=resend)
    s.arrives_after.extend([(resent, first), (resent, second)])
    # a consumer whose clock is behind its producer's: it starts before the producer ends, waiting 0
    skewed = s.producer("orders-api", orphans, BASE + 4 * SECOND, 10 * MS, attributes=sqs("skewed"))
    s.consumer("shipping", s.trace(), BASE + 4 * SECOND + 5 * MS, MS, links=[(orphans, skewed)])
    # vanilla botocore's SNS publish: the older system spelling's node, named by the topic's ARN
    topic_arn = f"arn:aws:sns:us-east-1:{ACCOUNT}:order-events"
    s.producer("orders-api", orphans, BASE + 5 * SECOND, 2 * MS,
               attributes={"messaging.system": "aws.sns", "aws.sns.topic.arn": topic_arn,
                           "messaging.destination.name": topic_arn})  # fmt: skip
    # a call within one service is no edge
    call = s.client("web", orphans, BASE + 8 * SECOND, 9 * MS, attributes={"server.address": "web"})
    s.server("web", orphans, BASE + 8 * SECOND + MS, 5 * MS, parent=call)
    return s


def arrival_order(spans: Spans, seed: int) -> list[ExportTraceServiceRequest]:
    """A random order, but for the spans that must arrive after others."""
    order = list(range(len(spans.requests)))
    random.Random(seed).shuffle(order)
    moved = True
    while moved:
        moved = False
        for later, earlier in spans.arrives_after:
            first, second = spans.index[earlier], spans.index[later]
            if order.index(second) < order.index(first):
                order.remove(second)
                order.insert(order.index(first) + 1, second)
                moved = True
    return [spans.requests[i] for i in order]


def write_sqlite(path: Path, requests: list[ExportTraceServiceRequest]) -> SQLiteStore:
    store = SQLiteStore(path)
    for request in requests:  # one span per stitch: the worst order case
        store.write([request])
    # the HTTP calls with no server beneath them have waited out the grace period; the next stitch counts them
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE pending_hops SET waiting_since_unix_nano = waiting_since_unix_nano - ?",
        (2 * EXTERNAL_GRACE_NS,),
    )
    db.commit()
    db.close()
    tick = ExportTraceServiceRequest()
    tick.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\1" * 16, span_id=b"\1" * 8, name="tick")
    store.write([tick])
    return store


def write_clickhouse(chdb_url: str, requests: list[ExportTraceServiceRequest]) -> ClickHouseClient:
    client = open_clickhouse_client(parse_store_url(chdb_url))
    clickhouse_schema.create(client)
    rows = [row for request in requests for row in clickhouse_rows.span_rows(request)]
    # rows of an older exporter spell kinds and status codes as the proto names
    kind, status = (
        clickhouse_rows.SPAN_COLUMNS.index("SpanKind"),
        clickhouse_rows.SPAN_COLUMNS.index("StatusCode"),
    )
    kinds = clickhouse_rows.KIND_BY_NAME.items()
    old = {**{new: Span.SpanKind.Name(i) for new, i in kinds if "_" not in new},
           "Error": "STATUS_CODE_ERROR"}  # fmt: skip
    for i in range(0, len(rows), 2):
        row = list(rows[i])
        row[kind], row[status] = old.get(str(row[kind]), row[kind]), old.get(str(row[status]), row[status])
        rows[i] = tuple(row)
    for start in range(0, len(rows), 50):  # several inserts: several parts
        table = f"{client.database}.otel_traces"
        client.insert(table, clickhouse_rows.SPAN_COLUMNS, rows[start : start + 50],
                      clickhouse_rows.DATETIME_COLUMNS)  # fmt: skip
    return client


Rows = list[tuple[str, str, str, HopRollup]]


def canonical(rows: Rows) -> list[tuple[Any, ...]]:
    return sorted(
        (source, target, kind, hop.hop_count, hop.error_count, sorted(hop.durations.items()),
         sorted(hop.waits.items()), hop.max_receive_count)
        for source, target, kind, hop in rows
    )  # fmt: skip


def totals(rows: Rows) -> dict[tuple[str, str, str], HopRollup]:
    merged: dict[tuple[str, str, str], HopRollup] = {}
    for source, target, kind, hop in rows:
        total = merged.setdefault((source, target, kind), HopRollup())
        total.hop_count += hop.hop_count
        total.error_count += hop.error_count
        total.durations.update(hop.durations)
        total.waits.update(hop.waits)
        total.max_receive_count = max(total.max_receive_count, hop.max_receive_count)
    return merged


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory, chdb_path: Path
) -> Iterator[tuple[SQLiteStore, ClickHouseClient]]:
    spans = dataset()
    sqlite = write_sqlite(tmp_path_factory.mktemp("graph") / "x.db", arrival_order(spans, seed=5))
    client = write_clickhouse(
        f"chdb://{chdb_path}?database=test_clickhouse_graph", arrival_order(spans, seed=6)
    )
    yield sqlite, client
    sqlite.close()


@pytest.mark.parametrize(
    ("since", "until", "kinds"),
    [
        pytest.param(BASE - BUCKET_NS, BASE + 10 * BUCKET_NS, None, id="full range"),
        pytest.param(BASE + 90 * SECOND, BASE + 4 * BUCKET_NS + 1, None, id="sub-range, minutes cut"),
        pytest.param(BASE - BUCKET_NS, BASE + 10 * BUCKET_NS, ("consume",), id="consume only"),
        pytest.param(
            BASE + 2 * BUCKET_NS, BASE + 5 * BUCKET_NS, ("subscription", "external"), id="two kinds"
        ),
    ],
)
def test_the_clickhouse_graph_equals_the_sqlite_one(
    stores: tuple[SQLiteStore, ClickHouseClient], since: int, until: int, kinds: tuple[str, ...] | None
) -> None:
    # GIVEN the same spans, stitched by SQLite in one random order and inserted into ClickHouse in another
    sqlite, client = stores
    # WHEN both are read over the range
    expected = sqlite.hop_rollups(since, until, kinds)
    actual = clickhouse_graph.read_hop_rollups(client, since, until, kinds)
    # THEN every rollup is the same, histograms included
    assert expected
    assert canonical(actual) == canonical(expected)


def test_the_graph_has_every_edge_kind(stores: tuple[SQLiteStore, ClickHouseClient]) -> None:
    # GIVEN the dataset in ClickHouse; WHEN the whole graph is read
    _, client = stores
    edges = totals(clickhouse_graph.read_hop_rollups(client, BASE - BUCKET_NS, BASE + 10 * BUCKET_NS))
    # THEN each edge has the hops the dataset made
    counts = {edge: hop.hop_count for edge, hop in edges.items()}
    assert counts == {
        ("service:web", "service:orders-api", "sync"): FLOWS,
        ("service:billing", "service:payments", "sync"): FLOWS,
        ("service:orders-api", "aws.sns:order-events", "publish"): FLOWS + 1,
        ("service:orders-api", "aws_sqs:reports", "publish"): 3 * FLOWS,
        ("service:billing", "aws_sqs:invoices", "publish"): FLOWS,  # vanilla SendMessage
        ("aws_sqs:invoices", "service:accounting", "consume"): FLOWS,
        ("service:accounting", "aws_sqs:invoices", "external"): FLOWS,  # ReceiveMessage
        ("service:billing", "external:SQS", "external"): FLOWS,  # ListQueues names no queue
        ("service:billing", "aws_sqs:notify", "publish"): FLOWS,
        ("aws_sqs:billing", "service:billing", "consume"): FLOWS,
        ("aws_sqs:shipping", "service:shipping", "consume"): FLOWS + 2,
        ("aws_sqs:notify", "service:notifier", "consume"): FLOWS,
        ("aws_sqs:reports", "service:reports", "consume"): 2 * (FLOWS // 2) + 3 * (FLOWS // 2),
        ("aws_sqs:reports", "service:audit", "consume"): FLOWS,
        ("aws_sqs:notify", "service:audit", "consume"): FLOWS,
        ("messaging:jobs", "service:legacy", "consume"): 1,
        ("service:billing", "aws_sqs:resend", "publish"): 2,
        ("aws_sqs:resend", "service:notifier", "consume"): 1,
        ("service:orders-api", "aws_sqs:skewed", "publish"): 1,
        ("aws_sqs:skewed", "service:shipping", "consume"): 1,
        ("service:orders-api", "aws_sqs:backlog", "publish"): 1,
        ("aws_sqs:backlog", "service:reports", "consume"): 1,
        ("service:orders-api", "aws_sqs:drained", "publish"): 1,
        ("aws_sqs:drained", "service:reports", "consume"): 1,
        ("aws_sqs:reports-archive", "service:reports", "consume"): FLOWS // 2,
        ("aws.sns:order-events", "aws_sqs:billing", "subscription"): FLOWS,
        ("aws.sns:order-events", "aws_sqs:shipping", "subscription"): FLOWS,
        ("aws_sqs:reports", "aws_sqs:reports-archive", "subscription"): FLOWS // 2,
        ("service:billing", "external:DynamoDB", "external"): FLOWS,
        ("service:billing", "external:S3", "external"): FLOWS,
        ("service:billing", "external:api.carrier.example", "external"): FLOWS,
    }
    billing = edges[("aws_sqs:billing", "service:billing", "consume")]
    assert (billing.error_count, billing.max_receive_count, sum(billing.waits.values())) == (1, 4, FLOWS)
    # the publish ends 6 ms into the flow, billing's consumer starts 10 + 7i ms into it
    assert billing.waits == latency_histogram.merge(
        [{latency_histogram.bin_of((4 + 7 * i) * MS): 1} for i in range(FLOWS)]
    )
    notify = edges[("aws_sqs:notify", "service:notifier", "consume")]
    assert sum(notify.waits.values()) == FLOWS and notify.max_receive_count == 2
    assert not edges[("aws_sqs:notify", "service:audit", "consume")].waits
    assert edges[("aws_sqs:reports", "service:audit", "consume")].waits == {
        latency_histogram.bin_of(4 * SECOND - 6 * MS): FLOWS
    }
    assert edges[("service:billing", "external:S3", "external")].error_count == 1
    # accounting's consumer starts 47 + i ms into the flow, the vanilla SendMessage ends 39 ms into it
    assert edges[("aws_sqs:invoices", "service:accounting", "consume")].waits == latency_histogram.merge(
        [{latency_histogram.bin_of((8 + i) * MS): 1} for i in range(FLOWS)]
    )
    assert edges[("aws_sqs:skewed", "service:shipping", "consume")].waits == {0: 1}
    assert edges[("aws_sqs:resend", "service:notifier", "consume")].waits == {
        latency_histogram.bin_of(997 * MS): 1
    }


def test_an_http_call_within_the_grace_period_is_not_external_yet(chdb_url: str) -> None:
    # GIVEN an HTTP call with no server beneath it that ended just now
    spans = Spans(random.Random(1))
    now = time.time_ns()
    spans.client(
        "billing", spans.trace(), now - 100 * MS, 50 * MS, attributes={"server.address": "x.example"}
    )
    client = write_clickhouse(chdb_url, spans.requests)
    # WHEN the graph is read; THEN it has no edge yet
    assert clickhouse_graph.read_hop_rollups(client, now - BUCKET_NS, now + BUCKET_NS) == []


def test_destinations_seen_equals_sqlite(stores: tuple[SQLiteStore, ClickHouseClient]) -> None:
    # GIVEN the dataset in both stores
    sqlite, client = stores
    # WHEN the queues seen since an instant are asked for, before all spans, within them, after them
    seen = {
        since: clickhouse_graph.destinations_seen(client, "aws_sqs:", since)
        for since in (BASE - BUCKET_NS, BASE + 30 * SECOND, BASE + 3 * BUCKET_NS + 1, BASE + 60 * BUCKET_NS)
    }
    # THEN they are SQLite's, including a queue whose only later spans are consumers naming no destination
    assert seen == {since: sqlite.queue_destinations_seen(since) for since in seen}
    every = ["backlog", "billing", "drained", "invoices", "notify", "reports", "reports-archive", "resend",
             "shipping"]  # fmt: skip
    assert seen[BASE - BUCKET_NS] == [*every, "skewed"]
    assert "backlog" in seen[BASE + 3 * BUCKET_NS + 1] and "drained" not in seen[BASE + 3 * BUCKET_NS + 1]
    assert seen[BASE + 60 * BUCKET_NS] == []


def test_the_sql_histogram_bin_equals_bin_of_at_every_bin_edge(
    stores: tuple[SQLiteStore, ClickHouseClient],
) -> None:
    # GIVEN the values around every bin's edge (log2 alone is off by one at some above 2**53) and the extremes
    _, client = stores
    edges = clickhouse_graph.bin_floors()
    values = sorted(
        {max(0, min(2**64 - 1, edge + delta)) for edge in [0, 1000, *edges] for delta in range(-2, 3)}
    )
    # WHEN ClickHouse bins them
    rows = client.query(
        f"{clickhouse_graph.bin_floors_sql()} "
        f"SELECT d, {clickhouse_graph.bin_sql('d')} FROM (SELECT arrayJoin({{d:Array(UInt64)}}) AS d)",
        {"d": values},
    )
    # THEN every bin is bin_of's
    assert len(rows) == len(values) > 2000
    assert [(int(d), int(b)) for d, b in rows] == [(d, latency_histogram.bin_of(d)) for d in values]
