"""OTLP log requests made by the real OpenTelemetry SDK (LoggerProvider, LoggingHandler, the OTLP encoder).

Records come from Python ``logging`` through the SDK's ``LoggingHandler`` inside real spans, exactly as an
instrumented function sends them; the SDK's own OTLP encoder turns them into an ExportLogsServiceRequest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer


@contextmanager
def sdk_logger(
    service: str = "orders-api", logger_name: str = "orders"
) -> Iterator[tuple[logging.Logger, Tracer, Callable[[], ExportLogsServiceRequest]]]:
    """A stdlib logger wired to a real LoggerProvider, a tracer of the same resource, and ``drain()``
    which returns the records logged so far as one ExportLogsServiceRequest (and forgets them)."""
    resource = Resource.create({"service.name": service})
    provider = LoggerProvider(resource=resource)
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger(f"hopscope.tests.{logger_name}.{id(provider)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    tracer = TracerProvider(resource=resource).get_tracer("tests")

    def drain() -> ExportLogsServiceRequest:
        records = exporter.get_finished_logs()
        exporter.clear()
        return encode_logs(records)

    try:
        yield logger, tracer, drain
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def order_story(
    logger: logging.Logger, tracer: Tracer, order_id: str, *, fail: bool = False, **fields: Any
) -> tuple[str, str]:
    """Three lines of one order inside one span (info, warning, and an exception when ``fail``);
    returns the span's trace and span id as hex."""
    with tracer.start_as_current_span("process order") as span:
        extra = {"hopscope.correlation_id": order_id, **fields}
        logger.info("order %s received", order_id, extra=extra)
        logger.warning("stock low for order %s", order_id, extra=extra)
        if fail:
            try:
                raise ValueError(f"card declined for {order_id}")
            except ValueError:
                logger.exception("payment failed", extra=extra)
        context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
