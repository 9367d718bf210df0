"""Everything expires together on SQLite (issue 16, item 2): flows whose last span is older than the cutoff go
with every row that points to them, rollups of old minutes, orphan resources and scopes; flows with recent
spans, and the flows that share a batch with them, stay whole.

Spans come from the real SDK (tests/helpers/flow_chains.py); the "old" ones are shifted two hours back before
they are stored, the cutoff is one hour ago, and the store is a real SQLite file, read back with sqlite3.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.aged_spans import HOUR_NS, OLD_SHIFT_NS, first_start, shifted, trace_of
from tests.helpers.flow_chains import Services, consume_batch, order_chain, publish_order


def expire_all(store: SQLiteStore, cutoff: int) -> list[int]:
    """What the writer's retention does, chunk after chunk, until caught up; returns the expiry's steps."""
    while store.delete_spans_started_before(cutoff, 1_000):
        pass
    steps: list[int] = []
    while (done := store.expire_before(cutoff, 500)) and len(steps) < 100:
        steps.append(done)
    assert len(steps) < 100, "the expiry never caught up"
    return steps


def rows(db: Path, query: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query, list(params)).fetchall()
    finally:
        conn.close()


def pointing_rows(db: Path, flow_ids: list[int], trace_ids: list[bytes]) -> dict[str, int]:
    """Rows of every table that point to these flows or traces."""
    f = ",".join("?" * len(flow_ids))
    t = ",".join("?" * len(trace_ids))
    queries: dict[str, tuple[str, list[Any]]] = {
        "flows": (f"SELECT count(*) FROM flows WHERE flow_id IN ({f}) OR merged_into IN ({f})", flow_ids * 2),
        "trace_flows": (f"SELECT count(*) FROM trace_flows WHERE trace_id IN ({t})", trace_ids),
        "flow_operations": (f"SELECT count(*) FROM flow_operations WHERE flow_id IN ({f})", flow_ids),
        "flow_correlations": (f"SELECT count(*) FROM flow_correlations WHERE flow_id IN ({f})", flow_ids),
        "message_keys": (f"SELECT count(*) FROM message_keys WHERE trace_id IN ({t})", trace_ids),
        "shared_links": (
            f"SELECT count(*) FROM shared_links WHERE trace_id IN ({t}) OR linked_trace_id IN ({t})",
            trace_ids * 2,
        ),
        "pending_hops": (f"SELECT count(*) FROM pending_hops WHERE trace_id IN ({t})", trace_ids),
        "spans": (f"SELECT count(*) FROM spans WHERE trace_id IN ({t})", trace_ids),
    }
    return {table: rows(db, query, params)[0][0] for table, (query, params) in queries.items()}


def write_merging(store: SQLiteStore, spans: list[ReadableSpan], *, old: bool) -> None:
    """One order chain without links, trace by trace: API, then shipping, then billing, which joins the
    two flows by message ids, so one flow is merged into the other."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    order = sorted(by_trace.values(), key=lambda trace: ["orders-api", "shipping", "billing"].index(
        str(trace[0].resource.attributes["service.name"])))  # fmt: skip
    for trace in order:
        store.write([shifted(trace, old=old)])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "expiry.db"


