"""On ClickHouse too (the real engine, through chdb), no span value stops stitching."""

from __future__ import annotations

import json
import logging
import time

import pytest

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import Encoding
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.url import open_store
from tests.helpers.exporter_rows import COLUMNS
from tests.helpers.exporter_rows import otel_row as _row
from tests.helpers.hostile_spans import POISON

GOOD = "0af7651916cd43dd8448eb211c80319c"


def _open(url: str) -> ClickHouseStore:
    store = open_store(url)
    assert isinstance(store, ClickHouseStore)
    return store


def test_the_poison_request_is_counted_and_ordinary_spans_are_stitched(chdb_url: str) -> None:
    # GIVEN a ClickHouse store that receives the two poison spans of issue 13 and an ordinary span
    store = _open(chdb_url)
    poison = otlp_codec.decode_request(json.dumps(POISON).encode(), Encoding.JSON)
    ordinary = otlp_codec.decode_request(json.dumps(POISON).encode(), Encoding.JSON)
    span = ordinary.resource_spans[0].scope_spans[0].spans[0]
    span.trace_id, span.span_id = bytes.fromhex(GOOD), bytes.fromhex("00f067aa0ba902b7")
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 5_000_000
    del ordinary.resource_spans[0].scope_spans[0].spans[1:]
    ordinary.resource_spans[0].resource.attributes[0].value.string_value = "shop"

    # WHEN both are written and stitched
    store.write([poison, ordinary])

    # THEN three flows exist, the poison counted, and RED holds only the ordinary span
    assert len(store.search_flow_ids(FlowFilter(), 10, 0)) == 3
    assert store.skipped_spans.by_reason == {"unusable_times": 2}
    since, until = time.time_ns() - 3_600 * 10**9, time.time_ns() + 10**9
    assert {row.service_name for row in store.red_rollups(since, until)} == {"shop"}
    assert {row.service_name for row in store.red_rollups(0, 2**63 - 1)} == {"shop"}
    store.close()
    # and the count is kept across a restart
    assert _open(chdb_url).skipped_spans.by_reason == {"unusable_times": 2}


def test_rows_a_collector_wrote_with_broken_ids_are_skipped_alone(
    chdb_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN rows inserted with plain SQL by someone else: a TraceId that is not hex, a receive count of
    # 5,000 digits, and ordinary rows around them
    store = _open(chdb_url)
    rows = [
        _row(0, GOOD, "a000000000000001", "", "POST /orders", "Server", "orders-api",
             {"hopscope.correlation_id": "o-1"}, 120),
        _row(5, "not-a-hex-trace-id", "a000000000000002", "", "broken", "Server", "orders-api", {}, 10),
        _row(10, GOOD, "a000000000000003", "a000000000000001", "process", "Consumer", "orders-api",
             {"hopscope.receive_count": "9" * 5000, "hopscope.correlation_id": "o-1"}, 10),
    ]  # fmt: skip
    store.client.command(
        f"INSERT INTO {store.client.database}.otel_traces ({COLUMNS}) VALUES {', '.join(rows)}"
    )

    # WHEN the store stitches what arrived
    with caplog.at_level(logging.ERROR):
        store.catch_up()

    # THEN the broken row is skipped alone, logged once with its ids, and the others form their flow
    assert store.skipped_spans.by_reason == {"fold_failed": 1}
    lines = [r.getMessage() for r in caplog.records if "folding them failed" in r.getMessage()]
    assert len(lines) == 1 and "not-a-hex-trace-id/a000000000000002" in lines[0]
    flows = store.flow_summaries(store.search_flow_ids(FlowFilter(correlation_id="o-1"), 10, 0))
    assert len(flows) == 1 and flows[0].span_count == 2
    assert flows[0].max_receive_count == 0  # 5,000 digits are no receive count
    assert not store.flows_pending
    store.close()
