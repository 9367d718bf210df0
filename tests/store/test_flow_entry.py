"""A flow's entry (stitch/facts.py Entry) on both stores: an origin wins, else the earliest span, any order.

Spans are made by the real OpenTelemetry SDK; an API "called from outside" starts its server span from a W3C
``traceparent`` extracted as the API would extract it from its request headers.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite import schema as sqlite_schema
from tests.helpers.flow_chains import Services, SpanKind, flows_by_trace, post

MS = 1_000_000
T0 = 1_700_000_000_000 * MS
OUTSIDE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OUTSIDE_SPAN = "00f067aa0ba902b7"


def outside_context() -> context.Context:
    """The context an API extracts from a request sent by a caller whose spans never reach hopscope."""
    headers = {"traceparent": f"00-{OUTSIDE_TRACE}-{OUTSIDE_SPAN}-01"}
    return TraceContextTextMapPropagator().extract(headers)


def span(
    tracer: trace.Tracer,
    name: str,
    start_ms: int,
    *,
    parent: context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[trace.Link] = (),
) -> trace.Span:
    """A span from ``start_ms`` to ``start_ms + 5`` (ms after T0); a new trace when ``parent`` is empty."""
    started = tracer.start_span(name, context=parent, kind=kind, links=links, start_time=T0 + start_ms * MS)
    started.end(end_time=T0 + (start_ms + 5) * MS)
    return started


def external_call_chain(services: Services) -> None:
    """orders-api, called with an outside traceparent, calls inventory and publishes; billing consumes."""
    api, inventory, billing = (services.tracer(name) for name in ("orders-api", "inventory", "billing"))
    server = span(api, "POST /orders", 0, parent=outside_context(), kind=SpanKind.SERVER)
    in_server = trace.set_span_in_context(server)
    client = span(api, "GET /stock", 1, parent=in_server, kind=SpanKind.CLIENT)
    span(inventory, "GET /stock", 2, parent=trace.set_span_in_context(client), kind=SpanKind.SERVER)
    publish = span(api, "order-events publish", 3, parent=in_server, kind=SpanKind.PRODUCER)
    # The consumer starts a trace of its own, linked to the producer: a root, but not an origin.
    span(
        billing,
        "order-events process",
        10,
        parent=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(publish.get_span_context())],
    )


def entries(store: Any, spans: Sequence[ReadableSpan]) -> list[tuple[str | None, str | None, bool]]:
    """(entry service, entry operation, called from outside) of every flow of ``spans``."""
    layer = QueryLayer(store)
    found = []
    for flow_id in flows_by_trace(store, spans):
        detail = layer.flow(flow_id)
        assert detail is not None
        summary = detail.summary
        found.append((summary.entry_service, summary.entry_operation, detail.entry_called_from_outside))
    return sorted(found, key=repr)


ORDERS = ["in order", "reversed", "consumer first", *(f"shuffled {seed}" for seed in range(3))]


def arrange(spans: list[ReadableSpan], order: str) -> list[ReadableSpan]:
    if order == "reversed":
        return spans[::-1]
    if order == "consumer first":
        return sorted(spans, key=lambda s: s.kind != SpanKind.CONSUMER)
    if order.startswith("shuffled"):
        shuffled = list(spans)
        random.Random(int(order.split()[1])).shuffle(shuffled)
        return shuffled
    return spans


@pytest.mark.parametrize("order", ORDERS)
def test_a_flow_called_with_an_outside_traceparent_has_its_first_span_as_entry(
    new_store: Callable[..., Any], order: str
) -> None:
    # GIVEN an API called with a traceparent from outside (its parent span never arrives), a consumer linked
    services = Services()
    external_call_chain(services)
    spans = services.spans()
    assert all(s.parent is not None for s in spans if s.kind != SpanKind.CONSUMER)
    # WHEN its spans arrive in some order, one span per request
    store = new_store()
    for one in arrange(spans, order):
        post(store, [one])
    # THEN the flow's entry is the API's server span, and the detail says its caller was outside
    assert entries(store, spans) == [("orders-api", "POST /orders", True)]


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_an_origin_wins_over_an_earlier_span_with_a_parent_even_when_it_arrives_last(
    new_store: Callable[..., Any], order: str
) -> None:
    # GIVEN a trace with a root, and a child on a host whose clock is behind (it "starts" 20 ms earlier)
    services = Services()
    api, inventory = services.tracer("orders-api"), services.tracer("inventory")
    root = span(api, "POST /orders", 20, parent=context.Context(), kind=SpanKind.SERVER)
    client = span(api, "GET /stock", 21, parent=trace.set_span_in_context(root), kind=SpanKind.CLIENT)
    span(inventory, "GET /stock", 0, parent=trace.set_span_in_context(client), kind=SpanKind.SERVER)
    spans = services.spans()
    store = new_store()
    # WHEN the children arrive first: the earliest span with a parent is the entry for now
    children = [s for s in spans if s.parent is not None]
    post(store, children if order == "in order" else children[::-1])
    assert entries(store, spans) == [("inventory", "GET /stock", False)]
    # AND then the root
    post(store, [s for s in spans if s.parent is None])
    # THEN the root is the entry, and its caller was not outside
    assert entries(store, spans) == [("orders-api", "POST /orders", False)]


def test_a_consumer_root_does_not_outrank_the_outside_called_api_that_sent_its_message(
    new_store: Callable[..., Any],
) -> None:
    # GIVEN a flow whose consumer trace arrives in one request and the producer's API in a later one
    services = Services()
    external_call_chain(services)
    spans = services.spans()
    store = new_store()
    for kinds in ({SpanKind.CONSUMER}, {SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER}):
        post(store, [s for s in spans if s.kind in kinds])
    # THEN the flow's entry is the API, not the consumer span (which was the only candidate at first)
    assert entries(store, spans) == [("orders-api", "POST /orders", True)]


def test_every_arrival_order_of_one_span_per_request_gives_the_same_entry(
    new_store: Callable[..., Any],
) -> None:
    # GIVEN the API's own trace: server (parent outside), client, and the server it calls
    services = Services()
    api, inventory = services.tracer("orders-api"), services.tracer("inventory")
    server = span(api, "POST /orders", 0, parent=outside_context(), kind=SpanKind.SERVER)
    client = span(api, "GET /stock", 1, parent=trace.set_span_in_context(server), kind=SpanKind.CLIENT)
    span(inventory, "GET /stock", 2, parent=trace.set_span_in_context(client), kind=SpanKind.SERVER)
    spans = services.spans()
    # WHEN they arrive in each of the six orders, THEN the entry is the same
    for permutation in itertools.permutations(spans):
        store = new_store()
        for one in permutation:
            post(store, [one])
        assert entries(store, spans) == [("orders-api", "POST /orders", True)]


# -- an existing database keeps its entries ----------------------------------------------------------------


def _version_5_database(path: Path, trace_id: bytes) -> None:
    """A database as schema version 5 left it (its DDL applied by hand): two flows, one with an entry."""
    conn = sqlite3.connect(path)
    for script in (sqlite_schema.SCHEMA, *(sqlite_schema.MIGRATIONS[v] for v in range(2, 6))):
        for statement in sqlite_schema._statements(script):
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '5')")
    conn.execute(
        "INSERT INTO flows (flow_id, start_unix_nano, end_unix_nano, span_count, trace_count, error_count, "
        "max_receive_count, entry_start_unix_nano, entry_service, entry_operation) VALUES "
        "(1, ?, ?, 1, 1, 0, 0, ?, 'orders-api', 'POST /orders'), "
        "(2, ?, ?, 1, 1, 0, 0, ?, NULL, NULL)",
        (T0 + 50 * MS, T0 + 60 * MS, T0 + 50 * MS, T0, T0 + 5 * MS, 2**63 - 1),
    )
    conn.execute(
        "INSERT INTO trace_flows (trace_id, flow_id, span_count) VALUES (?, 1, 1), (?, 2, 1)",
        (trace_id, b"\x02" * 16),
    )
    conn.commit()
    conn.close()


def test_a_version_5_database_opens_and_keeps_its_entries(tmp_path: Path) -> None:
    from hopscope.collector.store.sqlite.store import SQLiteStore

    # GIVEN a database written by the previous schema, whose flow 1 has a root as entry
    services = Services()
    api = services.tracer("orders-api")
    late = span(api, "GET /late", 0, parent=outside_context(), kind=SpanKind.SERVER)
    trace_id = late.get_span_context().trace_id.to_bytes(16, "big")
    path = tmp_path / "old.db"
    _version_5_database(path, trace_id)
    # WHEN the store opens it
    store = SQLiteStore(path)
    try:
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(sqlite_schema.SCHEMA_VERSION),
        )
        ranks = conn.execute("SELECT flow_id, entry_rank FROM flows ORDER BY flow_id").fetchall()
        conn.close()
        # THEN the stored entry is an origin, the flow without one has none yet
        assert ranks == [(1, 0), (2, None)]
        layer = QueryLayer(store)
        summary = layer.flow_summary(1)
        assert summary is not None
        assert (summary.entry_service, summary.entry_operation) == ("orders-api", "POST /orders")
        # AND an earlier span of flow 1 with a parent from outside does not displace the origin
        post(store, services.spans())
        summary = layer.flow_summary(1)
        assert summary is not None
        assert (summary.entry_service, summary.entry_operation, summary.span_count) == (
            "orders-api",
            "POST /orders",
            2,
        )
    finally:
        store.close()


# The flows table as ClickHouse stores made it before the entry had a rank.
_CLICKHOUSE_FLOWS_BEFORE_RANK = """
CREATE TABLE {db}.hopscope_flows (
    FlowId UInt64, MergedInto UInt64, StartUnixNano Int64, EndUnixNano Int64, SpanCount UInt64,
    TraceCount UInt64, ErrorCount UInt64, MaxReceiveCount Int64, EntryStartUnixNano Int64,
    EntryService Nullable(String), EntryOperation Nullable(String), OperationServices Array(String),
    OperationNames Array(String), CorrelationIds Array(String), Version UInt64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY FlowId
"""


def test_a_clickhouse_flows_table_without_the_rank_gets_it_and_keeps_its_entries(chdb_url: str) -> None:
    pytest.importorskip("chdb")
    from hopscope.collector.store.clickhouse import flows as clickhouse_flows
    from hopscope.collector.store.clickhouse.store import ClickHouseStore
    from hopscope.collector.store.url import open_clickhouse_client, open_store, parse_store_url

    # GIVEN a database whose flows table has no EntryRank (nor SharedOnly), and a flow with a root as entry
    services = Services()
    late = span(services.tracer("orders-api"), "GET /late", 0, parent=outside_context(), kind=SpanKind.SERVER)
    trace_hex = format(late.get_span_context().trace_id, "032x")
    client = open_clickhouse_client(parse_store_url(chdb_url))
    db = client.database
    client.command(_CLICKHOUSE_FLOWS_BEFORE_RANK.format(db=db))
    columns = [c for c in clickhouse_flows._FLOW_COLUMNS if c not in {"EntryRank", "SharedOnly"}]
    start, end = T0 + 50 * MS, T0 + 60 * MS
    entry = (start, "orders-api", "POST /orders")
    row: tuple[object, ...] = (1, 0, start, end, 1, 1, 0, 0, *entry, ["orders-api"], ["POST /orders"], [], 1)
    client.insert(f"{db}.hopscope_flows", columns, [row])
    client.close()
    # WHEN a store opens it (and stitches its trace's first span, registered by hand beside it)
    store = open_store(chdb_url)
    assert isinstance(store, ClickHouseStore)
    try:
        store.client.insert(
            f"{db}.hopscope_trace_flows",
            ("TraceId", "FlowId", "SpanCount", "Version"),
            [(trace_hex, 1, 1, 1)],
        )
        layer = QueryLayer(store)
        summary = layer.flow_summary(1)
        assert summary is not None
        assert (summary.entry_service, summary.entry_operation) == ("orders-api", "POST /orders")
        # THEN an earlier span of the flow with a parent from outside does not displace its origin
        post(store, services.spans())
        summary = layer.flow_summary(1)
        assert summary is not None
        assert (summary.entry_service, summary.entry_operation, summary.span_count) == (
            "orders-api",
            "POST /orders",
            2,
        )
    finally:
        store.close()
