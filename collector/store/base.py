"""The span store's roles, each a small protocol, and ``SpanStore``, their union, which both stores implement.

As in Jaeger's ``spanstore.Writer``/``Reader`` and ``dependencystore.Reader``, each consumer takes only the
role it uses: the receivers a ``SpanSink``, the writer thread the ``WriteSide`` (sink, ``Stitcher``,
``Retention``), the SQS poller a ``QueueRecorder``, the query layer the ``ReadSide`` (``TraceReader``,
``FlowReader``, ``RollupReader``, ``QueueReader``). ``store.url.open_store`` returns a whole ``SpanStore``.

The two stores keep different promises where their engines differ; each member's docstring says what each
one really does. In short: SQLite stores a re-sent span once and keeps RED and the graph as tables updated
while stitching; ClickHouse stores spans as sent (its readers deduplicate where they can) and computes RED
and the graph from the spans at query time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

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
from hopscope.collector.stitch.guard import SkippedSpans
from hopscope.collector.store.limits import SpanLimits

# Spans stitched into flows per call of stitch_flows() when a store catches up on its own (on open, in
# write()); the collector's writer picks its own chunk.
STITCH_CHUNK_SPANS = 20_000


class PreparedSpans:
    """One request's spans as rows of the store that prepared them (``SpanSink.prepare``).

    Opaque to everyone else: the receiver hands it to the writer thread, which gives it back to the same
    store's ``write_prepared``. Each store subclasses it; another store's rows are refused with TypeError.
    """

    __slots__ = ()


class PreparedLogs:
    """One request's log records as rows of the store that prepared them (``LogSink.prepare_logs``); opaque
    like PreparedSpans, and committed by the same ``write_prepared``, in the same transaction as spans that
    waited beside them (one writer thread, one group commit)."""

    __slots__ = ()


# What the writer thread hands to ``write_prepared``: a request's spans or its log records.
Prepared = PreparedSpans | PreparedLogs
_Prepared = TypeVar("_Prepared", bound=PreparedSpans)
_PreparedLogs = TypeVar("_PreparedLogs", bound=PreparedLogs)


def prepared_by(kind: type[_Prepared], batches: Sequence[PreparedSpans]) -> list[_Prepared]:
    """``batches`` as the store's own ``kind``; TypeError for rows that another store prepared."""
    own: list[_Prepared] = []
    for batch in batches:
        if not isinstance(batch, kind):
            raise TypeError(f"{type(batch).__name__} was prepared by another store, not as {kind.__name__}")
        own.append(batch)
    return own


def split_prepared(
    span_kind: type[_Prepared], log_kind: type[_PreparedLogs], batches: Sequence[Prepared]
) -> tuple[list[_Prepared], list[_PreparedLogs]]:
    """A group's span batches and log batches, each as the store's own kind; TypeError for another
    store's rows."""
    spans: list[_Prepared] = []
    logs: list[_PreparedLogs] = []
    for batch in batches:
        if isinstance(batch, span_kind):
            spans.append(batch)
        elif isinstance(batch, log_kind):
            logs.append(batch)
        else:
            raise TypeError(f"{type(batch).__name__} was prepared by another store")
    return spans, logs


@dataclass
class ReadBudget:
    """What one read answer may still hold: a number of spans and of serialized span bytes.

    A store spends it span by span, in its read order, and stops at the first span that does not fit
    (setting ``truncated``), before loading that span: so one answer never costs more memory than the
    budget, whatever a trace holds. Bytes are the stored span's size (the OTLP protobuf on SQLite, the
    row's field sizes on ClickHouse), not the answer's JSON size.
    """

    spans: int
    bytes: int
    truncated: bool = False

    def take(self, span_bytes: int) -> bool:
        """Spend one span of ``span_bytes``; False (and ``truncated``) when it does not fit."""
        if self.spans < 1 or span_bytes > self.bytes:
            self.truncated = True
            return False
        self.spans -= 1
        self.bytes -= span_bytes
        return True


