"""No span can stop stitching: poison values are treated as documented, failing folds are isolated."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from hopscope.collector.ingest.writer import SpanWriter
from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import Encoding
from hopscope.collector.stitch.guard import fold_isolating
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.hostile_spans import POISON
from tests.helpers.servers import HOPSCOPE, CollectorProcess


def ordinary_traffic(url: str, order: str) -> None:
    """The real SDK and OTLP exporter: an API call that publishes, and a consumer in a trace of its own."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"shop-{order}"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("tests")
    destination = {"messaging.system": "aws_sqs", "messaging.destination.name": "orders"}
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
        with tracer.start_as_current_span(
            "send orders",
            kind=trace.SpanKind.PRODUCER,
            attributes={**destination, "hopscope.correlation_id": order},
        ) as producer:
            time.sleep(0.002)
    with tracer.start_as_current_span(
        "process orders",
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(producer.get_span_context())],
        attributes=destination,
    ):
        pass
    provider.shutdown()


def settled(http: httpx.Client, timeout: float = 30) -> dict[str, Any]:
    """The detailed health answer once stitching has caught up."""
    deadline = time.monotonic() + timeout
    while True:
        health: dict[str, Any] = http.get("/healthz").json()
        if not health["flows_pending"] or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def assert_ordinary_traffic_stitched(http: httpx.Client, order: str) -> None:
    flows = http.get("/api/flows", params={"correlation_id": order}).json()["flows"]
    assert len(flows) == 1
    assert flows[0]["trace_count"] == 2 and flows[0]["span_count"] == 3
    services = {s["service"]: s for s in http.get("/api/services").json()["services"]}
    assert services[f"shop-{order}"]["red"]["span_count"] == 2  # its server and consumer spans
    edges = {(e["source"], e["target"], e["kind"]) for e in http.get("/api/graph").json()["edges"]}
    assert (f"service:shop-{order}", "aws_sqs:orders", "publish") in edges
    assert ("aws_sqs:orders", f"service:shop-{order}", "consume") in edges


def assert_idle(collector: CollectorProcess) -> None:
    assert collector.proc is not None
    process = psutil.Process(collector.proc.pid)
    process.cpu_percent(None)
    time.sleep(2.0)
    assert process.cpu_percent(None) < 15.0


def stitching_lines(collector: CollectorProcess) -> list[str]:
    return [line for line in collector.log if "unusable span times" in line or "stitching" in line]


