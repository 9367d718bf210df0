"""Rows that only OpenTelemetry Collectors wrote (plain SQL in the clickhouseexporter's layout) give flows,
the service graph and latency through hopscope's query API, on the real ClickHouse engine (chdb).

The rows are inserted with SQL text, not through hopscope's code, the way the exporter's insert statement
fills them: ids in hex, kinds and status codes in both spellings exporters have used, attributes as text.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.clickhouse import schema as clickhouse_schema
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.url import open_store
from tests.helpers.exporter_rows import COLUMNS
from tests.helpers.exporter_rows import otel_row as _row
from tests.helpers.servers import CollectorProcess, serve_in_thread

TRACE_A = "0af7651916cd43dd8448eb211c80319c"  # orders-api: POST /orders, a sync call, the publish
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"  # billing: consumes the message, calls DynamoDB
TRACE_C = "5b8efff798038103d269b633813fc60c"  # an unrelated health check


ROWS = [
    _row(0, TRACE_A, "a000000000000001", "", "POST /orders", "Server", "orders-api",
         {"http.request.method": "POST", "http.response.status_code": "201",
          "hopscope.correlation_id": "o-1"},
         120),
    _row(10, TRACE_A, "a000000000000002", "a000000000000001", "GET /stock", "Client", "orders-api",
         {"http.request.method": "GET", "server.address": "inventory.internal"}, 30),
    _row(12, TRACE_A, "a000000000000003", "a000000000000002", "GET /stock", "SPAN_KIND_SERVER", "inventory",
         {"http.request.method": "GET", "hopscope.correlation_id": "o-1"}, 25, "STATUS_CODE_ERROR"),
    _row(50, TRACE_A, "a000000000000004", "a000000000000001", "order-events publish", "Producer",
         "orders-api", {"messaging.system": "aws_sns", "messaging.destination.name": "order-events",
                        "messaging.message.id": "m-1", "hopscope.correlation_id": "o-1"}, 20),
    _row(900, TRACE_B, "b000000000000001", "", "orders process", "SPAN_KIND_CONSUMER", "billing",
         {"messaging.system": "aws_sqs", "messaging.destination.name": "orders",
          "messaging.message.id": "q-1", "hopscope.receive_count": "2", "hopscope.correlation_id": "o-1"},
         200, "Error", ((TRACE_A, "a000000000000004"),)),
    _row(950, TRACE_B, "b000000000000002", "b000000000000001", "DynamoDB.PutItem", "Client", "billing",
         {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "PutItem"}, 15),
    _row(3000, TRACE_C, "c000000000000001", "", "GET /health", "Server", "orders-api",
         {"http.request.method": "GET"}, 2),
]  # fmt: skip


@pytest.fixture
def api(chdb_url: str) -> Iterator[tuple[httpx.Client, ClickHouseStore]]:
    """hopscope's collector with no receiver over the database, serving the query API."""
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    with serve_in_thread(CollectorSettings(db=Path("unused.db"), receiver=False), store) as url:  # type: ignore[arg-type]
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, store
    store.close()


def _insert_as_a_collector(store: ClickHouseStore, rows: list[str]) -> None:
    store.client.command(
        f"INSERT INTO {store.client.database}.otel_traces ({COLUMNS}) VALUES {', '.join(rows)}"
    )


def _wait_for_flows(http: httpx.Client, correlation_id: str, traces: int) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        flows = http.get("/api/flows", params={"correlation_id": correlation_id}).json()["flows"]
        if flows and flows[0]["trace_count"] == traces:
            return dict(flows[0])
        assert time.monotonic() < deadline, f"no stitched flow for {correlation_id}: {flows}"
        time.sleep(0.2)


