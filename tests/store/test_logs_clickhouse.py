"""Log records on ClickHouse (chdb): the exporter's ``otel_logs`` table, records from the real SDK written and
searched, read back as OTLP, a table an older Collector made, retention by DELETE."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from hopscope.collector.model.logs import ERROR_SEVERITY, LogFilter
from hopscope.collector.store.clickhouse import schema
from hopscope.collector.store.clickhouse.client import ChdbClient
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.url import open_store
from tests.helpers.otlp_logs import order_story, sdk_logger
from tests.helpers.otlp_samples import attrs, full_request, value

# The columns of the exporter's template, as ClickHouse reports them: opentelemetry-collector-contrib
# exporter/clickhouseexporter/internal/sqltemplates/logs_table.sql at commit
# e3bd2d1d648f1868f50a8f2c1b68f7ce451ee6eb.
TEMPLATE_COLUMNS = [
    ("Timestamp", "DateTime64(9)"),
    ("TimestampTime", "DateTime"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("TraceFlags", "UInt8"),
    ("SeverityText", "LowCardinality(String)"),
    ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"),
    ("Body", "String"),
    ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"),
    ("LogAttributes", "Map(LowCardinality(String), String)"),
    ("EventName", "String"),
]
TEMPLATE_INDEXES = [
    ("idx_trace_id", "bloom_filter", "TraceId"),
    ("idx_res_attr_key", "bloom_filter", "mapKeys(ResourceAttributes)"),
    ("idx_res_attr_value", "bloom_filter", "mapValues(ResourceAttributes)"),
    ("idx_scope_attr_key", "bloom_filter", "mapKeys(ScopeAttributes)"),
    ("idx_scope_attr_value", "bloom_filter", "mapValues(ScopeAttributes)"),
    ("idx_log_attr_key", "bloom_filter", "mapKeys(LogAttributes)"),
    ("idx_log_attr_value", "bloom_filter", "mapValues(LogAttributes)"),
    ("idx_body", "tokenbf_v1", "Body"),
]
TEMPLATE_KEYS = (
    "toDate(TimestampTime)",
    "ServiceName, TimestampTime",
    "ServiceName, TimestampTime, Timestamp",
)


class Story:
    """What the module's store holds: two orders logged through the real SDK, one of them failing."""

    def __init__(self) -> None:
        self.before = time.time_ns()
        with sdk_logger("orders-api") as (logger, tracer, drain):
            self.o1 = order_story(logger, tracer, "o-1", customer="c-7")
            self.orders = drain()
        with sdk_logger("payments") as (logger, tracer, drain):
            self.o2 = order_story(logger, tracer, "o-2", fail=True)
            self.payments = drain()
        self.after = time.time_ns()


@pytest.fixture(scope="module")
def written(chdb_path: Path) -> Iterator[tuple[ClickHouseStore, Story]]:
    store = open_store(f"chdb://{chdb_path}?database=test_logs_{os.getpid()}")
    assert isinstance(store, ClickHouseStore)
    story = Story()
    assert store.write_logs([story.orders, story.payments]) == 5
    yield store, story
    store.close()


def test_otel_logs_is_the_exporters_table(written: tuple[ClickHouseStore, Story]) -> None:
    store, _ = written
    client, db = store.client, store.client.database
    # THEN its columns and types, skip indexes and keys are the exporter template's
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'otel_logs' "
        "ORDER BY position",
        {"db": db},
    )
    assert [tuple(row) for row in columns] == TEMPLATE_COLUMNS
    indexes = client.query(
        "SELECT name, type, expr FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'otel_logs'",
        {"db": db},
    )
    assert sorted(tuple(row) for row in indexes) == sorted(TEMPLATE_INDEXES)
    [keys] = client.query(
        "SELECT partition_key, primary_key, sorting_key, engine FROM system.tables "
        "WHERE database = {db:String} AND name = 'otel_logs'",
        {"db": db},
    )
    assert tuple(keys) == (*TEMPLATE_KEYS, "MergeTree")
    # AND making the schema again changes nothing (every statement is idempotent)
    schema.create(client)
    assert store.count_logs() == 5


