"""The query layer: the one read API over a store, used by the HTTP query API and by the dashboard.

It hands out plain, typed, JSON-ready values (the dataclasses and TypedDicts of ``model``), never OTLP
protobuf messages, except where OTLP is what the caller asked for (``flow_otlp``, ``flow_otlp_json``,
``trace``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from hopscope.collector.model import conventions
from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.model.destinations import destination_name
from hopscope.collector.model.fate import DuplicateRate, FateFilter, MessageFate
from hopscope.collector.model.flows import (
    AsyncHop,
    Attributes,
    FlowDetail,
    FlowFilter,
    FlowSpan,
    FlowSummary,
    SharedTrace,
)
from hopscope.collector.model.graph import GraphEdge, GraphNode, HopRollup, ServiceGraph, node_type
from hopscope.collector.model.logs import MAX_ANSWER_LOGS, LogFilter, LogLine
from hopscope.collector.model.queues import DepthSample, QueueSummary
from hopscope.collector.model.red import (
    FAAS_INVOCATION_ID,
    LatencyPoint,
    RedStats,
    Rollup,
    RollupRow,
    ServiceRed,
    counted_rows,
    is_per_record_span,
)
from hopscope.collector.model.storage import StorageFacts
from hopscope.collector.otlp.codec import logs_to_json, traces_to_json
from hopscope.collector.otlp.values import any_value, attributes_json
from hopscope.collector.query.fate import lookup_keys, message_fates
from hopscope.collector.stitch.facts import entry_rank
from hopscope.collector.stitch.graph_rules import client_edge
from hopscope.collector.store.base import ReadBudget, ReadSide

# Flows whose spans are read at most to answer one search with attribute filters.
MAX_ATTRIBUTE_SCAN_FLOWS = 2_000
# Flows of one fate a flow-list filter looks through at most.
MAX_FATE_FLOWS = 10_000
# Depth samples one answer holds: 7 days at one poll per minute; the newest are kept when cut.
MAX_DEPTH_SAMPLES = 10_080
# Spans one read answer holds at most (a trace, a flow, a flow as OTLP; also one flow read by an attribute
# search): the earliest ones, the answer saying ``truncated``.
MAX_ANSWER_SPANS = 10_000
# Bytes of stored spans (their OTLP protobuf) one read answer holds at most. Its JSON is about 1 to 3 times
# larger, but building it costs up to about 45 times this in memory for spans of many tiny attributes
# (measured: 416 MiB for one 9 MB span of 400,000 attributes): 4 MiB keeps one answer under about 200 MB,
# whatever was stored, and holds thousands of ordinary spans.
MAX_ANSWER_SPAN_BYTES = 4 * 1024 * 1024
# Bytes of stored log records (their OTLP protobuf) one answer of log lines holds at most, for the same
# reason: a record may carry 128 attributes of 64 KiB each.
MAX_ANSWER_LOG_BYTES = 4 * 1024 * 1024

_KIND_NAMES = {value: name.removeprefix("SPAN_KIND_") for name, value in Span.SpanKind.items()}
_STATUS_NAMES = {value: name.removeprefix("STATUS_CODE_") for name, value in Status.StatusCode.items()}


@dataclass(frozen=True)
class LogAnswer:
    """Log records of a search or of a flow, and whether more matched than one answer holds."""

    lines: list[LogLine]
    truncated: bool


@dataclass(frozen=True)
class OtlpAnswer:
    """Spans as OTLP (a trace, or every trace of a flow), and whether they were cut at the read cap."""

    traces: TracesData
    truncated: bool


def answer_budget() -> ReadBudget:
    """The read cap of one answer: MAX_ANSWER_SPANS spans, MAX_ANSWER_SPAN_BYTES bytes."""
    return ReadBudget(MAX_ANSWER_SPANS, MAX_ANSWER_SPAN_BYTES)


class QueryLayer:
    """Read-only questions about stored spans and flows."""

    def __init__(self, store: ReadSide) -> None:
        self._store = store

    def trace(self, trace_id: bytes) -> OtlpAnswer | None:
        """A stored trace, cut at the read cap; None when none of its spans is stored."""
        budget = answer_budget()
        traces = self._store.get_trace(trace_id, budget)
        return None if traces is None else OtlpAnswer(traces, budget.truncated)

    def search_flows(
        self, criteria: FlowFilter, fates: frozenset[FateFilter] = frozenset()
    ) -> list[FlowSummary]:
        """Flows matching ``criteria`` (and having a message of each of ``fates``), sorted and paged."""
        if fates:
            ids = self._search_by_fates(criteria, fates)
        elif not criteria.attributes:
            ids = self._store.search_flow_ids(criteria, criteria.limit, criteria.offset)
        else:
            ids = self._search_by_attributes(criteria)
        return self._with_fates(self._store.flow_summaries(ids))

    def _search_by_fates(self, criteria: FlowFilter, fates: frozenset[FateFilter]) -> list[int]:
        """The store's search, paged through and kept to the flows of those fates (few: messages sitting
        in dead-letter queues, messages delivered twice), until the page is full or every one is found."""
        candidates: set[int] | None = None
        for kind in sorted(fates, key=lambda fate: fate.value):
            found = self._store.flows_with_fate(kind, MAX_FATE_FLOWS)
            candidates = found if candidates is None else candidates & found
        if not candidates:
            return []
        wanted = criteria.offset + criteria.limit
        matched: list[int] = []
        scanned = seen = 0
        page = max(wanted * 4, 1_000)
        while len(matched) < wanted and seen < len(candidates):
            ids = self._store.search_flow_ids(criteria, page, scanned)
            if not ids:
                break
            scanned += len(ids)
            for flow_id in ids:
                if flow_id in candidates:
                    seen += 1
                    if not criteria.attributes or self._has_attributes(flow_id, criteria.attributes):
                        matched.append(flow_id)
        return matched[criteria.offset : wanted]

    def _with_fates(self, summaries: list[FlowSummary]) -> list[FlowSummary]:
        """The summaries with their messages' fates counted (model/fate.py)."""
        counts = self._store.fate_counts([summary.flow_id for summary in summaries]) if summaries else {}
        return [
            replace(summary, dead_lettered=counts[summary.flow_id][0],
                    duplicate_deliveries=counts[summary.flow_id][1])
            if summary.flow_id in counts
            else summary
            for summary in summaries
        ]  # fmt: skip

    def message_fates(self, detail: FlowDetail) -> list[MessageFate]:
        """What became of each message of a flow: processed, retried, dead-lettered, redriven, delivered
        twice, or gone without a trace of processing (query/fate.py)."""
        message_ids, trace_ids = lookup_keys(detail.spans)
        records = self._store.dead_letters_of(message_ids, trace_ids)
        return message_fates(detail.spans, detail.hops, records)

    def duplicate_rates(self, since_unix_nano: int) -> list[DuplicateRate]:
        """Per queue and consumer service: messages processed since then and their duplicate deliveries."""
        return self._store.duplicate_rates(since_unix_nano)

    def _search_by_attributes(self, criteria: FlowFilter) -> list[int]:
        """Span attributes are not indexed: read the candidates' spans, a page at a time, up to a cap."""
        wanted = criteria.offset + criteria.limit
        matched: list[int] = []
        scanned = 0
        page = max(criteria.limit * 4, 100)
        while len(matched) < wanted and scanned < MAX_ATTRIBUTE_SCAN_FLOWS:
            candidates = self._store.search_flow_ids(criteria, page, scanned)
            if not candidates:
                break
            scanned += len(candidates)
            matched.extend(
                flow_id for flow_id in candidates if self._has_attributes(flow_id, criteria.attributes)
            )
        return matched[criteria.offset : wanted]

    def _has_attributes(self, flow_id: int, attributes: tuple[tuple[str, str], ...]) -> bool:
        traces = self._store.get_traces(self._store.flow_trace_ids(flow_id), answer_budget())
        found: set[tuple[str, str]] = set()
        for resource_spans in traces.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.update((kv.key, _text(kv.value)) for kv in span.attributes)
        return all(pair in found for pair in attributes)

    def has_spans(self) -> bool:
        return self._store.has_spans()

    def storage(self) -> StorageFacts:
        """The store's size on disk, its oldest span, the free space beside it and the retention that the
        collector writing it recorded (the dashboard has no --retention of its own)."""
        return self._store.storage_facts()

    def flows_lag_seconds(self, now_unix_nano: int | None = None) -> float:
        """How long the oldest stored span not yet in flows (nor, on SQLite, in RED and the graph) has
        waited; 0.0 when flows are current. What the dashboard's "flows are N s behind" says."""
        since = self._store.unstitched_since_unix_nano()
        if since is None:
            return 0.0
        now = time.time_ns() if now_unix_nano is None else now_unix_nano
        return max(0.0, (now - since) / 1e9)

    def queues(self) -> list[QueueSummary]:
        """Every polled queue: latest depth, oldest age, its DLQ and sources, the last poll error."""
        return self._store.queue_summaries()

    def queue_depth(
        self, queue_name: str, since_unix_nano: int, until_unix_nano: int
    ) -> tuple[list[DepthSample], bool] | None:
        """A queue's depth series over the range (None if never polled), and whether it was cut at the cap."""
        samples = self._store.queue_depth(queue_name, since_unix_nano, until_unix_nano, MAX_DEPTH_SAMPLES + 1)
        if samples is None:
            return None
        truncated = len(samples) > MAX_DEPTH_SAMPLES
        return (samples[1:] if truncated else samples), truncated

    def flow_of_trace(self, trace_id: bytes) -> int | None:
        return self._store.flow_of_trace(trace_id)

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
        return self._store.flow_of_message(message_id, destination)

    def flow_summary(self, flow_id: int) -> FlowSummary | None:
        standing = self._store.resolve_flow(flow_id)
        if standing is None:
            return None
        summaries = self._with_fates(self._store.flow_summaries([standing]))
        return summaries[0] if summaries else None

    def flow_otlp_answer(self, flow_id: int) -> OtlpAnswer | None:
        """Every span of every trace of the flow, as OTLP (importable into any OTLP backend), cut at the
        read cap; None for an unknown or expired flow (see :meth:`flow`)."""
        summary = self.flow_summary(flow_id)
        if summary is None:
            return None
        budget = answer_budget()
        shared = self._store.flow_shared_traces(summary.flow_id)
        traces = self._store.get_traces([*self._store.flow_trace_ids(summary.flow_id), *shared], budget)
        if not traces.resource_spans and not budget.truncated and self._expired(summary):
            return None
        return OtlpAnswer(traces, budget.truncated)

    def _expired(self, summary: FlowSummary) -> bool:
        """A flow none of whose spans could be read: expired when the collector keeps spans for a
        ``--retention`` (recorded in the store) and the flow started before it (spans go by their start).
        Otherwise its spans are there but unreadable (on ClickHouse, times outside its DateTime64 range):
        the flow answers, with no spans, as it is listed."""
        retention = self._store.storage_facts().retention_seconds
        if retention is None or summary.start_unix_nano is None:
            return False
        return summary.start_unix_nano < time.time_ns() - retention * 1_000_000_000

    def flow_otlp(self, flow_id: int) -> TracesData | None:
        """The spans of :meth:`flow_otlp_answer` (cut at the read cap, without saying whether)."""
        answer = self.flow_otlp_answer(flow_id)
        return None if answer is None else answer.traces

    def flow_otlp_json(self, flow_id: int) -> dict[str, object] | None:
        """:meth:`flow_otlp_answer` as OTLP JSON, ``truncated`` included when the read cap cut it: what
        ``GET /api/flows/{id}/otlp`` answers and the dashboard offers to download."""
        answer = self.flow_otlp_answer(flow_id)
        return None if answer is None else traces_to_json(answer.traces, truncated=answer.truncated)

    def search_logs(self, criteria: LogFilter) -> LogAnswer:
        """Log records matching ``criteria``, at most its limit (itself at most MAX_ANSWER_LOGS) and
        MAX_ANSWER_LOG_BYTES of stored records: ``truncated`` when more matched."""
        limit = max(0, min(criteria.limit, MAX_ANSWER_LOGS))
        budget = ReadBudget(limit, MAX_ANSWER_LOG_BYTES)
        lines = self._store.search_logs(replace(criteria, limit=limit + 1), budget)
        return LogAnswer(lines[:limit], budget.truncated or len(lines) > limit)

    def flow_trace_ids(self, flow_id: int) -> list[bytes] | None:
        """Every trace a standing flow shows (its own, then the batch traces it shares); None when unknown."""
        traces = self._flow_traces(flow_id)
        return None if traces is None else [*traces[0], *traces[1]]

    def _flow_traces(self, flow_id: int) -> tuple[list[bytes], list[bytes]] | None:
        standing = self._store.resolve_flow(flow_id)
        if standing is None:
            return None
        return self._store.flow_trace_ids(standing), list(self._store.flow_shared_traces(standing))

    def flow_logs(self, flow_id: int, criteria: LogFilter | None = None) -> LogAnswer | None:
        """Every log record of the flow's traces, oldest first (at most the criteria's limit, the
        earliest), narrowed by ``criteria`` when given; None for an unknown flow.

        A batch trace the flow shares holds other messages' records too (a batch of ten orders logs ten
        "charged" lines): of those, only records with no correlation id or one of the flow's own records'
        ids are the flow's (all of them when the flow's own records carry none).
        """
        traces = self._flow_traces(flow_id)
        if traces is None:
            return None
        own, shared = traces
        base = replace(criteria or LogFilter(limit=MAX_ANSWER_LOGS), newest_first=False)
        limit = max(0, min(base.limit, MAX_ANSWER_LOGS))
        lines: list[LogLine] = []
        truncated = False
        if own:
            answer = self.search_logs(replace(base, trace_ids=tuple(own), limit=limit))
            lines, truncated = answer.lines, answer.truncated
        if shared:
            ids = {line.correlation_id for line in lines if line.correlation_id}
            answer = self.search_logs(replace(base, trace_ids=tuple(shared), limit=limit))
            kept = [
                line
                for line in answer.lines
                if not ids or not line.correlation_id or line.correlation_id in ids
            ]
            truncated = truncated or answer.truncated
            lines = sorted([*lines, *kept], key=lambda line: line.time_unix_nano)
        return LogAnswer(lines[:limit], truncated or len(lines) > limit)

    def flow_logs_otlp_json(self, flow_id: int) -> dict[str, object] | None:
        """The flow's log records as OTLP JSON LogsData (at most MAX_ANSWER_LOGS, ``truncated`` when cut):
        ``GET /api/flows/{id}/logs/otlp``, the logs' half of a flow's export."""
        trace_ids = self.flow_trace_ids(flow_id)
        if trace_ids is None:
            return None
        return self.logs_otlp_json(trace_ids)

    def logs_otlp_json(self, trace_ids: list[bytes]) -> dict[str, object]:
        """The log records of these traces as OTLP JSON LogsData, cut at the read cap (MAX_ANSWER_LOGS
        records, MAX_ANSWER_LOG_BYTES), the earliest kept, ``truncated`` when cut."""
        budget = ReadBudget(MAX_ANSWER_LOGS, MAX_ANSWER_LOG_BYTES)
        logs = self._store.get_logs(trace_ids, MAX_ANSWER_LOGS + 1, budget)
        return logs_to_json(logs, truncated=budget.truncated)

    def services(self, since_unix_nano: int, until_unix_nano: int) -> list[ServiceRed]:
        """RED per service over the range, from its invocations (its server and consumer spans as
        ``model.red.counted_rows`` picks them); its operations are every one of those spans' names."""
        rows = self._store.red_rollups(
            since_unix_nano,
            until_unix_nano,
            kinds=ENTRY_KINDS,
            step_ns=_whole(since_unix_nano, until_unix_nano),
        )
        by_service: dict[str, list[RollupRow]] = {}
        for row in rows:
            by_service.setdefault(row.service_name, []).append(row)
        seconds = (until_unix_nano - since_unix_nano) / 1e9
        return [
            ServiceRed(
                service,
                red_stats([row.rollup for row in counted_rows(service_rows)], seconds),
                sorted({row.operation for row in service_rows}),
            )
            for service, service_rows in sorted(by_service.items())
        ]

    def latency(
        self,
        service: str,
        since_unix_nano: int,
        until_unix_nano: int,
        step_seconds: int,
        operation: str | None = None,
    ) -> list[LatencyPoint]:
        """RED of a service (its entry spans), or of one of its operations, per ``step_seconds`` bucket."""
        step_ns = step_seconds * 1_000_000_000
        rows = self._rollups(service, since_unix_nano, until_unix_nano, operation, step_ns)
        return _points(rows, since_unix_nano, until_unix_nano, step_seconds)

    def latency_over_range(
        self,
        service: str,
        since_unix_nano: int,
        until_unix_nano: int,
        step_seconds: int,
        operation: str | None = None,
    ) -> tuple[RedStats, list[LatencyPoint], list[tuple[float, int]]]:
        """The RED of the whole range, :meth:`latency` and :meth:`latency_histogram` of a service (or one of
        its operations), from one read (what a latency page shows: one read instead of three)."""
        step_ns = step_seconds * 1_000_000_000
        rows = self._rollups(service, since_unix_nano, until_unix_nano, operation, step_ns)
        whole = red_stats([row.rollup for row in rows], (until_unix_nano - since_unix_nano) / 1e9)
        histogram = latency_histogram.merge(row.rollup.histogram for row in rows)
        return (
            whole,
            _points(rows, since_unix_nano, until_unix_nano, step_seconds),
            _histogram_bins(histogram),
        )

    def services_over_time(
        self, since_unix_nano: int, until_unix_nano: int, step_seconds: int
    ) -> list[tuple[ServiceRed, list[LatencyPoint]]]:
        """:meth:`services` with each service's :meth:`latency` series, from one read of the range's
        rollups merged per step (what a table of every service and its trend needs: one read, not one
        per service and another for the totals)."""
        rows = self._store.red_rollups(
            since_unix_nano, until_unix_nano, kinds=ENTRY_KINDS, step_ns=step_seconds * 1_000_000_000
        )
        by_service: dict[str, list[RollupRow]] = {}
        for row in rows:
            by_service.setdefault(row.service_name, []).append(row)
        seconds = (until_unix_nano - since_unix_nano) / 1e9
        answer = []
        for service, service_rows in sorted(by_service.items()):
            counted = counted_rows(service_rows)
            red = ServiceRed(
                service,
                red_stats([row.rollup for row in counted], seconds),
                sorted({row.operation for row in service_rows}),
            )
            answer.append((red, _points(counted, since_unix_nano, until_unix_nano, step_seconds)))
        return answer

    def _rollups(
        self, service: str, since: int, until: int, operation: str | None, step_ns: int
    ) -> list[RollupRow]:
        """A service's invocation rollups, or those of one of its operations (any span kind), as
        ``model.red.counted_rows`` picks them, merged per step."""
        return counted_rows(
            self._store.red_rollups(
                since,
                until,
                service=service,
                operation=operation,
                kinds=() if operation is not None else ENTRY_KINDS,
                step_ns=step_ns,
            )
        )

    def latency_histogram(
        self,
        service: str,
        since_unix_nano: int,
        until_unix_nano: int,
        operation: str | None = None,
    ) -> list[tuple[float, int]]:
        """(bin upper bound in ms, count) over the range, for the spans ``latency`` reads.

        From the rollups' histograms, merged; every bin between the fastest and the slowest is listed,
        empty ones as 0, so that a bar chart of it shows the distribution's real shape.
        """
        whole = _whole(since_unix_nano, until_unix_nano)
        rows = self._rollups(service, since_unix_nano, until_unix_nano, operation, whole)
        return _histogram_bins(latency_histogram.merge(row.rollup.histogram for row in rows))

    def graph(
        self, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
    ) -> ServiceGraph:
        """Services, destinations and external dependencies, and the hops between them, over the range
        (only the edges of ``kinds``, e.g. ``("consume",)``, when given)."""
        merged: dict[tuple[str, str, str], HopRollup] = {}
        for source, target, kind, rollup in self._store.hop_rollups(since_unix_nano, until_unix_nano, kinds):
            total = merged.setdefault((source, target, kind), HopRollup())
            total.hop_count += rollup.hop_count
            total.error_count += rollup.error_count
            total.durations.update(rollup.durations)
            total.waits.update(rollup.waits)
            total.max_receive_count = max(total.max_receive_count, rollup.max_receive_count)
        seconds = (until_unix_nano - since_unix_nano) / 1e9
        edges = []
        for (source, target, kind), hop in sorted(merged.items()):
            if not hop.hop_count:
                continue
            wait_p50, wait_p95, wait_p99 = latency_histogram.percentiles_ms(hop.waits, PERCENTILES)
            edges.append(
                GraphEdge(
                    source=source,
                    target=target,
                    kind=kind,
                    red=red_stats([Rollup(hop.hop_count, hop.error_count, 0, hop.durations)], seconds),
                    queue_wait_p50_ms=wait_p50,
                    queue_wait_p95_ms=wait_p95,
                    queue_wait_p99_ms=wait_p99,
                    max_receive_count=hop.max_receive_count,
                )
            )
        node_ids = sorted({edge.source for edge in edges} | {edge.target for edge in edges})
        nodes = [GraphNode(node, node_type(node), node.split(":", 1)[1]) for node in node_ids]
        return ServiceGraph(nodes=nodes, edges=edges)

    def flow(self, flow_id: int) -> FlowDetail | None:
        """A flow with its spans; None for an unknown flow and for an expired one (none of its spans is
        stored any more: --retention deleted them, and deletes the flow soon after, see README).

        A flow partly expired says how many of the spans its summary counts are gone
        (``expired_span_count``) and from when its spans are kept (``retained_since_unix_nano``); an answer
        cut at the read cap cannot tell, and says 0.
        """
        summary = self.flow_summary(flow_id)
        if summary is None:
            return None
        budget = answer_budget()
        own = self._store.flow_trace_ids(summary.flow_id)
        shared = self._store.flow_shared_traces(summary.flow_id)
        traces = self._store.get_traces([*own, *shared], budget)
        spans = flatten_spans(traces)
        del traces
        if not spans and not budget.truncated and self._expired(summary):
            return None
        expired = 0 if budget.truncated else max(0, summary.span_count - len(spans))
        return FlowDetail(
            summary=summary,
            spans=spans,
            hops=async_hops(spans),
            truncated=budget.truncated,
            entry_called_from_outside=called_from_outside(summary, spans),
            shared_traces=shared_traces(summary.flow_id, own, shared, spans),
            expired_span_count=expired,
            retained_since_unix_nano=spans[0]["start_unix_nano"] if expired and spans else None,
        )


