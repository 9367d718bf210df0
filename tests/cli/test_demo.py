"""``hopscope demo`` end to end: the whole system for 40 s in a subprocess, then its database read through the
query API. GIVEN nothing but this repository, WHEN the demo runs and stops, THEN no process is left, and the
flows, dead letters, depth series and graph show every hop of the orders system.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from hopscope.collector.aws.clients import aws_client
from hopscope.collector.aws.dlq import peek
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.servers import HOPSCOPE, free_port, serve_in_thread

DURATION_SECONDS = 40


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the demo once; while it runs, peek at its dead-letter queue as a user would."""
    db = tmp_path_factory.mktemp("demo") / "hopscope.db"
    moto_port, collector_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HOPSCOPE_", "AWS_"))}
    proc = subprocess.Popen(
        [HOPSCOPE, "demo", "--duration", str(DURATION_SECONDS), "--no-dashboard", "--db", str(db),
         "--moto-port", str(moto_port), "--collector-port", str(collector_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    children: set[int] = set()
    dead_letters: list[Any] = []
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < DURATION_SECONDS - 5:
        try:
            children |= {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(1)
    if proc.poll() is None:  # near the end: the DLQ has filled; peek it with the demo's own store
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
        sqs = aws_client("sqs", f"http://127.0.0.1:{moto_port}", "us-east-1")
        store = SQLiteStore(db, read_only=True)
        dead_letters = peek(sqs, "shipping-dlq", limit=50, flows=store)
        store.close()
    output, _ = proc.communicate(timeout=120)
    yield {
        "db": db,
        "returncode": proc.returncode,
        "output": output,
        "children": children,
        "dead": dead_letters,
    }


@pytest.fixture(scope="module")
def api(demo: dict[str, Any]) -> Iterator[httpx.Client]:
    store = SQLiteStore(demo["db"])
    with (
        serve_in_thread(CollectorSettings(db=demo["db"]), store) as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client
    store.close()


def test_the_demo_exits_0_and_leaves_no_process(demo: dict[str, Any]) -> None:
    assert demo["returncode"] == 0, demo["output"][-3000:]
    assert len(demo["children"]) >= 7, "moto, the collector and five functions"
    assert [pid for pid in demo["children"] if psutil.pid_exists(pid)] == []


def test_flows_reach_every_function_with_one_correlation_id(api: httpx.Client) -> None:
    flows = api.get("/api/flows", params={"since": "0", "service": "notifier", "limit": 50}).json()["flows"]
    assert flows, "no flow reached the notifier"
    complete = [
        f for f in flows if {"orders-api", "billing", "shipping", "audit", "notifier"} <= set(f["services"])
    ]
    assert complete, [f["services"] for f in flows]
    for flow in complete:
        assert flow["entry_service"] == "orders-api" and flow["entry_operation"] == "POST /orders"
        assert len(flow["correlation_ids"]) == 1


def test_the_flow_list_holds_only_order_flows_and_shares_each_batch(api: httpx.Client) -> None:
    # every listed flow is an order's (no batch invocation span listed as a flow of its own)
    flows = api.get("/api/flows", params={"since": "0", "limit": 1000}).json()["flows"]
    assert flows
    assert {(f["entry_service"], f["entry_operation"]) for f in flows} == {("orders-api", "POST /orders")}
    # a billing batch of several orders is in each of their flows, marked as shared
    billed = api.get("/api/flows", params={"since": "0", "service": "billing", "limit": 200}).json()["flows"]
    shared = []
    for flow in billed:
        detail = api.get(f"/api/flows/{flow['flow_id']}").json()
        shared.extend(detail["shared_traces"])
        assert len(detail["spans"]) == detail["summary"]["span_count"] or detail["truncated"]
    assert shared, "no billing batch of several orders in 200 flows"
    assert all(batch["other_flow_ids"] and batch["other_messages"] >= 1 for batch in shared)


def test_shipping_dlq_holds_messages_linked_to_their_flows(demo: dict[str, Any], api: httpx.Client) -> None:
    assert demo["dead"], "nothing in shipping-dlq near the end of the run"
    for dead in demo["dead"]:
        assert dead.flow_id is not None, dead.message_id
        flow = api.get(f"/api/flows/{dead.flow_id}").json()
        assert flow["summary"]["max_receive_count"] >= 3
        assert "shipping" in flow["summary"]["services"]


def test_every_queue_has_a_depth_series(api: httpx.Client) -> None:
    queues = {q["name"]: q for q in api.get("/api/queues").json()["queues"]}
    assert {"billing", "shipping", "shipping-dlq", "notifications"} <= set(queues)
    assert queues["shipping-dlq"]["sources"] == ["shipping"]
    for name in ("billing", "shipping", "shipping-dlq", "notifications"):
        samples = api.get(f"/api/queues/{name}/depth", params={"since": "0"}).json()["samples"]
        assert len(samples) >= 5, name


def test_the_graph_has_an_edge_for_every_hop(api: httpx.Client) -> None:
    edges = {
        (e["source"], e["target"], e["kind"])
        for e in api.get("/api/graph", params={"since": "0"}).json()["edges"]
    }
    expected = {
        ("service:orders-api", "aws.sns:order-events", "publish"),
        ("aws.sns:order-events", "aws_sqs:billing", "subscription"),
        ("aws.sns:order-events", "aws_sqs:shipping", "subscription"),
        ("aws_sqs:billing", "service:billing", "consume"),
        ("aws_sqs:shipping", "service:shipping", "consume"),
        ("aws.sns:order-events", "service:audit", "consume"),
        ("service:shipping", "aws.eventbridge:orders", "publish"),
        ("aws.eventbridge:orders", "aws_sqs:notifications", "subscription"),
        ("aws_sqs:notifications", "service:notifier", "consume"),
    }
    assert expected <= edges, expected - edges
