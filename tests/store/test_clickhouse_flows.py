"""Flow stitching on ClickHouse (chdb) answers exactly as on SQLite, whatever the arrival order.

The stitchers are driven with the same :class:`TraceFacts` (what the collector makes of spans): SQLite's
inside a transaction of a real SQLite file, ClickHouse's on a fresh chdb database. Every reader is then
asked the same questions on both, and must give the same answers, ids included.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hopscope.collector.model.flows import FlowFilter, FlowSort
from hopscope.collector.stitch.facts import CONTINUED, ORIGIN, TraceFacts
from hopscope.collector.store.clickhouse import flows as clickhouse_flows
from hopscope.collector.store.clickhouse import schema as clickhouse_schema
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.sqlite.flows import FlowStitcher
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_clickhouse_client, parse_store_url

pytest.importorskip("chdb")

MS = 1_000_000
BASE_NS = 1_700_000_000_000 * MS
SERVICES = ("orders-api", "billing", "shipping", "mailer")
OPERATIONS = ("POST /orders", "process", "publish", "send", "charge")
DESTINATIONS = ("order-events", "shipping", "billing-dlq")


@pytest.fixture
def client(chdb_url: str) -> Iterator[ClickHouseClient]:
    client = open_clickhouse_client(parse_store_url(chdb_url))
    clickhouse_schema.create(client)
    yield client
    client.close()


class Stores:
    """The same flows stitched twice: on a real SQLite file and on ClickHouse."""

    def __init__(self, tmp_path: Path, client: ClickHouseClient) -> None:
        self.sqlite = SQLiteStore(tmp_path / "x.db")
        self.client = client

    def apply(self, facts: Sequence[TraceFacts]) -> None:
        # combine() folds later facts of a trace into its first: each stitcher gets its own copies.
        conn = self.sqlite._writer_conn()
        with self.sqlite._transaction(conn):
            FlowStitcher(conn).apply(copy.deepcopy(list(facts)))
        clickhouse_flows.ClickHouseFlowStitcher(self.client).apply(copy.deepcopy(list(facts)))

    def both(self, name: str, *args: Any) -> tuple[Any, Any]:
        """One reader's answer from each store."""
        return getattr(self.sqlite, name)(*args), getattr(clickhouse_flows, name)(self.client, *args)

    def close(self) -> None:
        self.sqlite.close()


@pytest.fixture
def stores(tmp_path: Path, client: ClickHouseClient) -> Iterator[Stores]:
    stores = Stores(tmp_path, client)
    yield stores
    stores.close()


def facts(
    trace_id: bytes,
    *,
    start_ms: int = 0,
    links: Sequence[bytes] = (),
    keys: Sequence[tuple[str, str]] = (),
    service: str = "svc",
) -> TraceFacts:
    start = BASE_NS + start_ms * MS
    return TraceFacts(
        trace_id,
        span_count=1,
        start_unix_nano=start,
        end_unix_nano=start + 5 * MS,
        entry=(ORIGIN, start, service, f"op-{trace_id.hex()}"),
        operations={(service, f"op-{trace_id.hex()}")},
        correlation_ids={f"c-{trace_id.hex()}"},
        linked_traces=set(links),
        message_keys=set(keys),
    )


def ids(*names: str) -> list[bytes]:
    return [name.encode().ljust(16, b"\0") for name in names]


# -- direct tests ------------------------------------------------------------------------------------------


def test_a_late_link_merges_two_flows_and_the_old_ids_still_resolve(stores: Stores) -> None:
    a, b, c, d, e = ids("a", "b", "c", "d", "e")
    client = stores.client
    # GIVEN three flows stitched apart: 1 = {a}, 2 = {b}, 3 = {c}
    for trace_id in (a, b, c):
        stores.apply([facts(trace_id, start_ms=ord(trace_id[:1]))])
    assert [clickhouse_flows.flow_of_trace(client, t) for t in (a, b, c)] == [1, 2, 3]
    # WHEN a late trace joins flow 3 into flow 2 (a link to c, b's message key), then another joins 2 into 1
    stores.apply([facts(b, start_ms=98, keys=[("m-1", "q")])])
    stores.apply([facts(d, start_ms=50, links=[c], keys=[("m-1", "q")])])
    assert clickhouse_flows.resolve_flow(client, 3) == 2
    stores.apply([facts(e, links=[a], keys=[("m-1", "q")])])
    # THEN every trace is in flow 1, the older id, and the merged ids resolve to it in one step
    assert {clickhouse_flows.flow_of_trace(client, t) for t in (a, b, c, d, e)} == {1}
    assert [clickhouse_flows.resolve_flow(client, f) for f in (1, 2, 3, 4)] == [1, 1, 1, None]
    merged_into = client.query(
        f"SELECT FlowId, MergedInto FROM {client.database}.hopscope_flows FINAL ORDER BY FlowId"
    )
    assert merged_into == [[1, 0], [2, 1], [3, 1]]
    assert clickhouse_flows.flow_trace_ids(client, 1) == sorted([a, b, c, d, e])
    assert clickhouse_flows.flow_trace_ids(client, 2) == []
    (summary,) = clickhouse_flows.flow_summaries(client, [1, 2, 3])
    assert (summary.span_count, summary.trace_count) == (6, 5)
    assert (summary.entry_operation, summary.start_unix_nano) == (f"op-{e.hex()}", BASE_NS)
    assert summary.correlation_ids == sorted(f"c-{t.hex()}" for t in (a, b, c, d, e))
    for correlation_id in summary.correlation_ids:
        assert clickhouse_flows.search_flow_ids(client, FlowFilter(correlation_id=correlation_id), 10, 0) == [
            1
        ]
    assert clickhouse_flows.search_flow_ids(client, FlowFilter(), 10, 0) == [1]
    # AND SQLite says the same
    assert_same_answers(stores, [a, b, c, d, e], ["m-1"], ["q"], flow_ids=range(6))