def test_the_two_span_request_of_issue_13_never_stops_flows_red_or_the_graph(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN a collector that has been sent the two poison spans
    collector = start_collector()
    with collector.client() as http:
        assert http.post("/v1/traces", json=POISON).status_code == 200

        # WHEN ordinary traffic follows
        ordinary_traffic(collector.url, "o-1")

        # THEN its spans become flows, RED and graph; health reports the two skipped spans
        health = settled(http)
        assert health["flows_pending"] is False
        assert_ordinary_traffic_stitched(http, "o-1")
        assert health["spans_skipped"] == 2
        assert health["spans_skipped_by_reason"] == {"unusable_times": 2}
        # the poison spans are still stored whole, and their flows exist, placed when they arrived
        stored = http.get("/api/traces/5b8efff798038103d269b633813fc60c").json()
        span = stored["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert (span["startTimeUnixNano"], span["endTimeUnixNano"]) == ("1", "9223372036854775807")
        poison_flows = http.get("/api/flows", params={"service": "poison-api"}).json()["flows"]
        assert len(poison_flows) == 2 and all(f["start_unix_nano"] > 10**18 for f in poison_flows)
        assert "poison-api" not in {s["service"] for s in http.get("/api/services").json()["services"]}
    # one log line about it, and the collector idles
    assert len(stitching_lines(collector)) == 1
    assert_idle(collector)
    assert collector.stop() == 0

    # WHEN it restarts on that database and more traffic comes
    again = start_collector(db=collector.db)
    with again.client() as http:
        ordinary_traffic(again.url, "o-2")
        health = settled(http)
        # THEN the same: new flows, the skipped count kept, no new log line, idle
        assert_ordinary_traffic_stitched(http, "o-2")
        assert_ordinary_traffic_stitched(http, "o-1")
        assert health["spans_skipped"] == 2
    assert stitching_lines(again) == []
    assert_idle(again)


def test_a_database_left_stuck_on_poison_spans_by_an_older_version_catches_up_on_start(
    start_collector: Callable[..., CollectorProcess], tmp_path: Path
) -> None:
    # GIVEN a database whose poison spans were stored but never stitched (where the old stitcher stopped)
    db = tmp_path / "stuck.db"
    store = SQLiteStore(db)
    request = otlp_codec.decode_request(json.dumps(POISON).encode(), Encoding.JSON)
    store.write_prepared([store.prepare(request)])
    assert store.flows_pending
    store.close()

    # WHEN a collector starts on it and ordinary traffic comes
    collector = start_collector(db=db)
    with collector.client() as http:
        ordinary_traffic(collector.url, "o-3")
        health = settled(http)

        # THEN everything is stitched and the poison is counted
        assert_ordinary_traffic_stitched(http, "o-3")
        assert health["spans_skipped"] == 2
    assert_idle(collector)


def test_import_into_a_database_with_poison_spans_works(tmp_path: Path) -> None:
    # GIVEN a poison file and a database
    poison = tmp_path / "poison.json"
    poison.write_text(json.dumps(POISON))
    db = tmp_path / "import.db"
    # WHEN it is imported with the hopscope command
    done = subprocess.run(
        [HOPSCOPE, "import", str(poison), "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    # THEN it succeeds and the spans are stored and stitched
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    reader = SQLiteStore(db, read_only=True)
    assert reader.count_spans() == 2
    assert len(reader.search_flow_ids(FlowFilter(), 10, 0)) == 2


# -- a fold that fails is isolated --------------------------------------------------------------------------


def _spans_request(names: list[str]) -> Any:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": os.urandom(16).hex(),
                                "spanId": os.urandom(8).hex(),
                                "name": name,
                                "kind": 2,
                                "startTimeUnixNano": str(time.time_ns()),
                                "endTimeUnixNano": str(time.time_ns() + 1000),
                            }
                            for name in names
                        ]
                    }
                ],
            }
        ]
    }
    return otlp_codec.decode_request(json.dumps(body).encode(), Encoding.JSON)


def test_a_span_whose_fold_fails_is_skipped_alone_and_the_rest_of_its_chunk_is_stitched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a real SQLite store where folding one span fails: a trigger in the database refuses its RED
    # rollup (fault injection inside the real database, not a mock: it raises what SQLite raises)
    store = SQLiteStore(tmp_path / "trigger.db")
    store._writer_conn().execute(
        "CREATE TRIGGER poison BEFORE INSERT ON red_rollups WHEN NEW.operation = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'this span poisons the fold'); END"
    )
    names = [f"op-{i}" for i in range(40)]
    names[23] = "poison"
    request = _spans_request(names)
    store.write_prepared([store.prepare(request)])

    # WHEN the chunk is stitched
    with caplog.at_level(logging.ERROR):
        assert store.stitch_flows(1000) == 40

    # THEN the 39 others are in flows and RED, the poison span is skipped, and the watermark moved on
    assert len(store.search_flow_ids(FlowFilter(limit=100), 100, 0)) == 39
    operations = {row.operation for row in store.red_rollups(0, 2**63 - 1)}
    assert operations == set(names) - {"poison"}
    assert store.skipped_spans.by_reason == {"fold_failed": 1}
    assert not store.flows_pending and store.stitch_flows(1000) == 0
    poison_id = next(span for span in request.resource_spans[0].scope_spans[0].spans if span.name == "poison")
    lines = [record for record in caplog.records if "folding them failed" in record.getMessage()]
    assert len(lines) == 1
    assert poison_id.span_id.hex() in lines[0].getMessage()
    assert "Traceback" in lines[0].getMessage() and "this span poisons the fold" in lines[0].getMessage()
    # and the count survives a restart
    store.close()
    assert SQLiteStore(tmp_path / "trigger.db").skipped_spans.by_reason == {"fold_failed": 1}


