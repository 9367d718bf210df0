"""Flow stitching in SQLite: a union-find over traces, updated inside the writer's transaction.

Traces join through links (except a batch trace's, see MAX_JOINING_LINKED_TRACES) and shared message ids.
A batch trace (a consumer invocation for the messages of several traces) joins none of the traces it links
to: ``shared_links`` records them, and each of their flows shows the batch as shared when read. A flow made
only of batch traces is ``shared_only``: not a message flow of its own, left out of searches.

Every trace belongs to exactly one standing flow (``trace_flows``). A link to a trace that has not arrived
yet creates that trace's entry (with no spans) so that it joins the same flow when it does. When two flows
meet, the older id stands and the other is marked ``merged_into`` it, so an id once handed out always
resolves. Each flow's summary columns are kept up to date as spans arrive, in any order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from hopscope.collector.model.flows import FlowFilter, FlowSort, FlowSummary, with_shared
from hopscope.collector.stitch import groups as flow_groups
from hopscope.collector.stitch.facts import TraceFacts
from hopscope.collector.stitch.groups import (
    MAX_NS,
    chunks,
    combine,
    connected_groups,
    is_batch,
    link_keys_by_trace,
    meet_stored_flows,
    only_batches,
)

# Kept importable from here; stitch/groups.py owns it.
MAX_JOINING_LINKED_TRACES = flow_groups.MAX_JOINING_LINKED_TRACES


# Whether the batch's entry candidate comes before the flow's entry (stitch/facts.py Entry: compared as a
# tuple, text by code point as in Python).
_EARLIER_ENTRY = (
    "(:entry_service IS NOT NULL AND (entry_service IS NULL OR "
    "(:entry_rank, :entry_start, :entry_service, :entry_operation) "
    "< (entry_rank, entry_start_unix_nano, entry_service, entry_operation)))"
)


class FlowStitcher:
    """Applies a group commit's :class:`TraceFacts` on the writer connection, inside the caller's transaction.

    The traces of the batch are first joined in memory (by links and message keys), then each connected
    group costs a handful of statements: the number of statements follows the flows, not the spans.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def apply(self, traces: Iterable[TraceFacts]) -> None:
        batch = combine(traces)
        if not batch:
            return
        link_keys = link_keys_by_trace(batch)
        linked = {linked for facts in batch.values() for linked in facts.linked_traces}
        known = self._known_traces([*batch, *((linked | link_keys.keys()) - batch.keys())])
        keys = {key for facts in batch.values() for key in facts.message_keys}
        keys.update(key for trace_keys in link_keys.values() for key in trace_keys)
        key_flows = self._flows_of_message_keys(keys)
        batches = {trace_id for trace_id, facts in batch.items() if is_batch(facts)}
        batches |= self._stored_batches([t for t in batch if t in known and t not in batches])
        rows = _Rows()
        (last_flow_id,) = self._conn.execute("SELECT coalesce(max(flow_id), 0) FROM flows").fetchone()
        for members in connected_groups(batch, batches):
            total, new_with_spans, flows = meet_stored_flows(
                members, batch, known, key_flows, rows.standing, link_keys=link_keys
            )
            shared = only_batches(members, batch, batches)
            if flows:
                flow_id = min(flows)
                for other in sorted(flows - {flow_id}):
                    self._absorb(flow_id, other)
                    rows.absorbed[other] = flow_id
                if total.span_count:
                    self._grow(flow_id, total, new_with_spans, shared)
            else:  # ids handed out here; the single writer makes that safe
                last_flow_id += 1
                flow_id = last_flow_id
                rows.flows.append(_flow_row(flow_id, total, new_with_spans, shared))
            rows.add_group(flow_id, members, batch, known, total, link_keys=link_keys)
        rows.shared_links = [(linked, b) for b in batches if b in batch for linked in batch[b].linked_traces]
        rows.insert(self._conn)
        self._recheck_shared_only([t for t in batches if t in batch and t in known])

    def _recheck_shared_only(self, batch_traces: list[bytes]) -> None:
        """A stored trace whose linking span came after its other spans became a batch trace only now: its
        flow is shared-only if every trace of it with spans is a batch trace."""
        for chunk in chunks(batch_traces):
            marks = ",".join("?" * len(chunk))
            self._conn.execute(
                "UPDATE flows SET shared_only = NOT EXISTS (SELECT 1 FROM trace_flows t "
                "WHERE t.flow_id = flows.flow_id AND t.span_count > 0 "
                "AND t.trace_id NOT IN (SELECT trace_id FROM shared_links)) "
                f"WHERE flow_id IN (SELECT flow_id FROM trace_flows WHERE trace_id IN ({marks})) "
                "AND shared_only = 0",
                chunk,
            )

    def _stored_batches(self, trace_ids: list[bytes]) -> set[bytes]:
        """The traces among these that an earlier batch recorded as batch traces."""
        found: set[bytes] = set()
        for chunk in chunks(trace_ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT DISTINCT trace_id FROM shared_links WHERE trace_id IN ({marks})"
            found.update(row[0] for row in self._conn.execute(query, chunk))
        return found

    def _known_traces(self, trace_ids: list[bytes]) -> dict[bytes, tuple[int, int]]:
        """trace id -> (standing flow, spans stored) for the traces already known."""
        known: dict[bytes, tuple[int, int]] = {}
        for chunk in chunks(trace_ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT trace_id, flow_id, span_count FROM trace_flows WHERE trace_id IN ({marks})"
            for trace_id, flow_id, span_count in self._conn.execute(query, chunk):
                known[trace_id] = (flow_id, span_count)
        return known

    def _flows_of_message_keys(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        found: dict[tuple[str, str], set[int]] = {}
        message_ids = sorted({message_id for message_id, _ in keys})
        for chunk in chunks(message_ids):
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT m.message_id, m.destination, t.flow_id FROM message_keys m "
                f"JOIN trace_flows t USING (trace_id) WHERE m.message_id IN ({marks})"
            )
            for message_id, destination, flow_id in self._conn.execute(query, chunk):
                if (message_id, destination) in keys:
                    found.setdefault((message_id, destination), set()).add(flow_id)
        return found

    def _grow(self, flow_id: int, total: TraceFacts, traces: int, shared: bool) -> None:
        """Fold new spans (or a whole absorbed flow) into a flow's summary; ``shared``: they are all spans of
        batch traces (or of a shared-only flow)."""
        entry_rank, entry_start, entry_service, entry_operation = total.entry or (None, MAX_NS, None, None)
        self._conn.execute(
            f"""
            UPDATE flows SET
                start_unix_nano = min(coalesce(start_unix_nano, :max), :start),
                end_unix_nano = max(coalesce(end_unix_nano, 0), :end),
                span_count = span_count + :spans,
                trace_count = trace_count + :traces,
                error_count = error_count + :errors,
                max_receive_count = max(max_receive_count, :receive_count),
                shared_only = CASE WHEN span_count = 0 THEN :shared ELSE (shared_only AND :shared) END,
                entry_rank = CASE WHEN {_EARLIER_ENTRY} THEN :entry_rank ELSE entry_rank END,
                entry_start_unix_nano = CASE WHEN {_EARLIER_ENTRY}
                    THEN :entry_start ELSE entry_start_unix_nano END,
                entry_service = CASE WHEN {_EARLIER_ENTRY} THEN :entry_service ELSE entry_service END,
                entry_operation = CASE WHEN {_EARLIER_ENTRY} THEN :entry_operation ELSE entry_operation END
            WHERE flow_id = :flow_id
            """,
            {
                "flow_id": flow_id,
                "max": MAX_NS,
                "start": total.start_unix_nano,
                "end": total.end_unix_nano,
                "spans": total.span_count,
                "traces": traces,
                "errors": total.error_count,
                "receive_count": total.max_receive_count,
                "shared": int(shared),
                "entry_rank": entry_rank,
                "entry_start": entry_start,
                "entry_service": entry_service,
                "entry_operation": entry_operation,
            },
        )

    def _absorb(self, keep: int, gone: int) -> None:
        """Merge standing flow ``gone`` into the older standing flow ``keep``; ``gone`` keeps resolving."""
        conn = self._conn
        row = conn.execute(
            "SELECT start_unix_nano, end_unix_nano, span_count, trace_count, error_count, max_receive_count, "
            "shared_only, entry_rank, entry_start_unix_nano, entry_service, entry_operation "
            "FROM flows WHERE flow_id = ?",
            (gone,),
        ).fetchone()
        start, end, spans, traces, errors, receive_count, shared, *entry = row
        if spans:
            absorbed = TraceFacts(
                b"",
                span_count=spans,
                start_unix_nano=start,
                end_unix_nano=end,
                error_count=errors,
                max_receive_count=receive_count,
                entry=(entry[0], entry[1], entry[2], entry[3]) if entry[2] is not None else None,
            )
            self._grow(keep, absorbed, traces, bool(shared))
        conn.execute("UPDATE trace_flows SET flow_id = ? WHERE flow_id = ?", (keep, gone))
        for table in ("flow_operations", "flow_correlations"):
            conn.execute(f"UPDATE OR IGNORE {table} SET flow_id = ? WHERE flow_id = ?", (keep, gone))
            conn.execute(f"DELETE FROM {table} WHERE flow_id = ?", (gone,))
        # Every id that pointed at the absorbed flow now points at the standing one: chains stay one step.
        conn.execute("UPDATE flows SET merged_into = ? WHERE merged_into = ?", (keep, gone))
        conn.execute(
            "UPDATE flows SET merged_into = ?, span_count = 0, trace_count = 0, error_count = 0 "
            "WHERE flow_id = ?",
            (keep, gone),
        )


class _Rows:
    """Rows of one stitching batch, written with one executemany per table at the end."""

    def __init__(self) -> None:
        self.flows: list[tuple[object, ...]] = []
        self.new_traces: list[tuple[bytes, int, int]] = []
        self.grown_traces: list[tuple[int, bytes]] = []
        self.message_keys: list[tuple[str, str, bytes]] = []
        self.operations: list[tuple[str, str, int]] = []
        self.correlations: list[tuple[str, int]] = []
        self.shared_links: list[tuple[bytes, bytes]] = []  # (linked trace, batch trace)
        # Flows that an earlier group of this batch merged away: the flows read before the batch (and the
        # rows above) may still name them.
        self.absorbed: dict[int, int] = {}

    def standing(self, flow_id: int) -> int:
        while flow_id in self.absorbed:
            flow_id = self.absorbed[flow_id]
        return flow_id

    def add_group(
        self,
        flow_id: int,
        members: list[bytes],
        batch: dict[bytes, TraceFacts],
        known: dict[bytes, tuple[int, int]],
        total: TraceFacts,
        *,
        link_keys: dict[bytes, set[tuple[str, str]]],
    ) -> None:
        for trace_id in members:
            self.message_keys.extend((m, d, trace_id) for m, d in link_keys.get(trace_id, ()))
            facts = batch.get(trace_id)
            if facts is None:  # only known from a link
                if trace_id not in known:
                    self.new_traces.append((trace_id, flow_id, 0))
                continue
            if trace_id in known:
                self.grown_traces.append((facts.span_count, trace_id))
            else:
                self.new_traces.append((trace_id, flow_id, facts.span_count))
            self.message_keys.extend((m, d, trace_id) for m, d in facts.message_keys)
            self.correlations.extend((c, flow_id) for c in facts.correlation_ids)
        self.operations.extend((operation, service, flow_id) for service, operation in total.operations)

    def insert(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO flows (flow_id, start_unix_nano, end_unix_nano, span_count, trace_count, "
            "error_count, max_receive_count, entry_rank, entry_start_unix_nano, entry_service, "
            "entry_operation, shared_only) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.flows,
        )
        standing = self.standing
        conn.executemany(
            "INSERT INTO trace_flows (trace_id, flow_id, span_count) VALUES (?, ?, ?)",
            [(trace_id, standing(flow_id), spans) for trace_id, flow_id, spans in self.new_traces],
        )
        conn.executemany(
            "UPDATE trace_flows SET span_count = span_count + ? WHERE trace_id = ?", self.grown_traces
        )
        conn.executemany(
            "INSERT OR IGNORE INTO message_keys (message_id, destination, trace_id) VALUES (?, ?, ?)",
            self.message_keys,
        )
        conn.executemany(
            "INSERT OR IGNORE INTO flow_operations (operation, service_name, flow_id) VALUES (?, ?, ?)",
            [(operation, service, standing(flow_id)) for operation, service, flow_id in self.operations],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO flow_correlations (correlation_id, flow_id) VALUES (?, ?)",
            [(correlation_id, standing(flow_id)) for correlation_id, flow_id in self.correlations],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO shared_links (linked_trace_id, trace_id) VALUES (?, ?)", self.shared_links
        )


def _flow_row(flow_id: int, total: TraceFacts, traces: int, shared: bool) -> tuple[object, ...]:
    entry_rank, entry_start, entry_service, entry_operation = total.entry or (None, MAX_NS, None, None)
    has_spans = total.span_count > 0
    return (
        flow_id,
        total.start_unix_nano if has_spans else None,
        total.end_unix_nano if has_spans else None,
        total.span_count,
        traces,
        total.error_count,
        total.max_receive_count,
        entry_rank,
        entry_start,
        entry_service,
        entry_operation,
        int(shared and has_spans),
    )


# -- reading ---------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = (
    "flow_id, start_unix_nano, end_unix_nano, span_count, trace_count, error_count, max_receive_count, "
    "entry_service, entry_operation"
)


def resolve_flow(conn: sqlite3.Connection, flow_id: int) -> int | None:
    """The standing flow that ``flow_id`` is, or was merged into; None for an unknown id."""
    row = conn.execute(
        "SELECT coalesce(merged_into, flow_id) FROM flows WHERE flow_id = ?", (flow_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def flow_of_trace(conn: sqlite3.Connection, trace_id: bytes) -> int | None:
    row = conn.execute("SELECT flow_id FROM trace_flows WHERE trace_id = ?", (trace_id,)).fetchone()
    return None if row is None else int(row[0])


def flow_of_message(conn: sqlite3.Connection, message_id: str, destination: str | None = None) -> int | None:
    """The flow of the traces whose producer or consumer spans carry this message id (on that destination)."""
    if destination is None:
        rows = conn.execute(
            "SELECT t.flow_id FROM message_keys m JOIN trace_flows t ON t.trace_id = m.trace_id "
            "WHERE m.message_id = ? LIMIT 1",
            (message_id,),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT t.flow_id FROM message_keys m JOIN trace_flows t ON t.trace_id = m.trace_id "
            "WHERE m.message_id = ? AND m.destination = ? LIMIT 1",
            (message_id, destination),
        ).fetchall()
    return int(rows[0][0]) if rows else None


def flow_trace_ids(conn: sqlite3.Connection, flow_id: int) -> list[bytes]:
    """The traces of a standing flow that have spans stored."""
    rows = conn.execute(
        "SELECT trace_id FROM trace_flows WHERE flow_id = ? AND span_count > 0 ORDER BY trace_id", (flow_id,)
    )
    return [row[0] for row in rows]


def flow_summaries(conn: sqlite3.Connection, flow_ids: list[int]) -> list[FlowSummary]:
    """Summaries of standing flows, in the order of ``flow_ids``.

    A flow counts the batch traces it shares (see :func:`shared_flows`): their spans, errors, time and
    services are the flow's too.
    """
    if not flow_ids:
        return []
    sharing = shared_flows(conn, flow_ids)
    wanted = sorted({*flow_ids, *(h for hs in sharing.values() for h in hs)})
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM flows WHERE flow_id IN ({marks})", wanted)
    by_id = {row[0]: row for row in rows}
    services = _grouped(
        conn,
        f"SELECT DISTINCT flow_id, service_name FROM flow_operations WHERE flow_id IN ({marks})",
        wanted,
    )
    correlations = _grouped(
        conn, f"SELECT flow_id, correlation_id FROM flow_correlations WHERE flow_id IN ({marks})", wanted
    )
    summaries: dict[int, FlowSummary] = {}
    for flow_id, row in by_id.items():
        if not row[3]:
            continue
        _, start, end, spans, traces, errors, receive_count, entry_service, entry_operation = row
        summaries[flow_id] = FlowSummary(
            flow_id=flow_id,
            start_unix_nano=start,
            end_unix_nano=end,
            duration_ms=(end - start) / 1e6,
            span_count=spans,
            trace_count=traces,
            error_count=errors,
            max_receive_count=receive_count,
            entry_service=entry_service,
            entry_operation=entry_operation,
            services=sorted(services.get(flow_id, ())),
            correlation_ids=sorted(correlations.get(flow_id, ())),
        )
    return [
        with_shared(summaries[flow_id], [summaries[h] for h in sharing.get(flow_id, ()) if h in summaries])
        for flow_id in flow_ids
        if flow_id in summaries
    ]


# The standing flows that share a batch trace with flow ``f.flow_id``... : from a flow's traces, through the
# links batch traces made to them, to the batch traces' own flows.
_SHARING = (
    "SELECT DISTINCT t.flow_id AS flow_id, b.flow_id AS shared_flow_id FROM trace_flows t "
    "JOIN shared_links s ON s.linked_trace_id = t.trace_id "
    "JOIN trace_flows b ON b.trace_id = s.trace_id AND b.span_count > 0 "
    "JOIN flows f ON f.flow_id = b.flow_id AND f.shared_only = 1 "
)


def shared_flows(conn: sqlite3.Connection, flow_ids: list[int]) -> dict[int, list[int]]:
    """flow -> the shared-only flows (batch traces) it shares, whose counts it takes in."""
    found: dict[int, list[int]] = {}
    for chunk in chunks(flow_ids):
        marks = ",".join("?" * len(chunk))
        query = f"{_SHARING} WHERE t.flow_id IN ({marks}) AND b.flow_id != t.flow_id"
        for flow_id, shared_id in conn.execute(query, chunk):
            found.setdefault(flow_id, []).append(shared_id)
    return found


def flow_shared_traces(conn: sqlite3.Connection, flow_id: int) -> dict[bytes, list[int]]:
    """The batch traces shared by a standing flow (and not its own), each with every standing flow that
    shares it (this one included), in flow id order."""
    rows = conn.execute(
        "SELECT DISTINCT s.trace_id FROM trace_flows t JOIN shared_links s ON s.linked_trace_id = t.trace_id "
        "JOIN trace_flows b ON b.trace_id = s.trace_id AND b.span_count > 0 AND b.flow_id != t.flow_id "
        "WHERE t.flow_id = ?",
        (flow_id,),
    ).fetchall()
    batch_ids = [row[0] for row in rows]
    sharing: dict[bytes, set[int]] = {trace_id: {flow_id} for trace_id in batch_ids}
    for chunk in chunks(batch_ids):
        marks = ",".join("?" * len(chunk))
        query = (
            "SELECT s.trace_id, t.flow_id FROM shared_links s JOIN trace_flows t ON t.trace_id = "
            f"s.linked_trace_id WHERE s.trace_id IN ({marks}) AND t.span_count > 0"
        )
        for trace_id, other in conn.execute(query, chunk):
            sharing[trace_id].add(other)
    return {trace_id: sorted(flows) for trace_id, flows in sorted(sharing.items())}


def _grouped(conn: sqlite3.Connection, query: str, params: list[int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for flow_id, value in conn.execute(query, params):
        grouped.setdefault(flow_id, []).append(value)
    return grouped


def search_flow_ids(conn: sqlite3.Connection, criteria: FlowFilter, limit: int, offset: int) -> list[int]:
    """Standing message flows that match every criterion but span attributes, best first.

    A flow made only of batch traces is no message flow: it is never listed. What a batch trace carries
    (its services, span names, correlation ids, errors) matches the flows that share it.
    """
    where = ["merged_into IS NULL", "span_count > 0", "shared_only = 0"]
    params: list[object] = []
    if criteria.since_unix_nano is not None:
        where.append("start_unix_nano >= ?")
        params.append(criteria.since_unix_nano)
    if criteria.until_unix_nano is not None:
        where.append("start_unix_nano < ?")
        params.append(criteria.until_unix_nano)
    if criteria.errors_only:
        where.append(_or_shared("error_count > 0", "SELECT flow_id FROM flows WHERE error_count > 0"))
    if criteria.min_duration_ms is not None:
        where.append("end_unix_nano - start_unix_nano >= ?")
        params.append(int(criteria.min_duration_ms * 1e6))
    if criteria.service is not None:
        key = "SELECT flow_id FROM flow_operations WHERE service_name = ?"
        where.append(_or_shared(f"flow_id IN ({key})", key))
        params.extend([criteria.service] * 2)
    if criteria.operation is not None:
        key = "SELECT flow_id FROM flow_operations WHERE operation = ?"
        where.append(_or_shared(f"flow_id IN ({key})", key))
        params.extend([criteria.operation] * 2)
    if criteria.correlation_id is not None:
        key = "SELECT flow_id FROM flow_correlations WHERE correlation_id = ?"
        where.append(_or_shared(f"flow_id IN ({key})", key))
        params.extend([criteria.correlation_id] * 2)
    if criteria.message_id is not None:
        # a message sent while a batch was processed is in the flows that share the batch
        key = (
            "SELECT t.flow_id FROM message_keys m JOIN trace_flows t USING (trace_id) WHERE m.message_id = ?"
        )
        where.append(_or_shared(f"flow_id IN ({key})", key))
        params.extend([criteria.message_id] * 2)
    order = (
        "start_unix_nano DESC, flow_id DESC"
        if criteria.sort is FlowSort.START
        else "end_unix_nano - start_unix_nano DESC, flow_id DESC"
    )
    query = f"SELECT flow_id FROM flows WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?"
    return [row[0] for row in conn.execute(query, [*params, limit, offset])]


def _or_shared(own: str, matching: str) -> str:
    """The flow matches by ``own``, or it shares a batch trace whose (shared-only) flow is in ``matching``."""
    return (
        f"({own} OR flow_id IN (SELECT t.flow_id FROM trace_flows b "
        "JOIN flows f ON f.flow_id = b.flow_id AND f.shared_only = 1 "
        "JOIN shared_links s ON s.trace_id = b.trace_id "
        f"JOIN trace_flows t ON t.trace_id = s.linked_trace_id WHERE b.flow_id IN ({matching})))"
    )
