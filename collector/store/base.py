"""The span store interface. SQLite is the embedded default; a ClickHouse store implements the same."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from hopscope.collector.model.flows import FlowFilter, FlowSummary
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.model.queues import DepthSample, QueueState, QueueSummary
from hopscope.collector.model.red import RollupRow
from hopscope.collector.stitch.guard import SkippedSpans
from hopscope.collector.store.limits import SpanLimits

# Spans stitched into flows per call of stitch_flows() when a store catches up on its own (on open, in
# write()); the collector's writer picks its own chunk.
STITCH_CHUNK_SPANS = 20_000

Prepared = TypeVar("Prepared")


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


class SpanStore(Protocol[Prepared]):
    """Stores whole OTLP spans and gives them back without loss.

    Writing is two steps so that the single writer thread does nothing but write: ``prepare`` (pure CPU,
    any thread) turns a request into the store's own rows, ``write_prepared`` commits them. ``write`` does
    both. The write methods are called from one writer thread only; every other method may be called from
    any thread (and from other processes that open the same store read-only).
    """

    @property
    def label(self) -> str:
        """Where the spans are (a path or a URL without password), for logs and messages."""

    def prepare(self, request: ExportTraceServiceRequest, limits: SpanLimits | None = None) -> Prepared:
        """The request's spans in the form ``write_prepared`` takes; never touches the database.

        With ``limits``, a span long enough to hold a value over the value length limit is cut to the
        limits first (the receiver has already applied the count limits).
        """

    def write_prepared(self, batches: Sequence[Prepared]) -> int:
        """Commit every span of ``batches`` durably, all or nothing; returns the number of spans.

        When this returns, the spans survive a killed process. Re-sent spans (same trace and span id)
        are stored once.
        """

    def write(self, requests: Sequence[ExportTraceServiceRequest]) -> int:
        """``prepare`` and ``write_prepared``, then stitch every new span into its flow."""

    @property
    def flows_pending(self) -> bool:
        """True while written spans wait for :meth:`stitch_flows` (writer thread only)."""

    @property
    def feed_poll_seconds(self) -> float | None:
        """How often the writer should look for spans written by others (None: only this store writes)."""

    def stitch_flows(self, max_spans: int) -> int:
        """Fold up to ``max_spans`` of the oldest unstitched spans into flows; returns how many.

        No span's data can make it fail (see stitch_guard: such spans are skipped and counted in
        ``skipped_spans``); it raises only for the environment (disk full, a lost server), with nothing moved.
        """

    @property
    def skipped_spans(self) -> SkippedSpans:
        """Spans of this store left out of flows, RED or the graph, by reason (kept across restarts)."""

    def get_trace(self, trace_id: bytes, budget: ReadBudget | None = None) -> TracesData | None:
        """Every stored span of one trace grouped by resource and scope, or None when none is stored.

        With a ``budget``, only the spans it holds, earliest start first (see ReadBudget); a stored trace
        whose first span does not fit is an empty document, not None.
        """

    def get_traces(self, trace_ids: Iterable[bytes], budget: ReadBudget | None = None) -> TracesData:
        """Several traces in one document (empty when none is stored); with a ``budget``, only the spans
        it holds (earliest start first; on SQLite trace by trace, in the order given)."""

    def resolve_flow(self, flow_id: int) -> int | None:
        """The standing flow that ``flow_id`` is or was merged into; None when unknown."""

    def flow_of_trace(self, trace_id: bytes) -> int | None:
        """The standing flow a trace belongs to."""

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
        """The flow of a message id seen on a producer or consumer span (optionally on one destination)."""

    def flow_trace_ids(self, flow_id: int) -> list[bytes]:
        """The traces of a standing flow that have spans stored."""

    def flow_summaries(self, flow_ids: list[int]) -> list[FlowSummary]:
        """Summaries of standing flows with spans, in the order given."""

    def search_flow_ids(self, criteria: FlowFilter, limit: int, offset: int) -> list[int]:
        """Standing flows matching every criterion except ``attributes``, in the criteria's order."""

    def red_rollups(
        self,
        since_unix_nano: int,
        until_unix_nano: int,
        *,
        service: str | None = None,
        operation: str | None = None,
        kinds: Sequence[int] = (),
    ) -> list[RollupRow]:
        """Per-minute RED rollups of stitched spans that started in [since, until), filtered."""

    def hop_rollups(
        self, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
    ) -> list[tuple[str, str, str, HopRollup]]:
        """Service-graph hop rollups of the minutes in [since, until): (source, target, edge kind, rollup),
        of the edge ``kinds`` only when given."""

    def record_queue_poll(
        self,
        polled_unix_nano: int,
        queues: list[QueueState],
        samples: list[DepthSample],
        keep_after_unix_nano: int | None = None,
    ) -> None:
        """Store one SQS poll in one transaction; safe to call from a thread other than the span writer's."""

    def queue_summaries(self) -> list[QueueSummary]:
        """Every known queue with its latest depth, its DLQ and the queues dead-lettering into it."""

    def queue_depth(
        self, queue_name: str, since_unix_nano: int, until_unix_nano: int, limit: int
    ) -> list[DepthSample] | None:
        """A queue's depth samples in the range (None for a queue never polled)."""

    def queue_destinations_seen(self, since_unix_nano: int) -> list[str]:
        """SQS queue names that spans have sent to or consumed from since then."""

    def has_spans(self) -> bool:
        """Whether any span is stored (cheap, unlike counting them)."""

    def count_spans(self) -> int:
        """How many spans are stored."""

    def delete_spans_started_before(self, cutoff_unix_nano: int, limit: int) -> int:
        """Delete at most ``limit`` spans that started before the cutoff; returns how many went."""

    def close(self) -> None:
        """Release every connection; pending writes have already been committed by ``write``."""
