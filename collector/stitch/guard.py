"""What keeps span data from stopping stitching, RED rollups and the graph, shared by both stores.

Span values come from outside. Two rules hold whatever they are:

- **Times are sanity-checked once, here.** A span whose start is before 2000-01-01 (0 or 1: an SDK that
  never set it), whose end is before its start, or that lasts longer than :data:`MAX_SPAN_DURATION_NS` has
  *unusable times*. It is stored as sent (exports keep it whole) and still joins its flow (trace, links,
  message ids, correlation ids, errors), placed at the moment the collector received it with no duration; RED
  and the graph leave it out. It is counted as skipped (reason ``unusable_times``).
- **A chunk that fails to fold is bisected** (:func:`fold_isolating`) until the spans that fail on their own
  are found; those are skipped (reason ``fold_failed``, logged once with the traceback and the span ids) and
  the rest is stitched. An error of the environment (disk full, database locked, server unreachable) is no
  span's fault: it propagates, and the writer backs off and retries the same chunk.
- **A link joins only through a valid context.** The specification lets SDKs record a link whose trace or
  span id is invalid (all zeros, as ``INVALID_SPAN_CONTEXT``) when it carries attributes. Such a link is
  stored and exported as sent, but joins nothing: a link whose trace id is not 16 bytes or all zero, or
  whose span id is not 8 bytes or all zero, joins no flow and pairs no hop (:func:`joinable_link`); a
  batch span counts no hop for it.

Sums saturate at :data:`INT64_MAX`, so no total overflows the stores' 64-bit integers.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry.proto.trace.v1.trace_pb2 import Span

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1
# 2000-01-01T00:00:00Z: no span of a system traced with OpenTelemetry started before it.
MIN_PLAUSIBLE_START_UNIX_NANO = 946_684_800 * 1_000_000_000
# Longer spans are not latencies anyone wants in a percentile: 30 days.
MAX_SPAN_DURATION_NS = 30 * 86_400 * 1_000_000_000

REASON_UNUSABLE_TIMES = "unusable_times"
REASON_FOLD_FAILED = "fold_failed"
UNUSABLE_TIMES_MESSAGE = (
    "unusable span times (start before 2000, end before start, or longer than 30 days): such spans join "
    "their flows at the moment they were received and are left out of RED and the graph"
)

Row = TypeVar("Row")

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def joinable_trace_id(trace_id: bytes) -> bool:
    """True when a link's trace id names a trace: 16 bytes, not all zero (ClickHouse's span feed filters
    the span ids, see clickhouse/schema.py)."""
    return len(trace_id) == 16 and trace_id != _ZERO_TRACE_ID


def joinable_link(trace_id: bytes, span_id: bytes) -> bool:
    """True when a link's context is valid, so that it can name a producer span."""
    return joinable_trace_id(trace_id) and len(span_id) == 8 and span_id != _ZERO_SPAN_ID


def drop_unjoinable_links(span: Span) -> None:
    """Remove, in place, the links of an invalid context, before the span is folded into flows.

    Only for a span parsed for stitching: the stored span keeps every link.
    """
    links = span.links
    for index in range(len(links) - 1, -1, -1):
        if not joinable_link(links[index].trace_id, links[index].span_id):
            del links[index]


def usable_times(start_unix_nano: int, end_unix_nano: int) -> bool:
    """True when a span's times can shape a flow's timing, RED and the graph."""
    return (
        start_unix_nano >= MIN_PLAUSIBLE_START_UNIX_NANO
        and start_unix_nano <= end_unix_nano <= start_unix_nano + MAX_SPAN_DURATION_NS
    )


def saturating_add(total: int, value: int) -> int:
    """``total + value``, held at INT64_MAX: a sum that a store keeps as a 64-bit integer never overflows."""
    return min(total + value, INT64_MAX)


@dataclass
class SkippedSpans:
    """Spans left out of flows, RED or the graph, by reason; read by the writer for the health answers."""

    by_reason: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_monotonic: float | None = None
    _unusable_logged: bool = False

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, reason: str, count: int, error: str) -> None:
        if count <= 0:
            return
        self.by_reason[reason] += count
        self.last_error = error
        self.last_monotonic = time.monotonic()

    def add_unusable_times(self, count: int) -> None:
        """Count spans with unusable times; the first ones of a run are logged, the rest only counted."""
        self.add(REASON_UNUSABLE_TIMES, count, UNUSABLE_TIMES_MESSAGE)
        if count and not self._unusable_logged:
            self._unusable_logged = True
            log.warning("%d span(s): %s (counted in /healthz; logged once)", count, UNUSABLE_TIMES_MESSAGE)


def fold_isolating(
    rows: Sequence[Row],
    fold: Callable[[Sequence[Row]], None],
    is_environment_error: Callable[[BaseException], bool],
) -> list[tuple[Row, BaseException]]:
    """Fold ``rows``; when that raises for the data's sake, fold halves until the failing rows stand alone.

    ``fold`` must be all or nothing (one transaction, or idempotent). Returns the rows that failed on their
    own, with their errors, in order; every other row has been folded exactly once. An environment error
    propagates at once.
    """
    try:
        fold(rows)
    except Exception as exc:
        if is_environment_error(exc):
            raise
        if len(rows) == 1:
            return [(rows[0], exc)]
        middle = len(rows) // 2
        return [
            *fold_isolating(rows[:middle], fold, is_environment_error),
            *fold_isolating(rows[middle:], fold, is_environment_error),
        ]
    return []


def report_failed_rows(
    skipped: SkippedSpans, failed: Sequence[tuple[str, BaseException]], store_label: str
) -> None:
    """One log line (with the first traceback) for the spans a fold left out, and their count.

    ``failed`` holds (span label, error) pairs, the label naming the trace and span ids.
    """
    if not failed:
        return
    first = failed[0][1]
    labels = ", ".join(label for label, _ in failed[:20]) + (" ..." if len(failed) > 20 else "")
    error = f"{type(first).__name__}: {first}"
    skipped.add(REASON_FOLD_FAILED, len(failed), error)
    log.error(
        "stitching left %d span(s) of %s out of flows, RED and the graph because folding them failed "
        "(%s); the other spans of the chunk were stitched. Spans: %s\n%s",
        len(failed),
        store_label,
        error,
        labels,
        "".join(traceback.format_exception(first)).rstrip(),
    )
