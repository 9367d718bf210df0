"""A flow whose functions log, made by the real OpenTelemetry SDK: spans through one TracerProvider per
service (as ``flow_chains.Services``), log records through one LoggerProvider per service and the SDK's
``LoggingHandler`` on a stdlib logger, emitted inside the spans, so each record carries its span's trace and
span id and a time within it; the SDK's own OTLP encoders make the requests a store takes.

The chain is ``flow_chains.order_chain``'s (API -> SNS -> SQS -> consumer, each hop its own trace, joined by
links); short sleeps give each span some width on the waterfall.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from hopscope.collector.model.flows import FlowFilter, FlowSpan
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.url import open_store
from tests.helpers.flow_chains import Services, order_chain, post
from tests.helpers.otlp_samples import attrs

SpanKind = trace.SpanKind

# A body a page must show as the characters it holds (Markdown, HTML, a javascript: link, LaTeX).
HOSTILE_BODY = "<script>alert(1)</script> **bold** [link](javascript:alert(1)) $x$ <b>b</b>"
CARRIER_DOWN = "carrier down for {order}"


class LoggingServices(Services):
    """``Services`` whose services also log: ``logger(service)`` is a stdlib logger exporting through a real
    LoggerProvider of that service's resource; ``log_request()`` encodes every record logged so far."""

    def __init__(self) -> None:
        super().__init__()
        self.log_memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self._loggers: dict[str, logging.Logger] = {}  # one per service and name: close() before reusing
        self._log_providers: list[tuple[LoggerProvider, LoggingHandler, logging.Logger]] = []

    def logger(self, service: str, name: str = "app") -> logging.Logger:
        key = f"{service}/{name}"
        if key not in self._loggers:
            provider = LoggerProvider(resource=Resource.create({"service.name": service}))
            provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_memory))
            handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
            logger = logging.getLogger(name)  # the record's scope: the logger's name
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(handler)
            self._loggers[key] = logger
            self._log_providers.append((provider, handler, logger))
        return self._loggers[key]

    def log_request(self) -> ExportLogsServiceRequest:
        return encode_logs(list(self.log_memory.get_finished_logs()))

    def close(self) -> None:
        for provider, handler, logger in self._log_providers:
            logger.removeHandler(handler)
            provider.shutdown()


@dataclass(frozen=True)
class LoggedOrder:
    """The span ids (hex) of one logged order, by span name."""

    order: str
    span_ids: dict[str, str]


def logged_order(services: LoggingServices, order: str, *, fail: bool = False) -> LoggedOrder:
    """One order through orders-api, billing and shipping, two lines or so per span; with ``fail`` the
    shipping consumer fails and logs an ERROR with its exception, and a WARN line with ``HOSTILE_BODY``."""
    api, billing, shipping = (services.tracer(name) for name in ("orders-api", "billing", "shipping"))
    extra = {"hopscope.correlation_id": order}
    ids: dict[str, str] = {}

    def keep(span: trace.Span) -> None:
        ids[span.name] = format(span.get_span_context().span_id, "016x")  # type: ignore[attr-defined]

    log = services.logger("orders-api", "orders")
    with api.start_as_current_span("POST /orders", kind=SpanKind.SERVER, attributes=extra) as root:
        keep(root)
        log.info("order %s received", order, extra=extra)
        time.sleep(0.004)
        with api.start_as_current_span(
            "order-events publish",
            kind=SpanKind.PRODUCER,
            attributes={
                **extra,
                "messaging.system": "aws_sns",
                "messaging.destination.name": "order-events",
                "messaging.message.id": f"sns-{order}",
            },
        ) as publish:
            keep(publish)
            time.sleep(0.002)
            log.info("order %s published", order, extra=extra)
        time.sleep(0.002)
    time.sleep(0.004)
    log = services.logger("billing", "billing")
    with billing.start_as_current_span(
        "order-events process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(publish.get_span_context())],
        attributes={
            **extra,
            "messaging.system": "aws_sns",
            "messaging.destination.name": "order-events",
            "messaging.message.id": f"sns-{order}",
            "hopscope.receive_count": 1,
        },
    ) as consume:
        keep(consume)
        log.info("charging order %s", order, extra={**extra, "amount": 42})
        time.sleep(0.004)
        with billing.start_as_current_span(
            "billing publish",
            kind=SpanKind.PRODUCER,
            attributes={
                **extra,
                "messaging.system": "aws_sqs",
                "messaging.destination.name": "shipping",
                "messaging.message.id": f"sqs-{order}",
            },
        ) as send:
            keep(send)
            time.sleep(0.002)
        time.sleep(0.002)
    time.sleep(0.004)
    log = services.logger("shipping", "shipping")
    with shipping.start_as_current_span(
        "shipping process",
        context=context.Context(),
        kind=SpanKind.CONSUMER,
        links=[trace.Link(send.get_span_context())],
        attributes={
            **extra,
            "messaging.system": "aws_sqs",
            "messaging.destination.name": "shipping",
            "messaging.message.id": f"sqs-{order}",
            "hopscope.receive_count": 1,
        },
    ) as ship:
        keep(ship)
        log.info("shipping order %s", order, extra=extra)
        time.sleep(0.004)
        if fail:
            log.warning(HOSTILE_BODY, extra=extra)
            try:
                raise ConnectionError(CARRIER_DOWN.format(order=order))
            except ConnectionError:
                log.exception(CARRIER_DOWN.format(order=order), extra=extra)
            ship.set_status(trace.Status(trace.StatusCode.ERROR, "carrier down"))
        time.sleep(0.002)
    return LoggedOrder(order, ids)


@dataclass(frozen=True)
class LoggedShop:
    """A SQLite database of two logged orders (o-1 fails in shipping, o-2 succeeds) and one order whose
    functions logged nothing (o-3); each order's flow id and span ids."""

    db: Path
    flows: dict[str, int]
    orders: dict[str, LoggedOrder]


def build_logged_database(db: Path, store_url: str | None = None) -> LoggedShop:
    """The orders' spans and log records written through the real SQLite store at ``db`` (spans stitched
    into flows), or through the store of ``store_url`` (``chdb://...``) when given."""
    services = LoggingServices()
    try:
        orders = {order: logged_order(services, order, fail=order == "o-1") for order in ("o-1", "o-2")}
        order_chain(services, "o-3")
        store = SQLiteStore(db) if store_url is None else open_store(store_url)
        post(store, services.spans())
        store.write_logs([services.log_request()])
        layer = QueryLayer(store)
        flows = {}
        for order in ("o-1", "o-2", "o-3"):
            (flow,) = layer.search_flows(FlowFilter(correlation_id=order))
            flows[order] = flow.flow_id
        store.close()
    finally:
        services.close()
    return LoggedShop(db, flows, orders)


def span_log_request(
    span: FlowSpan, body: str, *, logger: str, attributes: dict[str, object], severity: int = 17
) -> ExportLogsServiceRequest:
    """One log record of ``span`` (a stored span, as the query layer gives it), 1 ms after it started, from
    its service and a logger ``logger``: for data no SDK would send (hostile names, any severity)."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(attrs({"service.name": span["service"]}))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = logger
    record = scope_logs.log_records.add(
        time_unix_nano=span["start_unix_nano"] + 1_000_000,
        trace_id=bytes.fromhex(span["trace_id"]),
        span_id=bytes.fromhex(span["span_id"]),
        severity_number=severity,
        severity_text="ERROR" if severity >= 17 else "INFO",
    )
    record.body.string_value = body
    record.attributes.extend(attrs(attributes))
    return request
