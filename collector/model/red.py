"""RED (rate, errors, duration) values as the store hands them to the query layer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

# Sums are held here: the stores keep them as 64-bit integers (see stitch/guard.py).
_INT64_MAX = 2**63 - 1


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