def test_a_batch_that_merges_a_flow_away_and_touches_it_again_keeps_one_standing_flow(stores: Stores) -> None:
    a, b, c, x, y, z = ids("a", "b", "c", "x", "y", "z")
    # GIVEN flow 1 = {a}, flow 2 = {c, y and the links they make: b, x}, flow 3 = {z}
    stores.apply([facts(a)])
    stores.apply([facts(c, links=[b], keys=[("k", "q")]), facts(y, links=[x], keys=[("k", "q")])])
    stores.apply([facts(z)])
    # WHEN one batch brings b (linking a: flow 2 joins 1) and x (linking z: flow 3 joins 2, now 1)
    stores.apply([facts(b, links=[a]), facts(x, links=[z])])
    # THEN all six traces are one flow, 1, with every span, and both merged ids resolve to it
    client = stores.client
    assert {clickhouse_flows.flow_of_trace(client, t) for t in (a, b, c, x, y, z)} == {1}
    assert [clickhouse_flows.resolve_flow(client, f) for f in (1, 2, 3)] == [1, 1, 1]
    (summary,) = clickhouse_flows.flow_summaries(client, [1, 2, 3])
    assert (summary.span_count, summary.trace_count) == (6, 6)
    assert_same_answers(stores, [a, b, c, x, y, z], ["k"], ["q"], flow_ids=range(5))


def test_a_batch_trace_links_to_many_traces_without_joining_them(stores: Stores) -> None:
    a, b, batch = ids("a", "b", "batch")
    stores.apply([facts(a), facts(b)])
    stores.apply([facts(batch, links=[a, b])])
    client = stores.client
    assert [clickhouse_flows.flow_of_trace(client, t) for t in (a, b, batch)] == [1, 2, 3]
    assert_same_answers(stores, [a, b, batch], [], [], flow_ids=range(5))


def test_a_link_to_a_trace_not_yet_stored_waits_for_it_with_no_spans(stores: Stores) -> None:
    producer, consumer = ids("producer", "consumer")
    client = stores.client
    # GIVEN the consumer arrives first, linking the producer
    stores.apply([facts(consumer, links=[producer])])
    # THEN the producer belongs to the flow already, but is not one of its traces with spans
    assert clickhouse_flows.flow_of_trace(client, producer) == 1
    assert clickhouse_flows.flow_trace_ids(client, 1) == [consumer]
    # WHEN the producer arrives, THEN it counts as the flow's second trace
    stores.apply([facts(producer)])
    assert clickhouse_flows.flow_trace_ids(client, 1) == sorted([consumer, producer])
    assert clickhouse_flows.flow_summaries(client, [1])[0].trace_count == 2
    assert_same_answers(stores, [producer, consumer], [], [], flow_ids=range(3))


# -- equivalence on random flow graphs ---------------------------------------------------------------------


@dataclass
class World:
    """Traces of random flows, cut into the parts in which their spans arrive."""

    parts: list[TraceFacts] = field(default_factory=list)
    trace_ids: list[bytes] = field(default_factory=list)  # with the ids only ever linked to
    message_ids: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)


