"""Flow stitching in ClickHouse: the union-find of ``store/sqlite/flows.py``, written as new row versions.

The answers are those of the SQLite store (see ``sqlite/flows.py``): the same flows, the same ids (new ids are
max + 1, the older id stands on a merge, a merged id resolves in one step), the same summaries and searches.
ClickHouse has no cheap UPDATE, so the layout differs:

- Every row that changes is written again whole with a higher ``Version``; the tables are
  ``ReplacingMergeTree(Version)`` keyed by their natural key, and readers take the last version (``FINAL`` on
  a key lookup, ``argMax(..., Version)`` where other columns are filtered).
- A trace's row keeps the flow it first joined (``FlowId`` never changes): a merge rewrites the two flow
  rows only, not the traces of the absorbed flow. ``hopscope_flows.MergedInto`` resolves the old id in one
  step, and the flows merged into a standing flow are found by that column.
- A flow's row carries its operations and correlation ids, so a summary is one row; the search tables
  (``hopscope_flow_operations``, ``hopscope_flow_correlations``) get rows for the standing flow, including
  those of any flow it absorbs.

Every query names the rows it needs by key, so the stitcher costs a few queries and inserts per call,
whatever the number of traces, and the readers a few key lookups.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hopscope.collector.model.flows import FlowFilter, FlowSort, FlowSummary, with_shared
from hopscope.collector.stitch.facts import Entry, TraceFacts, earlier_entry
from hopscope.collector.stitch.groups import (
    MAX_NS,
    combine,
    connected_groups,
    is_batch,
    link_keys_by_trace,
    meet_stored_flows,
    only_batches,
)
from hopscope.collector.store.clickhouse.client import ClickHouseClient

_MIN_NS = -(2**63)
_LAST_FLOW_ID_KEY = "last_flow_id"

_FLOW_COLUMNS = (
    "FlowId",
    "MergedInto",
    "StartUnixNano",
    "EndUnixNano",
    "SpanCount",
    "TraceCount",
    "ErrorCount",
    "MaxReceiveCount",
    "EntryStartUnixNano",
    "EntryService",
    "EntryOperation",
    "OperationServices",
    "OperationNames",
    "CorrelationIds",
    "EntryRank",
    "SharedOnly",
    "Version",
)
_SELECT_FLOW = ", ".join(_FLOW_COLUMNS)
_RESOLVED = "if(MergedInto = 0, FlowId, MergedInto)"


# -- stitching -------------------------------------------------------------------------------------------


@dataclass
class _Flow:
    """A flow row as the stitcher changes it; written once per apply() as a new version."""

    flow_id: int
    merged_into: int = 0
    start: int = MAX_NS
    end: int = 0
    span_count: int = 0
    trace_count: int = 0
    error_count: int = 0
    max_receive_count: int = 0
    entry: Entry | None = None
    operations: set[tuple[str, str]] = field(default_factory=set)
    correlation_ids: set[str] = field(default_factory=set)
    stored_operations: frozenset[tuple[str, str]] = frozenset()
    stored_correlation_ids: frozenset[str] = frozenset()
    shared_only: bool = False
    version: int = 0
    changed: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> _Flow:
        operations = set(zip(row[11], row[12], strict=True))
        correlation_ids = set(row[13])
        return cls(
            flow_id=int(row[0]),
            merged_into=int(row[1]),
            start=int(row[2]),
            end=int(row[3]),
            span_count=int(row[4]),
            trace_count=int(row[5]),
            error_count=int(row[6]),
            max_receive_count=int(row[7]),
            entry=None if row[9] is None else (int(row[14]), int(row[8]), row[9], row[10] or ""),
            operations=operations,
            correlation_ids=correlation_ids,
            stored_operations=frozenset(operations),
            stored_correlation_ids=frozenset(correlation_ids),
            shared_only=bool(row[15]),
            version=int(row[16]),
        )

    def grow(self, total: TraceFacts, traces: int, shared: bool) -> None:
        """sqlite/flows.py FlowStitcher._grow: fold new spans (or a whole absorbed flow) into the summary."""
        self.shared_only = shared if self.span_count == 0 else self.shared_only and shared
        self.start = min(self.start, total.start_unix_nano)
        self.end = max(self.end, total.end_unix_nano)
        self.span_count += total.span_count
        self.trace_count += traces
        self.error_count += total.error_count
        self.max_receive_count = max(self.max_receive_count, total.max_receive_count)
        self.entry = earlier_entry(self.entry, total.entry)
        self.changed = True

    def absorb(self, gone: _Flow) -> None:
        """sqlite/flows.py FlowStitcher._absorb: the standing flow ``gone`` joins this (older) one."""
        if gone.span_count:
            absorbed = TraceFacts(
                b"",
                span_count=gone.span_count,
                start_unix_nano=gone.start,
                end_unix_nano=gone.end,
                error_count=gone.error_count,
                max_receive_count=gone.max_receive_count,
                entry=gone.entry,
            )
            self.grow(absorbed, gone.trace_count, gone.shared_only)
        self.add_keys(gone.operations, gone.correlation_ids)
        gone.merged_into = self.flow_id
        gone.span_count = gone.trace_count = gone.error_count = 0
        gone.changed = True

    def add_keys(self, operations: set[tuple[str, str]], correlation_ids: set[str]) -> None:
        if not operations <= self.operations or not correlation_ids <= self.correlation_ids:
            self.operations |= operations
            self.correlation_ids |= correlation_ids
            self.changed = True

    def row(self, version: int) -> tuple[object, ...]:
        operations = sorted(self.operations)
        entry_rank, entry_start, entry_service, entry_operation = self.entry or (0, MAX_NS, None, None)
        return (
            self.flow_id,
            self.merged_into,
            self.start,
            self.end,
            self.span_count,
            self.trace_count,
            self.error_count,
            self.max_receive_count,
            entry_start,
            entry_service,
            entry_operation,
            [service for service, _ in operations],
            [operation for _, operation in operations],
            sorted(self.correlation_ids),
            entry_rank,
            int(self.shared_only),
            version,
        )


class _Batch:
    """What one apply() decided: the flows it read or made, and the rows it will write."""

    def __init__(self, flows: dict[int, _Flow]) -> None:
        self.flows = flows
        self.absorbed: dict[int, int] = {}  # a flow merged away by this batch -> the flow that took it
        self.traces: dict[bytes, tuple[int, int]] = {}  # trace -> (flow, spans): its row to write
        self.message_keys: list[tuple[str, str, str]] = []
        self.shared_links: list[tuple[str, str]] = []  # (linked trace, batch trace), hex

    def standing(self, flow_id: int) -> int:
        """The standing flow of a flow read at the start (merged_into is one step) or made by this batch."""
        flow = self.flows.get(flow_id)
        if flow is not None and flow.merged_into and flow_id not in self.absorbed:
            flow_id = flow.merged_into
        while flow_id in self.absorbed:
            flow_id = self.absorbed[flow_id]
        return flow_id

    def add_traces(
        self,
        flow_id: int,
        members: list[bytes],
        batch: dict[bytes, TraceFacts],
        known: dict[bytes, tuple[int, int, int]],
        link_keys: dict[bytes, set[tuple[str, str]]],
    ) -> None:
        """The trace rows of a group: a trace keeps the flow it first joined, a new one joins ``flow_id``."""
        for trace_id in members:
            self.message_keys.extend((m, d, trace_id.hex()) for m, d in link_keys.get(trace_id, ()))
            facts = batch.get(trace_id)
            previous = known.get(trace_id)
            if facts is None:  # only known from a link
                if previous is None:
                    self.traces[trace_id] = (flow_id, 0)
                continue
            if previous is None:
                self.traces[trace_id] = (flow_id, facts.span_count)
            else:
                self.traces[trace_id] = (previous[0], previous[1] + facts.span_count)
            hex_id = trace_id.hex()
            self.message_keys.extend(
                (message_id, destination, hex_id) for message_id, destination in facts.message_keys
            )

    def repoint(self) -> None:
        """Every flow merged into a flow that this batch absorbed is merged into the standing one."""
        for flow in self.flows.values():
            if flow.merged_into and flow.merged_into in self.absorbed:
                flow.merged_into = self.standing(flow.merged_into)
                flow.changed = True


class ClickHouseFlowStitcher:
    """Applies :class:`TraceFacts` to the flow tables: the algorithm of SQLite's ``FlowStitcher``.

    One writer at a time (flow ids are handed out as max + 1). Each call reads what it needs in a few
    batched queries (the traces and message keys it names, the flows they are in, and on a merge the flows
    merged into the absorbed ones), decides everything in memory, then writes one insert per table: the rows
    that changed, whole, with a ``Version`` higher than that of any row it read. A call that fails part way
    leaves the tables written before the failure; the trace rows go last, so the traces of a failed call
    are new again to the next one.
    """

    def __init__(self, client: ClickHouseClient) -> None:
        self._client = client
        self._db = client.database
        self._stored_last_flow_id = 0

    def _table(self, name: str) -> str:
        return f"{self._db}.{name}"

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
        first_flows = {flow_id for flow_id, _, _ in known.values()}
        first_flows.update(flow_id for flow_ids in key_flows.values() for flow_id in flow_ids)
        batch_state = _Batch(self._load_flows(first_flows))
        flows = batch_state.flows
        _forget_expired(flows, known, key_flows)
        last_flow_id = self._last_flow_id()
        for members in connected_groups(batch, batches):
            total, new_with_spans, touched = meet_stored_flows(
                members, batch, known, key_flows, batch_state.standing, link_keys=link_keys
            )
            shared = only_batches(members, batch, batches)
            if touched:
                flow_id = min(touched)
                for other in sorted(touched - {flow_id}):
                    flows[flow_id].absorb(flows[other])
                    batch_state.absorbed[other] = flow_id
                if total.span_count:
                    flows[flow_id].grow(total, new_with_spans, shared)
            else:  # ids handed out here; the single writer makes that safe
                last_flow_id += 1
                flow_id = last_flow_id
                flows[flow_id] = _Flow(flow_id, changed=True)
                flows[flow_id].grow(total, new_with_spans, shared and total.span_count > 0)
            flows[flow_id].add_keys(total.operations, total.correlation_ids)
            batch_state.add_traces(flow_id, members, batch, known, link_keys)
        batch_state.shared_links = [
            (linked.hex(), b.hex()) for b in batches if b in batch for linked in batch[b].linked_traces
        ]
        if batch_state.absorbed:
            # Flows that pointed at an absorbed flow point at the standing one now: chains stay one step.
            for flow in self._merged_into(sorted(batch_state.absorbed)):
                flows.setdefault(flow.flow_id, flow)
            batch_state.repoint()
        self._recheck_shared_only(batch_state, [t for t in batches if t in batch and t in known], batches)
        self._write(batch_state, known, last_flow_id)

    def _recheck_shared_only(self, state: _Batch, batch_traces: list[bytes], batches: set[bytes]) -> None:
        """sqlite/flows.py FlowStitcher._recheck_shared_only: the flow of a stored trace that became a batch
        trace only now is shared-only if every trace of it with spans is a batch trace."""
        touched = {state.standing(state.traces[t][0]) for t in batch_traces if t in state.traces}
        for flow_id in sorted(touched):
            flow = state.flows[flow_id]
            if flow.shared_only:
                continue
            traces = {trace for trace, spans in self._flow_traces(flow_id).items() if spans > 0}
            traces.update(
                t.hex()
                for t, (first, spans) in state.traces.items()
                if spans > 0 and state.standing(first) == flow_id
            )
            batch_hex = {t.hex() for t in batches}
            if traces and traces - batch_hex <= self._stored_batch_hex(sorted(traces - batch_hex)):
                flow.shared_only = flow.changed = True

    def _flow_traces(self, flow_id: int) -> dict[str, int]:
        """trace (hex) -> spans stored, for the traces of a standing flow (and of the flows it absorbed)."""
        flows_table = self._table("hopscope_flows")
        rows = self._client.query(
            f"SELECT TraceId, SpanCount FROM {self._table('hopscope_flow_traces')} FINAL "
            f"WHERE FlowId = {{flow:UInt64}} OR FlowId IN (SELECT FlowId FROM {flows_table} "
            "WHERE MergedInto = {flow:UInt64})",
            {"flow": flow_id},
        )
        return {str(trace): int(spans) for trace, spans in rows}

    def _stored_batch_hex(self, traces: list[str]) -> set[str]:
        return {t.hex() for t in self._stored_batches([bytes.fromhex(t) for t in traces])}

    def _write(self, batch: _Batch, known: dict[bytes, tuple[int, int, int]], last_flow_id: int) -> None:
        read_versions = [flow.version for flow in batch.flows.values()]
        read_versions.extend(version for _, _, version in known.values())
        version = max(time.time_ns(), max(read_versions, default=0) + 1)
        changed = [flow for flow in batch.flows.values() if flow.changed]
        operations: list[tuple[str, str, int]] = []
        correlations: list[tuple[str, int]] = []
        for flow in changed:
            if flow.merged_into:  # rows of absorbed flows would never be read
                continue
            new_operations = sorted(flow.operations - flow.stored_operations)
            operations.extend((service, operation, flow.flow_id) for service, operation in new_operations)
            new_correlations = sorted(flow.correlation_ids - flow.stored_correlation_ids)
            correlations.extend((correlation_id, flow.flow_id) for correlation_id in new_correlations)

        def flow_end(flow_id: int) -> int:
            """The end of the standing flow's last span, which the row's TTL counts from (schema.py)."""
            flow = batch.flows.get(batch.standing(flow_id))
            return flow.end if flow is not None and flow.end > 0 else version

        trace_ends = {trace_id.hex(): flow_end(flow_id) for trace_id, (flow_id, _, _) in known.items()}
        trace_ends.update((t.hex(), flow_end(flow_id)) for t, (flow_id, _) in batch.traces.items())
        traces = [
            (
                trace_id.hex(),
                flow_id if trace_id in known else batch.standing(flow_id),
                spans,
                version,
                trace_ends[trace_id.hex()],
            )
            for trace_id, (flow_id, spans) in batch.traces.items()
        ]
        insert = self._client.insert
        insert(
            self._table("hopscope_message_keys"),
            ("MessageId", "Destination", "TraceId", "FlowEndUnixNano"),
            [(*key, trace_ends.get(key[2], version)) for key in batch.message_keys],
        )
        insert(
            self._table("hopscope_flow_operations"),
            ("ServiceName", "Operation", "FlowId", "FlowEndUnixNano"),
            [(*row, flow_end(row[2])) for row in operations],
        )
        insert(
            self._table("hopscope_flow_correlations"),
            ("CorrelationId", "FlowId", "FlowEndUnixNano"),
            [(*row, flow_end(row[1])) for row in correlations],
        )
        insert(
            self._table("hopscope_shared_links"),
            ("LinkedTraceId", "TraceId", "FlowEndUnixNano"),
            [(*row, trace_ends.get(row[1], version)) for row in batch.shared_links],
        )
        insert(self._table("hopscope_flows"), _FLOW_COLUMNS, [flow.row(version) for flow in changed])
        insert(
            self._table("hopscope_trace_flows"),
            ("TraceId", "FlowId", "SpanCount", "Version", "FlowEndUnixNano"),
            traces,
        )
        if last_flow_id > self._stored_last_flow_id:
            self._client.insert(
                self._table("hopscope_meta"),
                ("Key", "Value", "Version"),
                [(_LAST_FLOW_ID_KEY, str(last_flow_id), version)],
            )

    # -- reads of one apply ------------------------------------------------------------------------------

    def _known_traces(self, trace_ids: list[bytes]) -> dict[bytes, tuple[int, int, int]]:
        """trace id -> (flow it first joined, spans stored, row version) for the traces already known."""
        rows = self._client.query(
            f"SELECT TraceId, FlowId, SpanCount, Version FROM {self._table('hopscope_trace_flows')} FINAL "
            "WHERE TraceId IN {ids:Array(String)}",
            {"ids": [trace_id.hex() for trace_id in trace_ids]},
        )
        return {bytes.fromhex(row[0]): (int(row[1]), int(row[2]), int(row[3])) for row in rows}

    def _stored_batches(self, trace_ids: list[bytes]) -> set[bytes]:
        """The traces among these that an earlier call recorded as batch traces."""
        if not trace_ids:
            return set()
        rows = self._client.query(
            f"SELECT DISTINCT TraceId FROM {self._table('hopscope_shared_links')} "
            "WHERE TraceId IN {ids:Array(String)}",
            {"ids": [trace_id.hex() for trace_id in trace_ids]},
        )
        return {bytes.fromhex(row[0]) for row in rows}

    def _flows_of_message_keys(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], set[int]]:
        """(message id, destination) -> the flows (as first joined) of the stored traces with that key."""
        if not keys:
            return {}
        message_keys = self._table("hopscope_message_keys")
        rows = self._client.query(
            f"SELECT m.MessageId, m.Destination, t.FlowId FROM {message_keys} AS m "
            "INNER JOIN (SELECT DISTINCT TraceId, FlowId "
            f"FROM {self._table('hopscope_trace_flows')} WHERE TraceId IN ("
            f"SELECT TraceId FROM {message_keys} WHERE MessageId IN {{ids:Array(String)}})) AS t "
            "ON m.TraceId = t.TraceId WHERE m.MessageId IN {ids:Array(String)}",
            {"ids": sorted({message_id for message_id, _ in keys})},
        )
        found: dict[tuple[str, str], set[int]] = {}
        for message_id, destination, flow_id in rows:
            if (message_id, destination) in keys:
                found.setdefault((message_id, destination), set()).add(int(flow_id))
        return found

    def _load_flows(self, flow_ids: set[int]) -> dict[int, _Flow]:
        """The rows of these flows and of the standing flows they were merged into."""
        if not flow_ids:
            return {}
        flows_table = self._table("hopscope_flows")
        rows = self._client.query(
            f"SELECT {_SELECT_FLOW} FROM {flows_table} FINAL WHERE FlowId IN {{ids:Array(UInt64)}} "
            f"OR FlowId IN (SELECT MergedInto FROM {flows_table} FINAL "
            "WHERE FlowId IN {ids:Array(UInt64)})",
            {"ids": sorted(flow_ids)},
        )
        return {flow.flow_id: flow for flow in map(_Flow.from_row, rows)}

    def _merged_into(self, flow_ids: list[int]) -> list[_Flow]:
        """The flows merged into these standing ones (only a standing flow's merged_into is ever written, so
        every version naming one of them is current)."""
        flows_table = self._table("hopscope_flows")
        rows = self._client.query(
            f"SELECT {_SELECT_FLOW} FROM {flows_table} FINAL WHERE FlowId IN "
            f"(SELECT FlowId FROM {flows_table} WHERE MergedInto IN {{ids:Array(UInt64)}})",
            {"ids": flow_ids},
        )
        return [_Flow.from_row(row) for row in rows]

    def _last_flow_id(self) -> int:
        """The highest flow id ever handed out: kept in hopscope_meta too, so that an id is never handed out
        again once its flow expired (a link to it, or a row not yet merged away, would find another flow)."""
        rows = self._client.query(
            f"SELECT (SELECT max(FlowId) FROM {self._table('hopscope_flows')}), "
            f"(SELECT toUInt64OrZero(argMax(Value, Version)) FROM {self._table('hopscope_meta')} "
            "WHERE Key = {key:String})",
            {"key": _LAST_FLOW_ID_KEY},
        )
        self._stored_last_flow_id = int(rows[0][1]) if rows else 0
        return max(int(rows[0][0]), self._stored_last_flow_id) if rows else 0


def _forget_expired(
    flows: dict[int, _Flow],
    known: dict[bytes, tuple[int, int, int]],
    key_flows: dict[tuple[str, str], set[int]],
) -> None:
    """Leave out what points to a flow whose row expired (each table's TTL merge runs on its own, so a trace
    or message-key row may outlive its flow's row for a while): such a trace is new again, in a new flow."""
    for flow_id, flow in list(flows.items()):
        if flow.merged_into and flow.merged_into not in flows:
            del flows[flow_id]
    for trace_id in [t for t, (flow_id, _, _) in known.items() if flow_id not in flows]:
        del known[trace_id]
    for flow_ids in key_flows.values():
        flow_ids.intersection_update(flows)


# -- reading ---------------------------------------------------------------------------------------------
# A FINAL query filters on key columns only: a skip index (on StartUnixNano, MergedInto) may drop the granule
# of a flow's last version and let an older version through. Other columns are filtered after argMax.
# Ids come from users (URLs): anything that cannot be a flow id is simply unknown.


def _is_flow_id(flow_id: int) -> bool:
    return 0 < flow_id < 2**63


def _nanos(value: int) -> int:
    return min(max(value, _MIN_NS), MAX_NS)


def resolve_flow(client: ClickHouseClient, flow_id: int) -> int | None:
    """The standing flow that ``flow_id`` is, or was merged into; None for an unknown id."""
    if not _is_flow_id(flow_id):
        return None
    rows = client.query(
        f"SELECT {_RESOLVED} FROM {client.database}.hopscope_flows FINAL WHERE FlowId = {{flow:UInt64}}",
        {"flow": flow_id},
    )
    return int(rows[0][0]) if rows else None


def flow_of_trace(client: ClickHouseClient, trace_id: bytes) -> int | None:
    db = client.database
    rows = client.query(
        f"SELECT {_RESOLVED} FROM {db}.hopscope_flows FINAL WHERE FlowId IN "
        f"(SELECT FlowId FROM {db}.hopscope_trace_flows WHERE TraceId = {{trace:String}})",
        {"trace": trace_id.hex()},
    )
    return int(rows[0][0]) if rows else None


def flow_of_message(client: ClickHouseClient, message_id: str, destination: str | None = None) -> int | None:
    """The flow of the traces whose producer or consumer spans carry this message id (on that destination).

    Without a destination, the first destination in order (the row SQLite finds first) decides.
    """
    db = client.database
    where = "MessageId = {message:String}"
    params: dict[str, object] = {"message": message_id}
    if destination is not None:
        where += " AND Destination = {destination:String}"
        params["destination"] = destination
    rows = client.query(
        f"SELECT {_RESOLVED} FROM {db}.hopscope_flows FINAL WHERE FlowId IN "
        f"(SELECT FlowId FROM {db}.hopscope_trace_flows WHERE TraceId IN "
        f"(SELECT TraceId FROM {db}.hopscope_message_keys WHERE {where} "
        "ORDER BY Destination, TraceId LIMIT 1))",
        params,
    )
    return int(rows[0][0]) if rows else None


def flow_trace_ids(client: ClickHouseClient, flow_id: int) -> list[bytes]:
    """The traces of a standing flow that have spans stored (none for a merged or unknown id)."""
    if not _is_flow_id(flow_id):
        return []
    db = client.database
    rows = client.query(
        f"SELECT TraceId FROM {db}.hopscope_flow_traces FINAL "
        f"WHERE (FlowId = {{flow:UInt64}} OR FlowId IN "
        f"(SELECT FlowId FROM {db}.hopscope_flows WHERE MergedInto = {{flow:UInt64}})) "
        f"AND {{flow:UInt64}} IN (SELECT FlowId FROM {db}.hopscope_flows WHERE FlowId = {{flow:UInt64}} "
        "GROUP BY FlowId HAVING argMax(MergedInto, Version) = 0) "
        "AND SpanCount > 0 ORDER BY TraceId",
        {"flow": flow_id},
    )
    return [bytes.fromhex(row[0]) for row in rows]


def flow_summaries(
    client: ClickHouseClient, flow_ids: list[int], expired_before: int | None = None
) -> list[FlowSummary]:
    """Summaries of standing flows, in the order of ``flow_ids`` (sqlite/flows.py flow_summaries: a flow
    counts the batch traces it shares). A flow whose last span ended before ``expired_before`` is left out:
    expired, though its rows wait for their TTL merge."""
    wanted = sorted({flow_id for flow_id in flow_ids if _is_flow_id(flow_id)})
    if not wanted:
        return []
    sharing = shared_flows(client, wanted)
    rows = client.query(
        "SELECT FlowId, StartUnixNano, EndUnixNano, SpanCount, TraceCount, ErrorCount, MaxReceiveCount, "
        "EntryService, EntryOperation, OperationServices, CorrelationIds "
        f"FROM {client.database}.hopscope_flows FINAL WHERE FlowId IN {{ids:Array(UInt64)}}",
        {"ids": sorted({*wanted, *(h for hs in sharing.values() for h in hs)})},
    )
    summaries: dict[int, FlowSummary] = {}
    for row in rows:
        _, start, end, spans, traces, errors, receive_count, entry_service, entry_operation, services, ids = (
            row
        )
        if not spans or (expired_before is not None and int(end) < expired_before):
            continue
        summaries[int(row[0])] = FlowSummary(
            flow_id=int(row[0]),
            start_unix_nano=int(start),
            end_unix_nano=int(end),
            duration_ms=(int(end) - int(start)) / 1e6,
            span_count=int(spans),
            trace_count=int(traces),
            error_count=int(errors),
            max_receive_count=int(receive_count),
            entry_service=entry_service,
            entry_operation=entry_operation,
            services=sorted(set(services)),
            correlation_ids=sorted(ids),
        )
    return [
        with_shared(summaries[flow_id], [summaries[h] for h in sharing.get(flow_id, ()) if h in summaries])
        for flow_id in flow_ids
        if flow_id in summaries
    ]


def _traces_of_flows(client: ClickHouseClient, flow_ids: list[int]) -> dict[str, int]:
    """trace (hex) -> standing flow, for the traces of these standing flows (with spans or only linked to:
    a batch that links to a trace shares its flow before the trace arrives)."""
    db = client.database
    merged = client.query(
        f"SELECT FlowId, MergedInto FROM {db}.hopscope_flows FINAL WHERE FlowId IN "
        f"(SELECT FlowId FROM {db}.hopscope_flows WHERE MergedInto IN {{ids:Array(UInt64)}})",
        {"ids": flow_ids},
    )
    standing = {flow_id: flow_id for flow_id in flow_ids}
    wanted = set(flow_ids)
    standing.update((int(f), int(m)) for f, m in merged if int(m) in wanted)
    rows = client.query(
        f"SELECT FlowId, TraceId FROM {db}.hopscope_flow_traces FINAL WHERE FlowId IN {{ids:Array(UInt64)}}",
        {"ids": sorted(standing)},
    )
    return {trace: standing[int(flow)] for flow, trace in rows}


def _standing_flows_of_traces(client: ClickHouseClient, traces: list[str]) -> dict[str, tuple[int, bool]]:
    """trace (hex) -> (its standing flow, whether that flow is shared-only), for traces with spans."""
    if not traces:
        return {}
    db = client.database
    rows = client.query(
        f"SELECT TraceId, FlowId, SpanCount FROM {db}.hopscope_trace_flows FINAL "
        "WHERE TraceId IN {ids:Array(String)}",
        {"ids": traces},
    )
    first = {trace: int(flow) for trace, flow, spans in rows if int(spans) > 0}
    if not first:
        return {}
    flows = client.query(
        f"SELECT FlowId, {_RESOLVED} FROM {db}.hopscope_flows FINAL WHERE FlowId IN {{ids:Array(UInt64)}}",
        {"ids": sorted(set(first.values()))},
    )
    resolved = {int(flow): int(standing) for flow, standing in flows}
    shared = client.query(
        f"SELECT FlowId, SharedOnly FROM {db}.hopscope_flows FINAL WHERE FlowId IN {{ids:Array(UInt64)}}",
        {"ids": sorted(set(resolved.values()))},
    )
    shared_only = {int(flow): bool(flag) for flow, flag in shared}
    return {
        trace: (resolved[flow], shared_only.get(resolved[flow], False))
        for trace, flow in first.items()
        if flow in resolved
    }


def _shared_links(client: ClickHouseClient, column: str, traces: list[str]) -> list[tuple[str, str]]:
    """(linked trace, batch trace) rows whose ``column`` is one of ``traces``."""
    if not traces:
        return []
    rows = client.query(
        f"SELECT DISTINCT LinkedTraceId, TraceId FROM {client.database}.hopscope_shared_links "
        f"WHERE {column} IN {{ids:Array(String)}}",
        {"ids": traces},
    )
    return [(str(linked), str(trace)) for linked, trace in rows]


def shared_flows(client: ClickHouseClient, flow_ids: list[int]) -> dict[int, list[int]]:
    """sqlite/flows.py shared_flows: flow -> the shared-only flows it shares."""
    traces = _traces_of_flows(client, flow_ids)
    links = _shared_links(client, "LinkedTraceId", sorted(traces))
    batch_flows = _standing_flows_of_traces(client, sorted({batch for _, batch in links}))
    found: dict[int, set[int]] = {}
    for linked, batch in links:
        flow_id = traces[linked]
        shared_id, shared_only = batch_flows.get(batch, (0, False))
        if shared_only and shared_id != flow_id:
            found.setdefault(flow_id, set()).add(shared_id)
    return {flow_id: sorted(shared) for flow_id, shared in found.items()}


def flow_shared_traces(client: ClickHouseClient, flow_id: int) -> dict[bytes, list[int]]:
    """sqlite/flows.py flow_shared_traces (none for a merged or unknown id)."""
    if resolve_flow(client, flow_id) != flow_id:
        return {}
    traces = _traces_of_flows(client, [flow_id])
    links = _shared_links(client, "LinkedTraceId", sorted(traces))
    batch_flows = _standing_flows_of_traces(client, sorted({batch for _, batch in links}))
    batches = sorted(batch for batch, (flow, _) in batch_flows.items() if flow != flow_id)
    all_links = _shared_links(client, "TraceId", batches)
    linked_flows = _standing_flows_of_traces(client, sorted({linked for linked, _ in all_links}))
    sharing: dict[str, set[int]] = {batch: {flow_id} for batch in batches}
    for linked, batch in all_links:
        if linked in linked_flows:
            sharing[batch].add(linked_flows[linked][0])
    return {bytes.fromhex(batch): sorted(flows) for batch, flows in sorted(sharing.items())}


def search_flow_ids(
    client: ClickHouseClient, criteria: FlowFilter, limit: int, offset: int, expired_before: int | None = None
) -> list[int]:
    """Standing flows that match every criterion but span attributes, best first; none whose last span
    ended before ``expired_before`` (expired, its rows waiting for their TTL merge).

    The key lookups (time range, service, span name, correlation id, message id) pick candidate flow ids
    from rows of any version; the last version of each candidate then decides. The last version is taken
    with argMax rather than FINAL so that no skip index can ever hide it behind an older one.
    """
    db = client.database
    candidates: list[str] = []
    where = ["merged_into = 0", "span_count > 0", "shared_only = 0"]
    params: dict[str, object] = {}
    if expired_before is not None:
        where.append("flow_end >= {expired_before:Int64}")
        params["expired_before"] = expired_before
    key_lookup = ""  # narrows the key tables' rows to the flows of the time window, when one is given
    if criteria.since_unix_nano is not None or criteria.until_unix_nano is not None:
        window = []
        if criteria.since_unix_nano is not None:
            window.append("StartUnixNano >= {since:Int64}")
            where.append("flow_start >= {since:Int64}")
            params["since"] = _nanos(criteria.since_unix_nano)
            # Flow ids grow with time: the window's first id bounds the rows of the key tables to read.
            key_lookup = f" AND FlowId >= (SELECT min(FlowId) FROM {db}.hopscope_flows WHERE {window[0]})"
        if criteria.until_unix_nano is not None:
            window.append("StartUnixNano < {until:Int64}")
            where.append("flow_start < {until:Int64}")
            params["until"] = _nanos(criteria.until_unix_nano)
        candidates.append(f"SELECT FlowId FROM {db}.hopscope_flows WHERE {' AND '.join(window)}")
    if criteria.errors_only:
        errors = (
            f"SELECT FlowId FROM {db}.hopscope_flows GROUP BY FlowId HAVING argMax(ErrorCount, Version) > 0"
        )
        where.append(f"(error_count > 0 OR FlowId IN ({_sharing(db, errors)}))")
    if criteria.min_duration_ms is not None:
        where.append("flow_end - flow_start >= {min_duration:Int64}")
        params["min_duration"] = _nanos(int(criteria.min_duration_ms * 1e6))
    operations = f"SELECT FlowId FROM {db}.hopscope_flow_operations WHERE"
    if criteria.service is not None:
        candidates.append(_or_shared(db, f"{operations} ServiceName = {{service:String}}{key_lookup}"))
        params["service"] = criteria.service
    if criteria.operation is not None:
        candidates.append(_or_shared(db, f"{operations} Operation = {{operation:String}}{key_lookup}"))
        params["operation"] = criteria.operation
    if criteria.correlation_id is not None:
        candidates.append(
            _or_shared(
                db,
                f"SELECT FlowId FROM {db}.hopscope_flow_correlations "
                f"WHERE CorrelationId = {{correlation:String}}{key_lookup}",
            )
        )
        params["correlation"] = criteria.correlation_id
    if criteria.message_id is not None:
        candidates.append(
            _or_shared(
                db,
                f"SELECT {_RESOLVED} FROM {db}.hopscope_flows FINAL WHERE FlowId IN "
                f"(SELECT FlowId FROM {db}.hopscope_trace_flows WHERE TraceId IN "
                f"(SELECT TraceId FROM {db}.hopscope_message_keys WHERE MessageId = {{message:String}}))",
            )
        )
        params["message"] = criteria.message_id
    prefilter = " AND ".join(f"FlowId IN ({query})" for query in candidates)
    duration = "flow_end - flow_start DESC, " if criteria.sort is FlowSort.DURATION else ""
    page = ""
    if limit >= 0:  # SQLite's LIMIT -1: no limit
        page = " LIMIT {limit:UInt64}"
        params["limit"] = limit
    if offset > 0:
        page += " OFFSET {offset:UInt64}"
        params["offset"] = offset
    query = (
        "SELECT FlowId FROM (SELECT FlowId, argMax(MergedInto, Version) AS merged_into, "
        "argMax(SpanCount, Version) AS span_count, argMax(StartUnixNano, Version) AS flow_start, "
        "argMax(EndUnixNano, Version) AS flow_end, argMax(ErrorCount, Version) AS error_count, "
        "argMax(SharedOnly, Version) AS shared_only "
        f"FROM {db}.hopscope_flows {'WHERE ' + prefilter if prefilter else ''} GROUP BY FlowId) "
        f"WHERE {' AND '.join(where)} ORDER BY {duration or 'flow_start DESC, '}FlowId DESC{page}"
    )
    return [int(row[0]) for row in client.query(query, params)]


def _sharing(db: str, matching: str) -> str:
    """The standing flows that share a batch trace of a shared-only flow in ``matching`` (sqlite/flows.py
    _or_shared): the batch flow's traces, the traces they link to, and those traces' flows."""
    shared_only = (
        f"SELECT FlowId FROM {db}.hopscope_flows WHERE FlowId IN ({matching}) "
        "GROUP BY FlowId HAVING argMax(SharedOnly, Version) = 1 AND argMax(MergedInto, Version) = 0"
    )
    return (
        f"SELECT {_RESOLVED} FROM {db}.hopscope_flows FINAL WHERE FlowId IN "
        f"(SELECT FlowId FROM {db}.hopscope_trace_flows WHERE TraceId IN "
        f"(SELECT LinkedTraceId FROM {db}.hopscope_shared_links WHERE TraceId IN "
        f"(SELECT TraceId FROM {db}.hopscope_flow_traces WHERE SpanCount > 0 AND (FlowId IN ({shared_only}) "
        f"OR FlowId IN (SELECT FlowId FROM {db}.hopscope_flows WHERE MergedInto IN ({shared_only}))))))"
    )


def _or_shared(db: str, matching: str) -> str:
    """The flows in ``matching`` and those sharing a batch trace of a shared-only flow in it."""
    return f"{matching} UNION ALL {_sharing(db, matching)}"
