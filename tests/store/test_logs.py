"""Log records in both stores (SQLite file and chdb): what goes in is found by every criterion, in time
order, against a plain Python filter over the same records (hypothesis); SQLite's own promises (a re-sent
record stored once, retention by age, resources kept while log records use them) have tests of their own."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from hopscope.collector.ingest.writer import SpanWriter
from hopscope.collector.model.logs import CORRELATION_ID_ATTRIBUTE, LogFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.limits import SpanLimits
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.otlp_logs import order_story, sdk_logger
from tests.helpers.otlp_samples import full_request

BASE = 1_800_000_000_000_000_000
_examples = itertools.count()
SERVICES = ("orders", "payments")
TRACES = (b"\x01" * 16, b"\x02" * 16)

# One record: (service, ns after BASE, severity number, body, correlation id or "", trace index or -1)
_RECORD = st.tuples(
    st.sampled_from(SERVICES),
    st.integers(0, 10_000),
    st.sampled_from([0, 5, 9, 13, 17, 21]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
    st.sampled_from(["", "o-1", "o-2"]),
    st.integers(-1, 1),
)
_FILTER = st.fixed_dictionaries(
    {},
    optional={
        "correlation_id": st.sampled_from(["o-1", "o-2", "o-3"]),
        "service": st.sampled_from(SERVICES),
        "min_severity": st.sampled_from([1, 9, 13, 17]),
        "text": st.sampled_from(["a", "B", "%", "_", "\\", "é"]),
        "since_unix_nano": st.integers(BASE, BASE + 10_000),
        "until_unix_nano": st.integers(BASE, BASE + 10_000),
        "trace_ids": st.sampled_from([TRACES[:1], TRACES]),
        "newest_first": st.booleans(),
        "limit": st.integers(1, 50),
    },
)


def _request(records: list[tuple[str, int, int, str, str, int]]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    for service in SERVICES:
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        scope = resource_logs.scope_logs.add()
        scope.scope.name = "app"
        for number, (owner, at, severity, body, correlation, trace) in enumerate(records):
            if owner != service:
                continue
            record = scope.log_records.add(
                time_unix_nano=BASE + at, severity_number=severity, span_id=(number + 1).to_bytes(8, "big")
            )
            record.body.string_value = body
            if correlation:
                record.attributes.add(key=CORRELATION_ID_ATTRIBUTE, value=AnyValue(string_value=correlation))
            if trace >= 0:
                record.trace_id = TRACES[trace]
    return request


def _expected(records: list[tuple[str, int, int, str, str, int]], criteria: LogFilter) -> list[str]:
    """The span ids (hex) a filter must find, in its order: the plain-Python reference."""
    found = []
    for number, (service, at, severity, body, correlation, trace) in enumerate(records):
        moment = BASE + at
        if (
            (criteria.correlation_id is None or correlation == criteria.correlation_id)
            and (criteria.service is None or service == criteria.service)
            and (criteria.min_severity is None or severity >= criteria.min_severity)
            and (criteria.text is None or _ascii_lower(criteria.text) in _ascii_lower(body))
            and (criteria.since_unix_nano is None or moment >= criteria.since_unix_nano)
            and (criteria.until_unix_nano is None or moment < criteria.until_unix_nano)
            and (not criteria.trace_ids or (trace >= 0 and TRACES[trace] in criteria.trace_ids))
        ):
            found.append((moment, number))
    found.sort(reverse=criteria.newest_first)
    return [(number + 1).to_bytes(8, "big").hex() for _, number in found[: criteria.limit]]


def _ascii_lower(text: str) -> str:
    """What both engines' case-insensitive match folds: ASCII letters only."""
    return "".join(c.lower() if c.isascii() else c for c in text)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    records=st.lists(_RECORD, max_size=30, unique_by=lambda r: r[1]),
    filters=st.lists(_FILTER, min_size=1, max_size=6),
)
def test_every_search_finds_what_a_plain_filter_finds_in_time_order(
    new_store: Callable[..., Any], records: list[tuple[str, int, int, str, str, int]], filters: list[Any]
) -> None:
    # GIVEN records of two services with random times, severities, bodies, correlation ids and traces
    store = new_store(f"example{next(_examples)}")  # a fresh store per example
    store.write_logs([_request(records)])
    for fields in filters:
        criteria = LogFilter(**fields)
        # WHEN searched by any combination of criteria
        lines = store.search_logs(criteria)
        # THEN it finds exactly the records a plain filter finds, in time order, cut at the limit
        assert [line.span_id for line in lines] == _expected(records, criteria), criteria
    store.close()


def test_a_records_fields_come_back_as_sent_and_as_otlp(new_store: Callable[..., Any]) -> None:
    # GIVEN records logged by the real SDK inside a span (one with an exception and hostile text)
    with sdk_logger("orders-api", "orders") as (logger, tracer, drain):
        trace_id, span_id = order_story(logger, tracer, "o-7", fail=True, note="<script>**x**</script>")
        request = drain()
    store = new_store()
    assert store.write_logs([request]) == 3
    # WHEN read back by correlation id
    lines = store.search_logs(LogFilter(correlation_id="o-7"))
    # THEN each names its trace and span, level, logger, body, fields and exception
    assert [(line.trace_id, line.span_id) for line in lines] == [(trace_id, span_id)] * 3
    assert [line.severity for line in lines] == ["INFO", "WARN", "ERROR"]
    assert [line.body for line in lines] == [
        "order o-7 received",
        "stock low for order o-7",
        "payment failed",
    ]
    assert {line.scope for line in lines} == {logger.name}
    assert {line.service for line in lines} == {"orders-api"}
    assert lines[0].attributes["note"] == "<script>**x**</script>"
    assert lines[2].attributes["exception.type"] == "ValueError" and lines[2].is_error
    # and as OTLP: the same records, grouped by resource and scope
    logs = store.get_logs([bytes.fromhex(trace_id)], 10)
    [resource_logs] = logs.resource_logs
    [scope_logs] = resource_logs.scope_logs
    sent = request.resource_logs[0].scope_logs[0].log_records
    assert [r.body.string_value for r in scope_logs.log_records] == [r.body.string_value for r in sent]
    assert [r.span_id for r in scope_logs.log_records] == [r.span_id for r in sent]
    assert store.count_logs() >= 3
    store.close()


