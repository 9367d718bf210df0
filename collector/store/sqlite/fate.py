"""A message's fate on SQLite (model/fate.py): successful deliveries, counted while stitching, and the dead
letters the SQS poller saw. Flows are found at read time through ``trace_flows`` and ``message_keys``, so
flows merged later still get their messages' fates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import conventions
from hopscope.collector.model.destinations import DESTINATION_KEYS
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

# Schema version 8 (schema.py MIGRATIONS[8]).
FATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS message_deliveries (  -- successful deliveries only (model/fate.py Delivery)
    message_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    consumer_service TEXT NOT NULL,
    attempt TEXT NOT NULL,
    trace_id BLOB NOT NULL,             -- the consumer span's trace: its flow is the message's
    start_unix_nano INTEGER NOT NULL,
    PRIMARY KEY (message_id, destination, consumer_service, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_deliveries_by_start ON message_deliveries (start_unix_nano);
CREATE TABLE IF NOT EXISTS duplicate_deliveries (  -- kept up to date from message_deliveries while stitching
    message_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    consumer_service TEXT NOT NULL,
    trace_id BLOB NOT NULL,
    duplicates INTEGER NOT NULL,        -- successful deliveries after the first
    PRIMARY KEY (message_id, destination, consumer_service)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS duplicate_deliveries_by_trace ON duplicate_deliveries (trace_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    queue_name TEXT NOT NULL,
    message_id TEXT NOT NULL,
    trace_id BLOB,                      -- the producer's trace, from the message's trace context
    sns_message_id TEXT,
    receive_count INTEGER,
    first_seen_unix_nano INTEGER NOT NULL,
    last_seen_unix_nano INTEGER NOT NULL,
    gone_unix_nano INTEGER,             -- NULL while it is in the queue
    PRIMARY KEY (queue_name, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dead_letters_by_message ON dead_letters (message_id);
CREATE INDEX IF NOT EXISTS dead_letters_by_sns_message ON dead_letters (sns_message_id);
CREATE INDEX IF NOT EXISTS dead_letters_by_trace ON dead_letters (trace_id);
"""

_MESSAGE_ID = conventions.MESSAGE_ID.encode()
_CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER
_ERROR = Status.StatusCode.STATUS_CODE_ERROR
_DELIVERY_KEYS = frozenset({conventions.MESSAGE_ID, conventions.RECEIVE_COUNT, *DESTINATION_KEYS})


# -- while stitching ---------------------------------------------------------------------------------------


def span_delivery(span: Span, service_name: str) -> Delivery | None:
    """The successful delivery a stored span records, if any."""
    if span.kind != _CONSUMER or span.status.code == _ERROR:
        return None
    attributes: dict[str, str] = {}
    for attribute in span.attributes:
        if attribute.key in _DELIVERY_KEYS:
            value = attribute.value
            text = value.string_value or (str(value.int_value) if value.HasField("int_value") else "")
            attributes[attribute.key] = text
    return delivery_of(
        True,
        False,
        service_name,
        span.trace_id,
        span.span_id,
        span.start_time_unix_nano,
        attributes,
    )


def record_deliveries(conn: sqlite3.Connection, rows: Iterable[tuple[int, str, int, bytes]]) -> None:
    """Count the successful deliveries of a stitching chunk (``(span_pk, service, received, span)`` rows),
    inside the chunk's transaction. Order-independent: a delivery is a row keyed by its attempt, and a
    message's duplicates are its rows after the first, recounted for the messages the chunk touched."""
    deliveries = []
    for _, service_name, _, blob in rows:
        if _MESSAGE_ID not in blob:  # most spans carry no message id: skip them without parsing
            continue
        delivery = span_delivery(Span.FromString(blob), service_name)
        if delivery is not None:
            deliveries.append(delivery)
    if deliveries:
        apply_deliveries(conn, deliveries)


def apply_deliveries(conn: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO message_deliveries "
        "(message_id, destination, consumer_service, attempt, trace_id, start_unix_nano) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (d.message_id, d.destination, d.consumer_service, d.attempt, d.trace_id, d.start_unix_nano)
            for d in deliveries
        ],
    )
    touched = sorted({(d.message_id, d.destination, d.consumer_service) for d in deliveries})
    conn.executemany(
        "INSERT OR REPLACE INTO duplicate_deliveries "
        "(message_id, destination, consumer_service, trace_id, duplicates) "
        "SELECT message_id, destination, consumer_service, min(trace_id), count(*) - 1 "
        "FROM message_deliveries WHERE message_id = ? AND destination = ? AND consumer_service = ? "
        "GROUP BY message_id, destination, consumer_service HAVING count(*) > 1",
        touched,
    )


# -- the poller's dead letters -----------------------------------------------------------------------------


