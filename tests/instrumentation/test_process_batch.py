"""process_batch: a consumer span per record, the partial batch response, and the record payload helper.

GIVEN a real batch event (fixtures/lambda-events), WHEN a decorated handler passes it to process_batch,
THEN each record ran in its own span with its correlation id current, and exactly the failures come back.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from hopscope.instrumentation import get_correlation_id, process_batch, record_payload, traced_handler
from tests.helpers.lambda_shapes import LambdaContext, fixture
from tests.helpers.servers import GlobalSpans

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def run(event: dict[str, Any], record_handler: Any, **options: Any) -> Any:
    @traced_handler
    def handler(event: dict[str, Any], context: Any) -> Any:
        return process_batch(event, record_handler, **options)

    return handler(event, LambdaContext(function_name="billing"))


def record_spans(spans: GlobalSpans) -> list[ReadableSpan]:
    return [s for s in spans.finished() if "faas.trigger" not in (s.attributes or {})]


def invocation_spans(spans: GlobalSpans) -> list[ReadableSpan]:
    return [s for s in spans.finished() if "faas.trigger" in (s.attributes or {})]


def with_contexts(event: dict[str, Any]) -> dict[str, Any]:
    for index, record in enumerate(event["Records"]):
        record["messageAttributes"] = {
            "traceparent": {"stringValue": f"00-{TRACE_ID}-{index + 1:016x}-01", "dataType": "String"},
            "baggage": {"stringValue": f"hopscope.correlation_id=order-{index}", "dataType": "String"},
        }
    return event


def test_each_record_runs_in_its_own_linked_consumer_span_with_its_correlation_id(spans: GlobalSpans) -> None:
    event = with_contexts(fixture("datadog__sqs-batch.json"))
    seen: list[tuple[str | None, str]] = []

    def record_handler(record: dict[str, Any]) -> None:
        seen.append(
            (get_correlation_id(), trace.format_span_id(trace.get_current_span().get_span_context().span_id))
        )

    assert run(event, record_handler) == {"batchItemFailures": []}
    records, (batch,) = record_spans(spans), invocation_spans(spans)
    assert len(records) == len(event["Records"])
    assert (batch.attributes or {})["hopscope.batch.record_spans"] is True
    for index, (span, record) in enumerate(zip(records, event["Records"], strict=True)):
        assert span.name == "process InferredSpansQueueNode" and span.kind is SpanKind.CONSUMER
        # a trace of its own, so that one message's flow holds no other message's processing
        assert span.parent is None and span.context.trace_id != batch.context.trace_id
        assert (span.attributes or {})["faas.invocation_id"] == (batch.attributes or {})["faas.invocation_id"]
        (link,) = span.links
        assert link.context.span_id == index + 1
        attributes = span.attributes or {}
        assert attributes["messaging.message.id"] == record["messageId"]
        assert attributes["messaging.system"] == "aws_sqs"
        assert attributes["messaging.destination.name"] == "InferredSpansQueueNode"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["hopscope.correlation_id"] == f"order-{index}"
        assert attributes["hopscope.receive_count"] == 1
        assert attributes["hopscope.queue_wait_ms"] > 0
        assert seen[index] == (f"order-{index}", trace.format_span_id(span.context.span_id))
    assert get_correlation_id() is None


def test_a_failing_record_is_reported_and_its_span_is_an_error(spans: GlobalSpans) -> None:
    event = fixture("datadog__sqs-batch.json")
    bad = event["Records"][1]["messageId"]

    def record_handler(record: dict[str, Any]) -> None:
        if record["messageId"] == bad:
            raise ValueError("card declined")

    assert run(event, record_handler) == {"batchItemFailures": [{"itemIdentifier": bad}]}
    by_id = {(s.attributes or {})["messaging.message.id"]: s for s in record_spans(spans)}
    assert by_id[bad].status.status_code is StatusCode.ERROR
    assert by_id[bad].events[0].attributes["exception.message"] == "card declined"  # type: ignore[index]
    assert {s.status.status_code for i, s in by_id.items() if i != bad} == {StatusCode.UNSET}
    (batch,) = invocation_spans(spans)
    assert batch.status.status_code is StatusCode.UNSET


def test_every_record_failing_marks_the_batch_span_as_an_error(spans: GlobalSpans) -> None:
    event = fixture("datadog__sqs-batch.json")

    def record_handler(record: dict[str, Any]) -> None:
        raise RuntimeError("down")

    response = run(event, record_handler)
    assert response["batchItemFailures"] == [{"itemIdentifier": r["messageId"]} for r in event["Records"]]
    (batch,) = invocation_spans(spans)
    assert batch.status.status_code is StatusCode.ERROR


def test_fifo_returns_the_rest_of_a_failed_group_unprocessed(spans: GlobalSpans) -> None:
    template = fixture("powertools__snsSqsFifoEvent.json")["Records"][0]
    records = []
    for index, group in enumerate(["a", "a", "b", "a", "b"]):
        record = json.loads(json.dumps(template))
        record["messageId"] = f"m{index}"
        record["attributes"]["MessageGroupId"] = group
        records.append(record)
    called: list[str] = []

    def record_handler(record: dict[str, Any]) -> None:
        called.append(record["messageId"])
        if record["messageId"] == "m1":
            raise ValueError("boom")

    response = run({"Records": records}, record_handler)
    assert called == ["m0", "m1", "m2", "m4"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}


@pytest.mark.parametrize(
    ("name", "identifier"),
    [
        ("powertools__kinesisStreamEvent.json", lambda r: r["kinesis"]["sequenceNumber"]),
        ("powertools__dynamoStreamEvent.json", lambda r: r["dynamodb"]["SequenceNumber"]),
    ],
)
def test_stream_failures_are_reported_by_sequence_number(
    spans: GlobalSpans, name: str, identifier: Any
) -> None:
    event = fixture(name)

    def record_handler(record: dict[str, Any]) -> None:
        raise ValueError("poison")

    response = run(event, record_handler)
    assert response["batchItemFailures"] == [{"itemIdentifier": identifier(r)} for r in event["Records"]]


def test_a_single_record_span_is_parented_on_its_producer_when_asked(spans: GlobalSpans) -> None:
    event = with_contexts(fixture("powertools__sqsEvent.json"))
    event["Records"] = event["Records"][:1]
    run(event, lambda record: None, parent_on_producer=True)
    (record_span,) = spans.named("process my-queue")[:1]
    assert record_span.parent is not None and record_span.parent.span_id == 1
    assert record_span.context.trace_id == int(TRACE_ID, 16)


def test_the_correlation_id_path_reads_the_record_payload(spans: GlobalSpans) -> None:
    event = fixture("powertools__snsSqsEvent.json")
    seen: list[str | None] = []
    run(event, lambda record: seen.append(get_correlation_id()), correlation_id_path="message")
    assert seen == [record_payload(event["Records"][0])["message"]]


def test_record_payload_unwraps_every_envelope() -> None:
    sqs = fixture("powertools__sqsEvent.json")["Records"][0]
    assert record_payload(sqs) == sqs["body"]
    sns_in_sqs = fixture("powertools__snsSqsEvent.json")["Records"][0]
    assert record_payload(sns_in_sqs) == json.loads(json.loads(sns_in_sqs["body"])["Message"])
    eventbridge_in_sqs = fixture("datadog__eventbridge-sqs.json")["Records"][0]
    detail = dict(eventbridge_in_sqs["body"]["detail"])
    assert record_payload(eventbridge_in_sqs) == detail
    sns = fixture("powertools__snsEvent.json")["Records"][0]
    assert record_payload(sns) == sns["Sns"]["Message"]
    kinesis = fixture("powertools__kinesisStreamEvent.json")["Records"][0]
    assert record_payload(kinesis) == base64.b64decode(kinesis["kinesis"]["data"]).decode()  # not JSON: text
    s3_in_sqs = fixture("powertools__s3SqsEvent.json")["Records"][0]
    assert record_payload(s3_in_sqs)["Records"][0]["eventSource"] == "aws:s3"


def test_hopscope_context_key_is_not_part_of_the_payload() -> None:
    record = fixture("datadog__eventbridge-sqs.json")["Records"][0]
    record["body"] = json.dumps({**record["body"], "detail": {"order": 1, "_hopscope": {"traceparent": "x"}}})
    assert record_payload(record) == {"order": 1}


def test_a_malformed_context_in_a_batch_is_read_and_warned_about_once(
    spans: GlobalSpans, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a batch whose second record carries a malformed traceparent
    event = with_contexts(fixture("datadog__sqs-batch.json"))
    event["Records"][1]["messageAttributes"]["traceparent"]["stringValue"] = "00-nothex-zz-01"
    # WHEN the invocation span and process_batch both need every record's producer
    with caplog.at_level(logging.WARNING, logger="hopscope.instrumentation"):
        run(event, lambda record: None)
    # THEN the record was read once: one warning, and its span starts a new trace with no link
    warnings = [r for r in caplog.records if "malformed traceparent" in r.getMessage()]
    assert len(warnings) == 1
    bad = next(
        s
        for s in record_spans(spans)
        if (s.attributes or {})["messaging.message.id"] == event["Records"][1]["messageId"]
    )
    assert bad.links == () or list(bad.links) == []
    assert all(len(s.links) == 1 for s in record_spans(spans) if s is not bad)