def test_a_resent_record_is_stored_once_and_spans_and_records_commit_together(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "logs.db")
    with sdk_logger() as (logger, tracer, drain):
        order_story(logger, tracer, "o-1")
        request = drain()
    # WHEN the same request comes twice (an exporter's retry), in one group with spans
    spans = full_request(spans=2)
    written = store.write_prepared(
        [store.prepare(spans), store.prepare_logs(request), store.prepare_logs(request)]
    )
    # THEN the records are stored once, and the spans beside them
    assert written == 4 + 2 + 2
    assert store.count_logs() == 2 and store.count_spans() == 4
    store.close()


def test_long_bodies_and_many_attributes_are_cut_to_the_limits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "logs.db")
    request = _request([("orders", 1, 9, "x", "o-1", 0)])
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.body.string_value = "y" * 100_000
    record.attributes.extend(KeyValue(key=f"k{i}", value=AnyValue(string_value="v" * 10)) for i in range(300))
    store.write_prepared([store.prepare_logs(request, SpanLimits(max_attributes=128, max_value_length=1000))])
    [line] = store.search_logs(LogFilter())
    assert len(line.body) == 1000
    assert len(line.attributes) == 128
    store.close()


def test_retention_deletes_old_and_future_dated_records_and_keeps_their_resources_while_used(
    tmp_path: Path,
) -> None:
    # GIVEN a record from two hours ago, one dated next year, one from now; and no span at all
    store = SQLiteStore(tmp_path / "logs.db")
    now = time.time_ns()
    hour = 3600 * 1_000_000_000
    request = _request([("orders", 0, 9, "old", "", -1), ("orders", 1, 9, "future", "", -1)])
    request.resource_logs[0].scope_logs[0].log_records.add(time_unix_nano=now).body.string_value = "fresh"
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].time_unix_nano = now - 2 * hour
    records[1].time_unix_nano = now + 365 * 24 * hour
    store.write_logs([request])
    # WHEN the collector's writer keeps an hour
    writer = SpanWriter(store, max_pending_spans=1000, retention_seconds=3600)
    writer.start()
    deadline = time.monotonic() + 10
    while writer.logs_expired < 1:
        assert time.monotonic() < deadline, "the writer deleted no record"
        time.sleep(0.05)
    writer.close(5)
    # THEN the old record went; the one dated next year stays until it was received an hour ago (retention
    # goes by the earlier of a record's time and its arrival)
    assert [line.body for line in store.search_logs(LogFilter())] == ["fresh", "future"]
    assert store.delete_logs_before(now + 2 * hour, 100) == 2
    # and the sweep of unused resources and scopes keeps the ones log records use
    fresh = _request([("orders", 2, 9, "later", "", -1)])
    store.write_logs([fresh])
    while store.expire_before(now - hour, 1000):
        pass
    [line] = store.search_logs(LogFilter())
    assert (line.body, line.service, line.scope) == ("later", "orders", "app")
    store.close()


def test_an_answer_of_log_lines_stops_at_the_read_cap(new_store: Callable[..., Any]) -> None:
    # GIVEN 100 records of one order, each holding a 64 KiB attribute (6.4 MB in all, legal input)
    store = new_store()
    request = _request([("orders", n, 9, f"line {n}", "o-big", 0) for n in range(100)])
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.attributes.add(key="blob", value=AnyValue(string_value="x" * 65_536))
    store.write_logs([request])
    # WHEN they are searched, by correlation id and as the flow of their trace would be
    answer = QueryLayer(store).search_logs(LogFilter(correlation_id="o-big", limit=5_000))
    # THEN the answer holds the earliest records within 4 MiB of stored records, and says it was cut
    assert answer.truncated
    assert 40 <= len(answer.lines) < 64
    assert [line.body for line in answer.lines] == [f"line {n}" for n in range(len(answer.lines))]
    # and a small limit cuts too
    few = QueryLayer(store).search_logs(LogFilter(correlation_id="o-big", limit=3))
    assert (len(few.lines), few.truncated) == (3, True)
    whole = QueryLayer(store).search_logs(LogFilter(correlation_id="o-big", limit=3, text="line 99"))
    assert (len(whole.lines), whole.truncated) == (1, False)
    store.close()


def test_a_flows_log_export_stops_at_the_read_cap_too(new_store: Callable[..., Any]) -> None:
    store = new_store()
    request = _request([("orders", n, 9, f"line {n}", "o-big", 0) for n in range(100)])
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.attributes.add(key="blob", value=AnyValue(string_value="x" * 65_536))
    store.write_logs([request])
    document = QueryLayer(store).logs_otlp_json([TRACES[0]])
    [resource] = [r for r in document["resourceLogs"] if r["scopeLogs"]]  # type: ignore[attr-defined]
    records = resource["scopeLogs"][0]["logRecords"]
    assert document["truncated"] is True and 40 <= len(records) < 64
    assert [r["body"]["stringValue"] for r in records] == [f"line {n}" for n in range(len(records))]
    store.close()
