"""Retention beyond spans on SQLite: what points to expired spans goes with them, a short transaction at a
time. The process that stitches (ingest/stitcher.py, or the writer thread with ``--stitch-in-writer``) does
steps 1-4 between its chunks: it is the one that writes flows, so no step waits for its lock; the writer
thread does step 5, since it keeps the ids of the resources and scopes it stores.

One call does a bounded part of each step (at most ``limit`` flows, rows of each rollup table and waiting
rows, a chunk of each sweep), so that no step waits for another to run out of work: while the stitcher
makes flows that are already past the retention (it fell that far behind), rollups and keys still go.

1. flows whose last span ended before the cutoff (or none of whose spans is stored any more), with every
   row that points to them (``trace_flows``, ``flow_operations``, ``flow_correlations``, ``shared_links``,
   ``duplicate_deliveries``, ``pending_hops`` of their traces, the flows merged into them). A flow that
   shares a batch trace with a flow still within retention (either way round) stays: the standing flow
   shows the batch's spans as its own. The newest flow id is kept as an empty row (a tombstone, never
   listed), so that ids are never handed out twice: the stitcher numbers new flows from the largest id;
2. RED rollups and hop rollups whose minute ended before the cutoff;
3. pending hops that waited since before the cutoff (less the external-call grace, so that a client call
   whose server never shows up is still counted as external), and deliveries that started before it;
4. a sweep through ``message_keys`` (no index by trace: a cursor, a chunk of keys per call) for keys whose
   trace has no flow any more;
5. a sweep through the spans (a cursor, a chunk per call) for the resources and scopes no span refers to.

Sweeps 4 and 5 start a new pass once the last one ended, at most every SWEEP_INTERVAL_SECONDS.
Queue-depth samples and gone dead letters follow the same clock already: the SQS poller prunes them with
``--retention`` (aws/poller.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from hopscope.collector.stitch.graph_rules import EXTERNAL_GRACE_NS
from hopscope.collector.stitch.groups import chunks
from hopscope.collector.store.sqlite import logs as sqlite_logs
from hopscope.collector.store.sqlite.red import BUCKET_NS
from hopscope.collector.store.sqlite.spans import InternedIds

# Keys of message_keys, and spans, that one sweep step reads at most (10-40 ms on the 2-core dev machine).
SWEEP_KEYS = 2_000
SWEEP_SPANS = 2_000
# A new pass of the sweeps starts at most this often, however often the expiry catches up.
SWEEP_INTERVAL_SECONDS = 60.0

# Standing flows whose last span ended before the cutoff, oldest first (flows_by_start: a flow's start is at
# most its end), or that started before it and have no span stored any more (spans go by their start: a span
# that ended after the cutoff may be gone); none that shares a batch trace with a flow still within
# retention, whichever way round.
_EXPIRED_FLOWS = """
SELECT f.flow_id FROM flows f
WHERE f.merged_into IS NULL AND f.start_unix_nano < :cutoff
AND (f.end_unix_nano < :cutoff OR NOT EXISTS (
    SELECT 1 FROM trace_flows t JOIN spans s ON s.trace_id = t.trace_id WHERE t.flow_id = f.flow_id))
AND NOT EXISTS (
    SELECT 1 FROM trace_flows t JOIN shared_links s ON s.linked_trace_id = t.trace_id
    JOIN trace_flows b ON b.trace_id = s.trace_id JOIN flows g ON g.flow_id = b.flow_id
    WHERE t.flow_id = f.flow_id AND g.flow_id != f.flow_id AND g.end_unix_nano >= :cutoff)
AND NOT EXISTS (
    SELECT 1 FROM trace_flows t JOIN shared_links s ON s.trace_id = t.trace_id
    JOIN trace_flows l ON l.trace_id = s.linked_trace_id JOIN flows g ON g.flow_id = l.flow_id
    WHERE t.flow_id = f.flow_id AND g.flow_id != f.flow_id AND g.end_unix_nano >= :cutoff)
