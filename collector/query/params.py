"""Query-string parameters of the HTTP query API, parsed into the query layer's types.

Every problem names the parameter, so that a 400 tells the caller exactly what to fix.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hopscope.collector.model.fate import FateFilter
from hopscope.collector.model.flows import FlowFilter, FlowSort
from hopscope.collector.model.logs import MAX_ANSWER_LOGS, SEVERITY_RANGES, LogFilter, min_severity_of

MAX_LIMIT = 1_000
# Flows a search may skip: far beyond any store, and inside every SQL dialect's 64-bit OFFSET.
MAX_OFFSET = 2**62


class ParamError(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter {shown(name)!r}: {problem}")
        self.name = name


def shown(text: str, limit: int = 80) -> str:
    """Client text as an error message quotes it: cut, so that a 1 MB parameter is not echoed back."""
    return text if len(text) <= limit else text[:limit] + "..."


# The store keeps times as signed 64-bit unix nanoseconds: 1970-01-01 up to 2262-04-11.
MAX_UNIX_NANO = 2**63 - 1
# The longest duration a flow can have, in ms (MAX_UNIX_NANO nanoseconds).
MAX_DURATION_MS = MAX_UNIX_NANO // 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def parse_time(name: str, text: str) -> int:
    """Unix nanoseconds from an integer (ns) or an ISO 8601 date-time (UTC unless it says otherwise).

    Only moments the store can hold are accepted (1970-01-01 to 2262-04-11): anything else is a 400 naming
    the parameter, not an overflow deep in a query.
    """
    if text.lstrip("-").isdigit():
        return parse_int(name, text, low=0, high=MAX_UNIX_NANO)
    try:
        moment = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))  # RFC 3339 allows t and z
    except ValueError:
        raise ParamError(
            name, f"expected unix nanoseconds or an ISO 8601 date-time, got {shown(text)!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    try:
        since_epoch = moment - _EPOCH
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00, before datetime's own first moment
        since_epoch = dt.timedelta.min
    nanos = (
        since_epoch.days * 86_400 + since_epoch.seconds
    ) * 1_000_000_000 + since_epoch.microseconds * 1_000
    if not 0 <= nanos <= MAX_UNIX_NANO:
        raise ParamError(name, f"must be between 1970-01-01 and 2262-04-11 (UTC), got {shown(text)!r}")
    return nanos


def parse_int(name: str, text: str, *, low: int, high: int) -> int:
    out_of_range = len(text) > 40 and text.strip().lstrip("+-").isdigit()  # Python refuses 4,300+ digits
    try:
        value = 0 if out_of_range else int(text)
    except ValueError:
        raise ParamError(name, f"expected a whole number, got {shown(text)!r}") from None
    if out_of_range or not low <= value <= high:
        raise ParamError(name, f"must be between {low} and {high}, got {shown(text)}")
    return value


def parse_duration_ms(name: str, text: str) -> float:
    """A duration in milliseconds: a finite number from 0 up to what a flow can last (MAX_DURATION_MS)."""
    try:
        value = float(text)
    except ValueError:
        raise ParamError(name, f"expected a number, got {shown(text)!r}") from None
    if not 0 <= value <= MAX_DURATION_MS:  # NaN fails both comparisons
        raise ParamError(name, f"must be a number between 0 and {MAX_DURATION_MS}, got {shown(text)!r}")
    return value


def parse_flow_filter(params: Mapping[str, str], attrs: Sequence[str]) -> FlowFilter:
    """The filter of ``GET /api/flows`` (``attrs`` holds every ``attr=key:value`` given)."""
    known = {
        "since", "until", "service", "operation", "status", "min_duration_ms", "correlation_id",
        "message_id", "attr", "sort", "limit", "offset", *FATE_PARAMS,
    }  # fmt: skip
    for name in params:
        if name not in known:
            raise ParamError(name, f"unknown; use one of {', '.join(sorted(known))}")
    status = params.get("status")
    if status not in (None, "error"):
        raise ParamError("status", f"the only status filter is 'error', got {shown(status or '')!r}")
    sort = params.get("sort", FlowSort.START.value)
    try:
        sort_by = FlowSort(sort)
    except ValueError:
        raise ParamError("sort", f"expected 'start' or 'duration', got {shown(sort)!r}") from None
    min_duration = params.get("min_duration_ms")
    min_duration_ms = None if min_duration is None else parse_duration_ms("min_duration_ms", min_duration)
    attributes = []
    for pair in attrs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise ParamError("attr", f"expected key:value, got {shown(pair)!r}")
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
        offset=parse_int("offset", params.get("offset", "0"), low=0, high=MAX_OFFSET),
    )


# ``GET /api/flows``'s fate filters: ``dead_lettered=true`` (a message of the flow is in a dead-letter queue
# now), ``duplicates=true`` (a message was processed successfully more than once by the same consumer).
FATE_PARAMS = {"dead_lettered": FateFilter.DEAD_LETTERED, "duplicates": FateFilter.DUPLICATES}


def parse_fate_filters(params: Mapping[str, str]) -> frozenset[FateFilter]:
    """The fate filters asked for (``true``); ``false`` is the same as leaving the parameter out."""
    fates = set()
    for name, fate in FATE_PARAMS.items():
        value = params.get(name)
        if value is None or value == "false":
            continue
        if value != "true":
            raise ParamError(name, f"expected 'true' or 'false', got {shown(value)!r}")
        fates.add(fate)
    return frozenset(fates)


def parse_fate_filters_leniently(params: Mapping[str, str]) -> frozenset[FateFilter]:
    """:func:`parse_fate_filters` with each value it would refuse left out (for a dashboard URL)."""
    return frozenset(fate for name, fate in FATE_PARAMS.items() if params.get(name) == "true")


def parse_flow_filter_leniently(params: Mapping[str, str], attrs: Sequence[str]) -> FlowFilter:
    """The filter of the parameters :func:`parse_flow_filter` accepts, by its rules, each one it would refuse
    (an unknown name, a bad value, an ``attr`` without a key) and each empty one left out instead of
    failing: for a dashboard page, whose URL anyone can edit."""
    accepted = {name: value for name, value in params.items() if value and _accepted({name: value}, ())}
    return parse_flow_filter(accepted, [pair for pair in attrs if _accepted({}, (pair,))])


def _accepted(params: Mapping[str, str], attrs: Sequence[str]) -> bool:
    try:
        parse_flow_filter(params, attrs)
    except ParamError:
        return False
    return True


def parse_flow_id(text: str) -> int:
    return parse_int("flow_id", text, low=1, high=MAX_UNIX_NANO)


DEFAULT_RANGE_SECONDS = 3600
MAX_POINTS = 1440


def _reject_unknown(params: Mapping[str, str], known: set[str]) -> None:
    for name in params:
        if name not in known:
            raise ParamError(name, f"unknown; use one of {', '.join(sorted(known))}")


def parse_range(params: Mapping[str, str], *, now_unix_nano: int) -> tuple[int, int]:
    """``since``/``until``; until defaults to now, since to an hour before until (1970 at the earliest)."""
    until = parse_time("until", params["until"]) if "until" in params else now_unix_nano
    if "since" in params:
        since = parse_time("since", params["since"])
        if since >= until:
            raise ParamError("since", "must be before 'until'")
    else:
        since = max(0, until - DEFAULT_RANGE_SECONDS * 1_000_000_000)
        if since >= until:
            raise ParamError("until", "must be after 1970-01-01T00:00:00Z")
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


# Log records a search answers by default.
DEFAULT_LOG_LIMIT = 200
# The longest text a log search takes (a substring of bodies).
MAX_LOG_TEXT = 1_000


def parse_severity(text: str) -> int:
    """A lowest severity: a range name (trace, debug, info, warn, error, fatal) or a number 1-24."""
    if text.strip().isdigit():
        return parse_int("severity", text, low=1, high=24)
    number = min_severity_of(text)
    if number is None:
        names = ", ".join(name.lower() for name in SEVERITY_RANGES)
        raise ParamError("severity", f"expected one of {names} or a number 1-24, got {shown(text)!r}")
    return number


def parse_log_filter(params: Mapping[str, str], *, flow: bool = False) -> LogFilter:
    """The filter of ``GET /api/logs`` (newest first), or with ``flow`` of ``GET /api/flows/{id}/logs``
    (oldest first, the flow's traces; fewer parameters)."""
    known = {"severity", "q", "limit"}
    if not flow:
        known |= {"correlation_id", "service", "since", "until", "order"}
    _reject_unknown(params, known)
    text = params.get("q") or None
    if text is not None and len(text) > MAX_LOG_TEXT:
        raise ParamError("q", f"at most {MAX_LOG_TEXT} characters, got {len(text)}")
    order = params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise ParamError("order", f"expected 'newest' or 'oldest', got {shown(order)!r}")
    since = parse_time("since", params["since"]) if "since" in params else None
    until = parse_time("until", params["until"]) if "until" in params else None
    if since is not None and until is not None and since >= until:
        raise ParamError("since", "must be before 'until'")
    default_limit = MAX_ANSWER_LOGS if flow else DEFAULT_LOG_LIMIT
    return LogFilter(
        correlation_id=params.get("correlation_id"),
        service=params.get("service"),
        min_severity=parse_severity(params["severity"]) if "severity" in params else None,
        text=text,
        since_unix_nano=since,
        until_unix_nano=until,
        limit=parse_int("limit", params.get("limit", str(default_limit)), low=1, high=MAX_ANSWER_LOGS),
        newest_first=not flow and order == "newest",
    )
