"""A message's fate on ClickHouse, as ``store/sqlite/fate.py`` keeps it: successful deliveries counted while
stitching (``hopscope_message_deliveries``, and ``hopscope_duplicate_deliveries`` recounted for the messages a
chunk touched), and the dead letters the SQS poller saw (``hopscope_dead_letters``, a row version per change).
Flows are found at read time, through the trace and message-key tables, as on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from hopscope.collector.model.fate import (
    DeadLetterPeek,
    DeadLetterRecord,
    Delivery,
    DuplicateRate,
    FateFilter,
    delivery_of,
    duplicate_rates,
    merge_peek,
)
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.spans import ERROR_STATUS_NAMES, KIND_BY_NAME

# Added to schema.py's statements (CREATE ... IF NOT EXISTS).
MESSAGE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_message_deliveries (
    MessageId String,
    Destination String,
    ConsumerService String,
    Attempt String,
    TraceId String,
    StartUnixNano Int64
) ENGINE = ReplacingMergeTree
ORDER BY (MessageId, Destination, ConsumerService, Attempt)
"""
DUPLICATE_DELIVERIES = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_duplicate_deliveries (
    MessageId String,
    Destination String,
    ConsumerService String,
    TraceId String,
    Duplicates UInt64,
    Version UInt64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY (MessageId, Destination, ConsumerService)
"""
DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_dead_letters (
    QueueName String,
    MessageId String,
    TraceId Nullable(String),
    SnsMessageId Nullable(String),
    ReceiveCount Nullable(Int64),
    FirstSeen Int64,
    LastSeen Int64,
    Gone Nullable(Int64),
    Version UInt64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY (QueueName, MessageId)
"""
FATE_STATEMENTS = (MESSAGE_DELIVERIES, DUPLICATE_DELIVERIES, DEAD_LETTERS)

_CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER
_READ_CHUNK = 1000


# -- while stitching ---------------------------------------------------------------------------------------


def record_deliveries(client: ClickHouseClient, rows: Sequence[Sequence[Any]]) -> None:
    """Count the successful deliveries among the span feed's rows that a stitching chunk folds (store.py's
    ``_fold_rows`` columns). Order-independent, and a re-sent span or a chunk folded again counts once."""
    deliveries = []
    # (arrived, trace, span, root, name, kind, service, start, duration, status, attributes, links...)
    for row in rows:
        attributes = row[10]
        if not attributes:
            continue
        span = str(row[2])
        delivery = delivery_of(
            KIND_BY_NAME.get(row[5], 0) == _CONSUMER,
            row[9] in ERROR_STATUS_NAMES,
            str(row[6]),
            bytes.fromhex(row[1]),
            bytes.fromhex(span) if len(span) % 2 == 0 else span.encode(),
            int(row[7]),
            attributes,
        )
        if delivery is not None:
            deliveries.append(delivery)
    if deliveries:
        apply_deliveries(client, deliveries)


def apply_deliveries(client: ClickHouseClient, deliveries: Sequence[Delivery]) -> None:
    db = client.database
    client.insert(
        f"{db}.hopscope_message_deliveries",
        ("MessageId", "Destination", "ConsumerService", "Attempt", "TraceId", "StartUnixNano"),
        [
            (d.message_id, d.destination, d.consumer_service, d.attempt, d.trace_id.hex(), d.start_unix_nano)
            for d in deliveries
        ],
    )
    touched = {(d.message_id, d.destination, d.consumer_service) for d in deliveries}
    counted = client.query(
        "SELECT MessageId, Destination, ConsumerService, min(TraceId), uniqExact(Attempt) "
        f"FROM {db}.hopscope_message_deliveries WHERE MessageId IN {{ids:Array(String)}} "
        "GROUP BY MessageId, Destination, ConsumerService HAVING uniqExact(Attempt) > 1",
        {"ids": sorted({key[0] for key in touched})},
    )
    version = time.time_ns()
    client.insert(
        f"{db}.hopscope_duplicate_deliveries",
        ("MessageId", "Destination", "ConsumerService", "TraceId", "Duplicates", "Version"),
        [
            (message_id, destination, service, trace_id, int(count) - 1, version)
            for message_id, destination, service, trace_id, count in counted
            if (message_id, destination, service) in touched
        ],
    )


# -- the poller's dead letters -----------------------------------------------------------------------------

_RECORD_COLUMNS = "QueueName, MessageId, TraceId, SnsMessageId, ReceiveCount, FirstSeen, LastSeen, Gone"


def record_dead_letters(
    client: ClickHouseClient,
    polled_unix_nano: int,
    peeks: Sequence[DeadLetterPeek],
    keep_after_unix_nano: int | None,
) -> None:
    """Store what each peek saw (model/fate.py merge_peek): one insert of the changed rows' new versions."""
    changed: list[DeadLetterRecord] = []
    for peek in peeks:
        known = {
            record.message_id: record
            for record in _records(
                client,
                "WHERE QueueName = {queue:String} AND (Gone IS NULL OR MessageId IN {ids:Array(String)})",
                {"queue": peek.queue_name, "ids": [s.message_id for s in peek.sightings]},
            )
        }
        changed.extend(merge_peek(known, peek, polled_unix_nano))
    version = time.time_ns()
    client.insert(
        f"{client.database}.hopscope_dead_letters",
        (*(column.strip() for column in _RECORD_COLUMNS.split(",")), "Version"),
        [
            (r.queue_name, r.message_id, r.trace_id, r.sns_message_id, r.receive_count,
             r.first_seen_unix_nano, r.last_seen_unix_nano, r.gone_unix_nano, version)
            for r in changed
        ],
    )  # fmt: skip
    if keep_after_unix_nano is not None:
        # Every version of such a message, or FINAL would find an older one, still present.
        table = f"{client.database}.hopscope_dead_letters"
        client.command(
            f"DELETE FROM {table} WHERE (QueueName, MessageId) IN "
            f"(SELECT QueueName, MessageId FROM {table} FINAL WHERE Gone < {{keep:Int64}})",
            {"keep": keep_after_unix_nano},
        )


def _records(client: ClickHouseClient, where: str, params: dict[str, object]) -> list[DeadLetterRecord]:
    rows = client.query(
        f"SELECT {_RECORD_COLUMNS} FROM {client.database}.hopscope_dead_letters FINAL {where} "
        "ORDER BY QueueName, MessageId",
        params,
    )
    return [
        DeadLetterRecord(
            str(queue),
            str(message_id),
            trace_id or None,
            sns_id or None,
            None if receive_count is None else int(receive_count),
            int(first),
            int(last),
            None if gone is None else int(gone),
        )
        for queue, message_id, trace_id, sns_id, receive_count, first, last, gone in rows
    ]


# -- reading -----------------------------------------------------------------------------------------------


def _flows_of_traces(client: ClickHouseClient, trace_ids: set[str]) -> dict[str, int]:
    """Trace id (hex) -> the standing flow it is in now."""
    db = client.database
    ordered = sorted(trace_ids)
    first: dict[str, int] = {}
    for start in range(0, len(ordered), _READ_CHUNK):
        for trace_id, flow_id in client.query(
            f"SELECT TraceId, any(FlowId) FROM {db}.hopscope_trace_flows "
            "WHERE TraceId IN {traces:Array(String)} GROUP BY TraceId",
            {"traces": ordered[start : start + _READ_CHUNK]},
        ):
            first[str(trace_id)] = int(flow_id)
    if not first:
        return {}
    standing = {
        int(flow_id): int(merged_into) or int(flow_id)
        for flow_id, merged_into in client.query(
            f"SELECT FlowId, argMax(MergedInto, Version) FROM {db}.hopscope_flows "
            "WHERE FlowId IN {flows:Array(UInt64)} GROUP BY FlowId",
            {"flows": sorted(set(first.values()))},
        )
    }
    return {trace_id: standing.get(flow_id, flow_id) for trace_id, flow_id in first.items()}


def _present_dead_letters(client: ClickHouseClient) -> dict[int, set[tuple[str, str]]]:
    """Standing flow -> (queue, message id) of each message in a dead-letter queue now."""
    present = _records(client, "WHERE Gone IS NULL", {})
    if not present:
        return {}
    ids = sorted({r.message_id for r in present} | {r.sns_message_id for r in present if r.sns_message_id})
    traces_of: dict[str, set[str]] = {}
    for start in range(0, len(ids), _READ_CHUNK):
        for message_id, trace_id in client.query(
            f"SELECT DISTINCT MessageId, TraceId FROM {client.database}.hopscope_message_keys "
            "WHERE MessageId IN {ids:Array(String)}",
            {"ids": ids[start : start + _READ_CHUNK]},
        ):
            traces_of.setdefault(str(message_id), set()).add(str(trace_id))
    wanted = {
        record.message_id: {
            *([record.trace_id] if record.trace_id else []),
            *traces_of.get(record.message_id, ()),
            *traces_of.get(record.sns_message_id or "", ()),
        }
        for record in present
    }
    flows = _flows_of_traces(client, {trace for traces in wanted.values() for trace in traces})
    found: dict[int, set[tuple[str, str]]] = {}
    for record in present:
        for trace_id in wanted[record.message_id]:
            if trace_id in flows:
                found.setdefault(flows[trace_id], set()).add((record.queue_name, record.message_id))
    return found


def _duplicates(client: ClickHouseClient, flow_ids: list[int] | None) -> dict[int, int]:
    """Standing flow -> duplicate deliveries (of the given standing flows only, when given)."""
    db = client.database
    where = ""
    params: dict[str, object] = {}
    if flow_ids is not None:
        where = (
            f"WHERE TraceId IN (SELECT TraceId FROM {db}.hopscope_trace_flows WHERE FlowId IN "
            f"(SELECT FlowId FROM {db}.hopscope_flows WHERE FlowId IN {{flows:Array(UInt64)}} "
            "OR MergedInto IN {flows:Array(UInt64)}))"
        )
        params["flows"] = flow_ids
    rows = client.query(
        "SELECT argMax(TraceId, Version), argMax(Duplicates, Version) "
        f"FROM {db}.hopscope_duplicate_deliveries {where} "
        "GROUP BY MessageId, Destination, ConsumerService",
        params,
    )
    flows = _flows_of_traces(client, {str(row[0]) for row in rows})
    found: dict[int, int] = {}
    for trace_id, duplicates in rows:
        flow_id = flows.get(str(trace_id))
        if flow_id is not None and int(duplicates) > 0:
            found[flow_id] = found.get(flow_id, 0) + int(duplicates)
    return found


def fate_counts(client: ClickHouseClient, flow_ids: list[int]) -> dict[int, tuple[int, int]]:
    if not flow_ids:
        return {}
    dead = _present_dead_letters(client)
    duplicates = _duplicates(client, flow_ids)
    return {
        flow_id: (len(dead.get(flow_id, ())), duplicates.get(flow_id, 0))
        for flow_id in flow_ids
        if flow_id in dead or flow_id in duplicates
    }


def flows_with_fate(client: ClickHouseClient, kind: FateFilter, limit: int) -> set[int]:
    found = _present_dead_letters(client) if kind is FateFilter.DEAD_LETTERED else _duplicates(client, None)
    return set(sorted(found)[:limit])


def dead_letters_of(
    client: ClickHouseClient, message_ids: Sequence[str], trace_ids: Sequence[bytes]
) -> list[DeadLetterRecord]:
    found: dict[tuple[str, str], DeadLetterRecord] = {}
    ids = list(message_ids)
    traces = [trace_id.hex() for trace_id in trace_ids]
    for start in range(0, max(len(ids), len(traces)), _READ_CHUNK):
        for record in _records(
            client,
            "WHERE MessageId IN {ids:Array(String)} OR SnsMessageId IN {ids:Array(String)} "
            "OR TraceId IN {traces:Array(String)}",
            {"ids": ids[start : start + _READ_CHUNK], "traces": traces[start : start + _READ_CHUNK]},
        ):
            found[(record.queue_name, record.message_id)] = record
    return [found[key] for key in sorted(found)]


def read_duplicate_rates(client: ClickHouseClient, since_unix_nano: int) -> list[DuplicateRate]:
    rows = client.query(
        "SELECT Destination, ConsumerService, uniqExact(MessageId), "
        "uniqExact(MessageId, Attempt) "
        f"FROM {client.database}.hopscope_message_deliveries WHERE StartUnixNano >= {{since:Int64}} "
        "GROUP BY Destination, ConsumerService",
        {"since": since_unix_nano},
    )
    return duplicate_rates((str(d), str(s), int(m), int(n)) for d, s, m, n in rows)
