"""Query-string parameters of the HTTP query API, parsed into the query layer's types.

Every problem names the parameter, so that a 400 tells the caller exactly what to fix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hopscope.collector.flow_model import FlowFilter, FlowSort

MAX_LIMIT = 1_000


class ParamError(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter {name!r}: {problem}")
        self.name = name


def parse_time(name: str, text: str) -> int:
    """Unix nanoseconds from an integer (ns) or an ISO 8601 date-time (UTC unless it says otherwise)."""
    if text.lstrip("-").isdigit():
        return parse_int(name, text, low=0, high=2**63 - 1)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ParamError(name, f"expected unix nanoseconds or an ISO 8601 date-time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def parse_int(name: str, text: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ParamError(name, f"expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise ParamError(name, f"must be between {low} and {high}, got {value}")
    return value


def parse_flow_filter(params: Mapping[str, str], attrs: Sequence[str]) -> FlowFilter:
    """The filter of ``GET /api/flows`` (``attrs`` holds every ``attr=key:value`` given)."""
    known = {
        "since", "until", "service", "operation", "status", "min_duration_ms", "correlation_id",
        "message_id", "attr", "sort", "limit", "offset",
    }  # fmt: skip
    for name in params:
        if name not in known:
            raise ParamError(name, f"unknown; use one of {', '.join(sorted(known))}")
    status = params.get("status")
    if status not in (None, "error"):
        raise ParamError("status", f"the only status filter is 'error', got {status!r}")
    sort = params.get("sort", FlowSort.START.value)
    try:
        sort_by = FlowSort(sort)
    except ValueError:
        raise ParamError("sort", f"expected 'start' or 'duration', got {sort!r}") from None
    min_duration = params.get("min_duration_ms")
    if min_duration is not None:
        try:
            min_duration_ms: float | None = float(min_duration)
        except ValueError:
            raise ParamError("min_duration_ms", f"expected a number, got {min_duration!r}") from None
    else:
        min_duration_ms = None
    attributes = []
    for pair in attrs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ParamError("attr", f"expected key:value, got {pair!r}")
        attributes.append((key, value))
    return FlowFilter(
        since_unix_nano=parse_time("since", params["since"]) if "since" in params else None,
        until_unix_nano=parse_time("until", params["until"]) if "until" in params else None,
        service=params.get("service"),
        operation=params.get("operation"),
        errors_only=status == "error",
        min_duration_ms=min_duration_ms,
        correlation_id=params.get("correlation_id"),
        message_id=params.get("message_id"),
        attributes=tuple(attributes),
        sort=sort_by,
        limit=parse_int("limit", params.get("limit", "50"), low=1, high=MAX_LIMIT),
        offset=parse_int("offset", params.get("offset", "0"), low=0, high=2**62),
    )


def parse_flow_id(text: str) -> int:
    return parse_int("flow_id", text, low=1, high=2**63 - 1)


DEFAULT_RANGE_SECONDS = 3600
MAX_POINTS = 1440


def _reject_unknown(params: Mapping[str, str], known: set[str]) -> None:
    for name in params:
        if name not in known:
            raise ParamError(name, f"unknown; use one of {', '.join(sorted(known))}")


def parse_range(params: Mapping[str, str], *, now_unix_nano: int) -> tuple[int, int]:
    """``since``/``until``; until defaults to now, since to an hour before until."""
    until = parse_time("until", params["until"]) if "until" in params else now_unix_nano
    since = (
        parse_time("since", params["since"])
        if "since" in params
        else until - DEFAULT_RANGE_SECONDS * 1_000_000_000
    )
    if since >= until:
        raise ParamError("since", "must be before 'until'")
    return since, until


def parse_services_query(params: Mapping[str, str], *, now_unix_nano: int) -> tuple[int, int]:
    _reject_unknown(params, {"since", "until"})
    return parse_range(params, now_unix_nano=now_unix_nano)


def parse_queue_depth_query(params: Mapping[str, str], *, now_unix_nano: int) -> tuple[int, int]:
    """``since``/``until`` of a depth series (an hour before now by default)."""
    _reject_unknown(params, {"since", "until"})
    return parse_range(params, now_unix_nano=now_unix_nano)


@dataclass(frozen=True)
class LatencyQuery:
    service: str
    operation: str | None
    since_unix_nano: int
    until_unix_nano: int
    step_seconds: int


def parse_latency_query(params: Mapping[str, str], *, now_unix_nano: int) -> LatencyQuery:
    """``service`` (required), ``operation``, ``since``/``until``, ``step`` in seconds (whole minutes)."""
    _reject_unknown(params, {"service", "operation", "since", "until", "step"})
    service = params.get("service")
    if not service:
        raise ParamError("service", "is required")
    since, until = parse_range(params, now_unix_nano=now_unix_nano)
    span_seconds = (until - since) / 1e9
    if "step" in params:
        step = parse_int("step", params["step"], low=60, high=366 * 86400)
        if step % 60:
            raise ParamError("step", f"must be a whole number of minutes (60, 120, ...), got {step}")
    else:
        step = max(60, -(-int(span_seconds / 60) // 60) * 60)
    if span_seconds / step > MAX_POINTS:
        raise ParamError("step", f"gives more than {MAX_POINTS} points over the range; use a larger step")
    return LatencyQuery(service, params.get("operation"), since, until, step)