def random_world(rng: random.Random) -> World:
    world = World()
    traces: list[TraceFacts] = []
    chains: list[list[TraceFacts]] = []

    def new_trace(correlation_id: str, t0: int) -> TraceFacts:
        start = t0 + rng.randrange(0, 40) * MS  # coarse times: ties in starts and entries happen
        service = rng.choice(SERVICES)
        operations = {(service, rng.choice(OPERATIONS)) for _ in range(rng.randint(1, 3))}
        trace = TraceFacts(
            rng.randbytes(16),
            span_count=rng.randint(1, 5),
            start_unix_nano=start,
            end_unix_nano=start + rng.randrange(0, 300) * MS,
            error_count=rng.choice((0, 0, 0, 1, 2)),
            max_receive_count=rng.choice((0, 1, 1, 2, 5)),
            entry=None
            if rng.random() < 0.2
            else (
                CONTINUED if len(traces) % 3 == 0 else ORIGIN,  # no draw: the seeds keep their worlds
                start + rng.choice((0, 0, MS)),
                service,
                rng.choice(OPERATIONS),
            ),
            operations=operations,
            correlation_ids={correlation_id} if rng.random() < 0.8 else set(),
        )
        traces.append(trace)
        return trace

    for chain_number in range(rng.randint(4, 9)):
        correlation_id = f"order-{chain_number % 6}"  # now and then two flows share one
        world.correlation_ids.append(correlation_id)
        t0 = BASE_NS + rng.randrange(0, 200) * MS
        chain = [new_trace(correlation_id, t0)]
        for _ in range(rng.randint(0, 5)):
            parent, child = rng.choice(chain), new_trace(correlation_id, t0)
            hop = rng.choice(("link", "key", "both"))
            if hop != "key":
                child.linked_traces.add(parent.trace_id)
            if hop != "link":
                key = (f"m-{len(world.message_ids)}", rng.choice(DESTINATIONS))
                world.message_ids.append(key[0])
                parent.message_keys.add(key)
                child.message_keys.add(key)
            chain.append(child)
        if rng.random() < 0.3:  # a link to a trace that never arrives
            dangling = rng.randbytes(16)
            rng.choice(chain).linked_traces.add(dangling)
            world.trace_ids.append(dangling)
        chains.append(chain)
    # The same message id on another destination joins nothing, but flow_of_message(id) must pick the same.
    keyed = [trace for trace in traces if trace.message_keys]
    for trace in rng.sample(keyed, min(len(keyed), 2)):
        message_id, destination = next(iter(trace.message_keys))
        other = rng.choice(traces)
        other.message_keys.add((message_id, rng.choice([d for d in DESTINATIONS if d != destination])))
    # Batch consumers: one trace linking many messages' traces.
    for _ in range(rng.randint(1, 3)):
        batch = new_trace("batch", BASE_NS + rng.randrange(0, 200) * MS)
        batch.linked_traces |= {trace.trace_id for trace in rng.sample(traces[:-1], min(len(traces) - 1, 4))}
    world.trace_ids.extend(trace.trace_id for trace in traces)
    for trace in traces:
        world.parts.extend(split_in_parts(rng, trace))
    # A late trace that bridges two chains: a link to one, a message key of another.
    if len(chains) >= 2 and rng.random() < 0.7:
        first, second = rng.sample(chains, 2)
        bridge = new_trace("bridge", BASE_NS)
        bridge.linked_traces.add(rng.choice(first).trace_id)
        keys = [key for trace in second for key in trace.message_keys]
        bridge.message_keys.add(rng.choice(keys) if keys else ("m-bridge", "order-events"))
        world.trace_ids.append(bridge.trace_id)
        world.parts.extend(split_in_parts(rng, bridge))
    return world


def split_in_parts(rng: random.Random, trace: TraceFacts) -> list[TraceFacts]:
    """One trace's facts, or two parts of them as when its spans arrive in two requests."""
    if trace.span_count < 2 or rng.random() < 0.6:
        return [trace]
    first = TraceFacts(trace.trace_id, span_count=rng.randint(1, trace.span_count - 1))
    second = TraceFacts(trace.trace_id, span_count=trace.span_count - first.span_count)
    middle = rng.randint(trace.start_unix_nano, max(trace.start_unix_nano, trace.end_unix_nano))
    first.start_unix_nano, first.end_unix_nano = trace.start_unix_nano, middle
    second.start_unix_nano, second.end_unix_nano = middle, trace.end_unix_nano
    first.error_count = rng.randint(0, trace.error_count)
    second.error_count = trace.error_count - first.error_count
    first.max_receive_count = trace.max_receive_count
    second.max_receive_count = rng.randint(0, trace.max_receive_count)
    rng.choice((first, second)).entry = trace.entry
    for name in ("operations", "correlation_ids", "linked_traces", "message_keys"):
        for item in getattr(trace, name):
            for part in rng.choice(((first,), (second,), (first, second))):
                getattr(part, name).add(item)
    parts = [first, second]
    rng.shuffle(parts)
    return parts