ORDER BY f.start_unix_nano LIMIT :limit
"""

# Tombstones (see the module's docstring) below the newest id: their ids can no longer be handed out again.
_OLD_TOMBSTONES = """
SELECT flow_id FROM flows WHERE merged_into IS NULL AND start_unix_nano IS NULL AND span_count = 0
AND flow_id < (SELECT max(flow_id) FROM flows)
AND NOT EXISTS (SELECT 1 FROM trace_flows t WHERE t.flow_id = flows.flow_id) LIMIT ?
"""


class Expiry:
    """The expiry's state between calls: where each sweep is. Used by the writer thread only."""

    def __init__(self, interned: InternedIds) -> None:
        self._interned = interned
        self._swept_at = float("-inf")  # when the last sweeps started (monotonic)
        self._keys_after: tuple[str, str, bytes] | None = None
        self._keys_done = True
        self._spans_after = 0
        self._spans_done = True
        self._seen_resources: set[int] = set()
        self._seen_scopes: set[int] = set()
        self._max_resource = 0
        self._max_scope = 0

    def expire(
        self,
        conn: sqlite3.Connection,
        cutoff_unix_nano: int,
        limit: int,
        *,
        flows: bool = True,
        orphans: bool = True,
    ) -> int:
        """One step inside the caller's transaction; returns the rows it deleted or examined, 0 once
        everything before the cutoff is gone and both sweeps have made their pass.

        ``flows``: steps 1-4 (what the stitcher writes); ``orphans``: step 5, resources and scopes, which
        only the process that stores spans may do (its cache of their ids is cleared with them).
        """
        now = time.monotonic()
        if self._keys_done and self._spans_done and now - self._swept_at >= SWEEP_INTERVAL_SECONDS:
            self._swept_at = now
            if flows:
                self._keys_after, self._keys_done = None, False
            if orphans:
                self._start_span_sweep(conn)
        done = 0
        if flows:
            for step in (expire_flows, expire_rollups, expire_waiting):
                done += step(conn, cutoff_unix_nano, limit)
            if not self._keys_done:
                done += self._sweep_message_keys(conn)
        if orphans and not self._spans_done:
            done += self._sweep_spans(conn)
        return done

    def _sweep_message_keys(self, conn: sqlite3.Connection) -> int:
        after = self._keys_after
        where = "" if after is None else "WHERE (message_id, destination, trace_id) > (?, ?, ?)"
        rows = conn.execute(
            "SELECT m.message_id, m.destination, m.trace_id, t.trace_id IS NULL FROM "
            f"(SELECT message_id, destination, trace_id FROM message_keys {where} "
            "ORDER BY message_id, destination, trace_id LIMIT ?) m "
            "LEFT JOIN trace_flows t ON t.trace_id = m.trace_id",
            [*(after or ()), SWEEP_KEYS],
        ).fetchall()
        if len(rows) < SWEEP_KEYS:
            self._keys_done = True
        if rows:
            self._keys_after = max((row[0], row[1], row[2]) for row in rows)
        orphans = [(row[0], row[1], row[2]) for row in rows if row[3]]
        conn.executemany(
            "DELETE FROM message_keys WHERE message_id = ? AND destination = ? AND trace_id = ?", orphans
        )
        return max(len(rows), 1)

    def _start_span_sweep(self, conn: sqlite3.Connection) -> None:
        self._spans_after, self._spans_done = 0, False
        self._seen_resources.clear()
        self._seen_scopes.clear()
        # only rows that exist now can be found unused by this pass
        self._max_resource = conn.execute("SELECT coalesce(max(resource_id), 0) FROM resources").fetchone()[0]
        self._max_scope = conn.execute("SELECT coalesce(max(scope_id), 0) FROM scopes").fetchone()[0]

    def _sweep_spans(self, conn: sqlite3.Connection) -> int:
        """A chunk of the pass through the spans, in key order; at its end (in the same transaction as the
        last chunk, so no span comes in between) the resources and scopes no span of the pass used are
        deleted. Spans stored meanwhile have larger keys (keys never go back: windows.py), so the pass sees
        them."""
        rows = conn.execute(
            "SELECT span_pk, resource_id, scope_id FROM spans WHERE span_pk > ? ORDER BY span_pk LIMIT ?",
            (self._spans_after, SWEEP_SPANS),
        ).fetchall()
        for _, resource_id, scope_id in rows:
            self._seen_resources.add(resource_id)
            self._seen_scopes.add(scope_id)
        if rows:
            self._spans_after = rows[-1][0]
        if len(rows) == SWEEP_SPANS:
            return len(rows)
        self._spans_done = True
        deleted = _delete_unseen(conn, "resources", "resource_id", self._max_resource, self._seen_resources)
        deleted += _delete_unseen(conn, "scopes", "scope_id", self._max_scope, self._seen_scopes)
        if deleted:
            self._interned.clear()  # the writer's cache must not hand out a deleted id
        return max(len(rows) + deleted, 1)


