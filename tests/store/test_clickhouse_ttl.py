"""Retention on ClickHouse (chdb, the real engine): every hopscope_* table but hopscope_meta gets a TTL that
follows ``--retention``, and a flow whose last span is older than the retention goes with every row that
points to it once ClickHouse merges the tables (``OPTIMIZE ... FINAL`` here, a TTL merge on a server)."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from hopscope.collector.model.fate import DeadLetterPeek, DeadLetterSighting
from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.model.queues import DepthSample, QueueState
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.clickhouse import expiry as clickhouse_expiry
from hopscope.collector.store.clickhouse.store import ClickHouseStore
from hopscope.collector.store.url import open_store
from tests.helpers.aged_spans import aged
from tests.helpers.flow_chains import Services, consume_batch, order_chain, publish_order
from tests.helpers.servers import serve_in_thread

pytest.importorskip("chdb")

HOUR = 3600
NS = 1_000_000_000


@pytest.fixture
def store(chdb_url: str) -> ClickHouseStore:
    opened = open_store(chdb_url)
    assert isinstance(opened, ClickHouseStore)
    return opened


def _created(store: ClickHouseStore) -> dict[str, str]:
    """Each hopscope_* table (views left out) -> its CREATE statement as ClickHouse shows it now."""
    rows = store.client.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db:String} "
        "AND startsWith(name, 'hopscope_') AND engine NOT LIKE '%View'",
        {"db": store.client.database},
    )
    return {str(name): str(query) for name, query in rows}


def _ttl_of(create_query: str) -> str | None:
    if " TTL " not in create_query:
        return None
    return create_query.split(" TTL ", 1)[1].split(" SETTINGS ", 1)[0]


def test_every_hopscope_table_gets_a_ttl_that_follows_the_retention(store: ClickHouseStore) -> None:
    # GIVEN a fresh database: only the span feed has a TTL (a week), the exporter's table none
    before = _created(store)
    assert {name for name, query in before.items() if _ttl_of(query)} == {"hopscope_span_feed"}
    # WHEN the collector starts with a retention of an hour
    store.apply_retention(HOUR)
    # THEN every hopscope_* table but hopscope_meta expires its rows an hour after its time column
    tables = _created(store)
    assert set(tables) - {"hopscope_meta"} == set(clickhouse_expiry.ttl_clauses(HOUR))
    assert _ttl_of(tables["hopscope_meta"]) is None
    for name, query in tables.items():
        if name == "hopscope_meta":
            continue
        ttl = _ttl_of(query)
        assert ttl is not None and f"toIntervalSecond({HOUR})" in ttl, name
        assert "merge_with_ttl_timeout = 1800" in query, name
    assert "EndUnixNano" in (_ttl_of(tables["hopscope_flows"]) or "")
    for name in clickhouse_expiry.FLOW_END_TABLES:
        assert "FlowEndUnixNano" in (_ttl_of(tables[name]) or ""), name
    assert "Arrived" in (_ttl_of(tables["hopscope_span_feed"]) or "")
    # AND otel_traces, the exporter's table, is left as it is
    (otel,) = store.client.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'otel_traces'",
        {"db": store.client.database},
    )[0]
    assert " TTL " not in str(otel)
    # WHEN it starts again with the same retention, nothing is altered (no parts rewritten)
    assert clickhouse_expiry.apply_retention(store.client, HOUR) == []
    # WHEN it starts with another one, every table follows
    assert len(clickhouse_expiry.apply_retention(store.client, 120)) == len(tables) - 1
    assert all(
        "toIntervalSecond(120)" in (_ttl_of(query) or "")
        for name, query in _created(store).items()
        if name != "hopscope_meta"
    )
    # WHEN it starts without retention, the TTLs go; the span feed keeps its week
    store.apply_retention(None)
    after = _created(store)
    assert {name: _ttl_of(query) for name, query in after.items() if _ttl_of(query)} == {
        "hopscope_span_feed": f"toDateTime(Arrived) + toIntervalSecond({7 * 24 * HOUR})"
    }
    assert not any("merge_with_ttl_timeout" in query for query in after.values())


def _ttl_tables(store: ClickHouseStore, seconds: int) -> set[str]:
    return {name for name, query in _created(store).items() if f"toIntervalSecond({seconds})" in query}


def test_the_collector_sets_the_ttl_of_its_retention_at_start(store: ClickHouseStore) -> None:
    # GIVEN a collector started with --retention 2m on a ClickHouse store
    every = set(clickhouse_expiry.ttl_clauses(120))
    with serve_in_thread(CollectorSettings(store_url="chdb://", retention_seconds=120), store):  # type: ignore[arg-type]
        # THEN the tables follow it once it has recorded its retention (a moment after start)
        deadline = time.monotonic() + 20
        while _ttl_tables(store, 120) != every:
            assert time.monotonic() < deadline, _ttl_tables(store, 120)
            time.sleep(0.1)
    # AND a collector started without retention takes the TTLs away
    with serve_in_thread(CollectorSettings(store_url="chdb://"), store):  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while _ttl_tables(store, 120):
            assert time.monotonic() < deadline, _ttl_tables(store, 120)
            time.sleep(0.1)
    assert {name for name, query in _created(store).items() if _ttl_of(query)} == {"hopscope_span_feed"}


def test_a_read_only_store_alters_nothing(store: ClickHouseStore, chdb_url: str) -> None:
    reader = ClickHouseStore(store.client, read_only=True)
    reader.apply_retention(HOUR)
    assert {name for name, query in _created(store).items() if _ttl_of(query)} == {"hopscope_span_feed"}


def _world(prefix: str) -> Services:
    """An order chain (API, SNS, SQS, with correlation and message ids) and a batch of two orders."""
    services = Services()
    order_chain(services, f"{prefix}-1")
    producers = [publish_order(services, f"{prefix}-{n}") for n in (2, 3)]
    consume_batch(services, producers, orders=[f"{prefix}-2", f"{prefix}-3"])
    return services


def _trace_ids(services: Services) -> set[str]:
    return {f"{span.context.trace_id:032x}" for span in services.spans()}


def _flow_ids(store: ClickHouseStore, traces: set[str]) -> set[int]:
    """Every flow id (standing or merged away) that the traces' rows name."""
    db = store.client.database
    first = {
        int(row[0])
        for row in store.client.query(
            f"SELECT DISTINCT FlowId FROM {db}.hopscope_trace_flows WHERE TraceId IN {{t:Array(String)}}",
            {"t": sorted(traces)},
        )
    }
    merged = store.client.query(
        f"SELECT DISTINCT FlowId, MergedInto FROM {db}.hopscope_flows WHERE FlowId IN {{f:Array(UInt64)}}",
        {"f": sorted(first)},
    )
    return first | {int(m) for _, m in merged if int(m)}