def test_a_correlation_id_finds_its_lines_in_order(written: tuple[ClickHouseStore, Story]) -> None:
    store, story = written
    lines = store.search_logs(LogFilter(correlation_id="o-1"))
    assert [line.body for line in lines] == ["order o-1 received", "stock low for order o-1"]
    assert [line.severity for line in lines] == ["INFO", "WARN"]
    trace_id, span_id = story.o1
    assert {(line.trace_id, line.span_id, line.service) for line in lines} == {
        (trace_id, span_id, "orders-api")
    }
    first = lines[0]
    assert first.correlation_id == "o-1"
    assert first.attributes["customer"] == "c-7"  # the layout's text values
    assert first.resource["service.name"] == "orders-api"
    assert story.before <= first.time_unix_nano <= lines[1].time_unix_nano <= story.after


def test_searches_by_service_severity_text_and_traces(written: tuple[ClickHouseStore, Story]) -> None:
    store, story = written
    assert {line.correlation_id for line in store.search_logs(LogFilter(service="payments"))} == {"o-2"}
    errors = store.search_logs(LogFilter(min_severity=ERROR_SEVERITY))
    assert [(line.body, line.service, line.is_error) for line in errors] == [
        ("payment failed", "payments", True)
    ]
    assert errors[0].attributes["exception.type"] == "ValueError"
    # text: a case-insensitive substring of the body
    stock = store.search_logs(LogFilter(text="STOCK LOW"))
    assert [line.body for line in stock] == ["stock low for order o-1", "stock low for order o-2"]
    assert store.search_logs(LogFilter(text="100%")) == []
    # trace ids: the records of these traces only
    by_trace = store.search_logs(LogFilter(trace_ids=(bytes.fromhex(story.o2[0]),)))
    assert [line.body for line in by_trace] == [
        "order o-2 received",
        "stock low for order o-2",
        "payment failed",
    ]
    # criteria combine with AND
    assert store.search_logs(LogFilter(service="orders-api", text="payment")) == []


def test_time_range_order_and_limit(written: tuple[ClickHouseStore, Story]) -> None:
    store, story = written
    every = store.search_logs(LogFilter())
    times = [line.time_unix_nano for line in every]
    assert len(every) == 5 and times == sorted(times)
    # since is inclusive, until exclusive
    middle = store.search_logs(LogFilter(since_unix_nano=times[2], until_unix_nano=times[4]))
    assert [line.body for line in middle] == [line.body for line in every[2:4]]
    newest = store.search_logs(LogFilter(limit=2, newest_first=True))
    assert [line.body for line in newest] == [every[4].body, every[3].body]
    assert [line.body for line in store.search_logs(LogFilter(limit=2))] == [every[0].body, every[1].body]
    assert store.search_logs(LogFilter(limit=0)) == []
    assert store.search_logs(LogFilter(until_unix_nano=story.before)) == []


def test_get_logs_gives_the_records_back_as_otlp(written: tuple[ClickHouseStore, Story]) -> None:
    store, story = written
    sent = {r.body.string_value: r for rl in story.payments.resource_logs for s in rl.scope_logs
            for r in s.log_records}  # fmt: skip
    logs = store.get_logs([bytes.fromhex(story.o2[0]), bytes.fromhex(story.o1[0])], limit=10)
    by_service = {
        {kv.key: kv.value.string_value for kv in r.resource.attributes}["service.name"]: r
        for r in logs.resource_logs
    }
    assert sorted(by_service) == ["orders-api", "payments"]
    orders, payments = by_service["orders-api"], by_service["payments"]
    records = [r for s in payments.scope_logs for r in s.log_records]
    assert [r.body.string_value for r in records] == ["order o-2 received", "stock low for order o-2",
                                                      "payment failed"]  # fmt: skip
    for record in records:
        original = sent[record.body.string_value]
        fields = ("time_unix_nano", "trace_id", "span_id", "flags", "severity_number", "severity_text")
        assert [getattr(record, f) for f in fields] == [getattr(original, f) for f in fields]
        assert {kv.key for kv in record.attributes} == {kv.key for kv in original.attributes}
    assert payments.scope_logs[0].scope.name == story.payments.resource_logs[0].scope_logs[0].scope.name
    assert sum(len(s.log_records) for s in orders.scope_logs) == 2
    # the earliest records when cut, none for no traces
    cut = store.get_logs([bytes.fromhex(story.o1[0]), bytes.fromhex(story.o2[0])], limit=1)
    assert [
        r.body.string_value for rl in cut.resource_logs for s in rl.scope_logs for r in s.log_records
    ] == ["order o-1 received"]
    assert not store.get_logs([], 10).resource_logs


