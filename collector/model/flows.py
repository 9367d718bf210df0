"""What the query layer hands out about flows: plain, typed, JSON-ready values, whatever the store."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