_POINTING = {
    "hopscope_flows": "FlowId IN {f:Array(UInt64)}",
    "hopscope_trace_flows": "TraceId IN {t:Array(String)} OR FlowId IN {f:Array(UInt64)}",
    "hopscope_flow_traces": "TraceId IN {t:Array(String)} OR FlowId IN {f:Array(UInt64)}",
    "hopscope_flow_operations": "FlowId IN {f:Array(UInt64)}",
    "hopscope_flow_correlations": "FlowId IN {f:Array(UInt64)}",
    "hopscope_message_keys": "TraceId IN {t:Array(String)}",
    "hopscope_shared_links": "TraceId IN {t:Array(String)} OR LinkedTraceId IN {t:Array(String)}",
    "hopscope_stitched_spans": "TraceId IN {t:Array(String)}",
    "hopscope_message_deliveries": "TraceId IN {t:Array(String)}",
    "hopscope_dead_letters": "TraceId IN {t:Array(String)}",
}


def _rows_pointing(store: ClickHouseStore, traces: set[str], flows: set[int]) -> dict[str, int]:
    """Per table, the rows (every version) that name one of these traces or flows."""
    db = store.client.database
    return {
        table: int(
            store.client.query(
                f"SELECT count() FROM {db}.{table} WHERE {where}", {"t": sorted(traces), "f": sorted(flows)}
            )[0][0]
        )
        for table, where in _POINTING.items()
    }


def _merge_everything(store: ClickHouseStore) -> None:
    """What a server's TTL merges do in their own time."""
    for table in clickhouse_expiry.ttl_clauses(HOUR):
        store.client.command(f"OPTIMIZE TABLE {store.client.database}.{table} FINAL")


def _record_queues(store: ClickHouseStore, polled: int, trace_id: str) -> None:
    store.record_queue_poll(
        polled, [QueueState("shipping", "https://sqs/shipping")], [DepthSample("shipping", polled, 3, 1, 0)]
    )
    sighting = DeadLetterSighting(f"dead-{polled}", trace_id=trace_id, receive_count=3)
    store.record_dead_letters(polled, [DeadLetterPeek("shipping-dlq", (sighting,), complete=False)])