def _delete_unseen(conn: sqlite3.Connection, table: str, column: str, through: int, seen: set[int]) -> int:
    """Delete the rows no span of the pass used and no log record uses (log records point to the same
    resources and scopes; a seek per candidate on their index)."""
    candidates = [
        row[0]
        for row in conn.execute(f"SELECT {column} FROM {table} WHERE {column} <= ?", (through,))
        if row[0] not in seen
    ]
    in_logs = sqlite_logs.referenced(conn, column, candidates)
    unused = [candidate for candidate in candidates if candidate not in in_logs]
    for chunk in chunks(unused):
        conn.execute(f"DELETE FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)
    return len(unused)


def expire_flows(conn: sqlite3.Connection, cutoff_unix_nano: int, limit: int) -> int:
    """Up to ``limit`` expired flows, with every row that points to them; returns how many went."""
    flow_ids = [row[0] for row in conn.execute(_EXPIRED_FLOWS, {"cutoff": cutoff_unix_nano, "limit": limit})]
    tombstones = [row[0] for row in conn.execute(_OLD_TOMBSTONES, (limit,))]
    if tombstones:
        _in(conn, "DELETE FROM flows WHERE flow_id IN ({})", tombstones)
    if not flow_ids:
        return len(tombstones)
    trace_ids = [
        row[0] for chunk in chunks(flow_ids) for row in _in(conn, _TRACES_OF_FLOWS, chunk).fetchall()
    ]
    for chunk in chunks(trace_ids):
        for statement in _BY_TRACE:
            _in(conn, statement, chunk)
    for chunk in chunks(flow_ids):
        for statement in _BY_FLOW:
            _in(conn, statement, chunk)
    kept = 0
    (newest,) = conn.execute("SELECT max(flow_id) FROM flows").fetchone()
    if newest in flow_ids:  # kept as a tombstone: the stitcher numbers new flows from the largest id
        conn.execute(
            "UPDATE flows SET start_unix_nano = NULL, end_unix_nano = NULL, span_count = 0, trace_count = 0, "
            "error_count = 0, max_receive_count = 0, entry_rank = NULL, entry_start_unix_nano = NULL, "
            "entry_service = NULL, entry_operation = NULL, shared_only = 0 WHERE flow_id = ?",
            (newest,),
        )
        flow_ids = [flow_id for flow_id in flow_ids if flow_id != newest]
        kept = 1
    for chunk in chunks(flow_ids):
        _in(conn, "DELETE FROM flows WHERE flow_id IN ({})", chunk)
    return len(flow_ids) + kept + len(tombstones)


_TRACES_OF_FLOWS = "SELECT trace_id FROM trace_flows WHERE flow_id IN ({})"
_BY_TRACE = (
    "DELETE FROM shared_links WHERE linked_trace_id IN ({})",
    "DELETE FROM shared_links WHERE trace_id IN ({})",
    "DELETE FROM duplicate_deliveries WHERE trace_id IN ({})",
    "DELETE FROM pending_hops WHERE trace_id IN ({})",
)
_BY_FLOW = (
    "DELETE FROM flow_operations WHERE flow_id IN ({})",
    "DELETE FROM flow_correlations WHERE flow_id IN ({})",
    "DELETE FROM trace_flows WHERE flow_id IN ({})",
    "DELETE FROM flows WHERE merged_into IN ({})",
)


def _in(conn: sqlite3.Connection, statement: str, values: Sequence[object]) -> sqlite3.Cursor:
    return conn.execute(statement.format(",".join("?" * len(values))), values)


def expire_rollups(conn: sqlite3.Connection, cutoff_unix_nano: int, limit: int) -> int:
    """Up to ``limit`` rows of each rollup table whose minute ended before the cutoff."""
    last_start = cutoff_unix_nano - BUCKET_NS  # a bucket that starts after this ends after the cutoff
    deleted = 0
    for table, key in (
        ("red_rollups", "bucket_start_unix_nano, service_name, operation, kind"),
        ("hop_rollups", "bucket_start_unix_nano, source, target, edge_kind"),
    ):
        deleted += conn.execute(
            f"DELETE FROM {table} WHERE ({key}) IN "
            f"(SELECT {key} FROM {table} WHERE bucket_start_unix_nano <= ? LIMIT ?)",
            (last_start, limit),
        ).rowcount
    return deleted


def expire_waiting(conn: sqlite3.Connection, cutoff_unix_nano: int, limit: int) -> int:
    """Pending hops and successful deliveries from before the cutoff, up to ``limit`` of each."""
    deleted = conn.execute(
        "DELETE FROM pending_hops WHERE rowid IN "
        "(SELECT rowid FROM pending_hops WHERE waiting_since_unix_nano < ? LIMIT ?)",
        (cutoff_unix_nano - EXTERNAL_GRACE_NS, limit),
    ).rowcount
    deleted += conn.execute(
        "DELETE FROM message_deliveries WHERE (message_id, destination, consumer_service, attempt) IN "
        "(SELECT message_id, destination, consumer_service, attempt FROM message_deliveries "
        "WHERE start_unix_nano < ? LIMIT ?)",
        (cutoff_unix_nano, limit),
    ).rowcount
    return deleted
