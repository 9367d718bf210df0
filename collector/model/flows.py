"""What the query layer hands out about flows: plain, typed, JSON-ready values, whatever the store."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TypeAlias, TypedDict


class FlowSort(enum.Enum):
    START = "start"
    DURATION = "duration"


@dataclass(frozen=True)
class FlowFilter:
    """Search criteria for flows; every field is optional and they combine with AND."""

    since_unix_nano: int | None = None
    until_unix_nano: int | None = None
    service: str | None = None
    operation: str | None = None
    errors_only: bool = False
    min_duration_ms: float | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()  # span attribute key and value, as text
    sort: FlowSort = FlowSort.START
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class FlowSummary:
    flow_id: int
    start_unix_nano: int
    end_unix_nano: int
    duration_ms: float
    span_count: int
    trace_count: int
    error_count: int
    max_receive_count: int
    entry_service: str | None
    entry_operation: str | None
    services: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    # Messages of the flow in a dead-letter queue now, and successful deliveries after a message's first
    # to the same consumer (model/fate.py): filled by the query layer.
    dead_lettered: int = 0
    duplicate_deliveries: int = 0


def with_shared(summary: FlowSummary, shared: Iterable[FlowSummary]) -> FlowSummary:
    """A flow's summary counting the batch traces it shares (their own flows' summaries): their spans,
    traces, errors, time, services and correlation ids are the flow's too; the entry stays the flow's."""
    start, end = summary.start_unix_nano, summary.end_unix_nano
    spans, traces, errors = summary.span_count, summary.trace_count, summary.error_count
    receive_count = summary.max_receive_count
    services, correlation_ids = set(summary.services), set(summary.correlation_ids)
    for batch in shared:
        start, end = min(start, batch.start_unix_nano), max(end, batch.end_unix_nano)
        spans, traces = spans + batch.span_count, traces + batch.trace_count
        errors += batch.error_count
        receive_count = max(receive_count, batch.max_receive_count)
        services.update(batch.services)
        correlation_ids.update(batch.correlation_ids)
    return replace(
        summary,
        start_unix_nano=start,
        end_unix_nano=end,
        duration_ms=(end - start) / 1e6,
        span_count=spans,
        trace_count=traces,
        error_count=errors,
        max_receive_count=receive_count,
        services=sorted(services),
        correlation_ids=sorted(correlation_ids),
    )


# A span attribute's value as JSON carries it: strings, numbers and booleans as they are, bytes as base64
# text, arrays and key-value lists nested, NaN and the infinities as the strings OTLP JSON writes for them.
AttributeValue: TypeAlias = (
    str | int | float | bool | list["AttributeValue"] | dict[str, "AttributeValue"] | None
)
Attributes: TypeAlias = dict[str, AttributeValue]

# The flow detail's spans and hops are TypedDicts: what ``GET /api/flows/{id}`` answers is these very dicts,
# key for key in this order, and the dashboard reads the same values, checked by mypy.


class SpanRef(TypedDict):
    """Where a span is: its trace and span ids in hex."""

    trace_id: str
    span_id: str


class SpanStatus(TypedDict):
    code: str  # UNSET, OK or ERROR
    message: str


class SpanEvent(TypedDict):
    name: str
    time_unix_nano: int
    attributes: Attributes


class SpanLink(TypedDict):
    trace_id: str
    span_id: str
    attributes: Attributes


class SpanScope(TypedDict):
    """The instrumentation scope that recorded the span."""

    name: str
    version: str


class FlowSpan(TypedDict):
    """One span of a flow, flat: ids in hex, kind and status code by name, its service from its resource."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # UNSPECIFIED, INTERNAL, SERVER, CLIENT, PRODUCER or CONSUMER
    service: str
    start_unix_nano: int
    end_unix_nano: int
    duration_ms: float
    status: SpanStatus
    attributes: Attributes
    events: list[SpanEvent]
    links: list[SpanLink]
    resource: Attributes
    scope: SpanScope


class AsyncHop(TypedDict):
    """A producer -> destination -> consumer hop of a flow, with the time its message waited."""

    producer: SpanRef
    consumer: SpanRef
    producer_service: str
    consumer_service: str
    messaging_system: AttributeValue  # the producer's attribute, whatever its type
    destination: str
    queue_wait_ms: float  # consumer start minus producer end
    receive_count: AttributeValue  # the consumer's attribute, whatever its type


class SharedTrace(TypedDict):
    """A batch trace the flow shares: one invocation that processed this flow's message with others."""

    trace_id: str
    # How many other messages the batch processed (its links to traces outside this flow).
    other_messages: int
    # The other standing flows that share it (their messages were in the same batch), by id.
    other_flow_ids: list[int]


@dataclass(frozen=True)
class FlowDetail:
    """A flow's summary, its spans (sorted by start time) and its async hops."""

    summary: FlowSummary
    spans: list[FlowSpan]
    hops: list[AsyncHop]
    # True when ``spans`` was cut at the read cap (the query layer's MAX_ANSWER_SPANS spans or
    # MAX_ANSWER_SPAN_BYTES bytes): the summary still counts every span.
    truncated: bool = False
    # True when the entry span's parent is none of the flow's spans: the flow's API was called with a trace
    # context (a ``traceparent``) from outside.
    entry_called_from_outside: bool = False
    # The batch traces among ``spans`` that the flow shares with other flows (not its own traces).
    shared_traces: list[SharedTrace] = field(default_factory=list)
    # Spans the summary counts that are no longer stored (deleted by --retention: the flow is partly
    # expired), and then the start of the earliest span kept: the spans that are gone started before it.
    expired_span_count: int = 0
    retained_since_unix_nano: int | None = None