def arrivals(rng: random.Random, parts: list[TraceFacts]) -> list[list[TraceFacts]]:
    """The parts in a random order, cut into apply() calls of random sizes."""
    late = [part for part in parts if part.correlation_ids == {"bridge"}]
    shuffled = [part for part in parts if part not in late]
    rng.shuffle(shuffled)
    calls = []
    while shuffled:
        size = rng.randint(1, max(1, len(shuffled) // 3))
        calls.append(shuffled[:size])
        shuffled = shuffled[size:]
    if late:
        calls.append(late)
    return calls


def assert_same_answers(
    stores: Stores,
    trace_ids: Sequence[bytes],
    message_ids: Sequence[str],
    correlation_ids: Sequence[str],
    flow_ids: Sequence[int] | range,
) -> None:
    """Every reader, asked the same on both stores, answers the same."""
    flow_ids = list(flow_ids)
    for trace_id in [*trace_ids, b"\x01" * 16]:
        sqlite, clickhouse = stores.both("flow_of_trace", trace_id)
        assert sqlite == clickhouse, f"flow_of_trace({trace_id.hex()})"
    for flow_id in [*flow_ids, -1, 10**6]:
        sqlite, clickhouse = stores.both("resolve_flow", flow_id)
        assert sqlite == clickhouse, f"resolve_flow({flow_id})"
        sqlite, clickhouse = stores.both("flow_trace_ids", flow_id)
        assert sqlite == clickhouse, f"flow_trace_ids({flow_id})"
        sqlite, clickhouse = stores.both("flow_shared_traces", flow_id)
        assert sqlite == clickhouse, f"flow_shared_traces({flow_id})"
    sqlite, clickhouse = stores.both("flow_summaries", [*flow_ids, *flow_ids[:2]])
    assert sqlite == clickhouse
    for message_id in [*message_ids, "no-such-message"]:
        for destination in (None, *DESTINATIONS):
            sqlite, clickhouse = stores.both("flow_of_message", message_id, destination)
            assert sqlite == clickhouse, f"flow_of_message({message_id}, {destination})"
    summaries = stores.both("flow_summaries", flow_ids)[0]
    starts = sorted(summary.start_unix_nano for summary in summaries) or [BASE_NS]
    middle = starts[len(starts) // 2]
    searches = [
        (FlowFilter(), 100, 0),
        (FlowFilter(sort=FlowSort.DURATION), 100, 0),
        (FlowFilter(), 3, 2),
        (FlowFilter(sort=FlowSort.DURATION), 2, 1),
        (FlowFilter(since_unix_nano=middle), 100, 0),
        (FlowFilter(until_unix_nano=middle), 100, 0),
        (FlowFilter(since_unix_nano=starts[0], until_unix_nano=middle + MS, sort=FlowSort.DURATION), 100, 0),
        (FlowFilter(errors_only=True), 100, 0),
        (FlowFilter(min_duration_ms=150), 100, 0),
        (FlowFilter(min_duration_ms=100.5, errors_only=True, sort=FlowSort.DURATION), 100, 0),
        (FlowFilter(service="billing"), 100, 0),
        (FlowFilter(operation="charge", since_unix_nano=middle), 100, 0),
        (FlowFilter(service="mailer", operation="send"), 100, 0),
        (FlowFilter(service="nobody"), 100, 0),
        *((FlowFilter(correlation_id=c), 100, 0) for c in sorted({*correlation_ids, "batch", "nobody"})),
        *((FlowFilter(message_id=m), 100, 0) for m in sorted(message_ids)[:5]),
    ]
    for criteria, limit, offset in searches:
        sqlite, clickhouse = stores.both("search_flow_ids", criteria, limit, offset)
        assert sqlite == clickhouse, criteria


# Seeds 4 and 6 include a batch that merges a flow away and then touches it again in another group.
@pytest.mark.parametrize("seed", [0, 1, 4, 6])
def test_random_flows_arriving_in_any_order_get_the_same_answers_as_on_sqlite(
    stores: Stores, seed: int
) -> None:
    rng = random.Random(seed)
    # GIVEN random flows: chains joined by links and message keys, batch traces, dangling links, late bridges
    world = random_world(rng)
    calls = arrivals(rng, world.parts)
    # WHEN their spans arrive in a random order, some traces in two parts, over several apply() calls
    for number, call in enumerate(calls, 1):
        stores.apply(call)
        # THEN the answers are the same half way and at the end
        if number in (len(calls) // 2, len(calls)):
            (max_flow,) = (
                stores.sqlite._reader().execute("SELECT coalesce(max(flow_id), 0) FROM flows").fetchone()
            )
            assert_same_answers(
                stores, world.trace_ids, world.message_ids, world.correlation_ids, range(max_flow + 3)
            )
    assert len(calls) > 3