def test_an_old_flow_goes_with_every_row_that_points_to_it_and_a_recent_one_stays_whole(db: Path) -> None:
    # GIVEN an order chain from two hours ago, stitched trace by trace (one flow merged into another), with
    # its own resource and scope, and a recent order chain
    store = SQLiteStore(db)
    old, new = Services(), Services()
    order_chain(old, "o-old", links=False)
    write_merging(store, old.spans(), old=True)
    order_chain(new, "o-new", fail=True)
    store.write([shifted(new.spans(), old=False)])
    old_traces = sorted({trace_of(s) for s in old.spans()})
    new_traces = sorted({trace_of(s) for s in new.spans()})
    old_flow = store.flow_of_trace(old_traces[0])
    new_flow = store.flow_of_trace(new_traces[0])
    assert old_flow is not None and new_flow is not None and old_flow != new_flow
    merged = [row[0] for row in rows(db, "SELECT flow_id FROM flows WHERE merged_into = ?", [old_flow])]
    assert merged, "the old chain was meant to leave a merged flow"
    before_old = pointing_rows(db, [old_flow, *merged], old_traces)
    assert all(before_old[t] for t in ("flows", "trace_flows", "flow_operations", "flow_correlations"))
    assert before_old["message_keys"] and before_old["spans"] == 5
    before_new = pointing_rows(db, [new_flow], new_traces)
    layer = QueryLayer(store)
    new_detail = layer.flow(new_flow)
    assert new_detail is not None
    assert len(rows(db, "SELECT * FROM resources")) == 6 and len(rows(db, "SELECT * FROM scopes")) == 2
    # WHEN retention runs with a cutoff one hour ago
    steps = expire_all(store, time.time_ns() - HOUR_NS)
    # THEN it took bounded steps, and nothing points to the old flow, its merged flow or its traces
    assert steps
    assert pointing_rows(db, [old_flow, *merged], old_traces) == dict.fromkeys(before_old, 0)
    assert store.resolve_flow(old_flow) is None and all(store.resolve_flow(m) is None for m in merged)
    # ... the old resources and scope are gone, the recent ones kept
    services = sorted(row[0] for row in rows(db, "SELECT service_name FROM resources"))
    assert services == ["billing", "orders-api", "shipping"]
    assert rows(db, "SELECT name FROM scopes") == [("hopscope.tests",)]
    # ... and the recent flow is whole: every row, its detail and its place in the list
    assert pointing_rows(db, [new_flow], new_traces) == before_new
    assert layer.flow(new_flow) == new_detail
    assert [s.flow_id for s in layer.search_flows(FlowFilter())] == [new_flow]
    # AND spans of the old resource stored again afterwards are read back whole (no stale resource id)
    again = Services()
    order_chain(again, "o-again")
    request = shifted(again.spans(), old=True)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.start_time_unix_nano += OLD_SHIFT_NS
                span.end_time_unix_nano += OLD_SHIFT_NS
    store.write([request])
    again_trace = store.get_trace(trace_of(again.spans()[0]))
    assert again_trace is not None
    assert again_trace.resource_spans[0].resource.attributes[-1].value.string_value == "old"
    store.close()


def test_rollups_of_old_minutes_go_and_recent_ones_stay(db: Path) -> None:
    # GIVEN RED and hop rollups from two hours ago and from now
    store = SQLiteStore(db)
    old, new = Services(), Services()
    order_chain(old, "o-old")
    order_chain(new, "o-new")
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    cutoff = time.time_ns() - HOUR_NS
    for table in ("red_rollups", "hop_rollups"):
        buckets = [row[0] for row in rows(db, f"SELECT bucket_start_unix_nano FROM {table}")]
        assert any(b < cutoff for b in buckets) and any(b > cutoff for b in buckets), table
    kept = {
        table: rows(db, f"SELECT * FROM {table} WHERE bucket_start_unix_nano > ?", [cutoff])
        for table in ("red_rollups", "hop_rollups")
    }
    # WHEN retention runs
    expire_all(store, cutoff)
    # THEN only the recent minutes' rows are left, unchanged
    for table, recent in kept.items():
        assert rows(db, f"SELECT * FROM {table}") == recent
    store.close()


def test_a_minute_that_ends_after_the_cutoff_is_kept(db: Path) -> None:
    # GIVEN rollups of one minute, and a cutoff inside that minute
    store = SQLiteStore(db)
    services = Services()
    order_chain(services, "o-1")
    store.write([shifted(services.spans(), old=True)])
    (bucket,) = {row[0] for row in rows(db, "SELECT bucket_start_unix_nano FROM red_rollups")}
    # WHEN retention runs with the cutoff 1 ns before the minute ends, then at its end
    expire_all(store, bucket + 60 * 10**9 - 1)
    assert rows(db, "SELECT count(*) FROM red_rollups")[0][0] > 0
    expire_all(store, bucket + 60 * 10**9)
    # THEN the minute's rows go only once all of it is older than the cutoff
    assert rows(db, "SELECT count(*) FROM red_rollups")[0][0] == 0
    store.close()


