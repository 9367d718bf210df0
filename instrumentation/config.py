"""``configure()``: the OpenTelemetry SDK set up once per Lambda environment, and the bounded flush.

Every option follows one order: explicit argument, then the standard ``OTEL_*`` variable, then hopscope's
``HOPSCOPE_*`` variable, then the default. The SDK and the exporter are imported here, on first use, so
that importing the instrumentation stays cheap on a cold start.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

logger = logging.getLogger("hopscope.instrumentation")

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_FLUSH_TIMEOUT_MS = 2000
TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"
_SIGNAL_PATHS = (TRACES_PATH, LOGS_PATH, "/v1/metrics")
_TRUE = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def tracing_disabled() -> bool:
    """``HOPSCOPE_DISABLED=true`` makes every hopscope wrapper a no-op (functions come back unwrapped)."""
    return env_flag("HOPSCOPE_DISABLED")


def traces_endpoint(endpoint: str | None = None) -> str:
    """The OTLP/HTTP traces URL: argument > OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is) >
    OTEL_EXPORTER_OTLP_ENDPOINT > HOPSCOPE_ENDPOINT > http://127.0.0.1:4318 (the last three + /v1/traces)."""
    return _signal_endpoint(endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", TRACES_PATH)


def logs_endpoint(endpoint: str | None = None) -> str:
    """The OTLP/HTTP logs URL, in the order of ``traces_endpoint``: argument >
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (as is) > OTEL_EXPORTER_OTLP_ENDPOINT > HOPSCOPE_ENDPOINT > default
    (the last three + /v1/logs; an argument that names /v1/traces gets /v1/logs in its place)."""
    return _signal_endpoint(endpoint, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", LOGS_PATH)


def _signal_endpoint(endpoint: str | None, signal_variable: str, path: str) -> str:
    if endpoint:
        base = endpoint
    elif os.environ.get(signal_variable):
        return os.environ[signal_variable]
    else:
        base = (
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("HOPSCOPE_ENDPOINT")
            or DEFAULT_ENDPOINT
        )
    base = base.rstrip("/")
    if base.endswith(path):
        return base
    for other in _SIGNAL_PATHS:
        if base.endswith(other):
            return base[: -len(other)] + path
    return base + path


def service_name_of(service_name: str | None = None) -> str:
    """argument > OTEL_SERVICE_NAME > HOPSCOPE_SERVICE_NAME > the Lambda function's name > unknown_service."""
    return (
        service_name
        or os.environ.get("OTEL_SERVICE_NAME")
        or os.environ.get("HOPSCOPE_SERVICE_NAME")
        or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or "unknown_service"
    )


def flush_timeout_ms_of(value: int | None = None) -> int:
    """argument > HOPSCOPE_FLUSH_TIMEOUT_MS > 2000."""
    if value is not None:
        return max(0, int(value))
    try:
        return max(0, int(os.environ.get("HOPSCOPE_FLUSH_TIMEOUT_MS", DEFAULT_FLUSH_TIMEOUT_MS)))
    except ValueError:
        logger.warning(
            "hopscope: HOPSCOPE_FLUSH_TIMEOUT_MS is not an integer; using %d", DEFAULT_FLUSH_TIMEOUT_MS
        )
        return DEFAULT_FLUSH_TIMEOUT_MS


def lambda_resource_attributes() -> dict[str, Any]:
    """cloud.* and faas.* resource attributes from the variables the Lambda runtime sets."""
    env = os.environ
    attributes: dict[str, Any] = {"cloud.provider": "aws", "cloud.platform": "aws_lambda"}
    for key, variable in (
        ("cloud.region", "AWS_REGION"),
        ("faas.name", "AWS_LAMBDA_FUNCTION_NAME"),
        ("faas.version", "AWS_LAMBDA_FUNCTION_VERSION"),
        ("faas.instance", "AWS_LAMBDA_LOG_STREAM_NAME"),
    ):
        if env.get(variable):
            attributes[key] = env[variable]
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory.isdigit():
        attributes["faas.max_memory"] = int(memory) * 1024 * 1024  # the conventions count bytes
    return attributes


@dataclass
class _State:
    provider: Any = None  # the provider hopscope configured or adopted
    owns_provider: bool = False
    # The longest one export by hopscope's own pipeline can take (its exporter's timeout, one batch per
    # flush); None for a provider the application built, whose exporters hopscope cannot bound.
    bounded_flush_ms: int | None = None
    capture_payload: bool | None = None
    flush_timeout_ms: int | None = None
    logger_provider: Any = None  # the LoggerProvider of log export, once on
    logs_pending: Any = None  # () -> bool: were records emitted since the last flush
    bounded_logs_flush_ms: int | None = None  # as bounded_flush_ms, for hopscope's own log pipeline


_state = _State()
_lock = threading.Lock()


def configure(
    service_name: str | None = None,
    endpoint: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    sampler: Sampler | None = None,
    flush_timeout_ms: int | None = None,
    capture_payload: bool | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    span_exporter: SpanExporter | None = None,
    logs: bool | None = None,
    log_exporter: LogRecordExporter | None = None,
) -> TracerProvider:
    """Set up tracing once for this process and return the TracerProvider (later calls return the same).

    A TracerProvider the application already set is reused as it is; hopscope adds its OTLP exporter to it
    only when ``endpoint`` is given. The sampler follows ``OTEL_TRACES_SAMPLER`` unless one is passed. With
    ``HOPSCOPE_AUTH_TOKEN`` set (and no headers given), exports carry it as a bearer token, as a collector
    started with ``--auth-token`` expects. ``span_exporter`` replaces the OTLP/HTTP exporter (a console or
    in-memory one); it must bound its own export time, as the OTLP exporter here is bounded by the flush
    timeout.

    ``logs=True`` (or ``OTEL_LOGS_EXPORTER=otlp`` when not given) also exports Python ``logging`` records
    over OTLP/HTTP to ``/v1/logs``, with the same resource and headers, flushed with the spans within the
    same flush timeout (each exporter then gets half of it); a LoggerProvider the application already set
    is reused by the same rule as the TracerProvider. ``log_exporter`` replaces the OTLP/HTTP log exporter.
    A later call can still turn logs on.
    """
    with _lock:
        if capture_payload is not None:
            _state.capture_payload = capture_payload
        if flush_timeout_ms is not None:
            _state.flush_timeout_ms = flush_timeout_ms
        logs_on = _state.logger_provider is None and _logs_enabled(logs, log_exporter)
        provider = _configure_traces(
            shares=2 if logs_on else 1,
            service_name=service_name,
            endpoint=endpoint,
            headers=headers,
            sampler=sampler,
            resource_attributes=resource_attributes,
            span_exporter=span_exporter,
        )
        if logs_on:
            try:
                _configure_logs(
                    provider,
                    service_name=service_name,
                    endpoint=endpoint,
                    headers=headers,
                    resource_attributes=resource_attributes,
                    log_exporter=log_exporter,
                )
            except Exception:  # tracing is set up: a failed log export must not undo it
                logger.warning("hopscope: log export could not be configured", exc_info=True)
        return provider


def _logs_enabled(logs: bool | None, log_exporter: LogRecordExporter | None) -> bool:
    """The argument, else on with an exporter given, else ``OTEL_LOGS_EXPORTER``."""
    if logs is not None or log_exporter is not None:
        return logs is not False  # without importing log_export: logs off costs nothing
    from hopscope.instrumentation.log_export import logs_enabled  # noqa: PLC0415

    return logs_enabled(None)


def _configure_logs(
    tracer_provider: Any,
    *,
    service_name: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    resource_attributes: Mapping[str, Any] | None,
    log_exporter: LogRecordExporter | None,
) -> None:
    from hopscope.instrumentation import log_export  # noqa: PLC0415 - the logs SDK only when logs are on

    resource = getattr(tracer_provider, "resource", None)
    if resource is None:
        resource = _resource(service_name, resource_attributes)
    timeout_ms = _export_timeout_ms(2)
    pipeline = log_export.start(
        resource,
        logs_endpoint(endpoint),
        _export_headers(headers, "OTEL_EXPORTER_OTLP_LOGS_HEADERS"),
        timeout_ms / 1000,
        log_exporter=log_exporter,
        add_to_existing=bool(endpoint) or log_exporter is not None,
    )
    _state.bounded_logs_flush_ms = timeout_ms if pipeline.owned else None
    _state.logs_pending = log_export.take_pending
    _state.logger_provider = pipeline.provider


def _resource(service_name: str | None, resource_attributes: Mapping[str, Any] | None) -> Any:
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    attributes = {**lambda_resource_attributes(), **(resource_attributes or {})}
    attributes["service.name"] = service_name_of(service_name)
    return Resource.create(attributes)


def _configure_traces(
    *,
    shares: int,
    service_name: str | None,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    sampler: Sampler | None,
    resource_attributes: Mapping[str, Any] | None,
    span_exporter: SpanExporter | None,
) -> TracerProvider:
    """The TracerProvider: the one configured before, the application's, or a new one (under ``_lock``);
    its exporter gets 1/``shares`` of the flush timeout (half when the log export shares the flush)."""
    if _state.provider is not None:
        return _state.provider  # type: ignore[no-any-return]
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - keep the import cold-start cheap

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _state.provider = current
        if endpoint or span_exporter is not None:
            current.add_span_processor(_batch_processor(endpoint, headers, span_exporter, shares))
        return current

    provider = TracerProvider(resource=_resource(service_name, resource_attributes), sampler=sampler)
    provider.add_span_processor(_batch_processor(endpoint, headers, span_exporter, shares))
    trace.set_tracer_provider(provider)
    _state.provider = trace.get_tracer_provider()
    _state.owns_provider = _state.provider is provider
    if _state.owns_provider:
        _state.bounded_flush_ms = _export_timeout_ms(shares)
    return _state.provider  # type: ignore[no-any-return]


def _batch_processor(
    endpoint: str | None, headers: Mapping[str, str] | None, span_exporter: SpanExporter | None, shares: int
) -> Any:
    """A BatchSpanProcessor whose flush is one export (a batch as large as its queue) of bounded time."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    if span_exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        span_exporter = OTLPSpanExporter(
            endpoint=traces_endpoint(endpoint),
            headers=_export_headers(headers, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
            timeout=_export_timeout_ms(shares) / 1000,
        )
    return BatchSpanProcessor(span_exporter, max_queue_size=_QUEUE_SIZE, max_export_batch_size=_QUEUE_SIZE)


_QUEUE_SIZE = 2048


def _export_headers(headers: Mapping[str, str] | None, signal_variable: str) -> dict[str, str] | None:
    """The headers given, else ``HOPSCOPE_AUTH_TOKEN`` as a bearer token unless the OTLP headers variables
    are set (None: the exporter reads those itself)."""
    if headers is not None:
        return dict(headers)
    token = os.environ.get("HOPSCOPE_AUTH_TOKEN")
    if token and not os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") and not os.environ.get(signal_variable):
        return {"Authorization": f"Bearer {token}"}
    return None


def _export_timeout_ms(shares: int) -> int:
    """An exporter's timeout: its share of the flush timeout, so that the exports of one flush, in a row,
    never outlast it."""
    return max(flush_timeout_ms_of(_state.flush_timeout_ms) // shares, 1)


def ensure_configured() -> None:
    """Configure with the defaults if the application has not called ``configure()``."""
    if _state.provider is None:
        try:
            configure()
        except Exception:  # the handler must run even when tracing cannot be set up
            logger.warning("hopscope: tracing could not be configured", exc_info=True)


def capture_payload_default() -> bool:
    """configure(capture_payload=...) > HOPSCOPE_CAPTURE_PAYLOAD > off (payloads may hold personal data)."""
    if _state.capture_payload is not None:
        return _state.capture_payload
    return env_flag("HOPSCOPE_CAPTURE_PAYLOAD")


def default_flush_timeout_ms() -> int:
    return flush_timeout_ms_of(_state.flush_timeout_ms)


class _Flusher:
    """Flushes the provider on one long-lived thread, so a caller can stop waiting at its deadline.

    ``force_flush`` exports on the calling thread and an OTLP exporter retries for as long as its own timeout;
    with the collector unreachable that would hold the handler's return. Here the caller waits at most its
    timeout; a late export finishes in the background (or after the next thaw of the Lambda environment).
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Any, threading.Event]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, provider: Any) -> threading.Event:
        """Queue a flush of ``provider``; the event is set when it has ended."""
        done = threading.Event()
        self._ensure_thread()
        self._requests.put((provider, done))
        return done

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hopscope-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            provider, done = self._requests.get()
            try:
                provider.force_flush()
            except Exception:  # an exporter's failure is logged, never raised into a handler
                logger.debug("hopscope: flush failed", exc_info=True)
            finally:
                done.set()


