"""Producer spans for the messages boto3 sends, with their trace context inside the messages.

``instrument_boto3()`` builds on opentelemetry-instrumentation-botocore, which gives every other AWS call
(DynamoDB, S3, ReceiveMessage...) its CLIENT span. For SQS SendMessage(Batch), SNS Publish(Batch),
EventBridge PutEvents and Lambda Invoke hopscope wraps ``BaseClient._make_api_call`` outside botocore's
wrapper: it starts the span the messaging conventions ask for, sends a copy of the params that carries
that span's context, and suppresses botocore's span, so each message has exactly one producer span.

botocore, boto3 and wrapt are imported only by ``instrument_boto3()``: a Lambda cold start that never
calls it pays nothing for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from hopscope.instrumentation import message_injection
from hopscope.instrumentation.conventions import (
    BATCH_MESSAGE_COUNT,
    CONVERSATION_ID,
    CORRELATION_ID,
    DESTINATION_NAME,
    MESSAGE_ID,
    MESSAGING_SYSTEM,
    SYSTEM_EVENTBRIDGE,
    SYSTEM_SNS,
    SYSTEM_SQS,
)
from hopscope.instrumentation.correlation import get_correlation_id
from hopscope.instrumentation.message_injection import Params

logger = logging.getLogger("hopscope.instrumentation")

_TRACER_NAME = "hopscope.instrumentation"

_MESSAGING_SYSTEM = MESSAGING_SYSTEM
_OPERATION_TYPE = "messaging.operation.type"
_OPERATION_NAME = "messaging.operation.name"
_DESTINATION = DESTINATION_NAME
_MESSAGE_ID = MESSAGE_ID
_BATCH_COUNT = BATCH_MESSAGE_COUNT
_CONVERSATION_ID = CONVERSATION_ID
_QUEUE_URL = "aws.sqs.queue.url"
_TOPIC_ARN = "aws.sns.topic.arn"
_REQUEST_ID = "aws.request_id"
_ERROR_TYPE = "error.type"

Attributes = dict[str, AttributeValue]


@dataclass
class _Outcome:
    """What the response says about one message."""

    message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class _Plan:
    """The spans of one call and how its params carry their contexts.

    ``messages`` is None when the call sends one message (its context is the call span's); for a batch it
    names one PRODUCER ``create`` span per entry, whose context that entry carries.
    """

    name: str
    kind: SpanKind
    attributes: Attributes
    inject: Callable[[Params, Sequence[Context]], Params]
    outcomes: Callable[[Params], list[_Outcome]] = lambda _result: []
    messages: list[tuple[str, Attributes]] | None = None


def _named(operation: str, destination: str | None) -> str:
    return f"{operation} {destination}" if destination else operation


def _destination_of(attributes: Attributes) -> str | None:
    name = attributes.get(_DESTINATION)
    return str(name) if name else None


def _destination(system: str, name: str | None, **extra: str) -> Attributes:
    attributes: Attributes = {_MESSAGING_SYSTEM: system, **extra}
    if name:
        attributes[_DESTINATION] = name
    return attributes


def _single(
    operation: str,
    attributes: Attributes,
    *,
    inject: Callable[[Params, Sequence[Context]], Params],
    outcomes: Callable[[Params], list[_Outcome]],
) -> _Plan:
    """The PRODUCER span of a call that sends one message."""
    return _Plan(
        _named(operation, _destination_of(attributes)),
        SpanKind.PRODUCER,
        {**attributes, _OPERATION_TYPE: "send", _OPERATION_NAME: operation},
        inject,
        outcomes,
    )


def _batch(
    operation: str,
    key: str,
    shared: Attributes,
    per_entry: Sequence[Attributes],
    *,
    injector: Callable[[Params, Context], Params],
    outcomes: Callable[[Params], list[_Outcome]],
) -> _Plan:
    """A CLIENT span for the batch (``shared`` attributes) and a PRODUCER ``create`` span for each entry of
    ``params[key]`` (``per_entry`` attributes), whose context that entry carries."""

    def inject(params: Params, contexts: Sequence[Context]) -> Params:
        entries = [injector(entry, ctx) for entry, ctx in zip(params[key], contexts, strict=True)]
        return {**params, key: entries}

    creates = {_OPERATION_TYPE: "create", _OPERATION_NAME: "create"}
    return _Plan(
        _named(operation, _destination_of(shared)),
        SpanKind.CLIENT,
        {**shared, _OPERATION_TYPE: "send", _OPERATION_NAME: operation, _BATCH_COUNT: len(per_entry)},
        inject,
        outcomes,
        [
            (_named("create", _destination_of(attributes)), {**attributes, **creates})
            for attributes in per_entry
        ],
    )


def _outcomes_by_id(entries: Sequence[Any]) -> Callable[[Params], list[_Outcome]]:
    """SQS and SNS batches answer with ``Successful[]`` and ``Failed[]``, matched to entries by Id."""

    def outcomes(result: Params) -> list[_Outcome]:
        by_id = {ok.get("Id"): _Outcome(ok.get("MessageId")) for ok in result.get("Successful") or []}
        for failed in result.get("Failed") or []:
            by_id[failed.get("Id")] = _Outcome(None, failed.get("Code"), failed.get("Message"))
        return [by_id.get(entry.get("Id"), _Outcome()) for entry in entries]

    return outcomes


def _event_outcomes(result: Params) -> list[_Outcome]:
    """PutEvents answers ``Entries[]`` in the order of the request's."""
    return [
        _Outcome(entry.get("EventId"), entry.get("ErrorCode"), entry.get("ErrorMessage"))
        for entry in result.get("Entries") or []
    ]


def _sqs(params: Params) -> Attributes:
    url = str(params["QueueUrl"])
    return _destination(SYSTEM_SQS, url.rstrip("/").rsplit("/", 1)[-1], **{_QUEUE_URL: url})


def _send_message(params: Params, _region: str | None) -> _Plan:
    return _single(
        "send",
        _sqs(params),
        inject=lambda p, contexts: message_injection.sqs_message(p, contexts[0]),
        outcomes=lambda result: [_Outcome(result.get("MessageId"))],
    )


def _send_message_batch(params: Params, _region: str | None) -> _Plan:
    queue = _sqs(params)
    return _batch(
        "send",
        "Entries",
        queue,
        [queue] * len(params["Entries"]),
        injector=message_injection.sqs_message,
        outcomes=_outcomes_by_id(params["Entries"]),
    )


def _sns(params: Params) -> Attributes:
    if params.get("TopicArn"):
        arn = str(params["TopicArn"])
        return _destination(SYSTEM_SNS, arn.rsplit(":", 1)[-1], **{_TOPIC_ARN: arn})
    if params.get("TargetArn"):
        return _destination(SYSTEM_SNS, str(params["TargetArn"]).rsplit(":", 1)[-1])
    return _destination(SYSTEM_SNS, "phone_number" if params.get("PhoneNumber") else None)


def _publish(params: Params, _region: str | None) -> _Plan:
    return _single(
        "publish",
        _sns(params),
        inject=lambda p, contexts: message_injection.sns_message(p, contexts[0]),
        outcomes=lambda result: [_Outcome(result.get("MessageId"))],
    )


def _publish_batch(params: Params, _region: str | None) -> _Plan:
    topic = _sns(params)
    return _batch(
        "publish",
        "PublishBatchRequestEntries",
        topic,
        [topic] * len(params["PublishBatchRequestEntries"]),
        injector=message_injection.sns_message,
        outcomes=_outcomes_by_id(params["PublishBatchRequestEntries"]),
    )


def _bus(entry: Params) -> str:
    """An entry's event bus: its EventBusName, the name part of an ARN, or the default bus."""
    return str(entry.get("EventBusName") or "default").rsplit("/", 1)[-1]


def _put_events(params: Params, _region: str | None) -> _Plan:
    buses = [_destination(SYSTEM_EVENTBRIDGE, _bus(entry)) for entry in params["Entries"]]
    if len(buses) == 1:
        return _single(
            "send",
            buses[0],
            inject=lambda p, contexts: {
                **p,
                "Entries": [message_injection.eventbridge_entry(p["Entries"][0], contexts[0])],
            },
            outcomes=_event_outcomes,
        )
    one_bus = len({_destination_of(bus) for bus in buses}) == 1
    return _batch(
        "send",
        "Entries",
        buses[0] if one_bus else _destination(SYSTEM_EVENTBRIDGE, None),
        buses,
        injector=message_injection.eventbridge_entry,
        outcomes=_event_outcomes,
    )


def _function(value: str, region: str | None) -> tuple[str, str | None]:
    """The function name and region of a FunctionName: a name, a partial or a full ARN, qualified or not."""
    parts = value.split(":")
    if parts[0] == "arn" and len(parts) >= 7:
        return parts[6], parts[3] or region
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2], region
    return parts[0], region


