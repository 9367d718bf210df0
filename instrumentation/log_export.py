"""Log records exported over OTLP beside the spans: the SDK's ``LoggingHandler`` on the root logger and on
hooked Powertools loggers, feeding a ``LoggerProvider`` whose batches go to ``/v1/logs``.

Only ``configure()`` with logs on imports the logs SDK (through ``start``); ``register_powertools_logger``
stays light, so hooking a Powertools ``Logger`` costs nothing while log export is off.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context

from hopscope.instrumentation.conventions import CORRELATION_ID
from hopscope.instrumentation.correlation import get_correlation_id

logger = logging.getLogger("hopscope.instrumentation")

LOGS_EXPORTER_ENV = "OTEL_LOGS_EXPORTER"
# Set on every record by hopscope's log correlation (annotate): the trace and span ids are the record's own
# fields and the correlation id is hopscope.correlation_id, so these would only repeat them.
_ANNOTATION_KEYS = frozenset({"trace_id", "span_id", "correlation_id"})
# Loggers whose records are never exported: the SDK and its exporter log about the export itself.
_EXCLUDED_PREFIXES = ("opentelemetry",)
# Powertools' keys that describe the line itself (templates filled from the record) rather than the event.
_POWERTOOLS_LINE_KEYS = frozenset({"level", "location", "message", "timestamp"})
_SCALARS = frozenset({str, int, float, bool, type(None)})
_PLAIN = (bool, str, bytes, int, float, type(None), Mapping, Sequence)


def logs_enabled(logs: bool | None = None) -> bool:
    """The argument when given, else on when ``OTEL_LOGS_EXPORTER`` names ``otlp`` (unset, ``none``: off)."""
    if logs is not None:
        return logs
    names = {name.strip().lower() for name in os.environ.get(LOGS_EXPORTER_ENV, "").split(",")}
    return "otlp" in names


@dataclass
class LogPipeline:
    provider: Any  # the LoggerProvider hopscope set up or adopted
    handler: logging.Handler  # the one for the root logger
    owned: bool  # hopscope made the provider (its exports are bounded by hopscope's exporter timeout)


_lock = threading.Lock()
_pipeline: LogPipeline | None = None
_powertools: list[Any] = []  # Powertools Loggers hooked before or after log export was turned on


class _Local(threading.local):
    busy = False  # this thread is inside the handler: a record logged from there is not exported
    last: logging.LogRecord | None = None  # the last record exported on this thread


_local = _Local()
_pending = False  # a record reached the LoggerProvider since the last take_pending()


def take_pending() -> bool:
    """Whether records were emitted since the last call: an invocation that logged nothing skips the flush."""
    global _pending
    was, _pending = _pending, False
    return was


def register_powertools_logger(powertools_logger: Any) -> None:
    """Remember a Powertools ``Logger``; with log export on (now or later) its records are exported too.

    Its records may never reach the root logger's handler: Powertools filters its service's records out of
    every handler the root has when the ``Logger`` is made. So it gets a handler of its own, which also adds
    its ``append_keys``; a record that reaches both is exported once.
    """
    with _lock:
        if any(known is powertools_logger for known in _powertools):
            return
        _powertools.append(powertools_logger)
        pipeline = _pipeline
    if pipeline is not None:
        _attach_powertools(pipeline.provider, powertools_logger)


def start(
    resource: Any,
    endpoint: str,
    headers: Mapping[str, str] | None,
    timeout_s: float,
    *,
    log_exporter: Any = None,
    add_to_existing: bool = False,
) -> LogPipeline:
    """Set up log export once (idempotent) and return it.

    A LoggerProvider the application already set is reused as it is, with hopscope's exporter added only
    when ``add_to_existing`` (an explicit endpoint or exporter); otherwise one is made on ``resource`` (the
    TracerProvider's, so logs and spans name the same service).
    """
    global _pipeline  # noqa: PLW0603 - one pipeline per process, as the global LoggerProvider
    from opentelemetry import _logs  # noqa: PLC0415 - the logs SDK only when logs are on
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415

    with _lock:
        if _pipeline is not None:
            return _pipeline
        current_provider = _logs.get_logger_provider()
        if isinstance(current_provider, LoggerProvider):
            owned = False
            provider = current_provider
            if add_to_existing:
                provider.add_log_record_processor(
                    _batch_processor(endpoint, headers, timeout_s, log_exporter)
                )
        else:
            provider = LoggerProvider(resource=resource)
            provider.add_log_record_processor(_batch_processor(endpoint, headers, timeout_s, log_exporter))
            _logs.set_logger_provider(provider)
            owned = _logs.get_logger_provider() is provider
        provider.add_log_record_processor(_pending_marker())
        handler = _new_handler(provider)
        root = logging.getLogger()
        if any(_is_sdk_handler(existing) for existing in root.handlers):
            logger.debug("hopscope: the root logger already exports over OpenTelemetry; not adding another")
        else:
            root.addHandler(handler)
        _pipeline = LogPipeline(provider, handler, owned)
        hooked = list(_powertools)
    for powertools_logger in hooked:
        _attach_powertools(provider, powertools_logger)
    return _pipeline


def _batch_processor(
    endpoint: str, headers: Mapping[str, str] | None, timeout_s: float, log_exporter: Any
) -> Any:
    """A BatchLogRecordProcessor whose flush is one export (a batch as large as its queue) of bounded time."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: PLC0415

    if log_exporter is None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: PLC0415

        log_exporter = OTLPLogExporter(
            endpoint=endpoint, headers=dict(headers) if headers is not None else None, timeout=timeout_s
        )
    return BatchLogRecordProcessor(
        log_exporter, max_queue_size=_QUEUE_SIZE, max_export_batch_size=_QUEUE_SIZE
    )


_QUEUE_SIZE = 2048


def _pending_marker() -> Any:
    """A processor that only notes that a record went through the provider (whoever emitted it)."""
    from opentelemetry.sdk._logs import LogRecordProcessor  # noqa: PLC0415

    class PendingMarker(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            global _pending  # noqa: PLW0603
            _pending = True

        emit = on_emit  # its name in older SDKs

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return PendingMarker()


def _attach_powertools(provider: Any, powertools_logger: Any) -> None:
    try:
        handler = _new_handler(provider, extra_keys=_powertools_keys(powertools_logger))
        powertools_logger.addHandler(handler)
    except Exception:  # an odd Logger must not break the function
        logger.warning("hopscope: could not export the records of a Powertools Logger", exc_info=True)


def _powertools_keys(powertools_logger: Any) -> Callable[[], dict[str, Any]]:
    """The keys a Powertools Logger adds to every line (``append_keys``, Lambda context, thread-safe keys)."""

    def keys() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for method in ("get_current_keys", "thread_safe_get_current_keys"):
            try:
                found.update(getattr(powertools_logger, method)())
            except Exception:  # an orphan child logger, an older Powertools: the record's own keys remain
                logger.debug("hopscope: no %s on a Powertools Logger", method, exc_info=True)
        return {k: v for k, v in found.items() if v is not None and k not in _POWERTOOLS_LINE_KEYS}

    return keys


def _is_sdk_handler(handler: logging.Handler) -> bool:
    from opentelemetry.sdk._logs import LoggingHandler  # noqa: PLC0415

    return isinstance(handler, LoggingHandler)


def _plain(value: Any) -> Any:
    """A value the OTLP attribute model holds; anything else as its text (the SDK would drop it to None)."""
    return value if type(value) in _SCALARS or isinstance(value, _PLAIN) else str(value)


def _new_handler(provider: Any, extra_keys: Callable[[], dict[str, Any]] | None = None) -> logging.Handler:
    handler: logging.Handler = _handler_class()(provider, extra_keys)
    return handler


_class: Any = None


def _handler_class() -> Any:
    """The SDK's LoggingHandler with hopscope's rules, built on first use (it subclasses an SDK class)."""
    global _class  # noqa: PLW0603
    if _class is not None:
        return _class
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggingHandler  # noqa: PLC0415

    class OtlpLogHandler(LoggingHandler):
        """Adds ``hopscope.correlation_id`` and the Powertools keys; never exports the export's own logs,
        never re-enters itself, and exports a record that reaches it twice (a Powertools logger, then the
        root) once."""

        def __init__(self, provider: Any, extra_keys: Callable[[], dict[str, Any]] | None) -> None:
            # The SDK marks its handler deprecated in favour of opentelemetry-instrumentation-logging's;
            # it is the one every supported SDK version has, so hopscope keeps it (and silences the notice).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                super().__init__(logger_provider=provider)
            self._extra_keys = extra_keys

        def emit(self, record: logging.LogRecord) -> None:
            if (
                _local.busy
                or _local.last is record
                or record.name.startswith(_EXCLUDED_PREFIXES)
                or context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)  # inside an export
            ):
                return
            _local.busy = True
            try:
                _local.last = record
                super().emit(record)
            except Exception:
                self.handleError(record)
            finally:
                _local.busy = False

        def _get_attributes(self, record: logging.LogRecord) -> dict[str, Any]:  # type: ignore[override]
            found = super()._get_attributes(record)
            attributes = found if isinstance(found, dict) else dict(found or {})  # a fresh dict in the SDK
            # The correlation id: the flow's (baggage), else the record's own, else a Powertools Logger's.
            candidates = [get_correlation_id(), attributes.pop("correlation_id", None)]
            for key in _ANNOTATION_KEYS:
                attributes.pop(key, None)
            if self._extra_keys is not None:
                keys = self._extra_keys()
                candidates.append(keys.pop("correlation_id", None))
                attributes = {**keys, **attributes}  # the record's own keys win
            for key, value in attributes.items():
                if type(value) not in _SCALARS:
                    attributes[key] = _plain(value)
            for candidate in candidates:
                if isinstance(candidate, str) and candidate:
                    attributes[CORRELATION_ID] = candidate
                    break
            return attributes

        def flush(self) -> None:
            """Nothing here: hopscope flushes at the end of each invocation, the provider at exit."""

    _class = OtlpLogHandler
    return _class