def test_an_expired_flow_goes_with_every_row_that_points_to_it(store: ClickHouseStore) -> None:
    # GIVEN flows whose spans ended two hours ago and flows of now, with queue samples and dead letters of
    # both times, in a collector that keeps an hour
    now = time.time_ns()
    old, new = _world("old"), _world("new")
    store.write([aged(old.spans(), 2 * HOUR * NS)])
    store.write([encode_spans(new.spans())])
    _record_queues(store, now - 2 * HOUR * NS, min(_trace_ids(old)))
    _record_queues(store, now, min(_trace_ids(new)))
    old_traces, new_traces = _trace_ids(old), _trace_ids(new)
    old_flows, new_flows = _flow_ids(store, old_traces), _flow_ids(store, new_traces)
    assert old_flows and new_flows and not old_flows & new_flows
    old_standing = {store.flow_of_trace(bytes.fromhex(t)) for t in old_traces}
    new_standing = {store.flow_of_trace(bytes.fromhex(t)) for t in new_traces}
    new_summaries = store.flow_summaries(sorted(f for f in new_standing if f is not None))
    listed = set(store.search_flow_ids(FlowFilter(), -1, 0))
    assert listed & old_standing and listed & new_standing
    before = _rows_pointing(store, old_traces, old_flows)
    assert all(before.values()), before  # every kind of row is there to expire
    kept = _rows_pointing(store, new_traces, new_flows)
    depth = store.client.query(f"SELECT count() FROM {store.client.database}.hopscope_queue_depth")
    assert depth[0][0] == 2
    # WHEN the collector starts with --retention 1h, deletes the old spans and ClickHouse merges
    store.apply_retention(HOUR)
    store.delete_spans_started_before(now - HOUR * NS, 0)
    # THEN the old flows are neither listed nor summarized (merged away or not yet), here or in a reader
    reader = ClickHouseStore(store.client, read_only=True)
    for opened in (store, reader):
        assert set(opened.search_flow_ids(FlowFilter(), -1, 0)) == listed - old_standing
        assert opened.flow_summaries(sorted(old_flows)) == []
        assert opened.flow_summaries([s.flow_id for s in new_summaries]) == new_summaries
    _merge_everything(store)
    # AND once merged no row names an old trace or flow any more, and every row of the new ones is still there
    assert _rows_pointing(store, old_traces, old_flows) == dict.fromkeys(_POINTING, 0)
    assert _rows_pointing(store, new_traces, new_flows) == kept
    depth = store.client.query(f"SELECT Polled FROM {store.client.database}.hopscope_queue_depth FINAL")
    assert [row[0] for row in depth] == [now]
    # AND every read of the old flows answers "not found" or empty, none fails
    for flow_id in old_flows:
        assert store.resolve_flow(flow_id) is None
        assert store.flow_trace_ids(flow_id) == []
        assert store.flow_shared_traces(flow_id) == {}
    assert store.flow_summaries(sorted(old_flows)) == []
    assert store.fate_counts(sorted(old_flows)) == {}
    for trace in old_traces:
        assert store.flow_of_trace(bytes.fromhex(trace)) is None
        assert store.get_trace(bytes.fromhex(trace)) is None
    assert store.flow_of_message("sns-old-1") is None
    assert store.flow_of_message("m-old-2", "shipping") is None
    assert store.dead_letters_of([], [bytes.fromhex(t) for t in old_traces]) == []
    assert set(store.search_flow_ids(FlowFilter(), -1, 0)) == listed - old_standing
    assert store.search_flow_ids(FlowFilter(correlation_id="old-1"), -1, 0) == []
    assert store.search_flow_ids(FlowFilter(service="billing"), -1, 0) != []
    # AND the new flows read as before
    assert store.flow_summaries([s.flow_id for s in new_summaries]) == new_summaries


def test_an_expired_flow_id_is_never_handed_out_again(store: ClickHouseStore) -> None:
    # GIVEN flows that all expired: hopscope_flows is empty
    old = _world("old")
    store.write([aged(old.spans(), 2 * HOUR * NS)])
    old_flows = _flow_ids(store, _trace_ids(old))
    store.apply_retention(HOUR)
    _merge_everything(store)
    assert store.client.query(f"SELECT count() FROM {store.client.database}.hopscope_flows")[0][0] == 0
    # WHEN new spans are stitched
    later = _world("later")
    store.write([encode_spans(later.spans())])
    # THEN their flows get ids above every id handed out before: a link or a bookmark to an old id never
    # finds another flow
    later_flows = {store.flow_of_trace(bytes.fromhex(t)) for t in _trace_ids(later)}
    assert None not in later_flows
    assert min(f or 0 for f in later_flows) > max(old_flows)
    assert store.expire_before(time.time_ns(), 100) == 0  # the TTLs do it: nothing for the writer