def _invoke(params: Params, region: str | None) -> _Plan:
    name, invoked_region = _function(str(params["FunctionName"]), region)
    attributes: Attributes = {"faas.invoked_name": name, "faas.invoked_provider": "aws"}
    if invoked_region:
        attributes["faas.invoked_region"] = invoked_region
    return _Plan(
        f"invoke {name}",
        SpanKind.PRODUCER if params.get("InvocationType") == "Event" else SpanKind.CLIENT,
        attributes,
        inject=lambda p, contexts: message_injection.lambda_client_context(p, contexts[0]),
    )


_OPERATIONS: dict[tuple[str, str], Callable[[Params, str | None], _Plan]] = {
    ("SQS", "SendMessage"): _send_message,
    ("SQS", "SendMessageBatch"): _send_message_batch,
    ("SNS", "Publish"): _publish,
    ("SNS", "PublishBatch"): _publish_batch,
    ("EventBridge", "PutEvents"): _put_events,
    ("Lambda", "Invoke"): _invoke,
}


def _request_id(response: Any) -> str | None:
    if not isinstance(response, Mapping):
        return None
    request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
    return str(request_id) if request_id else None


def _fail(span: Span, error_type: str, description: str | None) -> None:
    span.set_attribute(_ERROR_TYPE, error_type)
    span.set_status(StatusCode.ERROR, description)


