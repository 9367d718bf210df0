"""Log records that name their trace, span and correlation id, so a log line leads to its flow.

Either install it for every logger (``instrument_logging()``), add ``CorrelationLogFilter`` to a handler,
or hook a Powertools ``Logger`` (``instrument_powertools_logger(logger)``): its JSON output then has the
``trace_id``, ``span_id`` and ``correlation_id`` keys. Exporting the records themselves over OTLP is
``configure(logs=True)``'s part (log_export.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from opentelemetry import trace

from hopscope.instrumentation.correlation import get_correlation_id

_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16


def annotate(record: logging.LogRecord) -> None:
    """Set ``trace_id``, ``span_id`` and ``correlation_id`` on a record from the current context."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        record.trace_id = trace.format_trace_id(span_context.trace_id)
        record.span_id = trace.format_span_id(span_context.span_id)
    else:
        record.trace_id = _INVALID_TRACE_ID
        record.span_id = _INVALID_SPAN_ID
    record.correlation_id = get_correlation_id() or ""


class CorrelationLogFilter(logging.Filter):
    """Adds the trace, span and correlation ids to each record it sees; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        annotate(record)
        return True


_lock = threading.Lock()
_original_factory: Any = None


def instrument_logging() -> None:
    """Annotate every log record of the process (idempotent): ``%(correlation_id)s`` works in any format."""
    global _original_factory  # noqa: PLW0603 - one process-wide record factory, as logging has
    with _lock:
        if _original_factory is not None:
            return
        original = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = original(*args, **kwargs)
            annotate(record)
            return record

        _original_factory = original
        logging.setLogRecordFactory(factory)


def uninstrument_logging() -> None:
    """Put back the record factory that ``instrument_logging`` replaced."""
    global _original_factory  # noqa: PLW0603
    with _lock:
        if _original_factory is None:
            return
        logging.setLogRecordFactory(_original_factory)
        _original_factory = None


class _FilterableLogger(Protocol):
    def addFilter(self, filter: logging.Filter) -> None: ...


def instrument_powertools_logger(logger: _FilterableLogger) -> None:
    """Hook a Powertools ``Logger``: its JSON lines gain trace_id, span_id and correlation_id, and with log
    export on (``configure(logs=True)``, now or later) its records, with their keys, are exported too."""
    from hopscope.instrumentation.log_export import register_powertools_logger  # noqa: PLC0415

    logger.addFilter(CorrelationLogFilter())
    register_powertools_logger(logger)
