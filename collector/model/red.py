"""RED (rate, errors, duration) values as the store hands them to the query layer, and what each span
counts as.

A service's rate, errors and latency count its invocations. A Lambda function's spans say which those are:
OpenTelemetry's FaaS conventions put ``faas.invocation_id`` on the invocation span, and a function often
has more entry spans per invocation, which would each count again:

- hopscope's ``process_batch`` makes one per-record span per message (a CONSUMER span with the
  invocation's ``faas.invocation_id`` but no ``faas.trigger``, the invocation span's mark), named like the
  invocation span (``process orders``): one single-record invocation would count twice;
- vanilla OpenTelemetry's Lambda instrumentation makes a SERVER invocation span and, for SQS, a CONSUMER
  span beneath it that links to every record (no FaaS attribute); a web framework's instrumentation adds a
  SERVER span beneath an HTTP invocation.

So spans have a role (``SpanRole``), decided from the span alone, and the query layer counts, per service
(or operation) and range, its INVOCATION spans if it has any, else its other ENTRY spans (a service outside
Lambda), else its PER_RECORD spans. Per-record spans are the messages of the consume hop, which the service
graph counts.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

# Sums are held here: the stores keep them as 64-bit integers (see stitch/guard.py).
_INT64_MAX = 2**63 - 1

# OpenTelemetry's FaaS attributes: the invocation span carries the invocation's id, hopscope's (and
# vanilla's SQS and HTTP ones) the trigger too; a span with the id but without the trigger is inside one.
FAAS_TRIGGER: Final = "faas.trigger"
FAAS_INVOCATION_ID: Final = "faas.invocation_id"


class SpanRole(enum.IntEnum):
    """What a span counts as in a service's RED (see the module's docstring)."""

    ENTRY = 0  # a span of no invocation: counts as its kind says (server and consumer spans are requests)
    INVOCATION = 1  # a Lambda invocation span: faas.invocation_id (and not a per-record span)
    PER_RECORD = 2  # one message processed inside an invocation that has a span of its own


def span_role(is_consumer: bool, attribute_names: Container[str]) -> SpanRole:
    """The role of a server or consumer span, from its kind and the names of its attributes (the stores
    give spans of other kinds, never requests, the ENTRY role without asking).

    PER_RECORD: a CONSUMER span with ``faas.invocation_id`` and no ``faas.trigger`` (hopscope's
    ``process_batch``). INVOCATION: any other span with ``faas.invocation_id``. ENTRY: the rest.
    """
    if FAAS_INVOCATION_ID not in attribute_names:
        return SpanRole.ENTRY
    if is_consumer and FAAS_TRIGGER not in attribute_names:
        return SpanRole.PER_RECORD
    return SpanRole.INVOCATION


def is_per_record_span(is_consumer: bool, attribute_names: Container[str]) -> bool:
    """Whether a span is a per-record span: a message's processing, counted on its hop (``span_role``)."""
    return span_role(is_consumer, attribute_names) is SpanRole.PER_RECORD


@dataclass
class Rollup:
    span_count: int = 0
    error_count: int = 0
    duration_sum_ns: int = 0
    histogram: Counter[int] = field(default_factory=Counter)

    def add(self, other: Rollup) -> None:
        self.span_count += other.span_count
        self.error_count += other.error_count
        self.duration_sum_ns = min(self.duration_sum_ns + other.duration_sum_ns, _INT64_MAX)
        self.histogram.update(other.histogram)


class RollupRow(NamedTuple):
    service_name: str
    operation: str
    kind: int
    bucket_start_unix_nano: int
    rollup: Rollup
    role: SpanRole = SpanRole.ENTRY  # what its spans count as (span_role)


@dataclass(frozen=True)
class RedStats:
    """Rate, errors and duration over one stretch of time."""

    span_count: int
    rate_per_second: float
    error_count: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class ServiceRed:
    service: str
    red: RedStats
    operations: list[str]


@dataclass(frozen=True)
class LatencyPoint:
    bucket_start_unix_nano: int
    red: RedStats


def counted_rows(rows: Sequence[RollupRow]) -> list[RollupRow]:
    """The rows RED counts of one service (or one operation) over a range: its INVOCATION rows if it has
    any, else its ENTRY rows, else its PER_RECORD rows (its invocation spans never arrived, or an operation
    only per-record spans bear): an invocation counts once, and nothing that was received counts zero."""
    for role in (SpanRole.INVOCATION, SpanRole.ENTRY, SpanRole.PER_RECORD):
        chosen = [row for row in rows if row.role is role]
        if chosen:
            return chosen
    return []