ENTRY_KINDS = (Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CONSUMER)
PERCENTILES = (0.50, 0.95, 0.99)  # the p50, p95 and p99 of every answer


def shared_traces(
    flow_id: int, own: list[bytes], shared: dict[bytes, list[int]], spans: list[FlowSpan]
) -> list[SharedTrace]:
    """What the flow detail says of each batch trace it shares: how many other messages the batch
    processed (its links to traces outside the flow) and which flows they are in."""
    own_hex = {trace_id.hex() for trace_id in own}
    other_messages = {trace_id.hex(): 0 for trace_id in shared}
    for span in spans:
        if span["trace_id"] in other_messages:
            other_messages[span["trace_id"]] += sum(
                1 for link in span["links"] if link["trace_id"] not in own_hex
            )
    return [
        SharedTrace(
            trace_id=trace_id.hex(),
            other_messages=other_messages[trace_id.hex()],
            other_flow_ids=[other for other in flows if other != flow_id],
        )
        for trace_id, flows in shared.items()
    ]


def red_stats(rollups: list[Rollup], seconds: float) -> RedStats:
    """Rate, error rate and percentiles of rollups taken together (percentiles within about 4.5%)."""
    count = sum(rollup.span_count for rollup in rollups)
    errors = sum(rollup.error_count for rollup in rollups)
    histogram = (
        rollups[0].histogram
        if len(rollups) == 1
        else latency_histogram.merge(rollup.histogram for rollup in rollups)
    )
    p50, p95, p99 = latency_histogram.percentiles_ms(histogram, PERCENTILES)
    return RedStats(
        span_count=count,
        rate_per_second=count / seconds if seconds > 0 else 0.0,
        error_count=errors,
        error_rate=errors / count if count else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


def _whole(since_unix_nano: int, until_unix_nano: int) -> int:
    """A step as long as the range: the store merges the range's rows into one per service, operation
    and kind."""
    return max(1, until_unix_nano - since_unix_nano)


def _histogram_bins(histogram: Counter[int]) -> list[tuple[float, int]]:
    """(bin upper bound in ms, count), every bin from the fastest to the slowest (``latency_histogram``)."""
    filled = [index for index, count in histogram.items() if count]
    if not filled:
        return []
    half_bin = 2 ** (0.5 / latency_histogram.BINS_PER_DOUBLING)
    return [
        (
            latency_histogram.bin_value_ns(index) * (half_bin if index else 1.0) / 1e6,
            histogram.get(index, 0),
        )
        for index in range(min(filled), max(filled) + 1)
    ]


def _points(
    rows: list[RollupRow], since_unix_nano: int, until_unix_nano: int, step_seconds: int
) -> list[LatencyPoint]:
    """RED per ``step_seconds`` bucket from ``since`` (every bucket, empty ones too) of rows merged per
    step; a row starting before ``since`` counts in the first."""
    step_ns = step_seconds * 1_000_000_000
    buckets: dict[int, list[Rollup]] = {}
    for row in rows:
        start = since_unix_nano + (row.bucket_start_unix_nano - since_unix_nano) // step_ns * step_ns
        buckets.setdefault(max(start, since_unix_nano), []).append(row.rollup)
    return [
        LatencyPoint(start, red_stats(buckets.get(start, []), step_seconds))
        for start in range(since_unix_nano, until_unix_nano, step_ns)
    ]


def flatten_spans(traces: TracesData) -> list[FlowSpan]:
    """One flat span per span, sorted by start time: what a table or a waterfall wants.

    Attribute values are JSON-ready: NaN and infinite doubles are the strings OTLP JSON uses for them.
    """
    spans: list[FlowSpan] = []
    for resource_spans in traces.resource_spans:
        resource = attributes_json(resource_spans.resource.attributes)
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex() or None,
                        "name": span.name,
                        "kind": _KIND_NAMES.get(span.kind, "UNSPECIFIED"),
                        "service": service,
                        "start_unix_nano": span.start_time_unix_nano,
                        "end_unix_nano": span.end_time_unix_nano,
                        "duration_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                        "status": {
                            "code": _STATUS_NAMES.get(span.status.code, "UNSET"),
                            "message": span.status.message,
                        },
                        "attributes": attributes_json(span.attributes),
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": attributes_json(event.attributes),
                            }
                            for event in span.events
                        ],
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": attributes_json(link.attributes),
                            }
                            for link in span.links
                        ],
                        "resource": resource,
                        "scope": {"name": scope_spans.scope.name, "version": scope_spans.scope.version},
                    }
                )
    spans.sort(key=lambda span: (span["start_unix_nano"], span["span_id"]))
    return spans