def test_a_flow_sharing_a_recent_batch_stays_and_shows_what_remains(db: Path) -> None:
    # GIVEN two orders from two hours ago processed now in one batch, and an old order processed long ago
    store = SQLiteStore(db)
    old, new = Services(), Services()
    one, two, three = (publish_order(old, order) for order in ("o1", "o2", "o3"))
    consume_batch(old, [three], orders=["o3"])
    batch = consume_batch(new, [one, two], orders=["o1", "o2"])
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    found = [store.flow_of_trace(trace_of(span)) for span in (one, two, three, batch)]
    flows = [flow_id for flow_id in found if flow_id is not None]
    assert len(flows) == 4
    batch_flow = flows.pop()
    # WHEN retention runs with a cutoff one hour ago
    expire_all(store, time.time_ns() - HOUR_NS)
    # THEN the order processed long ago is gone, the two orders of the recent batch and the batch stay
    assert store.resolve_flow(flows[2]) is None
    assert [store.resolve_flow(f) for f in (*flows[:2], batch_flow)] == [*flows[:2], batch_flow]
    layer = QueryLayer(store)
    assert sorted(s.flow_id for s in layer.search_flows(FlowFilter())) == sorted(flows[:2])
    # ... and each order's flow is partly expired: its own two spans are gone, the batch's two remain
    batch_start = first_start(new.spans(), batch)
    for flow_id in flows[:2]:
        detail = layer.flow(flow_id)
        assert detail is not None
        assert (detail.summary.span_count, len(detail.spans)) == (4, 2)
        assert detail.expired_span_count == 2
        assert detail.retained_since_unix_nano == batch_start
        assert {span["trace_id"] for span in detail.spans} == {trace_of(batch).hex()}
    store.close()


def test_when_every_flow_expires_ids_are_not_handed_out_again(db: Path) -> None:
    # GIVEN two old order chains, the newest flow among them
    store = SQLiteStore(db)
    old = Services()
    order_chain(old, "o-1")
    order_chain(old, "o-2")
    store.write([shifted(old.spans(), old=True)])
    (newest,) = rows(db, "SELECT max(flow_id) FROM flows")[0]
    # WHEN every flow expires
    expire_all(store, time.time_ns() - HOUR_NS)
    # THEN none is listed or resolves to a flow, and the next flow gets a new id
    layer = QueryLayer(store)
    assert layer.search_flows(FlowFilter()) == [] and layer.flow(newest) is None
    assert layer.flow_summary(newest) is None and layer.flow_otlp_json(newest) is None
    new = Services()
    order_chain(new, "o-3")
    store.write([shifted(new.spans(), old=False)])
    flow_id = store.flow_of_trace(trace_of(new.spans()[0]))
    assert flow_id is not None and flow_id > newest
    # AND once a newer id exists, the kept empty row goes too: one row left, the new flow's
    expire_all(store, time.time_ns() - HOUR_NS)
    assert rows(db, "SELECT flow_id FROM flows WHERE merged_into IS NULL") == [(flow_id,)]
    store.close()


def test_a_flow_whose_spans_all_started_before_the_cutoff_goes_though_one_ended_after(db: Path) -> None:
    # GIVEN an order chain whose spans started two hours ago, one of them (the API's) ending only now
    store = SQLiteStore(db)
    long, new = Services(), Services()
    order_chain(long, "o-long")
    order_chain(new, "o-new")
    request = shifted(long.spans(), old=True)
    ends = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    max(
        ends, key=lambda span: span.end_time_unix_nano - span.start_time_unix_nano
    ).end_time_unix_nano = time.time_ns()
    store.write([request, shifted(new.spans(), old=False)])
    long_flow = store.flow_of_trace(trace_of(long.spans()[0]))
    assert long_flow is not None
    summary = QueryLayer(store).flow_summary(long_flow)
    cutoff = time.time_ns() - HOUR_NS
    assert summary is not None and summary.end_unix_nano > cutoff
    # WHEN retention runs: every span of the flow started before the cutoff, so all of them go
    expire_all(store, cutoff)
    # THEN the flow goes too, though its last span ended after the cutoff
    assert store.resolve_flow(long_flow) is None
    assert [s.correlation_ids for s in QueryLayer(store).search_flows(FlowFilter())] == [["o-new"]]
    store.close()


