"""Queue depth in ClickHouse: each queue's place in the redrive graph (``hopscope_queues``, a row version per
poll) and a time series of its counts (``hopscope_queue_depth``), as ``store/sqlite/queues.py`` keeps them.

One poll is two inserts and, with retention, a lightweight DELETE: not one transaction as on SQLite. The
queue names that spans mention come from the graph (``graph.destinations_seen``).
"""

from __future__ import annotations

import time

from hopscope.collector.model import queues as queue_model
from hopscope.collector.model.queues import DepthSample, QueueState, QueueSummary, depth_sample
from hopscope.collector.store.clickhouse.client import ClickHouseClient


def record_poll(
    client: ClickHouseClient,
    polled_unix_nano: int,
    queues: list[QueueState],
    samples: list[DepthSample],
    keep_after_unix_nano: int | None = None,
) -> None:
    """Store one SQS poll; a queue whose poll failed keeps its last good metadata."""
    failed = [queue.name for queue in queues if queue.error is not None]
    previous = {summary.name: summary for summary in queue_summaries(client)} if failed else {}
    version = time.time_ns()
    rows: list[tuple[object, ...]] = []
    for queue in queues:
        if queue.error is None:
            rows.append((queue.name, queue.url, queue.arn, queue.dlq_name, queue.max_receive_count,
                         int(queue.fifo), polled_unix_nano, None, None, version))  # fmt: skip
        else:  # an error keeps the last good metadata
            last = previous.get(queue.name)
            arn, dlq, max_receives = (
                (last.arn, last.dlq_name, last.max_receive_count) if last else (None, None, None)
            )
            rows.append((queue.name, queue.url, arn, dlq, max_receives, 0, polled_unix_nano, queue.error,
                         polled_unix_nano, version))  # fmt: skip
    client.insert(
        f"{client.database}.hopscope_queues",
        ("Name", "Url", "Arn", "DlqName", "MaxReceiveCount", "Fifo", "LastPolled", "LastError",
         "LastErrorAt", "Version"),
        rows,
    )  # fmt: skip
    client.insert(
        f"{client.database}.hopscope_queue_depth",
        ("QueueName", "Polled", "Visible", "InFlight", "Delayed", "OldestAgeSeconds", "AgeSource"),
        [(s.queue_name, s.polled_unix_nano, s.visible, s.in_flight, s.delayed, s.oldest_age_seconds,
          s.age_source) for s in samples],
    )  # fmt: skip
    if keep_after_unix_nano is not None:
        client.command(
            f"DELETE FROM {client.database}.hopscope_queue_depth WHERE Polled < {{keep:Int64}}",
            {"keep": keep_after_unix_nano},
        )


def queue_summaries(client: ClickHouseClient) -> list[QueueSummary]:
    """Every known queue with its latest depth, its DLQ and the queues dead-lettering into it."""
    rows = client.query(
        "SELECT Name, Url, Arn, DlqName, MaxReceiveCount, LastPolled, LastError, LastErrorAt "
        f"FROM {client.database}.hopscope_queues FINAL ORDER BY Name"
    )
    latest = {
        row[0]: depth_sample(row)
        for row in client.query(
            "SELECT QueueName, Polled, Visible, InFlight, Delayed, OldestAgeSeconds, AgeSource "
            f"FROM {client.database}.hopscope_queue_depth ORDER BY QueueName, Polled DESC "
            "LIMIT 1 BY QueueName"
        )
    }
    return queue_model.queue_summaries(rows, latest)


def queue_depth(
    client: ClickHouseClient, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
) -> list[DepthSample] | None:
    """A queue's depth samples in the range, oldest first (None for a queue never polled)."""
    known = client.query(
        f"SELECT count() FROM {client.database}.hopscope_queues WHERE Name = {{name:String}}",
        {"name": queue_name},
    )
    if not known[0][0]:
        return None
    rows = client.query(
        "SELECT QueueName, Polled, Visible, InFlight, Delayed, OldestAgeSeconds, AgeSource "
        f"FROM {client.database}.hopscope_queue_depth FINAL WHERE QueueName = {{name:String}} "
        "AND Polled >= {since:Int64} AND Polled < {until:Int64} "
        "ORDER BY Polled DESC LIMIT {limit:UInt32}",
        {"name": queue_name, "since": since_unix_nano, "until": until_unix_nano, "limit": limit},
    )
    return [depth_sample(row) for row in reversed(rows)]
