"""Read answers are capped in spans and bytes, say ``truncated`` when cut, and never load what they leave out.

The stores spend a ReadBudget span by span (both backends); the query API and ``hopscope export`` give at
most MAX_ANSWER_SPANS spans and MAX_ANSWER_SPAN_BYTES of stored spans per answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData

from hopscope.collector.otlp.codec import Encoding, decode_request, traces_from_json
from hopscope.collector.query.layer import MAX_ANSWER_SPAN_BYTES, MAX_ANSWER_SPANS
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.base import ReadBudget
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.flow_chains import Services, order_chain
from tests.helpers.servers import HOPSCOPE, CollectorProcess, serve_in_thread

UNLIMITED_BYTES = 1 << 40


def _trace(spans: int, *, heavy_attributes: int = 0) -> tuple[ExportTraceServiceRequest, bytes]:
    """One trace: a server span, then ``spans - 1`` children started one after the other ("step N" starts
    N ns after the root); with ``heavy_attributes``, the last child carries that many small attributes."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="wide"))
    scope_spans = resource_spans.scope_spans.add()
    trace_id, root = os.urandom(16), os.urandom(8)
    now = time.time_ns()
    for step in range(spans):
        span = scope_spans.spans.add(
            trace_id=trace_id,
            span_id=root if step == 0 else os.urandom(8),
            parent_span_id=b"" if step == 0 else root,
            name=f"step {step}",
            kind=Span.SpanKind.SPAN_KIND_SERVER if step == 0 else Span.SpanKind.SPAN_KIND_INTERNAL,
            start_time_unix_nano=now + step,
            end_time_unix_nano=now + spans + 1_000,
        )
        if heavy_attributes and step == spans - 1:
            for index in range(heavy_attributes):
                span.attributes.add(key=f"a.{index}", value=AnyValue(string_value=f"v{index}"))
    return request, trace_id


def _names(traces: TracesData) -> list[str]:
    return [span.name for rs in traces.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _otlp_names(document: dict[str, Any]) -> list[str]:
    return _names(traces_from_json(document))


def test_a_store_reads_no_more_than_its_budget_earliest_spans_first(new_store: Callable[..., Any]) -> None:
    # GIVEN a store (SQLite, then ClickHouse) with two traces of six spans each
    store = new_store()
    (first, first_id), (second, second_id) = _trace(6), _trace(6)
    store.write([first, second])
    # WHEN it reads with budgets that fit everything, exactly everything, and less
    everything = ReadBudget(10, UNLIMITED_BYTES)
    exact = ReadBudget(6, UNLIMITED_BYTES)
    four = ReadBudget(4, UNLIMITED_BYTES)
    answers = [store.get_trace(first_id, budget) for budget in (everything, exact, four)]
    # THEN it stops at the budget's spans, earliest start first, and says when it cut
    assert [_names(answer) for answer in answers if answer is not None] == [
        [f"step {step}" for step in range(6)],
        [f"step {step}" for step in range(6)],
        [f"step {step}" for step in range(4)],
    ]
    assert [everything.truncated, exact.truncated, four.truncated] == [False, False, True]
    # AND bytes are a budget too: what three spans cost holds three spans, not four
    three = ReadBudget(3, UNLIMITED_BYTES)
    store.get_trace(first_id, three)
    three_spans_bytes = UNLIMITED_BYTES - three.bytes
    by_bytes = ReadBudget(10, three_spans_bytes)
    answer = store.get_trace(first_id, by_bytes)
    assert answer is not None and _names(answer) == ["step 0", "step 1", "step 2"] and by_bytes.truncated
    # AND a trace whose first span does not fit is an empty document, an unknown trace None
    nothing = ReadBudget(10, 0)
    assert store.get_trace(first_id, nothing) == TracesData() and nothing.truncated
    unknown = ReadBudget(10, UNLIMITED_BYTES)
    assert store.get_trace(os.urandom(16), unknown) is None and not unknown.truncated
    # AND one budget spans several traces
    shared = ReadBudget(8, UNLIMITED_BYTES)
    assert len(_names(store.get_traces([first_id, second_id], shared))) == 8 and shared.truncated
    assert len(_names(store.get_traces([first_id, second_id]))) == 12


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path, bytes, bytes]]:
    """A collector over a trace one span over the cap, and an ordinary flow (orders o-1)."""
    db = tmp_path_factory.mktemp("caps") / "hopscope.db"
    store = SQLiteStore(db, durable=False)
    wide, wide_id = _trace(MAX_ANSWER_SPANS + 1)
    services = Services()
    order_chain(services, "o-1")
    ordinary = encode_spans(services.spans())
    store.write([wide, ordinary])
    ordinary_id = ordinary.resource_spans[0].scope_spans[0].spans[0].trace_id
    with serve_in_thread(CollectorSettings(db=db), store) as url, httpx.Client(base_url=url) as http:
        yield http, db, wide_id, ordinary_id
    store.close()


