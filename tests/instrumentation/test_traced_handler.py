"""@traced_handler on real Lambda sample events: one FaaS invocation span each, with the right trigger, name,
parent and links; the handler's result and exceptions pass through untouched.

GIVEN a real event (copied from public projects, see fixtures/lambda-events/SOURCES.md) or one with a trace
context added, WHEN a decorated handler runs, THEN the real OpenTelemetry SDK recorded the expected span.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from hopscope.instrumentation import get_correlation_id, traced_handler
from hopscope.instrumentation import handler as handler_module
from tests.helpers.lambda_shapes import ACCOUNT, ClientContext, LambdaContext, fixture
from tests.helpers.servers import GlobalSpans

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"

EXPECTED = [
    ("datadog__api-gateway.json", "http", "POST /{proxy+}", SpanKind.SERVER),
    ("datadog__eventbridge-custom.json", "pubsub", "process testdetail", SpanKind.CONSUMER),
    ("datadog__eventbridge-sqs.json", "pubsub", "process eventbridge-sqs-queue", SpanKind.CONSUMER),
    ("datadog__http-api.json", "http", "GET /httpapi/get", SpanKind.SERVER),
    ("datadog__lambda-url-w3c.json", "http", "GET", SpanKind.SERVER),
    ("datadog__sns-b64-msg-attribute.json", "pubsub", "process serverlessTracingTopicPy", SpanKind.CONSUMER),
    ("datadog__sns-batch.json", "pubsub", "process serverlessTracingTopicPy", SpanKind.CONSUMER),
    (
        "datadog__sns-sqs-java-upstream.json",
        "pubsub",
        "process DdTraceXLambda-snssqschecksNested-snsProducerJavaForPythonNonRawsns-1vws7QPqW8e6",
        SpanKind.CONSUMER,
    ),
    (
        "datadog__sns-string-msg-attribute.json",
        "pubsub",
        "process serverlessTracingTopicPy",
        SpanKind.CONSUMER,
    ),
    ("datadog__sqs-b64-msg-attribute.json", "pubsub", "process InferredSpansQueueNode", SpanKind.CONSUMER),
    ("datadog__sqs-batch.json", "pubsub", "process InferredSpansQueueNode", SpanKind.CONSUMER),
    (
        "datadog__sqs-java-upstream.json",
        "pubsub",
        "process DdTraceXLambda-sqsjavachecksNeste-sqsJavaProducer2sqsjavaproducerfo-dwpHQF6fcZT4",
        SpanKind.CONSUMER,
    ),
    ("datadog__sqs-string-msg-attribute.json", "pubsub", "process InferredSpansQueueNode", SpanKind.CONSUMER),
    ("lambda-go__apigw-request.json", "http", "POST /{proxy+}", SpanKind.SERVER),
    ("lambda-go__apigw-v2-request-no-authorizer.json", "http", "GET", SpanKind.SERVER),
    ("lambda-go__sns-event.json", "pubsub", "process EXAMPLE", SpanKind.CONSUMER),
    ("lambda-go__sqs-event.json", "pubsub", "process SQSQueue", SpanKind.CONSUMER),
    ("powertools__albEvent.json", "http", "GET", SpanKind.SERVER),
    ("powertools__albEventPathTrailingSlash.json", "http", "GET", SpanKind.SERVER),
    ("powertools__albMultiValueHeadersEvent.json", "http", "GET", SpanKind.SERVER),
    ("powertools__apiGatewayProxyEvent.json", "http", "GET /my/path", SpanKind.SERVER),
    ("powertools__apiGatewayProxyV2Event.json", "http", "POST", SpanKind.SERVER),
    ("powertools__dynamoStreamEvent.json", "datasource", "process", SpanKind.CONSUMER),
    (
        "powertools__eventBridgeEvent.json",
        "pubsub",
        "process EC2 Instance State-change Notification",
        SpanKind.CONSUMER,
    ),
    ("powertools__kinesisStreamEvent.json", "pubsub", "process lambda-stream", SpanKind.CONSUMER),
    ("powertools__lambdaFunctionUrlEvent.json", "http", "GET", SpanKind.SERVER),
    ("powertools__s3SqsEvent.json", "pubsub", "process SQS", SpanKind.CONSUMER),
    ("powertools__snsEvent.json", "pubsub", "process sns-lambda", SpanKind.CONSUMER),
    ("powertools__snsSqsEvent.json", "pubsub", "process powertools265", SpanKind.CONSUMER),
    ("powertools__snsSqsFifoEvent.json", "pubsub", "process Test.fifo", SpanKind.CONSUMER),
    (
        "powertools__sqsDlqTriggerEvent.json",
        "pubsub",
        "process sqs-redrive-SampleDLQ-Emgp9MFSLBZm",
        SpanKind.CONSUMER,
    ),
    ("powertools__sqsEvent.json", "pubsub", "process my-queue", SpanKind.CONSUMER),
]


def invoke(event: Any, lambda_context: LambdaContext | None = None, **options: Any) -> tuple[Any, Any]:
    result = object() if not options.pop("result", None) else options.pop("value")
    decorate = traced_handler(**options) if options else traced_handler

    @decorate
    def handler(event: Any, context: Any) -> Any:
        return result

    return handler(event, lambda_context or LambdaContext()), result


def only_span(spans: GlobalSpans) -> ReadableSpan:
    finished = spans.finished()
    assert len(finished) == 1, [s.name for s in finished]
    return finished[0]


def parent_of(span: ReadableSpan) -> tuple[str, str] | None:
    if span.parent is None:
        return None
    return trace.format_trace_id(span.parent.trace_id), trace.format_span_id(span.parent.span_id)


def test_every_fixture_event_is_covered() -> None:
    from tests.helpers.lambda_shapes import FIXTURES

    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(e[0] for e in EXPECTED)


@pytest.mark.parametrize(("name", "faas_trigger", "span_name", "kind"), EXPECTED)
def test_every_fixture_gives_one_invocation_span_of_its_trigger(
    spans: GlobalSpans, name: str, faas_trigger: str, span_name: str, kind: SpanKind
) -> None:
    event = fixture(name)
    before = copy.deepcopy(event)
    lambda_context = LambdaContext()
    returned, result = invoke(event, lambda_context)
    assert returned is result
    assert event == before
    span = only_span(spans)
    assert (span.name, span.kind) == (span_name, kind)
    attributes = span.attributes or {}
    assert attributes["faas.trigger"] == faas_trigger
    assert attributes["faas.invocation_id"] == lambda_context.aws_request_id
    assert attributes["aws.lambda.invoked_arn"] == lambda_context.invoked_function_arn
    assert attributes["cloud.resource_id"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders-api"
    assert attributes["cloud.account.id"] == ACCOUNT
    assert isinstance(attributes["faas.coldstart"], bool)
    assert span.status.status_code is StatusCode.UNSET
    records = event.get("Records") or []
    if records:
        assert attributes["messaging.batch.message_count"] == len(records)
        assert attributes["messaging.operation.type"] == "process"
    if faas_trigger == "http":
        assert attributes["http.request.method"] == span_name.split(" ", maxsplit=1)[0]


def test_a_direct_invocation_is_named_after_the_function(spans: GlobalSpans) -> None:
    invoke({"order_id": "o-1"}, LambdaContext(function_name="audit"))
    span = only_span(spans)
    assert (span.name, span.kind, (span.attributes or {})["faas.trigger"]) == (
        "audit",
        SpanKind.SERVER,
        "other",
    )


def test_the_cold_start_is_true_on_the_first_invocation_only(
    spans: GlobalSpans, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "_cold_start", True)
    for _ in range(3):
        invoke({"direct": True})
    assert [s.attributes["faas.coldstart"] for s in spans.finished()] == [True, False, False]  # type: ignore[index]


def test_http_headers_give_the_parent_in_any_letter_case(spans: GlobalSpans) -> None:
    event = fixture("powertools__apiGatewayProxyEvent.json")
    event["headers"]["TraceParent"] = TRACEPARENT
    invoke(event)
    assert parent_of(only_span(spans)) == (TRACE_ID, SPAN_ID)


def test_the_function_url_fixture_carries_its_own_w3c_parent(spans: GlobalSpans) -> None:
    event = fixture("datadog__lambda-url-w3c.json")
    expected = event["headers"]["traceparent"].split("-")
    invoke(event)
    span = only_span(spans)
    assert parent_of(span) == (expected[1], expected[2])
    assert span.attributes["url.path"] == event["rawPath"]  # type: ignore[index]


def test_alb_multi_value_headers_give_the_parent(spans: GlobalSpans) -> None:
    event = fixture("powertools__albMultiValueHeadersEvent.json")
    event["multiValueHeaders"]["traceparent"] = [TRACEPARENT]
    invoke(event)
    assert parent_of(only_span(spans)) == (TRACE_ID, SPAN_ID)


def test_the_xray_variable_is_only_a_fallback(spans: GlobalSpans, monkeypatch: pytest.MonkeyPatch) -> None:
    xray_trace = "5759e988bd862e3fe1be46a994272793"
    monkeypatch.setenv(
        "_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    invoke(fixture("powertools__apiGatewayProxyEvent.json"))
    assert parent_of(spans.finished()[-1]) == (xray_trace, "53995c3f42cd8ad8")
    event = fixture("powertools__apiGatewayProxyEvent.json")
    event["headers"]["traceparent"] = TRACEPARENT
    invoke(event)
    assert parent_of(spans.finished()[-1]) == (TRACE_ID, SPAN_ID)


def test_an_aws_trace_header_is_the_fallback_of_a_record(spans: GlobalSpans) -> None:
    event = fixture("datadog__sqs-java-upstream.json")  # AWSTraceHeader only, Sampled=1
    invoke(event)
    span = only_span(spans)
    assert parent_of(span) == ("65eb7350000000006dfd06bf489aa4e5", "48cc02b6aafae897")
    assert span.links[0].context.span_id == int("48cc02b6aafae897", 16)


def sqs_attribute(value: str, binary: bool = False) -> dict[str, Any]:
    if binary:
        return {"binaryValue": base64.b64encode(value.encode()).decode(), "dataType": "Binary"}
    return {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}


@pytest.mark.parametrize("binary", [False, True], ids=["string", "binary"])
def test_a_single_sqs_record_is_the_parent_and_the_link(spans: GlobalSpans, binary: bool) -> None:
    event = fixture("powertools__sqsEvent.json")
    event["Records"] = event["Records"][:1]
    event["Records"][0]["messageAttributes"]["traceparent"] = sqs_attribute(TRACEPARENT, binary)
    invoke(event)
    span = only_span(spans)
    assert parent_of(span) == (TRACE_ID, SPAN_ID)
    (link,) = span.links
    assert trace.format_span_id(link.context.span_id) == SPAN_ID
    assert link.attributes["messaging.message.id"] == event["Records"][0]["messageId"]  # type: ignore[index]
    attributes = span.attributes or {}
    assert attributes["hopscope.receive_count"] == int(
        event["Records"][0]["attributes"]["ApproximateReceiveCount"]
    )
    assert attributes["hopscope.queue_wait_ms"] > 0


def test_a_batch_links_each_record_and_parents_none(spans: GlobalSpans) -> None:
    event = fixture("datadog__sqs-batch.json")
    span_ids = []
    for index, record in enumerate(event["Records"]):
        span_id = f"{index + 1:016x}"
        span_ids.append(span_id)
        record["messageAttributes"] = {"traceparent": sqs_attribute(f"00-{TRACE_ID}-{span_id}-01")}
    invoke(event)
    span = only_span(spans)
    assert span.parent is None
    assert [trace.format_span_id(link.context.span_id) for link in span.links] == span_ids
    assert [link.attributes["messaging.message.id"] for link in span.links] == [  # type: ignore[index]
        r["messageId"] for r in event["Records"]
    ]


def test_the_sns_envelope_inside_an_sqs_body_gives_the_parent(spans: GlobalSpans) -> None:
    event = fixture("powertools__snsSqsEvent.json")
    body = json.loads(event["Records"][0]["body"])
    body["MessageAttributes"] = {"traceparent": {"Type": "String", "Value": TRACEPARENT}}
    event["Records"][0]["body"] = json.dumps(body)
    invoke(event)
    assert parent_of(only_span(spans)) == (TRACE_ID, SPAN_ID)


def test_an_sns_record_gives_the_parent(spans: GlobalSpans) -> None:
    event = fixture("powertools__snsEvent.json")
    event["Records"][0]["Sns"]["MessageAttributes"]["traceparent"] = {"Type": "String", "Value": TRACEPARENT}
    invoke(event)
    assert parent_of(only_span(spans)) == (TRACE_ID, SPAN_ID)


def test_an_eventbridge_detail_gives_the_parent_directly_and_through_sqs(spans: GlobalSpans) -> None:
    event = fixture("powertools__eventBridgeEvent.json")
    event["detail"]["_hopscope"] = {"traceparent": TRACEPARENT}
    invoke(event)
    assert parent_of(spans.finished()[-1]) == (TRACE_ID, SPAN_ID)
    queued = fixture("datadog__eventbridge-sqs.json")
    body = queued["Records"][0]["body"]  # this fixture holds the body decoded, as a JSON object
    body["detail"]["_hopscope"] = {"traceparent": TRACEPARENT}
    invoke(queued)
    assert parent_of(spans.finished()[-1]) == (TRACE_ID, SPAN_ID)


def test_a_direct_invocation_takes_its_parent_from_the_client_context(spans: GlobalSpans) -> None:
    invoke({"x": 1}, LambdaContext(client_context=ClientContext({"traceparent": TRACEPARENT})))
    assert parent_of(only_span(spans)) == (TRACE_ID, SPAN_ID)


def test_a_malformed_traceparent_starts_a_new_trace_with_one_warning(
    spans: GlobalSpans, caplog: pytest.LogCaptureFixture
) -> None:
    event = fixture("powertools__sqsEvent.json")
    event["Records"] = event["Records"][:1]
    event["Records"][0]["messageAttributes"]["traceparent"] = sqs_attribute("00-nothex-zz-01")
    with caplog.at_level(logging.WARNING, logger="hopscope.instrumentation"):
        returned, result = invoke(event)
    assert returned is result
    assert only_span(spans).parent is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "malformed traceparent" in warnings[0].getMessage()


def test_an_exception_is_recorded_and_re_raised_unchanged(spans: GlobalSpans) -> None:
    error = KeyError("order")

    @traced_handler
    def handler(event: Any, context: Any) -> Any:
        raise error

    with pytest.raises(KeyError) as raised:
        handler({"x": 1}, LambdaContext())
    assert raised.value is error
    span = only_span(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"] == "KeyError"  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "code"), [(200, StatusCode.UNSET), (404, StatusCode.UNSET), (503, StatusCode.ERROR)]
)
def test_a_5xx_response_marks_the_http_span_as_an_error(
    spans: GlobalSpans, status: int, code: StatusCode
) -> None:
    response = {"statusCode": status, "body": "{}"}
    returned, _ = invoke(fixture("powertools__apiGatewayProxyV2Event.json"), result=True, value=response)
    assert returned is response and returned == {"statusCode": status, "body": "{}"}
    span = only_span(spans)
    assert span.attributes["http.response.status_code"] == status  # type: ignore[index]
    assert span.status.status_code is code


def test_disabled_returns_the_function_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPSCOPE_DISABLED", "true")

    def handler(event: Any, context: Any) -> Any:
        return event

    assert traced_handler(handler) is handler
    assert traced_handler(flush_timeout_ms=10)(handler) is handler


def test_the_correlation_id_comes_from_the_path_then_the_header_then_baggage_then_is_generated(
    spans: GlobalSpans,
) -> None:
    seen: list[str | None] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(get_correlation_id())
        return None

    by_path = traced_handler(correlation_id_path="body.order_id")(handler)
    plain = traced_handler(handler)
    event = fixture("powertools__apiGatewayProxyV2Event.json")
    event["body"] = json.dumps({"order_id": "o-42"})
    event["headers"]["X-Correlation-Id"] = "from-header"
    event["headers"]["baggage"] = "hopscope.correlation_id=from-baggage"
    by_path(event, LambdaContext())
    plain(event, LambdaContext())
    del event["headers"]["X-Correlation-Id"]
    plain(event, LambdaContext())
    del event["headers"]["baggage"]
    plain(event, LambdaContext())
    plain(event, LambdaContext())
    assert seen[:3] == ["o-42", "from-header", "from-baggage"]
    assert seen[3] and seen[4] and seen[3] != seen[4]  # generated at the flow's entry, one per flow
    assert [s.attributes["hopscope.correlation_id"] for s in spans.finished()] == seen  # type: ignore[index]
    assert get_correlation_id() is None  # nothing leaks out of an invocation


def test_payload_capture_is_off_unless_enabled(spans: GlobalSpans) -> None:
    invoke({"card": "4111"})
    assert "hopscope.payload" not in (spans.finished()[-1].attributes or {})
    invoke({"card": "4111"}, capture_payload=True)
    assert json.loads(spans.finished()[-1].attributes["hopscope.payload"]) == {"card": "4111"}  # type: ignore[index,arg-type]