def test_a_partly_expired_flow_keeps_what_is_left(store: ClickHouseStore) -> None:
    # GIVEN a flow whose API trace ended two hours ago and whose consumers ran now (stitched later)
    services = Services()
    order_chain(services, "half")
    spans = services.spans()
    api = [s for s in spans if s.resource.attributes["service.name"] == "orders-api"]
    rest = [s for s in spans if s.resource.attributes["service.name"] != "orders-api"]
    store.write([aged(api, 2 * HOUR * NS)])
    store.write([encode_spans(rest)])
    api_trace = api[0].context.trace_id.to_bytes(16, "big")
    flow_id = store.flow_of_trace(api_trace)
    assert flow_id is not None and len(store.flow_trace_ids(flow_id)) == 3
    # WHEN an hour's retention runs and the tables merge
    store.apply_retention(HOUR)
    store.delete_spans_started_before(time.time_ns() - HOUR * NS, 0)
    _merge_everything(store)
    # THEN the flow is still there with the traces of now; the API trace's rows and spans are gone
    assert store.resolve_flow(flow_id) == flow_id
    remaining = store.flow_trace_ids(flow_id)
    assert len(remaining) == 2 and api_trace not in remaining
    assert store.flow_of_trace(api_trace) is None
    traces = store.get_traces(remaining)
    assert {s.name for r in traces.resource_spans for sc in r.scope_spans for s in sc.spans} == {
        s.name for s in rest
    }
    (summary,) = store.flow_summaries([flow_id])
    assert summary.flow_id == flow_id
    assert flow_id in store.search_flow_ids(FlowFilter(), -1, 0)


def test_a_trace_whose_flow_row_went_first_starts_a_new_flow(store: ClickHouseStore) -> None:
    # GIVEN a stitched trace whose flow row expired while its trace row waits for its own table's merge
    services = Services()
    order_chain(services, "late")
    spans = services.spans()
    first, second = spans[:1], spans[1:]
    store.write([encode_spans(first)])
    trace = first[0].context.trace_id.to_bytes(16, "big")
    gone = store.flow_of_trace(trace)
    assert gone is not None
    store.client.command(
        f"DELETE FROM {store.client.database}.hopscope_flows WHERE FlowId = {{f:UInt64}}", {"f": gone}
    )
    # WHEN more spans of that trace (and of the traces it links to) arrive
    store.write([encode_spans(second)])
    # THEN they are stitched into a new flow, not lost, and no read fails on the old id
    flow_id = store.flow_of_trace(trace)
    assert flow_id is not None and flow_id != gone
    assert store.flow_summaries([flow_id])[0].span_count == len(second)
    assert store.resolve_flow(gone) is None
    assert store.flow_trace_ids(gone) == []
    assert store.skipped_spans.by_reason == {}


def test_tables_made_before_retention_get_their_time_columns(store: ClickHouseStore) -> None:
    # GIVEN a database as the previous version left it: no time columns, the old view, a stitched flow
    store.write([encode_spans(_world("before").spans())])
    db = store.client.database
    store.client.command(f"DROP VIEW {db}.hopscope_flow_traces_mv")
    store.client.command(
        f"CREATE MATERIALIZED VIEW {db}.hopscope_flow_traces_mv TO {db}.hopscope_flow_traces "
        f"AS SELECT FlowId, TraceId, SpanCount, Version FROM {db}.hopscope_trace_flows"
    )
    for table in clickhouse_expiry.FLOW_END_TABLES:
        store.client.command(f"ALTER TABLE {db}.{table} DROP COLUMN FlowEndUnixNano")
    store.client.command(f"ALTER TABLE {db}.hopscope_stitched_spans DROP COLUMN StartUnixNano")
    # WHEN this version opens it with a retention of an hour
    opened_at = time.time_ns()
    reopened = ClickHouseStore(store.client)
    reopened.apply_retention(HOUR)
    # THEN the rows written before count from the upgrade: an hour from now, not at once
    _merge_everything(reopened)
    for table in clickhouse_expiry.FLOW_END_TABLES:
        (count, earliest) = store.client.query(f"SELECT count(), min(FlowEndUnixNano) FROM {db}.{table}")[0]
        assert count > 0 and int(earliest) >= opened_at, table
    # AND the view writes the new column: a trace stitched now counts from its flow's end
    more = Services()
    order_chain(more, "after")
    reopened.write([encode_spans(more.spans())])
    trace = more.spans()[0].context.trace_id
    ((end,),) = store.client.query(
        f"SELECT FlowEndUnixNano FROM {db}.hopscope_flow_traces WHERE TraceId = {{t:String}}",
        {"t": f"{trace:032x}"},
    )
    flow_id = reopened.flow_of_trace(trace.to_bytes(16, "big"))
    assert flow_id is not None
    assert int(end) == reopened.flow_summaries([flow_id])[0].end_unix_nano != opened_at