def test_a_flow_whose_spans_are_gone_is_not_shown_on_either_store(new_store: Callable[..., Any]) -> None:
    # GIVEN an old order chain and a recent one, stitched, on SQLite and on ClickHouse (chdb)
    store = new_store()
    old, new = Services(), Services()
    order_chain(old, "o-old")
    order_chain(new, "o-new")
    store.write([shifted(old.spans(), old=True), shifted(new.spans(), old=False)])
    old_flow = store.flow_of_trace(trace_of(old.spans()[0]))
    new_flow = store.flow_of_trace(trace_of(new.spans()[0]))
    layer = QueryLayer(store)
    assert old_flow is not None and new_flow is not None and layer.flow(old_flow) is not None
    # WHEN only the spans are deleted (the flow rows are left, as before their own expiry or TTL) by a
    # collector that keeps them an hour (and recorded so in the store, as it does at start)
    store.record_retention(3_600)
    store.delete_spans_started_before(time.time_ns() - HOUR_NS, 1_000)
    # THEN the old flow has no detail and no OTLP export (a 404, not "spans: []" and "{}"), the recent one
    # is whole and says so
    assert layer.flow(old_flow) is None and layer.flow_otlp_json(old_flow) is None
    detail = layer.flow(new_flow)
    assert detail is not None and len(detail.spans) == detail.summary.span_count == 5
    assert (detail.expired_span_count, detail.retained_since_unix_nano) == (0, None)


def twelve_old_chains(db: Path) -> SQLiteStore:
    """A store with 12 order chains of two hours ago (12 flows), their rollups with them."""
    store = SQLiteStore(db)
    old = Services()
    for order in range(12):
        order_chain(old, f"o-{order}")
    store.write([shifted(old.spans(), old=True)])
    return store


def test_each_step_deletes_at_most_its_limit_of_flows(db: Path) -> None:
    # GIVEN 12 old order chains
    store = twelve_old_chains(db)
    assert len(rows(db, "SELECT flow_id FROM flows WHERE merged_into IS NULL")) == 12
    cutoff = time.time_ns() - HOUR_NS
    while store.delete_spans_started_before(cutoff, 1_000):
        pass
    # WHEN the expiry runs with a limit of 5 flows a step
    left = []
    while store.expire_before(cutoff, 5):
        left.append(rows(db, "SELECT count(*) FROM flows WHERE span_count > 0")[0][0])
    # THEN the flows went 5, 5, then 2 at a time (the steps after are the rollups' and the sweeps')
    assert left[:3] == [7, 2, 0]
    store.close()


def test_rollups_go_while_flows_still_wait_their_turn(db: Path) -> None:
    # GIVEN 12 old order chains, with their rollups of two hours ago (a stitcher far behind keeps making
    # flows that are already past the retention: the flows' step always finds more)
    store = twelve_old_chains(db)
    cutoff = time.time_ns() - HOUR_NS
    old_rollups = "SELECT count(*) FROM {} WHERE bucket_start_unix_nano < ?"
    before = {t: rows(db, old_rollups.format(t), [cutoff])[0][0] for t in ("red_rollups", "hop_rollups")}
    assert all(before.values()), before
    # WHEN one step runs, with room for 2 flows
    store.expire_before(cutoff, 2)
    # THEN it took 2 flows, and old rollups too (2 rows of each table at most), not only the flows
    assert rows(db, "SELECT count(*) FROM flows WHERE span_count > 0")[0][0] == 10
    for table, count in before.items():
        after = rows(db, old_rollups.format(table), [cutoff])[0][0]
        assert count - 2 <= after < count, (table, count, after)
    store.close()
