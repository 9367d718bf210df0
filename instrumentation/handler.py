"""``@traced_handler``: one invocation span per Lambda invocation, as OpenTelemetry's FaaS conventions say.

The wrapper never changes what the handler does: the event and the return value pass through untouched,
the handler's own exception is re-raised unchanged, and any failure inside hopscope is logged and
swallowed. Spans are flushed at the end of every invocation, waiting at most the flush timeout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from opentelemetry import context, trace
from opentelemetry.trace import Link, Span, Status, StatusCode

from hopscope.instrumentation import carriers, correlation
from hopscope.instrumentation.config import (
    capture_payload_default,
    default_flush_timeout_ms,
    ensure_configured,
    flush,
    tracing_disabled,
)
from hopscope.instrumentation.conventions import (
    CORRELATION_HEADER,
    CORRELATION_ID,
    MESSAGE_ID,
    PAYLOAD,
    QUEUE_WAIT_MS,
    RECEIVE_COUNT,
    XRAY_ENV,
)
from hopscope.instrumentation.records import (
    KnownProducers,
    MessageRecord,
    record_payload,
    with_known_producers,
)
from hopscope.instrumentation.triggers import Invocation, Trigger, classify

logger = logging.getLogger("hopscope.instrumentation")

Handler = TypeVar("Handler", bound=Callable[..., Any])

MAX_PAYLOAD_CHARS = 4096
TRACER_NAME = "hopscope.instrumentation"

_cold_start = True


_tracer_cache: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """hopscope's tracer from the current global provider (an SDK ``get_tracer`` call is not cheap)."""
    global _tracer_cache  # noqa: PLW0603 - one cache per process, as the global provider
    provider = trace.get_tracer_provider()
    cached = _tracer_cache
    if cached is None or cached[0] is not provider:
        cached = _tracer_cache = (provider, provider.get_tracer(TRACER_NAME))
    return cached[1]


@dataclass(frozen=True)
class HandlerOptions:
    correlation_id_path: str | None = None
    capture_payload: bool | None = None
    flush_timeout_ms: int | None = None


@overload
def traced_handler(handler: Handler) -> Handler: ...


@overload
def traced_handler(
    *,
    correlation_id_path: str | None = None,
    capture_payload: bool | None = None,
    flush_timeout_ms: int | None = None,
) -> Callable[[Handler], Handler]: ...


def traced_handler(
    handler: Handler | None = None,
    *,
    correlation_id_path: str | None = None,
    capture_payload: bool | None = None,
    flush_timeout_ms: int | None = None,
) -> Handler | Callable[[Handler], Handler]:
    """Trace a Lambda handler ``(event, context)``; use bare or with options.

    ``correlation_id_path`` is a JMESPath expression into the event (``"body.order_id"`` reads a JSON body
    too); ``capture_payload`` records the event as ``hopscope.payload`` (off by default, and by
    ``HOPSCOPE_CAPTURE_PAYLOAD``); ``flush_timeout_ms`` bounds the wait for the export at the end.
    """
    options = HandlerOptions(correlation_id_path, capture_payload, flush_timeout_ms)

    def decorate(function: Handler) -> Handler:
        if tracing_disabled():
            return function
        search = _compile(options.correlation_id_path)

        @functools.wraps(function)
        def wrapper(event: Any, lambda_context: Any = None, *args: Any, **kwargs: Any) -> Any:
            scope = _open_scope(function, event, lambda_context, options, search)
            if scope is None:
                return function(event, lambda_context, *args, **kwargs)
            try:
                result = function(event, lambda_context, *args, **kwargs)
            except BaseException as error:
                scope.fail(error)
                raise
            else:
                scope.succeed(result)
                return result
            finally:
                scope.close()

        return wrapper  # type: ignore[return-value]

    if handler is not None:
        return decorate(handler)
    return decorate


