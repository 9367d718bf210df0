"""Expired and partly expired flows through the HTTP query API of a real ``hopscope collector --retention 1h``
(issue 16, item 2): its writer deletes the expired spans, then the flows and what points to them; a flow
whose own spans are gone but which shares a recent batch shows what remains and says what is gone.

The database is written first (real SDK spans, the old ones shifted two hours back), then the collector
starts on it: its first retention round runs at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.aged_spans import shifted, trace_of
from tests.helpers.flow_chains import Services, consume_batch, order_chain, publish_order
from tests.helpers.servers import CollectorProcess


@dataclass
class Expiring:
    """The flows of the database: one expired, two partly expired (they share a recent batch), one whole."""

    db: Path
    expired: int
    partly: list[int]
    whole: int
    batch_trace: str
    batch_start: int
    collector: CollectorProcess


def build(db: Path) -> tuple[int, list[int], int, str, int]:
    store = SQLiteStore(db)
    old, new = Services(), Services()
    order_chain(old, "o-old")
    one, two = publish_order(old, "o1"), publish_order(old, "o2")
    batch = consume_batch(new, [one, two], orders=["o1", "o2"])
    order_chain(new, "o-new")
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    expired = store.flow_of_trace(trace_of(next(s for s in old.spans() if s.name == "POST /orders")))
    partly = [store.flow_of_trace(trace_of(span)) for span in (one, two)]
    whole = store.flow_of_trace(trace_of(next(s for s in new.spans() if s.name == "POST /orders")))
    store.close()
    batch_trace = batch.get_span_context().trace_id
    batch_start = min(
        s.start_time or 0 for s in new.spans() if s.context and s.context.trace_id == batch_trace
    )
    assert expired is not None and whole is not None and None not in partly
    return expired, [p for p in partly if p is not None], whole, trace_of(batch).hex(), batch_start


def _flow_rows(db: Path, flow_id: int) -> int:
    conn = sqlite3.connect(db)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM flows WHERE flow_id = ?", (flow_id,)).fetchone()
    finally:
        conn.close()
    return int(rows)


@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Expiring]:
    db = tmp_path_factory.mktemp("expiry") / "hopscope.db"
    expired, partly, whole, batch_trace, batch_start = build(db)
    collector = CollectorProcess(db=db, args=["--retention", "1h"]).start()
    # the first retention rounds: the writer's of spans, the stitcher process's of flows
    deadline = time.monotonic() + 20
    while _flow_rows(db, expired):
        assert time.monotonic() < deadline, "the expired flow was not deleted"
        time.sleep(0.1)
    yield Expiring(db, expired, partly, whole, batch_trace, batch_start, collector)
    assert collector.stop() == 0


@pytest.fixture
def http(expiring: Expiring) -> Iterator[httpx.Client]:
    with expiring.collector.client() as client:
        yield client


def test_an_expired_flow_is_a_404_on_both_endpoints_and_not_listed(
    expiring: Expiring, http: httpx.Client
) -> None:
    for path in (f"/api/flows/{expiring.expired}", f"/api/flows/{expiring.expired}/otlp"):
        response = http.get(path)
        assert response.status_code == 404
        message = response.json()["message"]
        assert f"no flow {expiring.expired}" in message and "expired" in message
    listed = [flow["flow_id"] for flow in http.get("/api/flows").json()["flows"]]
    assert sorted(listed) == sorted([*expiring.partly, expiring.whole])
    # AND its row is gone from the database, not only hidden
    conn = sqlite3.connect(expiring.db)
    try:
        assert conn.execute(
            "SELECT count(*) FROM flows WHERE flow_id = ?", (expiring.expired,)
        ).fetchone() == (0,)
    finally:
        conn.close()


def test_a_partly_expired_flow_shows_what_remains_and_says_what_is_gone(
    expiring: Expiring, http: httpx.Client
) -> None:
    for flow_id in expiring.partly:
        detail = http.get(f"/api/flows/{flow_id}")
        assert detail.status_code == 200
        body = detail.json()
        # its summary still counts the order's two spans (gone) and the batch's two (kept)
        assert body["summary"]["span_count"] == 4
        assert {span["trace_id"] for span in body["spans"]} == {expiring.batch_trace}
        assert len(body["spans"]) == 2
        assert body["expired_span_count"] == 2
        assert body["retained_since_unix_nano"] == expiring.batch_start
        otlp = http.get(f"/api/flows/{flow_id}/otlp").json()
        exported = [s for rs in otlp["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert len(exported) == 2


def test_a_whole_flow_says_nothing_is_gone(expiring: Expiring, http: httpx.Client) -> None:
    body = http.get(f"/api/flows/{expiring.whole}").json()
    assert body["expired_span_count"] == 0 and body["retained_since_unix_nano"] is None
    assert len(body["spans"]) == body["summary"]["span_count"] == 5


def test_flows_stitched_after_the_expiry_get_new_ids_and_are_whole(
    expiring: Expiring, http: httpx.Client
) -> None:
    # GIVEN the collector after its retention round: WHEN a new order chain is sent over OTLP/HTTP
    services = Services()
    order_chain(services, "o-after")
    exporter = OTLPSpanExporter(endpoint=f"{expiring.collector.url}/v1/traces")
    assert exporter.export(services.spans()).name == "SUCCESS"
    expiring.collector.wait_for_flows()
    # THEN its flow has an id never handed out before, and every span of it
    found = http.get("/api/flows", params={"correlation_id": "o-after"}).json()["flows"]
    assert len(found) == 1
    flow_id = found[0]["flow_id"]
    assert flow_id > max(expiring.expired, *expiring.partly, expiring.whole)
    body = http.get(f"/api/flows/{flow_id}").json()
    assert len(body["spans"]) == 5 and body["expired_span_count"] == 0