class SpanSink(Protocol):
    """Takes spans in. Writing is two steps so that the single writer thread does nothing but write:
    ``prepare`` (pure CPU, any thread) turns a request into the store's own rows, ``write_prepared`` commits
    them (the writer thread only). ``write`` does both, and stitches."""

    def prepare(self, request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> PreparedSpans:
        """The request's spans in the form ``write_prepared`` takes; never touches the database.

        With ``limits``, a span long enough to hold a value over the value length limit is cut to the
        limits first (the receiver has already applied the count limits).
        """

    def write_prepared(self, batches: Sequence[Prepared]) -> int:
        """Commit every span and log record of ``batches``; returns the number of spans and records given.

        SQLite: one transaction, all or nothing; when it returns the spans survive a killed process (and,
        with ``durable``, the default, a power loss). A re-sent span (same trace and span id) is stored
        once: the first copy stays.

        ClickHouse: one INSERT of every row, all or nothing and durable as far as ClickHouse makes one
        INSERT so. A re-sent span is stored again: trace reads and flows count it once, but ``count_spans``,
        RED rollups and some graph edges count every copy (see ``store/clickhouse/graph.py``).
        """

    def write(self, requests: Sequence[ExportTraceServiceRequest]) -> int:
        """``prepare`` and ``write_prepared``, then stitch (for scripts, tests and ``hopscope import``).

        SQLite stitches every new span before returning; ClickHouse the spans that have settled (all of
        them in-process with chdb, whose settle time is 0).
        """


class LogSink(Protocol):
    """Takes log records in, the same two steps as spans: ``prepare_logs`` (any thread) makes a request's
    records into rows, ``write_prepared`` (the writer thread) commits them with the spans of the group."""

    def prepare_logs(
        self, request: ExportLogsServiceRequest, limits: SpanLimits | None = None
    ) -> PreparedLogs:
        """The request's log records as rows; never touches the database. With ``limits``, string values
        over the value length limit are cut (as for spans)."""

    def write_logs(self, requests: Sequence[ExportLogsServiceRequest]) -> int:
        """``prepare_logs`` then ``write_prepared`` (scripts, tests, benchmarks); returns the records."""


class LogRetention(Protocol):
    """Deletes old log records, a chunk at a time between commits (the writer thread)."""

    def delete_logs_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """Delete records whose time is before the cutoff; returns how many went. SQLite: at most
        ``limit`` in one transaction. ClickHouse ignores ``limit``: one lightweight DELETE of ``otel_logs``
        rows, as for spans."""


class LogReader(Protocol):
    """Reads log records; any thread, and other processes that open the store read-only."""

    def search_logs(self, criteria: LogFilter, budget: ReadBudget | None = None) -> list[LogLine]:
        """At most ``criteria.limit`` records matching every criterion, in time order (oldest first, or
        newest first with ``newest_first``); ties in time keep the order records were received in.

        With a ``budget`` (its ``spans`` counting records), only the records it holds, in that order, the
        store stopping at the first that does not fit (``truncated``) before loading it: one answer costs
        no more memory than the budget, whatever the records hold. Bytes are the stored record's size (its
        OTLP protobuf on SQLite, its fields' on ClickHouse)."""

    def get_logs(self, trace_ids: Sequence[bytes], limit: int, budget: ReadBudget | None = None) -> LogsData:
        """The records of these traces as OTLP, grouped by resource and scope, at most ``limit`` (the
        earliest) and, with a ``budget``, those it holds (as :meth:`search_logs`): what a flow's export
        carries besides its spans."""

    def count_logs(self) -> int:
        """How many log records are stored."""


class Stitcher(Protocol):
    """Folds written spans into flows (and, on SQLite, into RED and graph rollups); the writer thread only."""

    @property
    def flows_pending(self) -> bool:
        """True while written spans wait for :meth:`stitch_flows`.

        SQLite knows exactly (its own writes); ClickHouse looks at its span feed at most once a second
        (``feed_poll_seconds``), and says False when opened read-only.
        """

    @property
    def feed_poll_seconds(self) -> float | None:
        """How often the writer should look for spans written by others: None on SQLite (only this store
        writes to its file), a second on ClickHouse (OpenTelemetry Collectors may write too)."""

    def stitch_flows(self, max_spans: int) -> int:
        """Fold the oldest unstitched spans into flows; returns how many it took.

        SQLite takes at most ``max_spans``; ClickHouse may take more, since rows that arrived together stay
        together (and re-sent copies are taken but folded once). No span's data can make it fail (see
        ``stitch/guard.py``: such spans are skipped and counted in ``skipped_spans``); it raises only for
        the environment (disk full, a lost server), with nothing moved.
        """

    @property
    def stitcher_url(self) -> str | None:
        """Where a process of its own can open this store to stitch it beside the writer (SQLite: its file);
        None: only the writer thread stitches it (ClickHouse, whose stitching is mostly the server's)."""

    def unstitched_since_unix_nano(self) -> int | None:
        """When the oldest stored span not yet folded into flows arrived (unix ns); None when none waits.

        Read from the database (the stitching position it holds), so it also answers on a read-only store,
        in another process: what the dashboard's "flows are N s behind" and ``/healthz`` measure.
        """

    @property
    def skipped_spans(self) -> SkippedSpans:
        """Spans this store left out, by reason, kept across restarts: out of flows, RED and the graph on
        SQLite, out of flows on ClickHouse (whose RED and graph leave out unusable times at query time)."""


class Retention(Protocol):
    """Deletes old spans, then what points to them, a chunk at a time between commits (the writer thread)."""

    def use_retention(self, retention_seconds: int | None) -> None:
        """The retention the writer will keep (None: for ever), told before its first commit: SQLite lays
        new spans out in windows of time that retention drops whole (store/sqlite/windows.py); ClickHouse
        needs nothing here (its TTLs follow ``record_retention``)."""

    def delete_spans_started_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """Delete spans that started before the cutoff; returns how many went.

        SQLite deletes at most ``limit``, in one transaction. ClickHouse ignores ``limit``: one lightweight
        DELETE of every such row (ClickHouse deletes whole parts best; a TTL on the table is better at scale).
        Flows and rollups go in :meth:`expire_before`.
        """

    def expire_before(
        self, cutoff_unix_nano: int, limit: int, *, flows: bool = True, orphans: bool = True
    ) -> int:
        """One bounded step of expiring what goes with the spans: flows whose last span ended before the
        cutoff with every row pointing to them, rollups of minutes before it (``flows``: the stitcher's
        part), resources and scopes no span refers to (``orphans``: the span writer's part).

        Returns the rows the step deleted or examined; 0 once nothing before the cutoff is left (call it
        again until then, between commits). SQLite: at most ``limit`` flows and rows of each table in one
        short transaction (store/sqlite/expiry.py). ClickHouse: nothing to do here (0); its tables' TTLs
        expire its rows.
        """


class TraceReader(Protocol):
    """Reads spans back as OTLP; any thread, and other processes that open the store read-only."""

    def get_trace(self, trace_id: bytes, budget: ReadBudget | None = None) -> TracesData | None:
        """Every stored span of one trace grouped by resource and scope, or None when none is stored.

        With a ``budget``, only the spans it holds, earliest start first (see ReadBudget); a stored trace
        whose first span does not fit is an empty document, not None. ClickHouse gives one copy of a
        re-sent span.
        """

    def get_traces(self, trace_ids: Iterable[bytes], budget: ReadBudget | None = None) -> TracesData:
        """Several traces in one document (empty when none is stored); with a ``budget``, only the spans
        it holds: on SQLite trace by trace, in the order given; on ClickHouse earliest start first across
        the traces."""

    def has_spans(self) -> bool:
        """Whether any span is stored (cheap, unlike counting them)."""

    def count_spans(self) -> int:
        """How many spans are stored (ClickHouse: rows, so a re-sent span counts each time)."""


class FlowReader(Protocol):
    """Reads flows. Both stores give the same answers: the same flows, ids, summaries and searches."""

    def unstitched_since_unix_nano(self) -> int | None:
        """When the oldest span not yet in flows arrived (unix ns), None when flows are current (Stitcher)."""

    def resolve_flow(self, flow_id: int) -> int | None:
        """The standing flow that ``flow_id`` is or was merged into; None when unknown."""

    def flow_of_trace(self, trace_id: bytes) -> int | None:
        """The standing flow a trace belongs to."""

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
        """The flow of a message id seen on a producer or consumer span (optionally on one destination)."""

    def flow_trace_ids(self, flow_id: int) -> list[bytes]:
        """The traces of a standing flow that have spans stored."""

    def flow_shared_traces(self, flow_id: int) -> dict[bytes, list[int]]:
        """The batch traces a standing flow shares (not its own), each with every standing flow sharing it
        (this one included), in flow id order."""

    def flow_summaries(self, flow_ids: list[int]) -> list[FlowSummary]:
        """Summaries of standing flows with spans, in the order given."""

    def search_flow_ids(self, criteria: FlowFilter, limit: int, offset: int) -> list[int]:
        """At most ``limit`` standing flows (-1: no limit) matching every criterion except ``attributes``,
        in the criteria's order."""


class RollupReader(Protocol):
    """Reads RED and service-graph rollups per minute.

    SQLite keeps them as tables updated while stitching (stitched spans only, a re-sent span once);
    ClickHouse aggregates every stored row at query time, stitched or not, each copy of a re-sent span.
    """

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
        """Per-minute RED rollups of the spans that started in [since, until), filtered; with ``step_ns``,
        merged per service, operation, kind and step of ``step_ns`` from ``since`` (each row starting at
        its step's start, the minute ``since`` falls in being the first step's)."""

    def hop_rollups(
        self, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
    ) -> list[tuple[str, str, str, HopRollup]]:
        """Service-graph hop rollups of the minutes in [since, until), merged per edge: (source, target,
        edge kind, rollup), of the edge ``kinds`` only when given (an edge may come in parts, to be added).
        Where the two stores' rules differ (arrival order, the wall clock, re-sent spans),
        ``store/clickhouse/graph.py`` says how."""


class QueueReader(Protocol):
    """Reads what the SQS poller recorded."""

    def queue_summaries(self) -> list[QueueSummary]:
        """Every known queue with its latest depth, its DLQ and the queues dead-lettering into it."""

    def queue_depth(
        self, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
    ) -> list[DepthSample] | None:
        """A queue's depth samples in the range, oldest first, the newest ``limit`` when there are more
        (None for a queue never polled)."""


class QueueRecorder(Protocol):
    """What the SQS poller needs: the queues that spans mention, and a place for each poll's answers.

    Both may be called from the poller's thread, beside the span writer's; a read-only store refuses
    ``record_queue_poll`` with StoreError.
    """

    def record_queue_poll(
        self,
        polled_unix_nano: int,
        queues: list[QueueState],
        samples: list[DepthSample],
        keep_after_unix_nano: int | None = None,
    ) -> None:
        """Store one SQS poll (and drop depth samples from before ``keep_after_unix_nano``).

        SQLite: one transaction, on a connection of its own. ClickHouse: two inserts, then a lightweight
        DELETE when ``keep_after_unix_nano`` is given; not one transaction.
        """

    def queue_destinations_seen(self, since_unix_nano: int) -> list[str]:
        """SQS queue names that spans have sent to or consumed from since then, read from the graph
        (SQLite: its rollups of stitched spans; ClickHouse: the spans, the answer reused for a minute)."""


class FateRecorder(Protocol):
    """What the SQS poller records about dead letters (model/fate.py); its thread, like QueueRecorder."""

    def record_dead_letters(
        self, polled_unix_nano: int, peeks: Sequence[DeadLetterPeek], keep_after_unix_nano: int | None = None
    ) -> None:
        """Store what each dead-letter queue's peek saw (and drop records gone before ``keep_after``)."""


class FateReader(Protocol):
    """Reads what became of messages: dead letters (from the poller) and successful deliveries (counted
    while stitching, successful consumer spans per message id, destination and consumer service)."""

    def fate_counts(self, flow_ids: list[int]) -> dict[int, tuple[int, int]]:
        """Standing flow id -> (messages in a dead-letter queue now, duplicate deliveries); flows with
        neither are left out."""

    def flows_with_fate(self, kind: FateFilter, limit: int) -> set[int]:
        """Standing flows with a message in a dead-letter queue now, or with a duplicate delivery (at most
        ``limit``)."""

    def dead_letters_of(
        self, message_ids: Sequence[str], trace_ids: Sequence[bytes]
    ) -> list[DeadLetterRecord]:
        """Dead-letter records (present or gone) of these message ids (SQS or SNS) or producer traces."""

    def duplicate_rates(self, since_unix_nano: int) -> list[DuplicateRate]:
        """Per destination and consumer service: messages processed successfully since then, and the
        duplicate deliveries among their successes."""


class StorageReader(Protocol):
    """What the store takes on disk: for ``/healthz``, the dashboard's overview and the free-disk warning."""

    def storage_facts(self) -> StorageFacts:
        """Size on disk, oldest span kept, free space and the recorded retention; cheap (a few stats and
        index seeks), any thread. SQLite: its files and their filesystem; ClickHouse: the active parts of
        ``otel_traces`` and the ``hopscope_*`` tables, and the free space of the server's disks."""


class StorageRecorder(Protocol):
    """Notes the collector's ``--retention`` in the store, for readers elsewhere (the dashboard)."""

    def record_retention(self, retention_seconds: int | None) -> None:
        """Record it (None: spans are kept for ever); any thread. A read-only store refuses (StoreError)."""


class WriteSide(SpanSink, LogSink, Stitcher, Retention, LogRetention, Protocol):
    """What the writer thread drives: commits, stitching and retention."""


class ReadSide(
    TraceReader, FlowReader, RollupReader, QueueReader, FateReader, StorageReader, LogReader, Protocol
):
    """What the query layer reads (for the HTTP query API and the dashboard)."""


class SpanStore(WriteSide, ReadSide, QueueRecorder, FateRecorder, StorageRecorder, Protocol):
    """Every role: what ``open_store`` returns and what SQLiteStore and ClickHouseStore implement.

    The write-side methods are called from one writer thread only; every other method may be called from
    any thread (and from other processes that open the same store read-only).
    """

    @property
    def label(self) -> str:
        """Where the spans are (a path or a URL without password), for logs and messages."""

    def close(self) -> None:
        """Release every connection; what ``write_prepared`` returned for is already committed."""