def _request(*records: LogRecord, service: str | None = "batch") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    if service is not None:
        resource_logs.resource.attributes.extend(attrs({"service.name": service}))
    resource_logs.scope_logs.add().log_records.extend(records)
    return request


def test_record_times_bodies_and_resends(chdb_url: str) -> None:
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    trace_id = os.urandom(16)
    observed = LogRecord(observed_time_unix_nano=1_700_000_000_123_456_789, trace_id=trace_id,
                         body=value({"event": "shipped", "n": 2}))  # fmt: skip
    undated = LogRecord(
        trace_id=trace_id, body=value("no time at all"), attributes=attrs({"n": 5, "ok": True})
    )
    before = time.time_ns()
    # GIVEN a record with only an observed time, one with no time, and no service name; the first sent twice
    assert (
        store.write_logs([_request(observed, undated, service=None), _request(observed, service=None)]) == 3
    )
    after = time.time_ns()
    lines = store.search_logs(LogFilter(trace_ids=(trace_id,)))
    assert len(lines) == 2
    # THEN the observed time places the first, the time it was received the second; the resent one is read
    # once
    assert lines[0].time_unix_nano == observed.observed_time_unix_nano
    assert before <= lines[1].time_unix_nano <= after
    assert json.loads(lines[0].body) == {"event": "shipped", "n": 2}  # a map body as its JSON text
    assert lines[1].attributes == {"n": "5", "ok": "true"}
    assert {line.service for line in lines} == {"unknown_service"}
    assert len(store.search_logs(LogFilter(service="unknown_service"))) == 2
    assert store.count_logs() == 3  # stored twice, counted twice
    # AND retention deletes what is older than the cutoff at once
    assert store.delete_logs_before(before, limit=1) == 2
    assert [line.body for line in store.search_logs(LogFilter())] == ["no time at all"]


def test_spans_and_logs_in_one_write(chdb_url: str) -> None:
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    spans = store.prepare(full_request(spans=1))
    logs = store.prepare_logs(_request(LogRecord(time_unix_nano=time.time_ns(), body=value("x"))))
    assert store.write_prepared([spans, logs]) == 3
    assert (store.count_spans(), store.count_logs()) == (2, 1)
    with pytest.raises(TypeError):
        store.write_prepared([object()])  # type: ignore[list-item]


def test_a_table_an_older_collector_made_is_used(chdb_path: Path, chdb_url: str) -> None:
    # GIVEN otel_logs as an older exporter made it: no EventName
    database = chdb_url.rpartition("=")[2]
    client = ChdbClient(str(chdb_path), database)
    old = schema._OTEL_LOGS.replace("    EventName String CODEC(ZSTD(1)),\n", "")
    client.command(old.format(db=database))
    # AND a row a Collector wrote (plain SQL, as the exporter inserts)
    client.command(
        f"INSERT INTO {database}.otel_logs (Timestamp, TraceId, SpanId, SeverityText, SeverityNumber, "
        "ServiceName, Body, LogAttributes) VALUES "
        "(now64(9), 'aa', 'bb', 'Error', 17, 'legacy', 'from a collector', "
        "map('hopscope.correlation_id', 'o-9'))"
    )
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    # THEN hopscope writes into it and reads both
    assert store.write_logs(
        [_request(LogRecord(time_unix_nano=time.time_ns(), event_name="e", body=value("y")))]
    )
    assert [line.body for line in store.search_logs(LogFilter())] == ["from a collector", "y"]
    assert store.search_logs(LogFilter(correlation_id="o-9"))[0].service == "legacy"