def test_answers_over_the_span_cap_keep_the_earliest_spans_and_say_truncated(
    capped: tuple[httpx.Client, Path, bytes, bytes],
) -> None:
    # GIVEN a trace (and so a flow) of MAX_ANSWER_SPANS + 1 spans
    http, _, wide_id, _ = capped
    flow_id = http.get("/api/flows?service=wide").json()["flows"][0]["flow_id"]
    # WHEN it is read as a trace, as a flow, and as the flow's OTLP
    trace = http.get(f"/api/traces/{wide_id.hex()}").json()
    flow = http.get(f"/api/flows/{flow_id}").json()
    otlp = http.get(f"/api/flows/{flow_id}/otlp").json()
    # THEN each holds the first MAX_ANSWER_SPANS spans by start time and says it was cut
    expected = [f"step {step}" for step in range(MAX_ANSWER_SPANS)]
    assert trace["truncated"] is True and _otlp_names(trace) == expected
    assert otlp["truncated"] is True and _otlp_names(otlp) == expected
    assert flow["truncated"] is True and [span["name"] for span in flow["spans"]] == expected
    # AND the flow's summary still counts every span
    assert flow["summary"]["span_count"] == MAX_ANSWER_SPANS + 1
    # AND the cut OTLP document still imports as OTLP JSON (the extra key is ignored)
    body = json.dumps(otlp).encode()
    assert len(decode_request(body, Encoding.JSON).resource_spans[0].scope_spans[0].spans) == MAX_ANSWER_SPANS


def test_answers_under_the_cap_are_whole_and_plain_otlp(
    capped: tuple[httpx.Client, Path, bytes, bytes],
) -> None:
    # GIVEN an ordinary flow
    http, _, _, ordinary_id = capped
    flow_id = http.get("/api/flows?correlation_id=o-1").json()["flows"][0]["flow_id"]
    # WHEN it is read three ways
    flow = http.get(f"/api/flows/{flow_id}").json()
    otlp = http.get(f"/api/flows/{flow_id}/otlp").json()
    trace = http.get(f"/api/traces/{ordinary_id.hex()}").json()
    # THEN nothing is cut: truncated is false, and the OTLP documents carry no key beyond OTLP's own
    assert flow["truncated"] is False and len(flow["spans"]) == flow["summary"]["span_count"] == 5
    assert set(otlp) == set(trace) == {"resourceSpans"}


def test_export_of_a_flow_over_the_cap_says_so(capped: tuple[httpx.Client, Path, bytes, bytes]) -> None:
    # GIVEN the flow over the cap
    http, db, _, _ = capped
    flow_id = http.get("/api/flows?service=wide").json()["flows"][0]["flow_id"]
    # WHEN it is exported with the command
    result = subprocess.run(
        [HOPSCOPE, "export", "--flow", str(flow_id), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # THEN the document is what the API serves, and a line on standard error says that it was cut
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == http.get(f"/api/flows/{flow_id}/otlp").json()
    (line,) = result.stderr.strip().splitlines()
    assert f"cut at {MAX_ANSWER_SPANS:,} spans or {MAX_ANSWER_SPAN_BYTES // 2**20} MiB" in line
    assert '"truncated": true' in line


def _peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/{pid}/status")


def test_a_span_over_the_byte_cap_is_never_loaded(
    tmp_path: Path, start_collector: Callable[..., CollectorProcess]
) -> None:
    # GIVEN a stored trace: a small root span, then one span of 400,000 small attributes (about 9 MB, past
    # MAX_ANSWER_SPAN_BYTES; reading it uncapped grew the collector's peak RSS by about 400 MiB)
    request, trace_id = _trace(2, heavy_attributes=400_000)
    heavy = request.resource_spans[0].scope_spans[0].spans[1]
    assert heavy.ByteSize() > MAX_ANSWER_SPAN_BYTES
    store = SQLiteStore(tmp_path / "hopscope.db", durable=False)
    store.write([request])
    flow_id = store.flow_of_trace(trace_id)
    store.close()
    collector = start_collector(db=tmp_path / "hopscope.db")
    assert collector.proc is not None
    with collector.client() as http:
        http.get("/api/flows")  # warm: the first read opens the reader's connection
        before = _peak_rss_bytes(collector.proc.pid)
        # WHEN the trace is read as a trace, a flow and the flow's OTLP
        answers = [
            http.get(f"/api/traces/{trace_id.hex()}").json(),
            http.get(f"/api/flows/{flow_id}").json(),
            http.get(f"/api/flows/{flow_id}/otlp").json(),
        ]
        grown = _peak_rss_bytes(collector.proc.pid) - before
    # THEN each answer holds the root span only and says it was cut
    assert _otlp_names(answers[0]) == _otlp_names(answers[2]) == ["step 0"]
    assert [span["name"] for span in answers[1]["spans"]] == ["step 0"]
    assert all(answer["truncated"] is True for answer in answers)
    # AND the heavy span was never loaded: the collector's peak memory barely moved
    assert grown < 64 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.0f} MiB"
