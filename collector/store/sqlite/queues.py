"""Queue depth in SQLite: each queue's place in the redrive graph, and a time series of its counts.

The poller writes on a connection of its own (SQLite serialises it with the span writer); one poll is one
transaction, whatever the number of queues.
"""

from __future__ import annotations

import sqlite3

from hopscope.collector.model import queues as queue_model
from hopscope.collector.model.queues import DepthSample, QueueState, QueueSummary, depth_sample

_SAMPLE_COLUMNS = "queue_name, polled_unix_nano, visible, in_flight, delayed, oldest_age_seconds, age_source"


def record_poll(
    conn: sqlite3.Connection,
    polled_unix_nano: int,
    queues: list[QueueState],
    samples: list[DepthSample],
    keep_after_unix_nano: int | None,
) -> None:
    """Store one poll: queue metadata (an error keeps the last good metadata), samples, and prune old ones."""
    for queue in queues:
        if queue.error is None:
            conn.execute(
                "INSERT INTO queues (name, url, arn, dlq_name, max_receive_count, fifo,"
                " last_polled_unix_nano, last_error, last_error_unix_nano)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
                " ON CONFLICT (name) DO UPDATE SET url = excluded.url, arn = excluded.arn,"
                " dlq_name = excluded.dlq_name, max_receive_count = excluded.max_receive_count,"
                " fifo = excluded.fifo, last_polled_unix_nano = excluded.last_polled_unix_nano,"
                " last_error = NULL, last_error_unix_nano = NULL",
                (queue.name, queue.url, queue.arn, queue.dlq_name, queue.max_receive_count, int(queue.fifo),
                 polled_unix_nano),
            )  # fmt: skip
        else:
            conn.execute(
                "INSERT INTO queues (name, url, last_polled_unix_nano, last_error, last_error_unix_nano)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " last_polled_unix_nano = excluded.last_polled_unix_nano,"
                " last_error = excluded.last_error, last_error_unix_nano = excluded.last_error_unix_nano",
                (queue.name, queue.url, polled_unix_nano, queue.error, polled_unix_nano),
            )
    conn.executemany(
        f"INSERT OR REPLACE INTO queue_depth ({_SAMPLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (s.queue_name, s.polled_unix_nano, s.visible, s.in_flight, s.delayed, s.oldest_age_seconds,
             s.age_source)
            for s in samples
        ],
    )  # fmt: skip
    if keep_after_unix_nano is not None:
        conn.execute("DELETE FROM queue_depth WHERE polled_unix_nano < ?", (keep_after_unix_nano,))


def queue_summaries(conn: sqlite3.Connection) -> list[QueueSummary]:
    """Every known queue with its latest sample and the queues that dead-letter into it."""
    rows = conn.execute(
        "SELECT name, url, arn, dlq_name, max_receive_count, last_polled_unix_nano, last_error,"
        " last_error_unix_nano FROM queues ORDER BY name"
    ).fetchall()
    latest = {
        row[0]: depth_sample(row)
        for row in conn.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM queue_depth d WHERE polled_unix_nano ="
            " (SELECT MAX(polled_unix_nano) FROM queue_depth WHERE queue_name = d.queue_name)"
        )
    }
    return queue_model.queue_summaries(rows, latest)


def depth_series(
    conn: sqlite3.Connection, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
) -> list[DepthSample]:
    """A queue's samples in the range, oldest first, at most ``limit`` (the newest ones when cut)."""
    rows = conn.execute(
        f"SELECT {_SAMPLE_COLUMNS} FROM queue_depth WHERE queue_name = ? AND polled_unix_nano >= ?"
        " AND polled_unix_nano < ? ORDER BY polled_unix_nano DESC LIMIT ?",
        (queue_name, since_unix_nano, until_unix_nano, limit),
    ).fetchall()
    return [depth_sample(row) for row in reversed(rows)]


def queue_depth(
    conn: sqlite3.Connection, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
) -> list[DepthSample] | None:
    """A queue's depth samples in the range (None for a queue never polled)."""
    if not known_queue(conn, queue_name):
        return None
    return depth_series(conn, queue_name, since_unix_nano, until_unix_nano, limit)


def known_queue(conn: sqlite3.Connection, queue_name: str) -> bool:
    return conn.execute("SELECT 1 FROM queues WHERE name = ?", (queue_name,)).fetchone() is not None
