"""The ClickHouse span store: spans in the OpenTelemetry Collector exporter's ``otel_traces``, hopscope's own
tables beside them.

- Spans are rows of ``otel_traces`` as the exporter writes them, so a fleet of Collectors and hopscope's own
  collector can write the same table, and the dashboard reads either.
- Flows are stitched from ``hopscope_span_feed`` (filled by a materialized view on every insert into
  ``otel_traces``) by whichever ``hopscope collector`` has the store open for writing, receiver or not.
- RED rollups and the service graph are computed at query time from ``otel_traces``: aggregating a day of
  spans is what ClickHouse is built for, and it needs no state that only hopscope's ingest could keep.
- Log records are rows of the exporter's ``otel_logs`` (logs.py), so a Collector fleet's logs are read too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from hopscope.collector.model.fate import DeadLetterPeek, DeadLetterRecord, DuplicateRate, FateFilter
from hopscope.collector.model.flows import FlowFilter, FlowSummary
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.model.logs import LogFilter, LogLine
from hopscope.collector.model.queues import DepthSample, QueueState, QueueSummary
from hopscope.collector.model.red import RollupRow
from hopscope.collector.model.storage import StorageFacts
from hopscope.collector.stitch.facts import FlowFacts
from hopscope.collector.stitch.failures import Failures
from hopscope.collector.stitch.guard import (
    SkippedSpans,
    fold_isolating,
    joinable_trace_id,
    report_failed_rows,
    usable_times,
)
from hopscope.collector.store.base import STITCH_CHUNK_SPANS, Prepared, ReadBudget, split_prepared
from hopscope.collector.store.clickhouse import expiry as clickhouse_expiry
from hopscope.collector.store.clickhouse import fate as clickhouse_fate
from hopscope.collector.store.clickhouse import flows as clickhouse_flows
from hopscope.collector.store.clickhouse import graph as clickhouse_graph
from hopscope.collector.store.clickhouse import logs as clickhouse_logs
from hopscope.collector.store.clickhouse import queues as clickhouse_queues
from hopscope.collector.store.clickhouse import red as clickhouse_red
from hopscope.collector.store.clickhouse import schema as clickhouse_schema
from hopscope.collector.store.clickhouse import spans as clickhouse_spans
from hopscope.collector.store.clickhouse import storage as clickhouse_storage
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.logs import PreparedLogRows
from hopscope.collector.store.clickhouse.spans import (
    ERROR_STATUS_NAMES,
    KIND_BY_NAME,
    PreparedRows,
)
from hopscope.collector.store.errors import ClickHouseError, StoreError
from hopscope.collector.store.limits import SpanLimits

log = logging.getLogger(__name__)

# How often a writer looks for spans that others (OpenTelemetry Collectors) inserted.
FEED_POLL_SECONDS = 1.0
# How long the queue names seen in spans are reused (the SQS poller asks every poll).
DESTINATIONS_CACHE_SECONDS = 60.0
# How long the retention a collector set (hopscope_meta) is reused by the flow readers.
RETENTION_CACHE_SECONDS = 60.0
_WATERMARK_KEY = "feed_watermark_unix_nano"


class ClickHouseStore:
    """One ClickHouse database. Writes come from one writer thread (plus the SQS poller's own calls).

    ``settle_seconds`` is how long after arriving a span waits before it is stitched: concurrent inserts by
    other writers become visible a little out of order, and a span stitched past would be missed.
    """

    def __init__(
        self,
        client: ClickHouseClient,
        *,
        read_only: bool = False,
        label: str | None = None,
        settle_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.read_only = read_only
        self.label = label or f"ClickHouse database {client.database}"
        self._db = client.database
        self._settle_ms = int(
            1000 * (settle_seconds if settle_seconds is not None else 0.0 if _in_process(client) else 2.0)
        )
        self._watermark = 0
        self._feed_checked = 0.0
        # A lost server is logged once (with its traceback) while it stays lost, not every FEED_POLL_SECONDS.
        self._feed_failures = Failures(log, logging.WARNING)
        self._feed_ready = False
        self._destinations: tuple[float, list[str]] | None = None
        self._retention: tuple[float, int | None] | None = None  # (when read, seconds): _expired_before
        # Spans left out of flows in this database (kept in hopscope_meta across restarts).
        self.skipped_spans = SkippedSpans()
        # Whether otel_logs exists (a read-only store may find none: no logs yet) and has EventName.
        self._logs_table = False
        self._event_name = False
        if read_only:
            if not self._has_table("otel_traces"):
                raise StoreError(f"{self.label} has no otel_traces table")
        else:
            clickhouse_schema.create(client)
            self._watermark = self._load_watermark()
            self._load_skipped()
            self._has_logs_table()

    # -- plumbing --------------------------------------------------------------------------------------

    def _table(self, name: str) -> str:
        return f"{self._db}.{name}"

    def _has_table(self, name: str) -> bool:
        rows = self.client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {name:String}",
            {"db": self._db, "name": name},
        )
        return bool(rows[0][0])

    def _has_logs_table(self) -> bool:
        """True once ``otel_logs`` exists (looked up until it does: a Collector may make it later)."""
        if not self._logs_table and self._has_table("otel_logs"):
            self._event_name = clickhouse_logs.has_event_name(self.client)
            self._logs_table = True
        return self._logs_table

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.label} was opened read-only")

    def _load_watermark(self) -> int:
        rows = self.client.query(
            f"SELECT argMax(Value, Version) FROM {self._table('hopscope_meta')} WHERE Key = {{key:String}}",
            {"key": _WATERMARK_KEY},
        )
        return int(rows[0][0]) if rows and rows[0][0] else 0

    def _load_skipped(self) -> None:
        rows = self.client.query(
            f"SELECT Key, argMax(Value, Version) FROM {self._table('hopscope_meta')} "
            "WHERE startsWith(Key, 'skipped_spans:') GROUP BY Key"
        )
        for key, value in rows:
            self.skipped_spans.by_reason[str(key).removeprefix("skipped_spans:")] = int(value)

    # -- writing ---------------------------------------------------------------------------------------

    def prepare(self, request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> PreparedRows:
        return clickhouse_spans.prepare_spans(request, limits)

    def prepare_logs(
        self, request: ExportLogsServiceRequest, limits: SpanLimits | None = None
    ) -> PreparedLogRows:
        return clickhouse_logs.prepare_logs(request, limits)

    def write_prepared(self, batches: Sequence[Prepared]) -> int:
        """One INSERT of the spans, then one of the log records. ClickHouse has no transaction across the
        two: when the second fails the spans stay, and a retry stores them again (readers keep one)."""
        self._writable()
        span_batches, log_batches = split_prepared(PreparedRows, PreparedLogRows, batches)
        rows = [row for batch in span_batches for row in batch.rows]
        log_rows = [row for batch in log_batches for row in batch.rows]
        if rows:
            clickhouse_spans.insert_spans(self.client, rows)
            self._feed_checked = 0.0  # look at the feed again now
        if log_rows:
            self._has_logs_table()
            clickhouse_logs.insert_logs(self.client, log_rows, self._event_name)
        return len(rows) + len(log_rows)

    def write_logs(self, requests: Sequence[ExportLogsServiceRequest]) -> int:
        return self.write_prepared([self.prepare_logs(request) for request in requests])

    def write(self, requests: Sequence[ExportTraceServiceRequest]) -> int:
        written = self.write_prepared([self.prepare(request) for request in requests])
        self.catch_up()
        return written

    def catch_up(self) -> int:
        """Stitch everything that has settled; for scripts, tests and ``--no-receiver`` jobs."""
        total = 0
        while stitched := self.stitch_flows(STITCH_CHUNK_SPANS):
            total += stitched
        return total

    @property
    def flows_pending(self) -> bool:
        """True while settled spans wait in the feed; looks at the feed at most every FEED_POLL_SECONDS."""
        if self.read_only:
            return False
        now = time.monotonic()
        if now - self._feed_checked >= FEED_POLL_SECONDS:
            self._feed_checked = now
            try:
                rows = self.client.query(
                    f"SELECT count() FROM (SELECT 1 FROM {self._table('hopscope_span_feed')} "
                    f"WHERE {self._feed_window()} LIMIT 1)",
                    {"after": self._watermark, "settle": self._settle_ms},
                )
                self._feed_ready = bool(rows[0][0])
            except ClickHouseError as exc:
                self._feed_failures.failed(exc, "cannot look at the span feed: %s", exc)
                self._feed_ready = False
            else:
                self._feed_failures.succeeded("the span feed can be read again")
        return self._feed_ready

    @property
    def feed_poll_seconds(self) -> float:
        return FEED_POLL_SECONDS

    @property
    def stitcher_url(self) -> str | None:
        return None

    def unstitched_since_unix_nano(self) -> int | None:
        """When the oldest span of the feed past the stitching watermark (kept in ``hopscope_meta``) arrived,
        settled or not: a read of the feed's sort key, from any process."""
        rows = self.client.query(
            f"SELECT toUnixTimestamp64Nano(min(Arrived)), count() FROM {self._table('hopscope_span_feed')} "
            "WHERE Arrived > fromUnixTimestamp64Nano(toInt64OrZero((SELECT argMax(Value, Version) "
            f"FROM {self._table('hopscope_meta')} WHERE Key = {{key:String}})))",
            {"key": _WATERMARK_KEY},
        )
        if not rows or not rows[0][1]:
            return None
        return int(rows[0][0])

    def _feed_window(self) -> str:
        return (
            "Arrived > fromUnixTimestamp64Nano({after:Int64}) "
            "AND Arrived <= now64(9) - toIntervalMillisecond({settle:UInt32})"
        )

    def stitch_flows(self, max_spans: int) -> int:
        """Fold the oldest settled spans of the feed into flows (rows inserted together stay together)."""
        self._writable()
        rows = self.client.query(
            "SELECT toUnixTimestamp64Nano(Arrived), TraceId, SpanId, ParentSpanId = '', SpanName, SpanKind, "
            "ServiceName, toUnixTimestamp64Nano(Timestamp), Duration, StatusCode, FlowAttributes, "
            "LinkedTraceIds, LinkMessageIds "
            f"FROM {self._table('hopscope_span_feed')} WHERE {self._feed_window()} "
            "ORDER BY Arrived LIMIT {limit:UInt32} WITH TIES",
            {"after": self._watermark, "settle": self._settle_ms, "limit": max_spans},
        )
        if not rows:
            self._feed_ready = False
            return 0
        seen = self._stitched_before({row[1] for row in rows})
        fresh = []
        for row in rows:
            key = (row[1], row[2])
            if key not in seen:  # a re-sent span: ClickHouse stores it twice, the flows count it once
                seen.add(key)
                fresh.append(row)
        # A piece that fails for its data's sake is bisected (stitch/guard.py); a piece folded before a crash
        # is in hopscope_stitched_spans, so it is never folded twice.
        failed = fold_isolating(fresh, self._fold_rows, is_environment_error) if fresh else []
        if failed:
            labelled = [(f"{row[1]}/{row[2]}", exc) for row, exc in failed]
            report_failed_rows(self.skipped_spans, labelled, self.label)
        through = int(rows[-1][0])
        self.client.insert(
            self._table("hopscope_meta"),
            ("Key", "Value", "Version"),
            [
                (_WATERMARK_KEY, str(through), time.time_ns()),
                *(
                    (f"skipped_spans:{reason}", str(count), time.time_ns())
                    for reason, count in self.skipped_spans.by_reason.items()
                ),
            ],
        )
        self._watermark = through
        self._feed_checked = 0.0
        return len(rows)

    def _fold_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        facts = FlowFacts()
        unusable = 0
        for (
            arrived,
            trace,
            _span,
            root,
            name,
            kind,
            service,
            start_ns,
            duration,
            status,
            attributes,
            links,
            link_message_ids,
        ) in rows:
            start = int(start_ns)
            end = start + int(duration)
            if not usable_times(start, end):
                start = end = int(arrived)
                unusable += 1
            linked_traces, linked_messages = _joinable_links(links, link_message_ids)
            facts.add_row(
                bytes.fromhex(trace),
                start,
                end,
                status in ERROR_STATUS_NAMES,
                bool(root),
                service,
                name,
                KIND_BY_NAME.get(kind, 0),
                linked_traces,
                attributes,
                linked_messages,
            )
        clickhouse_flows.ClickHouseFlowStitcher(self.client).apply(facts.traces.values())
        clickhouse_fate.record_deliveries(self.client, rows)
        self.client.insert(
            self._table("hopscope_stitched_spans"),
            ("TraceId", "SpanId", "StartUnixNano"),
            [(row[1], row[2], int(row[7])) for row in rows],
        )
        self.skipped_spans.add_unusable_times(unusable)

    def _stitched_before(self, trace_ids: set[str]) -> set[tuple[str, str]]:
        rows = self.client.query(
            f"SELECT TraceId, SpanId FROM {self._table('hopscope_stitched_spans')} "
            "WHERE TraceId IN {traces:Array(String)}",
            {"traces": sorted(trace_ids)},
        )
        return {(trace_id, span_id) for trace_id, span_id in rows}

    def apply_retention(self, retention_seconds: int | None) -> None:
        """Give every hopscope_* table the TTL of ``--retention``, or remove it (expiry.py apply_retention);
        :meth:`record_retention` calls it when the collector starts. A user without ALTER rights keeps the
        tables as they are: the spans still go by ``delete_spans_started_before``, the rest stays (logged).
        Read-only: nothing."""
        if self.read_only:
            return
        self._retention = None  # read again
        try:
            altered = clickhouse_expiry.apply_retention(self.client, retention_seconds)
        except ClickHouseError as exc:
            log.warning("cannot set the TTL of hopscope's tables in %s: %s", self.label, exc)
            return
        if altered:
            log.info(
                "TTL of %d hopscope_* tables set for %s",
                len(altered),
                f"a retention of {retention_seconds} s" if retention_seconds else "no retention",
            )

    def use_retention(self, retention_seconds: int | None) -> None:
        """Nothing to lay out: the tables' TTLs follow :meth:`record_retention`."""

    def delete_spans_started_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """Everything past the cutoff at once: ``limit`` is not honoured (see spans.py)."""
        self._writable()
        return clickhouse_spans.delete_spans_started_before(self.client, cutoff_unix_nano, limit)

    def delete_logs_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """As :meth:`delete_spans_started_before`: every record past the cutoff at once (see logs.py)."""
        self._writable()
        return clickhouse_logs.delete_logs_before(self.client, cutoff_unix_nano)

    def expire_before(
        self, cutoff_unix_nano: int, limit: int, *, flows: bool = True, orphans: bool = True
    ) -> int:
        """Nothing to do: every hopscope_* table's TTL (set by :meth:`apply_retention`) expires its rows when
        ClickHouse merges it, at most ``expiry.ttl_merge_seconds`` after they are due."""
        return 0

    # -- reading ---------------------------------------------------------------------------------------

    def get_trace(self, trace_id: bytes, budget: ReadBudget | None = None) -> TracesData | None:
        traces = self.get_traces([trace_id], budget)
        cut = budget is not None and budget.truncated
        return traces if traces.resource_spans or cut else None

    def get_traces(self, trace_ids: Iterable[bytes], budget: ReadBudget | None = None) -> TracesData:
        return clickhouse_spans.read_traces(self.client, trace_ids, budget)

    def search_logs(self, criteria: LogFilter, budget: ReadBudget | None = None) -> list[LogLine]:
        if not self._has_logs_table():
            return []
        return clickhouse_logs.search_logs(self.client, criteria, budget)

    def get_logs(self, trace_ids: Sequence[bytes], limit: int, budget: ReadBudget | None = None) -> LogsData:
        if not self._has_logs_table():
            return LogsData()
        return clickhouse_logs.get_logs(self.client, trace_ids, limit, budget)

    def count_logs(self) -> int:
        return clickhouse_logs.count_logs(self.client) if self._has_logs_table() else 0

    def resolve_flow(self, flow_id: int) -> int | None:
        return clickhouse_flows.resolve_flow(self.client, flow_id)

    def flow_of_trace(self, trace_id: bytes) -> int | None:
        return clickhouse_flows.flow_of_trace(self.client, trace_id)

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
        return clickhouse_flows.flow_of_message(self.client, message_id, destination)

    def flow_trace_ids(self, flow_id: int) -> list[bytes]:
        return clickhouse_flows.flow_trace_ids(self.client, flow_id)

    def flow_shared_traces(self, flow_id: int) -> dict[bytes, list[int]]:
        return clickhouse_flows.flow_shared_traces(self.client, flow_id)

    def flow_summaries(self, flow_ids: list[int]) -> list[FlowSummary]:
        return clickhouse_flows.flow_summaries(self.client, flow_ids, self._expired_before())

    def search_flow_ids(self, criteria: FlowFilter, limit: int, offset: int) -> list[int]:
        return clickhouse_flows.search_flow_ids(self.client, criteria, limit, offset, self._expired_before())

    def _expired_before(self) -> int | None:
        """Unix ns before which a flow's last span ended counts as expired under the retention the
        collector set (read from hopscope_meta, by any process, at most every RETENTION_CACHE_SECONDS);
        None without retention. Rows past their TTL stay until ClickHouse merges their table: the readers
        leave such flows out meanwhile."""
        now = time.monotonic()
        if self._retention is None or now - self._retention[0] > RETENTION_CACHE_SECONDS:
            try:
                seconds = clickhouse_expiry.recorded_retention(self.client)
            except ClickHouseError:  # a database no collector has opened yet: no hopscope_meta
                seconds = None
            self._retention = (now, seconds)
        seconds = self._retention[1]
        return None if seconds is None else time.time_ns() - seconds * 1_000_000_000

    def red_rollups(
        self,
        since_unix_nano: int,
        until_unix_nano: int,
        *,
        service: str | None = None,
        operation: str | None = None,
        kinds: Sequence[int] = (),
        step_ns: int | None = None,
    ) -> list[RollupRow]:
        """Per-minute RED rollups, aggregated from the spans at query time."""
        rows = clickhouse_red.read_rollups(
            self.client, since_unix_nano, until_unix_nano, service=service, operation=operation, kinds=kinds
        )
        return rows if step_ns is None else clickhouse_red.merge_steps(rows, since_unix_nano, step_ns)

    def hop_rollups(
        self, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
    ) -> list[tuple[str, str, str, HopRollup]]:
        return clickhouse_graph.read_hop_rollups(self.client, since_unix_nano, until_unix_nano, kinds)

    # -- queues ----------------------------------------------------------------------------------------

    def record_queue_poll(
        self,
        polled_unix_nano: int,
        queues: list[QueueState],
        samples: list[DepthSample],
        keep_after_unix_nano: int | None = None,
    ) -> None:
        self._writable()
        clickhouse_queues.record_poll(self.client, polled_unix_nano, queues, samples, keep_after_unix_nano)

    def queue_summaries(self) -> list[QueueSummary]:
        return clickhouse_queues.queue_summaries(self.client)

    def queue_depth(
        self, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
    ) -> list[DepthSample] | None:
        return clickhouse_queues.queue_depth(self.client, queue_name, since_unix_nano, until_unix_nano, limit)

    def queue_destinations_seen(self, since_unix_nano: int) -> list[str]:
        """Computed from the spans, so kept a minute: the SQS poller asks on every poll."""
        cached = self._destinations
        now = time.monotonic()
        if cached is None or now - cached[0] > DESTINATIONS_CACHE_SECONDS:
            cached = self._destinations = (
                now,
                clickhouse_graph.destinations_seen(self.client, "aws_sqs:", since_unix_nano),
            )
        return cached[1]

    # -- counts and closing ----------------------------------------------------------------------------

    # -- a message's fate (store/clickhouse/fate.py) ----------------------------------------------------

    def record_dead_letters(
        self, polled_unix_nano: int, peeks: Sequence[DeadLetterPeek], keep_after_unix_nano: int | None = None
    ) -> None:
        self._writable()
        clickhouse_fate.record_dead_letters(self.client, polled_unix_nano, peeks, keep_after_unix_nano)

    def fate_counts(self, flow_ids: list[int]) -> dict[int, tuple[int, int]]:
        return clickhouse_fate.fate_counts(self.client, flow_ids)

    def flows_with_fate(self, kind: FateFilter, limit: int) -> set[int]:
        return clickhouse_fate.flows_with_fate(self.client, kind, limit)

    def dead_letters_of(
        self, message_ids: Sequence[str], trace_ids: Sequence[bytes]
    ) -> list[DeadLetterRecord]:
        return clickhouse_fate.dead_letters_of(self.client, message_ids, trace_ids)

    def duplicate_rates(self, since_unix_nano: int) -> list[DuplicateRate]:
        return clickhouse_fate.read_duplicate_rates(self.client, since_unix_nano)

    def storage_facts(self) -> StorageFacts:
        return clickhouse_storage.storage_facts(self.client, self.label)

    def record_retention(self, retention_seconds: int | None) -> None:
        """Note it for readers elsewhere (storage.py), and give the hopscope_* tables its TTL (once a start:
        the collector records its retention when it starts)."""
        self._writable()
        clickhouse_storage.record_retention(self.client, retention_seconds)
        self.apply_retention(retention_seconds)

    def count_spans(self) -> int:
        return clickhouse_spans.count_spans(self.client)

    def has_spans(self) -> bool:
        return clickhouse_spans.has_spans(self.client)

    def close(self) -> None:
        self.client.close()


# ClickHouse error codes that mean the server or its disk failed, not the data: retry later, skip nothing.
_ENVIRONMENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
    }
)
_CODE = re.compile(r"Code: (\d+)")


def is_environment_error(exc: BaseException) -> bool:
    """True when ClickHouse (or the way to it) failed, False for what a span's data caused."""
    if isinstance(exc, (OSError, MemoryError, StoreError)):
        return True
    if isinstance(exc, ClickHouseError):
        text = str(exc)
        if text.startswith("cannot reach ClickHouse"):
            return True
        match = _CODE.search(text)
        return match is not None and int(match.group(1)) in _ENVIRONMENT_CODES
    return False


def _in_process(client: ClickHouseClient) -> bool:
    """chdb: nobody else can write to this database while it is open here, so nothing needs to settle."""
    from hopscope.collector.store.clickhouse.client import ChdbClient  # noqa: PLC0415

    return isinstance(client, ChdbClient)


def _joinable_links(trace_ids: Sequence[str], message_ids: Sequence[str]) -> tuple[list[bytes], list[str]]:
    """The links (trace id, message id) whose trace id can join a flow (stitch/guard.py)."""
    kept = [
        (linked, message)
        for linked, message in zip(
            map(bytes.fromhex, trace_ids), message_ids or [""] * len(trace_ids), strict=False
        )
        if joinable_trace_id(linked)
    ]
    return [linked for linked, _ in kept], [message for _, message in kept]