def _compile(path: str | None) -> Callable[[Any], Any] | None:
    if not path:
        return None
    import jmespath  # noqa: PLC0415 - only handlers that ask for it pay for it

    expression = jmespath.compile(path)
    return expression.search


def _search_correlation(search: Callable[[Any], Any] | None, event: Any) -> str | None:
    """The value at ``correlation_id_path``: in the event, else in a JSON body or in the record payload."""
    if search is None:
        return None
    try:
        found = correlation.normalize(search(event))
        if found is None and isinstance(event, Mapping) and isinstance(event.get("body"), str):
            found = correlation.normalize(search({**event, "body": json.loads(event["body"])}))
        return found
    except (ValueError, TypeError):
        return None
    except Exception:  # a JMESPath runtime error on an odd event
        logger.debug("hopscope: correlation_id_path failed", exc_info=True)
        return None


class _Scope:
    """The invocation span and the context made current for the handler."""

    def __init__(self, span: Span, token: object, invocation: Invocation, flush_timeout_ms: int) -> None:
        self.span = span
        self.token = token
        self.invocation = invocation
        self.flush_timeout_ms = flush_timeout_ms

    def fail(self, error: BaseException) -> None:
        try:
            self.span.record_exception(error)
            self.span.set_attribute("error.type", type(error).__qualname__)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        except Exception:
            logger.debug("hopscope: could not record the exception", exc_info=True)

    def succeed(self, result: Any) -> None:
        if not self.invocation.is_http or not isinstance(result, Mapping):
            return
        status = result.get("statusCode")
        if isinstance(status, int) and not isinstance(status, bool):
            self.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                self.span.set_attribute("error.type", str(status))
                self.span.set_status(Status(StatusCode.ERROR))

    def close(self) -> None:
        try:
            self.span.end()
            context.detach(self.token)  # type: ignore[arg-type]
            flush(self.flush_timeout_ms)
        except Exception:
            logger.debug("hopscope: could not close the invocation span", exc_info=True)


def _open_scope(
    function: Callable[..., Any],
    event: Any,
    lambda_context: Any,
    options: HandlerOptions,
    search: Callable[[Any], Any] | None,
) -> _Scope | None:
    """Start the invocation span; None (and the handler runs untraced) if anything goes wrong here."""
    global _cold_start  # noqa: PLW0603 - one cold start per process
    try:
        ensure_configured()
        invocation = classify(event)
        if invocation.trigger is Trigger.DIRECT:
            invocation.name = getattr(lambda_context, "function_name", None) or function.__name__
        now_ns = time.time_ns()
        known: KnownProducers = {}
        parent, links, correlation_id = _incoming(
            invocation, event, lambda_context, search, now_ns, known=known
        )
        attributes = _faas_attributes(invocation, lambda_context, _cold_start)
        _cold_start = False
        attributes.update(invocation.attributes)
        if correlation_id is not None:
            attributes[CORRELATION_ID] = correlation_id
            if "messaging.system" in attributes:
                attributes["messaging.message.conversation_id"] = correlation_id
        if len(invocation.records) == 1:
            attributes.update(record_attributes(invocation.records[0], now_ns))
        capture = (
            options.capture_payload if options.capture_payload is not None else capture_payload_default()
        )
        if capture:
            attributes[PAYLOAD] = _payload_text(event)
        span = tracer().start_span(
            invocation.name, parent, invocation.kind, attributes, links, start_time=now_ns
        )
        current = trace.set_span_in_context(span, correlation.with_correlation_id(parent, correlation_id))
        token = context.attach(with_known_producers(current, known))
        timeout = (
            options.flush_timeout_ms if options.flush_timeout_ms is not None else default_flush_timeout_ms()
        )
        return _Scope(span, token, invocation, timeout)
    except Exception:
        logger.warning("hopscope: tracing this invocation failed; the handler runs untraced", exc_info=True)
        return None