def record_dead_letters(
    conn: sqlite3.Connection,
    polled_unix_nano: int,
    peeks: Sequence[DeadLetterPeek],
    keep_after_unix_nano: int | None,
) -> None:
    """Store what each peek saw (model/fate.py merge_peek), inside the caller's transaction."""
    for peek in peeks:
        known = {
            record.message_id: record
            for record in _records(conn, "WHERE queue_name = ? AND gone_unix_nano IS NULL", [peek.queue_name])
        }
        seen = [sighting.message_id for sighting in peek.sightings]
        for start in range(0, len(seen), 500):
            chunk = seen[start : start + 500]
            known.update(
                (record.message_id, record)
                for record in _records(
                    conn,
                    f"WHERE queue_name = ? AND message_id IN ({','.join('?' * len(chunk))})",
                    [peek.queue_name, *chunk],
                )
                if record.message_id not in known
            )
        conn.executemany(
            "INSERT OR REPLACE INTO dead_letters (queue_name, message_id, trace_id, sns_message_id, "
            "receive_count, first_seen_unix_nano, last_seen_unix_nano, gone_unix_nano) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.queue_name,
                    r.message_id,
                    bytes.fromhex(r.trace_id) if r.trace_id else None,
                    r.sns_message_id,
                    r.receive_count,
                    r.first_seen_unix_nano,
                    r.last_seen_unix_nano,
                    r.gone_unix_nano,
                )
                for r in merge_peek(known, peek, polled_unix_nano)
            ],
        )
    if keep_after_unix_nano is not None:
        conn.execute("DELETE FROM dead_letters WHERE gone_unix_nano < ?", (keep_after_unix_nano,))


_RECORD_COLUMNS = (
    "queue_name, message_id, trace_id, sns_message_id, receive_count, first_seen_unix_nano, "
    "last_seen_unix_nano, gone_unix_nano"
)


def _records(conn: sqlite3.Connection, where: str, params: Sequence[object]) -> list[DeadLetterRecord]:
    return [
        DeadLetterRecord(
            queue,
            message_id,
            trace_id.hex() if trace_id else None,
            sns_id,
            receive_count,
            first,
            last,
            gone,
        )
        for queue, message_id, trace_id, sns_id, receive_count, first, last, gone in conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM dead_letters {where} ORDER BY queue_name, message_id", params
        )
    ]


# -- reading -----------------------------------------------------------------------------------------------

# (flow, queue, message) of every message in a dead-letter queue now, by its producer's trace, its SQS
# message id or its SNS message id: the flow is the one those traces stand in now. CROSS JOIN keeps SQLite
# reading from the few dead letters to the message index, never the whole index (message_keys has no index
# on trace_id: a plan from the page's flows scanned all of it, 0.5 s at 200,000 spans).
_PRESENT_DEAD_LETTERS = """
SELECT t.flow_id, d.queue_name, d.message_id FROM dead_letters d
    JOIN trace_flows t ON t.trace_id = d.trace_id WHERE d.gone_unix_nano IS NULL {flows}
UNION
SELECT t.flow_id, d.queue_name, d.message_id FROM dead_letters d
    CROSS JOIN message_keys m ON m.message_id = d.message_id
    CROSS JOIN trace_flows t ON t.trace_id = m.trace_id WHERE d.gone_unix_nano IS NULL {flows}
UNION
SELECT t.flow_id, d.queue_name, d.message_id FROM dead_letters d
    CROSS JOIN message_keys m ON m.message_id = d.sns_message_id
    CROSS JOIN trace_flows t ON t.trace_id = m.trace_id WHERE d.gone_unix_nano IS NULL {flows}
"""


def fate_counts(conn: sqlite3.Connection, flow_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Standing flow -> (messages in a dead-letter queue now, duplicate deliveries)."""
    if not flow_ids:
        return {}
    marks = ",".join("?" * len(flow_ids))
    in_flows = f"AND t.flow_id IN ({marks})"
    dead: dict[int, int] = {}
    for flow_id, _, _ in conn.execute(_PRESENT_DEAD_LETTERS.format(flows=in_flows), flow_ids * 3):
        dead[flow_id] = dead.get(flow_id, 0) + 1
    duplicates = dict(
        conn.execute(
            "SELECT t.flow_id, sum(d.duplicates) FROM trace_flows t "
            "JOIN duplicate_deliveries d ON d.trace_id = t.trace_id "
            f"WHERE t.flow_id IN ({marks}) GROUP BY t.flow_id",
            flow_ids,
        ).fetchall()
    )
    return {
        flow_id: (dead.get(flow_id, 0), int(duplicates.get(flow_id, 0)))
        for flow_id in flow_ids
        if flow_id in dead or flow_id in duplicates
    }


def flows_with_fate(conn: sqlite3.Connection, kind: FateFilter, limit: int) -> set[int]:
    if kind is FateFilter.DEAD_LETTERED:
        query = f"SELECT DISTINCT flow_id FROM ({_PRESENT_DEAD_LETTERS.format(flows='')}) LIMIT ?"
    else:
        query = (
            "SELECT DISTINCT t.flow_id FROM duplicate_deliveries d "
            "JOIN trace_flows t ON t.trace_id = d.trace_id LIMIT ?"
        )
    return {int(row[0]) for row in conn.execute(query, (limit,))}


def dead_letters_of(
    conn: sqlite3.Connection, message_ids: Sequence[str], trace_ids: Sequence[bytes]
) -> list[DeadLetterRecord]:
    found: dict[tuple[str, str], DeadLetterRecord] = {}
    for column, values in (
        ("message_id", list(message_ids)),
        ("sns_message_id", list(message_ids)),
        ("trace_id", list(trace_ids)),
    ):
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            for record in _records(conn, f"WHERE {column} IN ({','.join('?' * len(chunk))})", chunk):
                found[(record.queue_name, record.message_id)] = record
    return [found[key] for key in sorted(found)]


def read_duplicate_rates(conn: sqlite3.Connection, since_unix_nano: int) -> list[DuplicateRate]:
    rows = conn.execute(
        "SELECT destination, consumer_service, count(DISTINCT message_id), count(*) FROM message_deliveries "
        "WHERE start_unix_nano >= ? GROUP BY destination, consumer_service",
        (since_unix_nano,),
    ).fetchall()
    return duplicate_rates(rows)