def test_a_full_disk_while_stitching_skips_nothing(tmp_path: Path) -> None:
    # GIVEN stored spans and a database that cannot grow (SQLite's own page cap: a real SQLITE_FULL)
    store = SQLiteStore(tmp_path / "full.db")
    store.write_prepared([store.prepare(_spans_request([f"op-{i}" for i in range(300)]))])
    conn = store._writer_conn()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")

    # WHEN stitching runs out of room
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.stitch_flows(1000)

    # THEN no span was skipped and none stitched; once there is room, all are stitched
    assert store.skipped_spans.total == 0 and store.flows_pending
    conn.execute(f"PRAGMA max_page_count = {pages * 100}")
    assert store.stitch_flows(1000) == 300
    assert len(store.search_flow_ids(FlowFilter(limit=1000), 1000, 0)) == 300


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 60), poison=st.sets(st.integers(0, 59)))
def test_bisecting_folds_each_good_row_once_and_skips_exactly_the_poison(size: int, poison: set[int]) -> None:
    rows = list(range(size))
    folded: list[int] = []

    def fold(piece: Any) -> None:  # all or nothing, as the stores' folds are
        if poison.intersection(piece):
            raise ValueError(f"poison in {piece}")
        folded.extend(piece)

    failed = fold_isolating(rows, fold, lambda exc: False)
    assert sorted(folded) == [row for row in rows if row not in poison]
    assert [row for row, _ in failed] == sorted(poison.intersection(rows))


def test_an_environment_error_propagates_without_skipping() -> None:
    def fold(piece: Any) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fold_isolating([1, 2, 3], fold, lambda exc: isinstance(exc, OSError))


def test_a_writer_whose_stitching_keeps_failing_backs_off_logs_once_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN stored spans that cannot be stitched for now: the database may not grow (a real SQLITE_FULL)
    store = SQLiteStore(tmp_path / "full.db")
    store.write_prepared([store.prepare(_spans_request([f"op-{i}" for i in range(200)]))])
    conn = store._writer_conn()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    writer = SpanWriter(store, max_pending_spans=1000)

    # WHEN the writer runs for a few seconds
    with caplog.at_level(logging.INFO):
        writer.start()
        time.sleep(0.5)
        thread = next(t for t in psutil.Process().threads() if t.id == writer._thread.native_id)
        cpu_before = thread.user_time + thread.system_time
        time.sleep(3.0)
        thread = next(t for t in psutil.Process().threads() if t.id == writer._thread.native_id)
        cpu = thread.user_time + thread.system_time - cpu_before

        # THEN it does not spin: a few tries with backoff, one log line with the traceback, nothing skipped
        assert cpu < 0.5, f"the writer used {cpu:.2f} s of CPU in 3 s"
        failures = [r for r in caplog.records if "stitching flows failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None
        health = writer.health()
        assert health.stitch_error is not None and "full" in health.stitch_error
        assert health.spans_skipped == 0 and health.flows_pending

        # WHEN room comes back, THEN it catches up (within the longest backoff so far) and says so once
        conn.execute(f"PRAGMA max_page_count = {pages * 100}")
        deadline = time.monotonic() + 20
        while store.flows_pending:
            assert time.monotonic() < deadline, "stitching did not catch up"
            time.sleep(0.1)
    writer.close(10)
    assert writer.health().stitch_error is None
    assert any("stitching flows works again" in r.getMessage() for r in caplog.records)
    assert len(store.search_flow_ids(FlowFilter(limit=1000), 1000, 0)) == 200