def _error_type(error: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's class name."""
    response = getattr(error, "response", None)
    code = (response.get("Error") or {}).get("Code") if isinstance(response, Mapping) else None
    return str(code) if code else type(error).__name__


@dataclass
class _Publisher:
    """The wrapt wrapper of ``BaseClient._make_api_call``; holds what ``instrument_boto3()`` imported."""

    tracer_provider: trace.TracerProvider | None
    server_attributes: Callable[[str], Mapping[str, AttributeValue]]
    suppress: Callable[[], AbstractContextManager[None]]
    enabled: Callable[[], bool]
    active: bool = field(default=True)

    def __call__(self, wrapped: Callable[..., Any], client: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        planned = self._plan(client, args) if self.active and self.enabled() else None
        if planned is None:
            return wrapped(*args, **kwargs)
        plan, common = planned
        tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=self.tracer_provider)
        with tracer.start_as_current_span(
            plan.name,
            kind=plan.kind,
            attributes={**common, **plan.attributes},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            creates = [
                tracer.start_span(name, kind=SpanKind.PRODUCER, attributes={**common, **attributes})
                for name, attributes in plan.messages or []
            ]
            try:
                return self._call(plan, span, creates, args, lambda call_args: wrapped(*call_args, **kwargs))
            finally:
                for create in creates:
                    create.end()

    def _plan(self, client: Any, args: tuple[Any, ...]) -> tuple[_Plan, Attributes] | None:
        try:
            operation, params = args
            meta = client.meta
            service = str(meta.service_model.service_id)
            build = _OPERATIONS.get((service, operation))
            if build is None:
                return None
            plan = build(params, meta.region_name)
            common: Attributes = {
                "rpc.system": "aws-api",
                "rpc.service": service,
                "rpc.method": operation,
                **self.server_attributes(meta.endpoint_url),
            }
            if meta.region_name:
                common["cloud.region"] = meta.region_name
            correlation_id = get_correlation_id()
            if correlation_id is not None:
                common[CORRELATION_ID] = correlation_id
                common[_CONVERSATION_ID] = correlation_id
            return plan, common
        except Exception:
            logger.debug("hopscope: not tracing this boto3 call", exc_info=True)
            return None

    def _call(
        self,
        plan: _Plan,
        span: Span,
        creates: list[Span],
        args: tuple[Any, ...],
        send: Callable[[tuple[Any, ...]], Any],
    ) -> Any:
        """Send params that carry each message span's context, without botocore's span; record the outcome."""
        message_spans = creates if plan.messages is not None else [span]
        call_args = args
        try:
            operation, params = args
            call_args = (
                operation,
                plan.inject(params, [trace.set_span_in_context(s) for s in message_spans]),
            )
        except Exception:
            logger.debug("hopscope: sending without trace context", exc_info=True)
        try:
            with self.suppress():
                result = send(call_args)
        except Exception as error:
            request_id = _request_id(getattr(error, "response", None))
            for failed in (span, *creates):
                if request_id:
                    failed.set_attribute(_REQUEST_ID, request_id)
                _fail(failed, _error_type(error), str(error))
            span.record_exception(error)
            raise
        try:
            self._record(plan, span, creates, message_spans, result)
        except Exception:
            logger.debug("hopscope: could not read the response of a boto3 call", exc_info=True)
        return result

    @staticmethod
    def _record(plan: _Plan, span: Span, creates: list[Span], message_spans: list[Span], result: Any) -> None:
        request_id = _request_id(result)
        if request_id:
            for each in (span, *creates):
                each.set_attribute(_REQUEST_ID, request_id)
        outcomes = plan.outcomes(result)
        for message_span, outcome in zip(message_spans, outcomes, strict=False):
            if outcome.message_id:
                message_span.set_attribute(_MESSAGE_ID, outcome.message_id)
            if outcome.error_code:
                _fail(message_span, outcome.error_code, outcome.error_message)
        codes = {outcome.error_code for outcome in outcomes}
        if creates and len(outcomes) == len(creates) and None not in codes:
            _fail(span, str(codes.pop()) if len(codes) == 1 else "_OTHER", "every entry failed")


@dataclass
class _Installed:
    publisher: _Publisher
    client_class: type
    wrapper: object
    instrumented_botocore: bool


_lock = threading.Lock()
_installed: _Installed | None = None


def instrument_boto3(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace what boto3 sends and carry the trace inside the messages (idempotent).

    Enables the botocore instrumentation when the application has not, so every other AWS call is a
    dependency span, then wraps it for the messaging operations: one producer span per message, never two.
    """
    global _installed  # noqa: PLW0603 - one patch per process, as botocore has one BaseClient
    with _lock:
        if _installed is not None:
            return
        from botocore.client import BaseClient  # noqa: PLC0415 - cold start
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.botocore.utils import get_server_attributes  # noqa: PLC0415
        from opentelemetry.instrumentation.utils import (  # noqa: PLC0415
            is_instrumentation_enabled,
            suppress_instrumentation,
        )
        from wrapt import wrap_function_wrapper  # noqa: PLC0415

        botocore = BotocoreInstrumentor()  # type: ignore[no-untyped-call]
        instrumented_botocore = False
        if not botocore.is_instrumented_by_opentelemetry:
            botocore.instrument(tracer_provider=tracer_provider)
            instrumented_botocore = botocore.is_instrumented_by_opentelemetry
        publisher = _Publisher(
            tracer_provider, get_server_attributes, suppress_instrumentation, is_instrumentation_enabled
        )
        wrapper = wrap_function_wrapper(BaseClient, "_make_api_call", publisher)
        _installed = _Installed(publisher, BaseClient, wrapper, instrumented_botocore)


def uninstrument_boto3() -> None:
    """Undo ``instrument_boto3()``: the original ``_make_api_call`` is back, and the botocore
    instrumentation is disabled if hopscope enabled it (the application's own is left alone)."""
    global _installed
    with _lock:
        installed, _installed = _installed, None
        if installed is None:
            return
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.utils import unwrap  # noqa: PLC0415

        installed.publisher.active = False  # inert even where someone still holds or wraps it
        if vars(installed.client_class).get("_make_api_call") is installed.wrapper:
            unwrap(installed.client_class, "_make_api_call")
        else:
            logger.debug("hopscope: BaseClient._make_api_call was wrapped again after hopscope; left wrapped")
        if installed.instrumented_botocore:
            BotocoreInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
