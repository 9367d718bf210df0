"""The dashboard over a ClickHouse store (``--store chdb://``): the shop's spans and queue polls copied from
its SQLite database into the real ClickHouse engine, every page rendered by AppTest, the numbers checked
against the SQLite store's query layer (the same spans give the same answers)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.model.queues import QueueState
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_store
from tests.helpers.dashboard_harness import dashboard_env, run_page
from tests.helpers.servers import ShopDatabase

PAGES = [None, "service_map", "flows", "flow_detail", "logs", "latency", "queues", "dead_letters"]


@pytest.fixture
def clickhouse_shop(shop: ShopDatabase, chdb_url: str) -> Iterator[str]:
    """The shop's database copied into a chdb store, trace by trace in the order they were stored."""
    source = SQLiteStore(shop.db, read_only=True)
    conn = sqlite3.connect(shop.db)
    trace_ids = [
        row[0] for row in conn.execute("SELECT trace_id FROM spans GROUP BY trace_id ORDER BY min(span_pk)")
    ]
    conn.close()
    target = open_store(chdb_url)
    for trace_id in trace_ids:
        traces = source.get_trace(trace_id)
        assert traces is not None
        target.write([ExportTraceServiceRequest(resource_spans=traces.resource_spans)])
    for queue in source.queue_summaries():
        state = QueueState(queue.name, queue.url, queue.arn, queue.dlq_name, queue.max_receive_count)
        samples = [queue.latest] if queue.latest is not None else []
        target.record_queue_poll(queue.last_polled_unix_nano or 0, [state], samples)
    source.close()
    target.close()
    yield chdb_url


def test_every_page_renders_on_clickhouse_with_the_same_numbers(
    shop: ShopDatabase, clickhouse_shop: str
) -> None:
    sqlite_layer = QueryLayer(SQLiteStore(shop.db, read_only=True))
    (o3,) = sqlite_layer.search_flows(FlowFilter(correlation_id="o-3"))
    with dashboard_env(shop.db, store=clickhouse_shop):
        overview = run_page(query={"range": "24h"})
        clickhouse_layer = QueryLayer(open_store(clickhouse_shop, read_only=True))
        (ch_o3,) = clickhouse_layer.search_flows(FlowFilter(correlation_id="o-3"))
        pages = {page: run_page(page, {"range": "24h", "flow": str(ch_o3.flow_id)}) for page in PAGES if page}
    for page, app in {"overview": overview, **pages}.items():
        assert not app.exception, page
        assert not any("No data yet" in info.value for info in app.info), page
    # the overview: the same services and dead letters as the SQLite store's
    metrics = {metric.label: metric.value for metric in overview.metric}
    assert metrics["Services"] == "3"
    assert metrics["Dead letters waiting"] == "1"
    table = overview.dataframe[0].value
    since, until = 0, 2**62
    expected = {s.service: s.red for s in sqlite_layer.services(since, until)}
    assert sorted(table["service"]) == sorted(expected)
    for row in table.itertuples():
        assert row.spans == expected[row.service].span_count
        assert row.errors == expected[row.service].error_count
    # the flow: o-3's, with its spans, the same summary as on SQLite
    flow_metrics = {m.label: m.value for m in pages["flow_detail"].metric}
    assert flow_metrics["Spans"] == str(o3.span_count)
    assert (ch_o3.span_count, ch_o3.trace_count, ch_o3.error_count, ch_o3.services) == (
        o3.span_count,
        o3.trace_count,
        o3.error_count,
        o3.services,
    )