def called_from_outside(summary: FlowSummary, spans: list[FlowSpan]) -> bool:
    """Whether the flow's entry span has a parent that is none of the flow's spans: its caller passed a
    trace context from outside (an external ``traceparent``) and its span never reached this collector."""
    candidates = [
        span
        for span in spans
        if span["service"] == summary.entry_service and span["name"] == summary.entry_operation
    ]
    if not candidates:
        return False
    entry = min(
        candidates,
        key=lambda span: (
            entry_rank(span["parent_span_id"] is not None, span["kind"] == "CONSUMER", bool(span["links"])),
            span["start_unix_nano"],
        ),
    )
    parent = entry["parent_span_id"]
    return parent is not None and not any(
        span["span_id"] == parent and span["trace_id"] == entry["trace_id"] for span in spans
    )


def _sends(span: FlowSpan) -> bool:
    """A producer span, or a client call that sends a message (vanilla botocore's SQS SendMessage is a
    CLIENT span; stitch/graph_rules.py client_edge)."""
    if span["kind"] == "PRODUCER":
        return True
    if span["kind"] != "CLIENT":
        return False
    edge = client_edge(span["attributes"])
    return edge is not None and edge[1] == "publish"


def async_hops(spans: list[FlowSpan]) -> list[AsyncHop]:
    """Producer -> consumer pairs in a flow, joined by a link, a parent or a shared message id: one per
    delivery, that is per (producer span, consumer service, delivery attempt).

    hopscope's instrumentation describes an SQS delivery twice: the invocation span (the child of a single
    record's producer, or linked to every record's producer) and ``process_batch``'s per-record span, linked
    to its record's producer only. Both carry the invocation's ``faas.invocation_id``, which names the
    attempt (a retry is another invocation, with a higher receive count), so they make one hop: the
    per-record span's, because it is the message's own processing (its duration, status and receive count
    are that record's, where a batch invocation's are the whole batch's). Without an invocation id (outside
    Lambda) the receive count names the attempt, and the invocation span yields by its
    ``hopscope.batch.record_spans`` mark; a consumer with neither is a delivery of its own.
    """
    by_id = {(span["trace_id"], span["span_id"]): span for span in spans}
    producers_by_message: dict[tuple[str, str], list[FlowSpan]] = {}
    for span in spans:
        if _sends(span) and conventions.MESSAGE_ID in span["attributes"]:
            key = (str(span["attributes"][conventions.MESSAGE_ID]), _destination(span))
            producers_by_message.setdefault(key, []).append(span)
    kept: dict[tuple[str, ...], tuple[int, int, AsyncHop]] = {}
    for consumer in spans:
        if consumer["kind"] != "CONSUMER":
            continue
        candidates: list[tuple[FlowSpan | None, Attributes]] = [
            (by_id.get((link["trace_id"], link["span_id"])), link["attributes"]) for link in consumer["links"]
        ]
        parent_id = consumer["parent_span_id"]
        candidates.append((None if parent_id is None else by_id.get((consumer["trace_id"], parent_id)), {}))
        message_id = consumer["attributes"].get(conventions.MESSAGE_ID)
        if message_id is not None:
            candidates.extend(
                (producer, {})
                for producer in producers_by_message.get((str(message_id), _destination(consumer)), [])
            )
        rank = _hop_rank(consumer)
        seen: set[str] = set()
        for producer, link_attributes in candidates:
            if producer is None or not _sends(producer) or producer["span_id"] in seen:
                continue
            seen.add(producer["span_id"])
            receive_count = consumer["attributes"].get(
                conventions.RECEIVE_COUNT, link_attributes.get(conventions.RECEIVE_COUNT)
            )
            hop: AsyncHop = {
                "producer": {"trace_id": producer["trace_id"], "span_id": producer["span_id"]},
                "consumer": {"trace_id": consumer["trace_id"], "span_id": consumer["span_id"]},
                "producer_service": producer["service"],
                "consumer_service": consumer["service"],
                "messaging_system": producer["attributes"].get(conventions.MESSAGING_SYSTEM),
                "destination": _destination(producer) or _destination(consumer),
                "queue_wait_ms": (consumer["start_unix_nano"] - producer["end_unix_nano"]) / 1e6,
                "receive_count": receive_count,
            }
            delivery: tuple[str, ...] = (producer["trace_id"], producer["span_id"], consumer["service"])
            delivery += _attempt(consumer, hop)
            earlier = kept.get(delivery)
            if earlier is None or rank < earlier[0]:
                kept[delivery] = (rank, len(kept) if earlier is None else earlier[1], hop)
    return [hop for _, _, hop in sorted(kept.values(), key=lambda entry: entry[1])]


