"""RED (rate, errors, duration) values as the store hands them to the query layer, and which spans count
as a service's invocations.

A Lambda function traced by hopscope describes an SQS delivery twice: its invocation span (``faas.trigger``
set, one per invocation, linked to every record's producer) and, under ``process_batch``, one per-record
span per message (a CONSUMER span with the invocation's ``faas.invocation_id`` and no ``faas.trigger``).
A service's rate, errors and latency count its invocations; per-record spans are the messages of the
consume hop (the service graph counts them there) and are left out of the service's totals, or every
single-record invocation would count twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Final, NamedTuple

# Sums are held here: the stores keep them as 64-bit integers (see stitch/guard.py).
_INT64_MAX = 2**63 - 1

# OpenTelemetry's FaaS attributes: every invocation span carries the trigger; a span that carries the
# invocation's id without the trigger is inside an invocation, not one.
FAAS_TRIGGER: Final = "faas.trigger"
FAAS_INVOCATION_ID: Final = "faas.invocation_id"


def is_per_record_span(is_consumer: bool, attribute_names: Container[str]) -> bool:
    """Whether a span is a per-record span: the processing of one message inside an invocation that has a
    span of its own (hopscope's ``process_batch``), counted as a message of its hop, not as an invocation.

    A CONSUMER span with ``faas.invocation_id`` but no ``faas.trigger``. Any other span counts as what its
    kind says: an invocation span has the trigger, and a consumer outside Lambda (or vanilla
    OpenTelemetry's one consumer span per invocation) has no invocation id without it.
    """
    return is_consumer and FAAS_INVOCATION_ID in attribute_names and FAAS_TRIGGER not in attribute_names


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
    per_record: bool = False  # per-record spans (is_per_record_span): messages of a hop, not invocations


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