def test_flows_past_their_ttl_leave_the_lists_before_the_merge(store: ClickHouseStore) -> None:
    # GIVEN a collector keeping an hour, and a flow stitched now from spans that ended two hours ago, its
    # rows still stored (ClickHouse drops expired rows only when it merges)
    store.apply_retention(HOUR)
    for table in clickhouse_expiry.ttl_clauses(HOUR):  # a server merges in its own time: not yet
        store.client.command(f"SYSTEM STOP TTL MERGES {store.client.database}.{table}")
    old, new = _world("old"), _world("new")
    store.write([aged(old.spans(), 2 * HOUR * NS)])
    store.write([encode_spans(new.spans())])
    old_flows = _flow_ids(store, _trace_ids(old))
    assert old_flows and _rows_pointing(store, _trace_ids(old), old_flows)["hopscope_flows"]
    new_standing = {store.flow_of_trace(bytes.fromhex(t)) for t in _trace_ids(new)}
    # THEN neither the writer nor a reader lists or summarizes it; the flows of now are there
    reader = ClickHouseStore(store.client, read_only=True)
    for opened in (store, reader):
        listed = set(opened.search_flow_ids(FlowFilter(), -1, 0))
        assert listed and listed <= new_standing
        assert opened.flow_summaries(sorted(old_flows)) == []
        assert opened.search_flow_ids(FlowFilter(correlation_id="old-1"), -1, 0) == []
    # AND without retention they come back (nothing was deleted)
    store.apply_retention(None)
    assert store.flow_summaries(sorted(old_flows)) != []


def test_the_api_answers_for_expired_and_partly_expired_flows(store: ClickHouseStore) -> None:
    # GIVEN flows of two hours ago, of now, and one half of each, in a ClickHouse database
    old, new = _world("old"), _world("new")
    store.write([aged(old.spans(), 2 * HOUR * NS)])
    store.write([encode_spans(new.spans())])
    half = Services()
    order_chain(half, "half")
    api_spans = [s for s in half.spans() if s.resource.attributes["service.name"] == "orders-api"]
    store.write([aged(api_spans, 2 * HOUR * NS)])
    store.write([encode_spans([s for s in half.spans() if s not in api_spans])])
    old_trace = min(_trace_ids(old))
    old_flow = store.flow_of_trace(bytes.fromhex(old_trace))
    half_flow = store.flow_of_trace(half.spans()[-1].context.trace_id.to_bytes(16, "big"))
    assert old_flow is not None and half_flow is not None
    # WHEN a collector with --retention 1h serves the query API over it
    settings = CollectorSettings(store_url="chdb://", receiver=False, retention_seconds=HOUR)
    with serve_in_thread(settings, store) as url, httpx.Client(base_url=url, timeout=30) as http:  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        # the writer deletes the old spans; the collector records its retention, which sets the TTLs
        while http.get(f"/api/traces/{old_trace}").status_code != 404 or not _ttl_tables(store, HOUR):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # THEN the expired flow is not listed and answers 404, its OTLP export too
        listed = {flow["flow_id"] for flow in http.get("/api/flows", params={"limit": 1000}).json()["flows"]}
        assert half_flow in listed and old_flow not in listed
        assert http.get(f"/api/flows/{old_flow}").status_code == 404
        assert http.get(f"/api/flows/{old_flow}/otlp").status_code == 404
        # AND the flow half expired answers with the spans that are left
        detail = http.get(f"/api/flows/{half_flow}")
        assert detail.status_code == 200
        assert {span["name"] for span in detail.json()["spans"]} == {
            s.name for s in half.spans() if s not in api_spans
        }
        assert http.get(f"/api/flows/{half_flow}/otlp").status_code == 200