def _faas_attributes(invocation: Invocation, lambda_context: Any, cold_start: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {"faas.trigger": invocation.faas_trigger, "faas.coldstart": cold_start}
    request_id = getattr(lambda_context, "aws_request_id", None)
    if isinstance(request_id, str):
        attributes["faas.invocation_id"] = request_id
    arn = getattr(lambda_context, "invoked_function_arn", None)
    if isinstance(arn, str) and arn.startswith("arn:"):
        attributes["aws.lambda.invoked_arn"] = arn
        parts = arn.split(":")
        attributes["cloud.resource_id"] = ":".join(parts[:7])  # without an alias or version qualifier
        if len(parts) > 4 and parts[4]:
            attributes["cloud.account.id"] = parts[4]
    return attributes


def record_attributes(record: MessageRecord, now_ns: int) -> dict[str, Any]:
    """messaging.message.id, the receive count and the queue wait of one record."""
    attributes: dict[str, Any] = {}
    if record.message_id:
        attributes[MESSAGE_ID] = record.message_id
    receive_count = record.receive_count
    if receive_count is not None:
        attributes[RECEIVE_COUNT] = receive_count
    sent = record.sent_unix_ms
    if sent is not None:
        attributes[QUEUE_WAIT_MS] = max(0.0, now_ns / 1e6 - sent)
    return attributes


def _incoming(
    invocation: Invocation,
    event: Any,
    lambda_context: Any,
    search: Callable[[Any], Any] | None,
    now_ns: int,
    *,
    known: KnownProducers,
) -> tuple[context.Context, list[Link], str | None]:
    """The parent context, the links and the correlation id of an invocation; ``known`` gets each record's
    producer context, read once here for process_batch too."""
    links: list[Link] = []
    records = invocation.records
    for record in records:
        known[id(record.raw)] = (record.raw, record.read_producer_context())
    if invocation.is_http:
        parent = carriers.extract_w3c(invocation.headers, "the HTTP headers")
    elif len(records) == 1:
        parent = known[id(records[0].raw)][1]
    elif records:
        parent = context.Context()
        record_correlations = set()
        for record in records:
            produced = known[id(record.raw)][1]
            record_correlations.add(correlation.from_baggage(produced))
            if carriers.has_parent(produced):
                attributes = record_attributes(record, now_ns)
                links.append(Link(trace.get_current_span(produced).get_span_context(), attributes))
        common = record_correlations.pop() if len(record_correlations) == 1 else None
        found = _search_correlation(search, event) or common
        return parent, links, found
    elif invocation.trigger is Trigger.EVENTBRIDGE:
        parent = carriers.extract_w3c(
            carriers.eventbridge_carrier(event.get("detail")), "the EventBridge detail"
        )
    else:
        parent = carriers.extract_w3c(_client_context_carrier(lambda_context), "the Lambda client context")
    if not carriers.has_parent(parent):
        parent = carriers.extract_xray(os.environ.get(XRAY_ENV), "_X_AMZN_TRACE_ID", parent)
    if len(records) == 1 and carriers.has_parent(parent):
        links.append(
            Link(trace.get_current_span(parent).get_span_context(), record_attributes(records[0], now_ns))
        )
    found = (
        _search_correlation(search, event)
        or (_search_correlation(search, record_payload(records[0].raw)) if records else None)
        or (correlation.from_headers(invocation.headers, CORRELATION_HEADER) if invocation.is_http else None)
        or correlation.from_baggage(parent)
        or correlation.new_correlation_id()
    )
    return parent, links, found


def _client_context_carrier(lambda_context: Any) -> dict[str, str]:
    custom = getattr(getattr(lambda_context, "client_context", None), "custom", None)
    if not isinstance(custom, Mapping):
        return {}
    return {k.lower(): v for k, v in custom.items() if isinstance(k, str) and isinstance(v, str)}


def _payload_text(event: Any) -> str:
    try:
        text = json.dumps(event, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(event)
    return text[:MAX_PAYLOAD_CHARS]