def test_rows_a_collector_wrote_give_flows_graph_and_latency(
    api: tuple[httpx.Client, ClickHouseStore],
) -> None:
    http, store = api
    # GIVEN spans that reach otel_traces only through SQL, in two inserts, while hopscope runs
    _insert_as_a_collector(store, ROWS[3:])
    _insert_as_a_collector(store, ROWS[:3])
    # THEN the producer's and the consumer's traces are stitched into one flow
    flow = _wait_for_flows(http, "o-1", traces=2)
    assert flow["span_count"] == 6
    assert flow["error_count"] == 2
    assert flow["max_receive_count"] == 2
    assert flow["entry_service"] == "orders-api" and flow["entry_operation"] == "POST /orders"
    assert flow["services"] == ["billing", "inventory", "orders-api"]
    assert flow["duration_ms"] == pytest.approx(1100)
    detail = http.get(f"/api/flows/{flow['flow_id']}").json()
    assert len(detail["spans"]) == 6
    consumer = next(s for s in detail["spans"] if s["name"] == "orders process")
    assert consumer["attributes"]["hopscope.receive_count"] == 2  # typed again
    # AND the unrelated trace is a flow of its own
    everything = http.get("/api/flows").json()["flows"]
    assert sorted(f["span_count"] for f in everything) == [1, 6]
    # AND the graph has every edge, with the queue wait between the publish's end and the consume
    graph = http.get("/api/graph").json()
    edges = {(e["source"], e["target"], e["kind"]): e for e in graph["edges"]}
    assert set(edges) == {
        ("service:orders-api", "service:inventory", "sync"),
        ("service:orders-api", "aws.sns:order-events", "publish"),
        ("aws_sqs:orders", "service:billing", "consume"),
        ("aws.sns:order-events", "aws_sqs:orders", "subscription"),
        ("service:billing", "external:DynamoDB", "external"),
    }
    consume = edges[("aws_sqs:orders", "service:billing", "consume")]
    assert consume["red"]["span_count"] == 1 and consume["red"]["error_count"] == 1
    assert consume["max_receive_count"] == 2
    assert consume["queue_wait_p50_ms"] == pytest.approx(830, rel=0.05)  # 900 - (50 + 20) ms
    # AND latency: the services' RED from their entry spans
    services = {s["service"]: s for s in http.get("/api/services").json()["services"]}
    assert services["orders-api"]["red"]["span_count"] == 2
    assert services["inventory"]["red"]["error_count"] == 1
    series = http.get("/api/latency", params={"service": "billing", "step": 60}).json()["points"]
    assert sum(p["red"]["span_count"] for p in series) == 1
    # AND the feed the stitcher read leaves nothing pending
    assert http.get("/healthz").json()["flows_pending"] is False


def test_rows_stored_before_hopscope_first_opened_the_database_are_stitched(chdb_url: str) -> None:
    # GIVEN a database that Collectors filled before hopscope ever opened it
    writer = open_store(chdb_url)
    assert isinstance(writer, ClickHouseStore)
    for table in ("hopscope_span_feed_mv", "hopscope_span_feed"):
        writer.client.command(f"DROP TABLE {writer.client.database}.{table}")
    _insert_as_a_collector(writer, ROWS)
    writer.close()
    # WHEN hopscope opens it
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    store.catch_up()
    # THEN the rows are stitched as if they had arrived through the feed
    trace_a = store.flow_of_trace(bytes.fromhex(TRACE_A))
    assert trace_a is not None and trace_a == store.flow_of_trace(bytes.fromhex(TRACE_B))
    assert store.flow_of_trace(bytes.fromhex(TRACE_C)) not in (None, trace_a)
    (summary,) = store.flow_summaries([trace_a])
    assert summary.span_count == 6 and summary.trace_count == 2


def test_hopscope_collector_no_receiver_stitches_what_a_collector_wrote(tmp_path: Path) -> None:
    # GIVEN a chdb database that another process (standing in for the Collectors) filled with plain SQL
    data = tmp_path / "clickhouse"
    writer = (
        "import sys, chdb.session as s\n"
        "session = s.Session(sys.argv[1])\n"
        "session.query('CREATE DATABASE IF NOT EXISTS otel')\n"
        f"session.query({clickhouse_schema.OTEL_STATEMENTS[0].format(db='otel')!r})\n"
        "session.query(sys.stdin.read())\n"
    )
    insert = f"INSERT INTO otel.otel_traces ({COLUMNS}) VALUES {', '.join(ROWS)}"
    subprocess.run(
        [sys.executable, "-c", writer, str(data)], input=insert, text=True, check=True, timeout=120
    )
    # WHEN hopscope's collector opens it with --no-receiver
    collector = CollectorProcess(
        db=tmp_path / "unused.db", args=["--no-receiver", "--store", f"chdb://{data}?database=otel"]
    ).start()
    try:
        assert any("--no-receiver" in line for line in collector.log)
        with collector.client() as http:
            # THEN it takes no spans, and serves the flows it stitched from the rows already there
            assert (
                http.post(
                    "/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"}
                ).status_code
                == 404
            )
            flow = _wait_for_flows(http, "o-1", traces=2)
            assert flow["span_count"] == 6
            kinds = {edge["kind"] for edge in http.get("/api/graph").json()["edges"]}
            assert kinds == {"sync", "publish", "consume", "subscription", "external"}
    finally:
        assert collector.stop() == 0