def _hop_rank(consumer: FlowSpan) -> int:
    """Which of two hops of one delivery stays: the lower rank (the first of equal ones). A per-record span
    first, an invocation span whose records have spans of their own (``process_batch`` marks it) last."""
    if is_per_record_span(True, consumer["attributes"]):
        return 0
    return 2 if consumer["attributes"].get(conventions.RECORD_SPANS) else 1


def _attempt(consumer: FlowSpan, hop: AsyncHop) -> tuple[str, ...]:
    """What tells one delivery of a message to a consumer from another: the invocation, else the receive
    count, else the consumer span itself."""
    invocation_id = consumer["attributes"].get(FAAS_INVOCATION_ID)
    if invocation_id is not None:
        return ("invocation", str(invocation_id))
    if hop["receive_count"] is not None:
        return ("receive", str(hop["receive_count"]))
    return ("span", consumer["trace_id"], consumer["span_id"])


def _destination(span: FlowSpan) -> str:
    """The destination's name whatever form the span gives it (an ARN, a queue URL, the older attribute
    names: model/destinations.py), as the service graph names its node; '' for none."""
    return destination_name(span["attributes"]) or ""


def _text(value: AnyValue) -> str:
    """How an attribute value compares with ``attr=key:value`` text: strings as they are, others as JSON."""
    plain = any_value(value)
    if isinstance(plain, str):
        return plain
    if isinstance(plain, bool):
        return "true" if plain else "false"
    return str(plain)
