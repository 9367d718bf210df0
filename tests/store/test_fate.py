"""A message's fate in the stores (store/*/fate.py), on SQLite and chdb alike: duplicate deliveries counted
while stitching in any arrival order, dead letters as the poller's peeks saw them, and the query layer's
counts and filters over both.

Spans are made by the real OpenTelemetry SDK (tests/helpers/flow_chains.py), written through the stores'
own write path; dead letters go in through ``record_dead_letters`` as the SQS poller calls it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan

from hopscope.collector.model.fate import (
    DeadLetterPeek,
    DeadLetterRecord,
    DeadLetterSighting,
    DuplicateRate,
    FateFilter,
    merge_peek,
)
from hopscope.collector.model.flows import FlowFilter
from hopscope.collector.query.layer import QueryLayer
from tests.helpers.fates import MS, T0, deliver, send, shop
from tests.helpers.flow_chains import Services, SpanKind, post


def flow_of(store: Any, order: str) -> int:
    flow_id = store.flow_of_message(f"m-{order}", "orders")
    assert flow_id is not None
    return int(flow_id)


def trace_hex(services: Services, order: str) -> str:
    (producer,) = [
        s for s in services.spans() if (s.attributes or {}).get("messaging.message.id") == f"m-{order}"
        and s.kind is SpanKind.PRODUCER
    ]  # fmt: skip
    return format(producer.context.trace_id, "032x")


def test_duplicate_deliveries_are_counted_per_message_and_consumer_in_any_order(
    new_store: Callable[..., Any],
) -> None:
    # GIVEN the shop's spans, posted in order to one store and shuffled in small requests to another,
    # with every span of order 1 sent twice (an exporter's retry)
    services = Services()
    shop(services)
    spans = services.spans()
    in_order, shuffled = new_store("in_order"), new_store("shuffled")
    post(in_order, spans)
    mixed: list[ReadableSpan] = list(spans) + [
        s for s in spans if (s.attributes or {}).get("messaging.message.id") == "m-1"
    ]
    random.Random(15).shuffle(mixed)
    for start in range(0, len(mixed), 3):
        post(shuffled, mixed[start : start + 3])

    for store in (in_order, shuffled):
        # THEN order 1 (two successful deliveries to billing) has one duplicate; a retry after a failure,
        # two failures, the invocation span beside its per-record span, a re-sent span: none
        flows = {order: flow_of(store, order) for order in "1234"}
        assert len(set(flows.values())) == 4
        counts = store.fate_counts(list(flows.values()))
        assert counts == {flows["1"]: (0, 1)}
        assert store.flows_with_fate(FateFilter.DUPLICATES, 100) == {flows["1"]}
        # and the queue page's rate: three messages processed by billing, one duplicate delivery
        assert store.duplicate_rates(0) == [DuplicateRate("orders", "billing", 3, 1)]
        assert store.duplicate_rates(T0 + 2_000 * MS) == []


def test_dead_letters_are_present_until_a_complete_peek_misses_them(new_store: Callable[..., Any]) -> None:
    # GIVEN the shop's flows, and a poll whose peek found order 3 in orders-dlq (by its trace context) and
    # an unknown message
    services = Services()
    shop(services)
    store = new_store()
    post(store, services.spans())
    flows = {order: flow_of(store, order) for order in "1234"}
    store.record_dead_letters(
        T0 + 5_000 * MS,
        [
            DeadLetterPeek(
                "orders-dlq",
                (
                    DeadLetterSighting("m-3", trace_id=trace_hex(services, "3"), receive_count=3),
                    DeadLetterSighting("stranger"),
                ),
                complete=True,
            )
        ],
    )

    # THEN order 3's flow has a message in a dead-letter queue now, and the layer's summaries say so
    assert store.fate_counts(list(flows.values())) == {flows["1"]: (0, 1), flows["3"]: (1, 0)}
    assert store.flows_with_fate(FateFilter.DEAD_LETTERED, 100) == {flows["3"]}
    layer = QueryLayer(store)
    summary = layer.flow_summary(flows["3"])
    assert summary is not None and (summary.dead_lettered, summary.duplicate_deliveries) == (1, 0)
    (record,) = [r for r in store.dead_letters_of(["m-3"], []) if r.message_id == "m-3"]
    assert (record.queue_name, record.present, record.receive_count) == ("orders-dlq", True, 3)
    # found by the producer's trace alone too
    assert [r.message_id for r in store.dead_letters_of([], [bytes.fromhex(trace_hex(services, "3"))])] == [
        "m-3"
    ]

    # WHEN a later peek sees only part of the queue (not complete): nothing is gone
    store.record_dead_letters(
        T0 + 6_000 * MS, [DeadLetterPeek("orders-dlq", (DeadLetterSighting("stranger"),), complete=False)]
    )
    assert store.fate_counts([flows["3"]]) == {flows["3"]: (1, 0)}

    # WHEN the queue is found empty (a redrive moved it, or it was deleted)
    store.record_dead_letters(T0 + 7_000 * MS, [DeadLetterPeek("orders-dlq", (), complete=True)])

    # THEN the message is no longer dead-lettered; its record says since when it is gone
    assert store.fate_counts([flows["3"]]) == {}
    assert store.flows_with_fate(FateFilter.DEAD_LETTERED, 100) == set()
    (record,) = store.dead_letters_of(["m-3"], [])
    assert (record.first_seen_unix_nano, record.gone_unix_nano) == (T0 + 5_000 * MS, T0 + 7_000 * MS)
    # and retention drops what has been gone long enough
    store.record_dead_letters(T0 + 8_000 * MS, [], keep_after_unix_nano=T0 + 7_500 * MS)
    assert store.dead_letters_of(["m-3", "stranger"], []) == []


def test_the_flow_list_filters_on_fates_with_paging(new_store: Callable[..., Any]) -> None:
    # GIVEN the shop's flows, order 3 in the dead-letter queue, and the lookalike orders 5..24 processed once
    services = Services()
    shop(services)
    for number in range(5, 25):
        producer = send(services, str(number), 40 + number)
        deliver(services, producer, str(number), 1, 200 + number)
    store = new_store()
    post(store, services.spans())
    store.record_dead_letters(
        T0 + 5_000 * MS,
        [DeadLetterPeek("orders-dlq", (DeadLetterSighting("m-3"),), complete=True)],
    )
    layer = QueryLayer(store)
    flows = {order: flow_of(store, order) for order in "1234"}

    def listed(fates: frozenset[FateFilter], **criteria: Any) -> list[int]:
        return [s.flow_id for s in layer.search_flows(FlowFilter(**criteria), fates)]

    # THEN each filter lists its flows only, both together none, and paging holds
    assert listed(frozenset({FateFilter.DUPLICATES})) == [flows["1"]]
    assert listed(frozenset({FateFilter.DEAD_LETTERED})) == [flows["3"]]
    assert listed(frozenset({FateFilter.DEAD_LETTERED, FateFilter.DUPLICATES})) == []
    assert listed(frozenset({FateFilter.DUPLICATES}), offset=1) == []
    assert listed(frozenset({FateFilter.DUPLICATES}), service="nobody") == []
    (summary,) = layer.search_flows(FlowFilter(), frozenset({FateFilter.DUPLICATES}))
    assert (summary.dead_lettered, summary.duplicate_deliveries) == (0, 1)
    everything = layer.search_flows(FlowFilter(limit=100))
    assert len(everything) == 24
    assert sum(s.duplicate_deliveries for s in everything) == 1
    assert sum(s.dead_lettered for s in everything) == 1


def test_the_flow_detail_tells_each_messages_fate(new_store: Callable[..., Any]) -> None:
    # GIVEN the shop's flows and order 3 in the dead-letter queue
    services = Services()
    shop(services)
    store = new_store()
    post(store, services.spans())
    store.record_dead_letters(
        T0 + 5_000 * MS, [DeadLetterPeek("orders-dlq", (DeadLetterSighting("m-3"),), complete=True)]
    )
    layer = QueryLayer(store)

    def fate(order: str) -> dict[str, Any]:
        detail = layer.flow(flow_of(store, order))
        assert detail is not None
        (message,) = layer.message_fates(detail)
        assert message["message_id"] == f"m-{order}"
        return dict(message)

    # THEN each message's fate is told, with its counts
    one, two, three, four = (fate(order) for order in "1234")
    assert (one["fate"], one["duplicate_deliveries"], one["deliveries"]) == ("duplicate_delivery", 1, 2)
    assert one["summary"] == "Processed successfully more than once by billing: 1 duplicate delivery"
    assert (two["fate"], two["retries"], two["failed_deliveries"]) == ("retried", 1, 1)
    assert two["summary"] == "Processed by billing after 1 failed delivery"
    assert (three["fate"], three["dead_letter_queue"]) == ("dead_lettered", "orders-dlq")
    assert three["summary"] == "failed 2 deliveries; in dead-letter queue orders-dlq now"
    assert (four["fate"], four["summary"]) == ("processed", "Processed by billing")


def _records(*pairs: tuple[str, int | None]) -> dict[str, DeadLetterRecord]:
    return {m: DeadLetterRecord("q", m, None, None, None, 1, 1, gone) for m, gone in pairs}


def test_merge_peek_keeps_first_sightings_and_marks_gone_only_after_a_complete_peek() -> None:
    known = _records(("a", None), ("b", None), ("c", 1))
    seen = (DeadLetterSighting("a"), DeadLetterSighting("c"), DeadLetterSighting("a"))
    partial = {r.message_id: r for r in merge_peek(known, DeadLetterPeek("q", seen, complete=False), 5)}
    # "a" keeps its first sighting, "c" came back (a new stay), "b" is not judged by a partial peek
    assert sorted(partial) == ["a", "c"]
    assert (partial["a"].first_seen_unix_nano, partial["a"].last_seen_unix_nano) == (1, 5)
    assert (partial["c"].first_seen_unix_nano, partial["c"].gone_unix_nano) == (5, None)
    complete = {r.message_id: r for r in merge_peek(known, DeadLetterPeek("q", seen, complete=True), 5)}
    assert complete["b"].gone_unix_nano == 5 and not complete["b"].present


def test_a_fan_out_to_several_consumers_is_no_retry(new_store: Callable[..., Any]) -> None:
    # GIVEN one SNS message delivered once to each of two subscribers
    services = Services()
    api = services.tracer("orders-api")
    topic = {"messaging.system": "aws.sns", "messaging.destination.name": "order-events"}
    with api.start_as_current_span(
        "publish order-events", kind=SpanKind.PRODUCER, attributes={**topic, "messaging.message.id": "sns-1"}
    ) as producer:
        pass
    for consumer in ("billing", "audit"):
        with services.tracer(consumer).start_as_current_span(
            "process order-events",
            context=context.Context(),
            kind=SpanKind.CONSUMER,
            links=[trace.Link(producer.get_span_context())],
            attributes={**topic, "messaging.message.id": "sns-1", "hopscope.receive_count": 1},
        ):
            pass
    store = new_store()
    post(store, services.spans())
    layer = QueryLayer(store)
    flow_id = store.flow_of_trace(producer.get_span_context().trace_id.to_bytes(16, "big"))
    detail = layer.flow(flow_id)
    assert detail is not None
    # THEN the message was processed by both, with no retry and no duplicate
    (message,) = layer.message_fates(detail)
    assert (message["fate"], message["deliveries"], message["retries"], message["duplicate_deliveries"]) == (
        "processed",
        2,
        0,
        0,
    )
    assert message["consumers"] == ["audit", "billing"]
