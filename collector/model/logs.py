"""What the query layer hands out about log records: plain, typed, JSON-ready values, whatever the store.

Severity follows the OpenTelemetry log data model: numbers 1-24 in six ranges of four (TRACE, DEBUG, INFO,
WARN, ERROR, FATAL); a search by severity takes its range and every higher one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The first severity number of each range (OpenTelemetry log data model, "SeverityNumber").
SEVERITY_RANGES: Final = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
ERROR_SEVERITY: Final = SEVERITY_RANGES["ERROR"]
# The attribute that carries the correlation id on a log record (as on spans).
CORRELATION_ID_ATTRIBUTE: Final = "hopscope.correlation_id"
# Log records one answer holds at most (a flow's logs, a search).
MAX_ANSWER_LOGS: Final = 5_000


def severity_name(number: int, text: str = "") -> str:
    """The range's name of a severity number (the record's own text when it has no number)."""
    if number <= 0:
        return text.upper() or "UNSPECIFIED"
    name = "TRACE"
    for range_name, first in SEVERITY_RANGES.items():
        if number >= first:
            name = range_name
    return name


def min_severity_of(name: str) -> int | None:
    """The lowest severity number of a range name (case-insensitive, WARNING and CRITICAL too); None for
    an unknown name."""
    key = name.strip().upper()
    key = {"WARNING": "WARN", "CRITICAL": "FATAL"}.get(key, key)
    return SEVERITY_RANGES.get(key)


@dataclass(frozen=True)
class LogFilter:
    """Search criteria for log records; every field is optional and they combine with AND.

    ``text`` matches a substring of the body, case-insensitively (ASCII letters). ``trace_ids`` picks the
    records of these traces (a flow's). Answers hold at most ``limit`` records: the oldest ones in time
    order, or with ``newest_first`` the newest ones, newest first.
    """

    trace_ids: tuple[bytes, ...] = ()
    correlation_id: str | None = None
    service: str | None = None
    min_severity: int | None = None
    text: str | None = None
    since_unix_nano: int | None = None
    until_unix_nano: int | None = None
    limit: int = 200
    newest_first: bool = False


@dataclass(frozen=True)
class LogLine:
    """One stored log record, as the API and dashboard show it. Every text is untrusted."""

    # The record's time: its timestamp, else its observed timestamp, else when the collector received it.
    time_unix_nano: int
    observed_unix_nano: int
    trace_id: str  # lowercase hex; "" when the record names no trace
    span_id: str  # lowercase hex; "" when it names no span
    severity_number: int
    severity_text: str
    service: str
    scope: str
    body: str  # a string body as is; any other body as its JSON text
    correlation_id: str
    attributes: dict[str, object]
    resource: dict[str, object]

    @property
    def severity(self) -> str:
        return severity_name(self.severity_number, self.severity_text)

    @property
    def is_error(self) -> bool:
        return self.severity_number >= ERROR_SEVERITY or self.severity_text.upper() in (
            "ERROR",
            "FATAL",
            "CRITICAL",
        )