_flusher = _Flusher()


def flush(timeout_ms: int | None = None) -> bool:
    """Export the spans ended and the log records emitted so far, waiting at most ``timeout_ms`` for both
    together; True when everything was flushed.

    hopscope's own pipelines are flushed on the calling thread, one after the other, as long as their
    exports' bounds (the exporters' timeouts: the flush timeout, halved for each when logs are on) add up to
    at most ``timeout_ms``; a thread hand-off costs more than a small export. Any other provider, and any
    pipeline past that budget, is flushed on the flusher thread at the same time, and the caller waits for
    it until the one deadline.
    """
    wait_ms = default_flush_timeout_ms() if timeout_ms is None else timeout_ms
    deadline = time.monotonic() + wait_ms / 1000
    pipelines = _pipelines()
    if len(pipelines) == 1 and pipelines[0][1] is not None and pipelines[0][1] <= wait_ms:
        return _flush_here(pipelines[0][0])  # the common case, without the lists below
    in_caller: list[Any] = []
    pending: list[threading.Event] = []
    budget = wait_ms
    for flushable, bound in pipelines:
        if bound is not None and bound <= budget:
            budget -= bound
            in_caller.append(flushable)
        else:
            pending.append(_flusher.submit(flushable))
    flushed = True
    for flushable in in_caller:
        flushed = _flush_here(flushable) and flushed
    for done in pending:
        flushed = done.wait(max(0.0, deadline - time.monotonic())) and flushed
    return flushed


def _flush_here(flushable: Any) -> bool:
    try:
        return bool(flushable.force_flush())
    except Exception:
        logger.debug("hopscope: flush failed", exc_info=True)
        return False


def _pipelines() -> list[tuple[Any, int | None]]:
    """What a flush exports: the tracer provider, and the logger provider when records were emitted; each
    with the bound of its one export (None: not hopscope's, not bounded)."""
    found: list[tuple[Any, int | None]] = []
    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        found.append((provider, _state.bounded_flush_ms if provider is _state.provider else None))
    if _state.logger_provider is not None and _state.logs_pending():
        found.append((_state.logger_provider, _state.bounded_logs_flush_ms))
    return found
