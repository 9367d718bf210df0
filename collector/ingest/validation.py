"""Which spans (and log records) of a request the collector accepts: OTLP partial success, not all or
nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
# OTLP times are fixed64, but both stores keep nanoseconds as signed 64-bit integers (SQLite INTEGER,
# ClickHouse DateTime64(9), whose range ends at 2262-04-11): a later time cannot be stored.
_FIRST_UNSTORABLE_TIME = 2**63


@dataclass(frozen=True)
class Validation:
    accepted: int
    rejected: int
    error_message: str


def span_problem(span: Span) -> str | None:
    """Why a span cannot be stored, or None when it can."""
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "trace_id must be 16 bytes and not all zero"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "span_id must be 8 bytes and not all zero"
    if len(span.parent_span_id) not in (0, 8):
        return "parent_span_id must be empty or 8 bytes"
    if (
        span.start_time_unix_nano >= _FIRST_UNSTORABLE_TIME
        or span.end_time_unix_nano >= _FIRST_UNSTORABLE_TIME
        or (span.events and any(event.time_unix_nano >= _FIRST_UNSTORABLE_TIME for event in span.events))
    ):
        return "times must be below 2^63 ns (2262-04-11), the range of 64-bit nanosecond timestamps"
    # A link's ids are not checked: the specification lets SDKs record a link of an invalid context (all
    # zeros) when it carries attributes. It is stored as sent and joins nothing (stitch/guard.py).
    return None


def drop_invalid_spans(request: ExportTraceServiceRequest) -> Validation:
    """Remove the spans that cannot be stored, in place, and count both kinds."""
    groups = (scope.spans for resource in request.resource_spans for scope in resource.scope_spans)
    return _drop_invalid(groups, span_problem, Span, "span(s)")


_Item = TypeVar("_Item", Span, LogRecord)


def _drop_invalid(
    groups: Iterable[RepeatedCompositeFieldContainer[_Item]],
    problem_of: Callable[[_Item], str | None],
    kind: type[_Item],
    items: str,
) -> Validation:
    """Keep, in each repeated field of ``groups``, the items without a problem; count both kinds."""
    accepted = rejected = 0
    first_problem = ""
    for group in groups:
        problems = [problem_of(item) for item in group]
        bad = sum(problem is not None for problem in problems)
        if bad:
            first_problem = first_problem or next(p for p in problems if p)
            keep = [item for item, problem in zip(group, problems, strict=True) if problem is None]
            kept = [kind.FromString(item.SerializeToString()) for item in keep]
            del group[:]
            group.extend(kept)
        rejected += bad
        accepted += len(group)
    message = f"{rejected} {items} rejected: {first_problem}" if rejected else ""
    return Validation(accepted=accepted, rejected=rejected, error_message=message)


def log_record_problem(record: LogRecord) -> str | None:
    """Why a log record cannot be stored, or None when it can: its ids may be absent (a record outside
    any trace), but not of the wrong length."""
    if len(record.trace_id) not in (0, 16):
        return "trace_id must be empty or 16 bytes"
    if len(record.span_id) not in (0, 8):
        return "span_id must be empty or 8 bytes"
    if max(record.time_unix_nano, record.observed_time_unix_nano) >= _FIRST_UNSTORABLE_TIME:
        return "times must be below 2^63 ns (2262-04-11), the range of 64-bit nanosecond timestamps"
    return None


def drop_invalid_log_records(request: ExportLogsServiceRequest) -> Validation:
    """Remove the log records that cannot be stored, in place, and count both kinds."""
    groups = (scope.log_records for resource in request.resource_logs for scope in resource.scope_logs)
    return _drop_invalid(groups, log_record_problem, LogRecord, "log record(s)")
