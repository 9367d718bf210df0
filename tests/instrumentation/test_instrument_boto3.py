"""instrument_boto3(): one producer span per message boto3 sends, whose context travels inside the message.

GIVEN a real moto server reached over HTTP and the real OpenTelemetry SDK, WHEN boto3 sends through SQS,
SNS, EventBridge or Lambda, THEN the messages that come out of moto carry exactly the context of the span
that was recorded, the caller's params and keys are untouched, and the call's outcome is botocore's own.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

import botocore.client
import pytest
from botocore.exceptions import ClientError
from opentelemetry import context, trace
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hopscope.instrumentation import message_injection
from hopscope.instrumentation.aws_publishers import instrument_boto3, uninstrument_boto3
from hopscope.instrumentation.correlation import attached, set_correlation_id, with_correlation_id
from tests.helpers.moto_server import ACCOUNT_ID, REGION, MotoServer
from tests.helpers.servers import GlobalSpans

ORIGINAL_MAKE_API_CALL = vars(botocore.client.BaseClient)["_make_api_call"]
REMOTE_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_TRACEPARENT = f"00-{REMOTE_TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def clean_instrumentation(spans: GlobalSpans) -> Iterator[None]:
    """Every test starts and ends un-instrumented: the other test files share this process."""
    message_injection._warned.clear()
    yield
    uninstrument_boto3()
    if BotocoreInstrumentor().is_instrumented_by_opentelemetry:
        BotocoreInstrumentor().uninstrument()
    assert vars(botocore.client.BaseClient)["_make_api_call"] is ORIGINAL_MAKE_API_CALL


def span_id(span: ReadableSpan) -> str:
    return trace.format_span_id(span.get_span_context().span_id)


def trace_id(span: ReadableSpan) -> str:
    return trace.format_trace_id(span.get_span_context().trace_id)


def parent_ids(traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent."""
    _version, trace_hex, span_hex, _flags = traceparent.split("-")
    return trace_hex, span_hex


def calls(spans: GlobalSpans, operation: str) -> list[ReadableSpan]:
    """Every span recorded for an AWS operation, whoever recorded it."""
    return [span for span in spans.finished() if (span.attributes or {}).get("rpc.method") == operation]


def create_queue(moto: MotoServer, name: str) -> str:
    return str(moto.client("sqs").create_queue(QueueName=name)["QueueUrl"])


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def receive(moto: MotoServer, url: str, count: int) -> list[dict[str, Any]]:
    """Exactly ``count`` messages of a queue, with all their attributes."""
    messages: list[dict[str, Any]] = (
        moto.client("sqs")
        .receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        .get("Messages", [])
    )
    assert len(messages) == count, messages
    return messages


def string_attributes(message: dict[str, Any]) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()}


@contextlib.contextmanager
def remote_parent(tracestate: str, correlation_id: str) -> Iterator[None]:
    """Inside a flow that arrived with a tracestate and a correlation id: all three W3C keys are due."""
    carrier = {"traceparent": CALLER_TRACEPARENT, "tracestate": tracestate}
    ctx = with_correlation_id(TraceContextTextMapPropagator().extract(carrier), correlation_id)
    with attached(ctx):
        yield


@contextlib.contextmanager
def sent_params(client: Any, operation: str) -> Iterator[list[dict[str, Any]]]:
    """The params botocore itself is about to serialize, via its own ``before-parameter-build`` event."""
    seen: list[dict[str, Any]] = []
    event = f"before-parameter-build.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def capture(params: dict[str, Any], **_kwargs: Any) -> None:
        seen.append(copy.deepcopy(params))

    client.meta.events.register(event, capture)
    try:
        yield seen
    finally:
        client.meta.events.unregister(event, capture)


def test_send_message_gives_one_producer_span_whose_context_and_correlation_id_the_message_carries(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN hopscope's boto3 instrumentation and a queue
    instrument_boto3()
    url = create_queue(moto, "orders")
    sqs = moto.client("sqs")

    # WHEN a handler span sets a correlation id and sends a message
    with attached(context.get_current()), trace.get_tracer("app").start_as_current_span("handler"):
        set_correlation_id("order-42")
        response = sqs.send_message(QueueUrl=url, MessageBody="hello")

    # THEN exactly one span was recorded for the call: hopscope's PRODUCER span, child of the handler
    (producer,) = calls(spans, "SendMessage")
    (handler,) = spans.named("handler")
    assert producer.name == "send orders"
    assert producer.kind is SpanKind.PRODUCER
    assert producer.instrumentation_scope is not None
    assert producer.instrumentation_scope.name == "hopscope.instrumentation"
    assert producer.parent is not None and producer.parent.span_id == handler.context.span_id
    attributes = dict(producer.attributes or {})
    assert {k: attributes.get(k) for k in attributes if k not in ("server.port", "aws.request_id")} == {
        "rpc.system": "aws-api",
        "rpc.service": "SQS",
        "rpc.method": "SendMessage",
        "cloud.region": REGION,
        "server.address": "127.0.0.1",
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "orders",
        "aws.sqs.queue.url": url,
        "messaging.message.id": response["MessageId"],
        "hopscope.correlation_id": "order-42",
        "messaging.message.conversation_id": "order-42",
    }
    assert attributes["server.port"] == int(moto.url.rsplit(":", 1)[1])
    assert attributes["aws.request_id"] == response["ResponseMetadata"]["RequestId"]

    # AND the message in the queue names that very span as its parent, with the correlation id in baggage
    (message,) = receive(moto, url, 1)
    carried = string_attributes(message)
    assert parent_ids(carried["traceparent"]) == (trace_id(producer), span_id(producer))
    assert "hopscope.correlation_id=order-42" in carried["baggage"].split(",")
    assert "tracestate" not in carried  # the span has none: no empty attribute is sent


def test_send_message_batch_gives_a_create_span_per_entry_whose_context_only_that_message_carries(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN a batch of three good entries and one that moto rejects into Failed[] (DelaySeconds > 900)
    instrument_boto3()
    url = create_queue(moto, "orders")
    entries: list[dict[str, Any]] = [{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(3)]
    entries.append({"Id": "late", "MessageBody": "too late", "DelaySeconds": 901})

    # WHEN it is sent
    response = moto.client("sqs").send_message_batch(QueueUrl=url, Entries=entries)
    assert [failed["Id"] for failed in response["Failed"]] == ["late"]

    # THEN one CLIENT span for the batch and, beneath it, one PRODUCER create span per entry
    (batch,) = [span for span in calls(spans, "SendMessageBatch") if span.kind is SpanKind.CLIENT]
    creates = [span for span in calls(spans, "SendMessageBatch") if span is not batch]
    assert (batch.name, batch.kind) == ("send orders", SpanKind.CLIENT)
    assert (batch.attributes or {})["messaging.batch.message_count"] == 4
    assert "messaging.message.id" not in (batch.attributes or {})
    assert batch.status.status_code is StatusCode.UNSET  # not every entry failed
    assert len(creates) == 4
    for create in creates:
        assert (create.name, create.kind) == ("create orders", SpanKind.PRODUCER)
        assert create.parent is not None and create.parent.span_id == batch.context.span_id
        assert (create.attributes or {})["messaging.operation.type"] == "create"

    # AND each delivered message carries its own create span, which holds its message id
    by_message_id = {(c.attributes or {}).get("messaging.message.id"): c for c in creates}
    sent_ids = {ok["Id"]: ok["MessageId"] for ok in response["Successful"]}
    received = receive(moto, url, 3)
    assert {m["MessageId"] for m in received} == set(sent_ids.values())
    for message in received:
        create = by_message_id[message["MessageId"]]
        assert parent_ids(string_attributes(message)["traceparent"])[1] == span_id(create)

    # AND the rejected entry's create span is an error with AWS's code and message
    (failed,) = [c for c in creates if "messaging.message.id" not in (c.attributes or {})]
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "InvalidParameterValue"
    assert "DelaySeconds" in (failed.status.description or "")

    # WHEN every entry of a batch fails THEN the batch span is an error too
    moto.client("sqs").send_message_batch(
        QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x", "DelaySeconds": 901}]
    )
    all_failed = max(calls(spans, "SendMessageBatch"), key=lambda s: s.end_time or 0)
    assert all_failed.kind is SpanKind.CLIENT
    assert all_failed.status.status_code is StatusCode.ERROR
    assert (all_failed.attributes or {})["error.type"] == "InvalidParameterValue"


def test_sns_publish_context_reaches_raw_and_enveloped_sqs_subscribers(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN a topic with a raw-delivery SQS subscription and an enveloped one
    instrument_boto3()
    sns = moto.client("sns")
    topic_arn = sns.create_topic(Name="order-events")["TopicArn"]
    raw_url, envelope_url = create_queue(moto, "raw"), create_queue(moto, "envelope")
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn("raw"),
        Attributes={"RawMessageDelivery": "true"},
    )
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn("envelope"))

    # WHEN a message is published
    response = sns.publish(TopicArn=topic_arn, Message="order placed")

    # THEN one PRODUCER publish span
    (publish,) = calls(spans, "Publish")
    assert (publish.name, publish.kind) == ("publish order-events", SpanKind.PRODUCER)
    attributes = publish.attributes or {}
    assert attributes["messaging.system"] == "aws.sns"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.operation.name"] == "publish"
    assert attributes["messaging.destination.name"] == "order-events"
    assert attributes["aws.sns.topic.arn"] == topic_arn
    assert attributes["messaging.message.id"] == response["MessageId"]

    # AND both subscribers got its context: raw as SQS attributes, enveloped in the JSON body
    expected = (trace_id(publish), span_id(publish))
    (raw,) = receive(moto, raw_url, 1)
    assert parent_ids(string_attributes(raw)["traceparent"]) == expected
    (enveloped,) = receive(moto, envelope_url, 1)
    envelope_attributes = json.loads(enveloped["Body"])["MessageAttributes"]
    assert envelope_attributes["traceparent"]["Type"] == "String"
    assert parent_ids(envelope_attributes["traceparent"]["Value"]) == expected


def test_sns_publish_batch_marks_the_entry_sns_rejects(moto: MotoServer, spans: GlobalSpans) -> None:
    # GIVEN a batch whose second entry is longer than SNS accepts
    instrument_boto3()
    sns = moto.client("sns")
    topic_arn = sns.create_topic(Name="order-events")["TopicArn"]
    entries = [{"Id": "ok", "Message": "fine"}, {"Id": "big", "Message": "x" * 300_000}]

    # WHEN it is published
    response = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)

    # THEN a CLIENT publish span and two create spans; the rejected one is an error, the other has its id
    spans_by_name = {
        span.name: span for span in calls(spans, "PublishBatch") if span.name != "create order-events"
    }
    batch = spans_by_name["publish order-events"]
    assert batch.kind is SpanKind.CLIENT
    assert batch.status.status_code is StatusCode.UNSET
    creates = [span for span in calls(spans, "PublishBatch") if span.name == "create order-events"]
    statuses = sorted(
        (c.status.status_code.name, (c.attributes or {}).get("messaging.message.id")) for c in creates
    )
    assert statuses == [("ERROR", None), ("UNSET", response["Successful"][0]["MessageId"])]
    (failed,) = [c for c in creates if c.status.status_code is StatusCode.ERROR]
    assert (failed.attributes or {})["error.type"] == "InvalidParameter"


def test_put_events_carries_context_in_detail_to_an_sqs_target_and_leaves_other_details_alone(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN a custom bus whose rule sends events to a queue
    instrument_boto3()
    events = moto.client("events")
    bus_arn = events.create_event_bus(Name="shop")["EventBusArn"]
    url = create_queue(moto, "shop-events")
    events.put_rule(Name="all", EventBusName="shop", EventPattern=json.dumps({"source": ["shop"]}))
    events.put_targets(
        Rule="all", EventBusName="shop", Targets=[{"Id": "q", "Arn": queue_arn("shop-events")}]
    )

    # WHEN one event with an object Detail is put on the bus, named by its ARN
    entry = {"Source": "shop", "DetailType": "order", "Detail": '{"order": 42}', "EventBusName": bus_arn}
    with sent_params(events, "PutEvents") as sent:
        response = events.put_events(Entries=[entry])

    # THEN one PRODUCER send span for the bus, with the event id
    (send,) = calls(spans, "PutEvents")
    assert (send.name, send.kind) == ("send shop", SpanKind.PRODUCER)
    attributes = send.attributes or {}
    assert attributes["messaging.system"] == "aws.eventbridge"
    assert attributes["messaging.destination.name"] == "shop"
    assert attributes["messaging.message.id"] == response["Entries"][0]["EventId"]

    # AND the event the queue receives has the span's context in detail._hopscope, next to the caller's keys
    (message,) = receive(moto, url, 1)
    detail = json.loads(message["Body"])["detail"]
    assert detail["order"] == 42
    assert parent_ids(detail["_hopscope"]["traceparent"]) == (trace_id(send), span_id(send))
    # AND the X-Ray TraceHeader names the same span
    assert f"Parent={span_id(send)}" in sent[0]["Entries"][0]["TraceHeader"].split(";")

    # WHEN the Detail is not a JSON object THEN it is sent byte for byte as given
    with sent_params(events, "PutEvents") as sent:
        events.put_events(Entries=[{**entry, "Detail": "[1,  2]"}])
    assert sent[0]["Entries"][0]["Detail"] == "[1,  2]"
    assert "TraceHeader" in sent[0]["Entries"][0]  # while X-Ray's header still goes along

    # WHEN the caller's Detail already has the key THEN it is left as given
    own = '{"_hopscope": {"traceparent": "mine"}}'
    with sent_params(events, "PutEvents") as sent:
        events.put_events(Entries=[{**entry, "Detail": own}])
    assert sent[0]["Entries"][0]["Detail"] == own


def test_put_events_batch_gives_create_spans_matched_by_index_and_marks_the_failed_entry(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN three entries for the default bus, the last without the Source EventBridge requires
    instrument_boto3()
    events = moto.client("events")
    entries = [
        {"Source": "shop", "DetailType": "order", "Detail": '{"n": 1}'},
        {"Source": "shop", "DetailType": "order", "Detail": '{"n": 2}'},
        {"DetailType": "order", "Detail": '{"n": 3}'},
    ]

    # WHEN they are put
    with sent_params(events, "PutEvents") as sent:
        response = events.put_events(Entries=entries)
    assert response["FailedEntryCount"] == 1

    # THEN a CLIENT batch span for the bus and one create span per entry, in order, carried by that entry
    batch = next(span for span in calls(spans, "PutEvents") if span.kind is SpanKind.CLIENT)
    assert batch.name == "send default"
    assert (batch.attributes or {})["messaging.batch.message_count"] == 3
    assert batch.status.status_code is StatusCode.UNSET
    creates = {span_id(span): span for span in calls(spans, "PutEvents") if span.kind is SpanKind.PRODUCER}
    assert len(creates) == 3
    for sent_entry, outcome in zip(sent[0]["Entries"], response["Entries"], strict=True):
        carried = json.loads(sent_entry["Detail"])["_hopscope"]["traceparent"]
        create = creates[parent_ids(carried)[1]]
        assert create.name == "create default"
        if "EventId" in outcome:
            assert (create.attributes or {})["messaging.message.id"] == outcome["EventId"]
        else:
            assert create.status.status_code is StatusCode.ERROR
            assert (create.attributes or {})["error.type"] == outcome["ErrorCode"]

    # WHEN the entries go to different buses THEN the batch span names no destination
    events.create_event_bus(Name="other")
    events.put_events(Entries=[entries[0], {**entries[1], "EventBusName": "other"}])
    mixed = max(
        (span for span in calls(spans, "PutEvents") if span.kind is SpanKind.CLIENT),
        key=lambda s: s.end_time or 0,
    )
    assert mixed.name == "send"
    assert "messaging.destination.name" not in (mixed.attributes or {})


def test_ten_attribute_limit_is_all_or_nothing_with_the_xray_fallback_and_one_warning(
    moto: MotoServer, spans: GlobalSpans, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a flow with a tracestate and a correlation id, so traceparent, tracestate and baggage are due
    instrument_boto3()
    url = create_queue(moto, "orders")
    sqs = moto.client("sqs")
    nine = {f"attr{i}": {"DataType": "String", "StringValue": f"v{i}"} for i in range(9)}
    seven = dict(list(nine.items())[:7])

    # WHEN two messages with 9 caller attributes each and one with 7 are sent
    with (
        caplog.at_level(logging.WARNING, logger="hopscope.instrumentation"),
        remote_parent("vendor=x", "o-1"),
    ):
        full_ids = [sqs.send_message(QueueUrl=url, MessageBody="full", MessageAttributes=nine)["MessageId"]]
        full_ids.append(
            sqs.send_message(QueueUrl=url, MessageBody="full", MessageAttributes=nine)["MessageId"]
        )
        roomy_id = sqs.send_message(QueueUrl=url, MessageBody="roomy", MessageAttributes=seven)["MessageId"]

    producers = {(s.attributes or {})["messaging.message.id"]: s for s in calls(spans, "SendMessage")}
    received = {m["MessageId"]: m for m in receive(moto, url, 3)}

    # THEN a 9-attribute message has the caller's 9 exactly, and its context in AWSTraceHeader instead
    for message_id in full_ids:
        message = received[message_id]
        assert message["MessageAttributes"] == nine
        xray = dict(part.split("=", 1) for part in message["Attributes"]["AWSTraceHeader"].split(";"))
        assert xray["Parent"] == span_id(producers[message_id])
    # AND a 7-attribute message has all that is due: the caller's plus the W3C keys of its span
    roomy = producers[roomy_id]
    due = {"traceparent", "baggage"} | ({"tracestate"} if roomy.context.trace_state else set())
    assert len(due) == 3  # the span inherited the flow's tracestate: 7 + 3 is exactly the limit
    carried = string_attributes(received[roomy_id])
    assert set(carried) == set(seven) | due
    assert parent_ids(carried["traceparent"])[1] == span_id(roomy)
    assert carried["tracestate"] == "vendor=x"
    # AND one warning said why, for the two full messages together
    warnings = [r for r in caplog.records if r.name == "hopscope.instrumentation"]
    assert len(warnings) == 1
    assert "10" in warnings[0].getMessage()


def test_keys_the_caller_set_are_delivered_unchanged(moto: MotoServer, spans: GlobalSpans) -> None:
    # GIVEN a caller that sets its own traceparent and baggage
    instrument_boto3()
    url = create_queue(moto, "orders")
    own = {
        "traceparent": {"DataType": "String", "StringValue": CALLER_TRACEPARENT},
        "baggage": {"DataType": "String", "StringValue": "tenant=acme"},
    }

    # WHEN it sends inside a flow with a correlation id and a tracestate
    with remote_parent("vendor=x", "o-2"):
        moto.client("sqs").send_message(QueueUrl=url, MessageBody="mine", MessageAttributes=own)

    # THEN the caller's values arrive as they were; hopscope only added the key the caller had not set
    (producer,) = calls(spans, "SendMessage")
    (message,) = receive(moto, url, 1)
    assert string_attributes(message) == {
        "traceparent": CALLER_TRACEPARENT,
        "baggage": "tenant=acme",
        "tracestate": "vendor=x",
    }
    assert producer.kind is SpanKind.PRODUCER


def test_the_callers_dicts_are_never_modified(moto: MotoServer, spans: GlobalSpans) -> None:
    # GIVEN params with nested dicts hopscope adds to, for every operation it instruments
    instrument_boto3()
    url = create_queue(moto, "orders")
    topic_arn = moto.client("sns").create_topic(Name="t")["TopicArn"]
    attributes = {"kind": {"DataType": "String", "StringValue": "order"}}
    caller_context = base64.b64encode(
        json.dumps({"custom": {"tenant": "acme", "baggage": "k=v"}, "env": {}}).encode()
    ).decode()
    calls_to_make: list[tuple[str, str, dict[str, Any]]] = [
        ("sqs", "send_message", {"QueueUrl": url, "MessageBody": "b", "MessageAttributes": attributes}),
        (
            "sqs",
            "send_message_batch",
            {"QueueUrl": url, "Entries": [{"Id": "1", "MessageBody": "b", "MessageAttributes": attributes}]},
        ),
        ("sns", "publish", {"TopicArn": topic_arn, "Message": "m", "MessageAttributes": attributes}),
        ("events", "put_events", {"Entries": [{"Source": "s", "DetailType": "d", "Detail": '{"a": 1}'}]}),
        # No Lambda function in moto's server mode without Docker: a function that does not exist gets
        # moto's ResourceNotFoundException, after the params went through hopscope all the same.
        ("lambda", "invoke", {"FunctionName": "missing", "ClientContext": caller_context}),
    ]

    sent_by_method: dict[str, dict[str, Any]] = {}
    with attached(context.get_current()), trace.get_tracer("app").start_as_current_span("handler"):
        set_correlation_id("order-7")
        for service, method, params in calls_to_make:
            before = copy.deepcopy(params)
            client = moto.client(service)
            operation = client.meta.method_to_api_mapping[method]
            # WHEN the call is made
            with sent_params(client, operation) as sent, contextlib.suppress(ClientError):
                getattr(client, method)(**params)
            # THEN the caller's params are as they were, though what was sent carries the context
            assert params == before, method
            assert sent and sent[0] != before, method
            sent_by_method[method] = sent[0]

    # AND the Lambda ClientContext kept the caller's keys (its baggage too) next to the added traceparent
    (invoke,) = calls(spans, "Invoke")
    assert (invoke.name, invoke.kind) == ("invoke missing", SpanKind.CLIENT)
    assert (invoke.attributes or {})["error.type"] == "ResourceNotFoundException"
    client_context = json.loads(base64.b64decode(sent_by_method["invoke"]["ClientContext"]))
    assert client_context["env"] == {}
    custom = client_context["custom"]
    assert (custom["tenant"], custom["baggage"]) == ("acme", "k=v")
    assert parent_ids(custom["traceparent"])[1] == span_id(invoke)


def test_lambda_invoke_span_names_the_function_and_its_kind_follows_the_invocation_type(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN functions named by a full qualified ARN and a partial ARN (missing in moto: no Docker there)
    instrument_boto3()
    client = moto.client("lambda")
    full_arn = f"arn:aws:lambda:eu-west-1:{ACCOUNT_ID}:function:billing:live"

    # WHEN one is invoked asynchronously and the other synchronously
    for name, invocation_type in (
        (full_arn, "Event"),
        (f"{ACCOUNT_ID}:function:shipping", "RequestResponse"),
    ):
        with pytest.raises(ClientError):
            client.invoke(FunctionName=name, InvocationType=invocation_type)

    # THEN the async one is a PRODUCER span, the sync one a CLIENT span, each named by the bare function
    billing, shipping = sorted(calls(spans, "Invoke"), key=lambda s: s.start_time or 0)
    assert (billing.name, billing.kind) == ("invoke billing", SpanKind.PRODUCER)
    assert (shipping.name, shipping.kind) == ("invoke shipping", SpanKind.CLIENT)
    assert (billing.attributes or {})["faas.invoked_region"] == "eu-west-1"
    assert (shipping.attributes or {})["faas.invoked_region"] == REGION
    assert (shipping.attributes or {})["faas.invoked_name"] == "shipping"
    assert (shipping.attributes or {})["faas.invoked_provider"] == "aws"


def test_injection_that_cannot_be_done_right_is_skipped_with_one_warning_each(
    moto: MotoServer, spans: GlobalSpans, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN an EventBridge entry 10 bytes under its 256 KiB limit, a ClientContext that is not base64 JSON and
    # one a few bytes under its limit
    instrument_boto3()
    events, lambda_client = moto.client("events"), moto.client("lambda")
    padding = 256 * 1024 - 10 - len("shop" + "order" + json.dumps({"pad": ""}))
    big = {"Source": "shop", "DetailType": "order", "Detail": json.dumps({"pad": "x" * padding})}
    full_context = base64.b64encode(json.dumps({"custom": {"pad": "x" * 2650}}).encode()).decode()
    assert 3583 - 30 < len(full_context) <= 3583

    # WHEN each is sent twice
    with caplog.at_level(logging.WARNING, logger="hopscope.instrumentation"):
        with sent_params(events, "PutEvents") as sent_events, contextlib.suppress(ClientError):
            events.put_events(Entries=[big])
            events.put_events(Entries=[big])
        with sent_params(lambda_client, "Invoke") as sent_invokes:
            for client_context in ["not base64 json!", "not base64 json!", full_context, full_context]:
                with contextlib.suppress(ClientError):
                    lambda_client.invoke(FunctionName="missing", ClientContext=client_context)

    # THEN the Detail and the ClientContext went out exactly as given, the spans all the same
    assert [sent["Entries"][0]["Detail"] for sent in sent_events] == [big["Detail"]] * 2
    assert [sent["ClientContext"] for sent in sent_invokes] == ["not base64 json!"] * 2 + [full_context] * 2
    assert len(calls(spans, "PutEvents")) == 2
    assert len(calls(spans, "Invoke")) == 4
    # AND one warning for each reason said why
    warnings = [r.getMessage() for r in caplog.records if r.name == "hopscope.instrumentation"]
    assert len(warnings) == 3, warnings
    assert sum("EventBridge" in w for w in warnings) == 1
    assert sum("not base64 of a JSON object" in w for w in warnings) == 1
    assert sum("would exceed 3583 bytes" in w for w in warnings) == 1


@pytest.mark.parametrize("application_first", [True, False], ids=["app-before", "app-after"])
def test_one_span_per_message_when_the_application_also_instruments_botocore(
    moto: MotoServer, spans: GlobalSpans, application_first: bool
) -> None:
    # GIVEN the application enables BotocoreInstrumentor itself, before or after instrument_boto3()
    if application_first:
        BotocoreInstrumentor().instrument()
    instrument_boto3()
    if not application_first:
        BotocoreInstrumentor().instrument()
    url = create_queue(moto, "orders")
    topic_arn = moto.client("sns").create_topic(Name="t")["TopicArn"]

    # WHEN a message is sent, one is published, and DynamoDB and S3 are called
    moto.client("sqs").send_message(QueueUrl=url, MessageBody="once")
    moto.client("sns").publish(TopicArn=topic_arn, Message="once")
    moto.client("dynamodb").list_tables()
    moto.client("s3").list_buckets()

    # THEN each message has one span, hopscope's PRODUCER span, and the message one traceparent
    for operation, name in (("SendMessage", "send orders"), ("Publish", "publish t")):
        (span,) = calls(spans, operation)
        assert (span.name, span.kind) == (name, SpanKind.PRODUCER)
    (message,) = receive(moto, url, 1)
    assert parent_ids(string_attributes(message)["traceparent"])[1] == span_id(calls(spans, "SendMessage")[0])
    # AND the other AWS calls keep botocore's CLIENT span
    assert [(s.name, s.kind) for s in calls(spans, "ListTables")] == [
        ("DynamoDB.ListTables", SpanKind.CLIENT)
    ]
    assert [(s.name, s.kind) for s in calls(spans, "ListBuckets")] == [("S3.ListBuckets", SpanKind.CLIENT)]

    # WHEN hopscope is uninstrumented THEN the botocore instrumentation stays only if the application enabled
    # it first (hopscope's own enabling is undone; the later instrument() call was a no-op)
    uninstrument_boto3()
    assert BotocoreInstrumentor().is_instrumented_by_opentelemetry is application_first


def test_uninstrument_restores_the_original_call_and_stops_spans_and_injection(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN hopscope instrumented twice (idempotent) and uninstrumented, then the same again
    url = create_queue(moto, "orders")
    for _round in range(2):
        instrument_boto3()
        instrument_boto3()
        moto.client("sqs").send_message(QueueUrl=url, MessageBody="traced")
        moto.client("dynamodb").list_tables()
        # THEN while instrumented: one hopscope span per send (not one per instrument call), botocore's too
        assert [s.name for s in calls(spans, "SendMessage")] == ["send orders"]
        assert len(calls(spans, "ListTables")) == 1
        receive(moto, url, 1)  # and hidden for the visibility timeout, far longer than this test
        uninstrument_boto3()
        uninstrument_boto3()
        spans.exporter.clear()

    # THEN the original function object is back and botocore is no longer instrumented
    assert vars(botocore.client.BaseClient)["_make_api_call"] is ORIGINAL_MAKE_API_CALL
    assert not BotocoreInstrumentor().is_instrumented_by_opentelemetry

    # WHEN a message is sent now THEN no span is recorded and the message carries no attribute
    moto.client("sqs").send_message(QueueUrl=url, MessageBody="plain")
    moto.client("dynamodb").list_tables()
    assert spans.finished() == []
    (message,) = receive(moto, url, 1)
    assert "MessageAttributes" not in message


def test_a_failing_send_raises_botocores_own_error_and_the_span_records_it(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN the error an SQS send to a missing queue raises without instrumentation
    missing = f"{moto.url}/{ACCOUNT_ID}/missing"
    with pytest.raises(ClientError) as plain:
        moto.client("sqs").send_message(QueueUrl=missing, MessageBody="lost")
    plain_code = plain.value.response["Error"]["Code"]

    # WHEN the same send is made instrumented
    instrument_boto3()
    sqs = moto.client("sqs")
    parsed: list[Any] = []
    sqs.meta.events.register("after-call.sqs.SendMessage", lambda **kw: parsed.append(kw["parsed"]))
    with pytest.raises(ClientError) as instrumented:
        sqs.send_message(QueueUrl=missing, MessageBody="lost")

    # THEN it is the very exception botocore raised, built on the very response it parsed, with the same code
    assert type(instrumented.value) is sqs.exceptions.QueueDoesNotExist  # this client's own class
    assert type(instrumented.value).__name__ == type(plain.value).__name__
    assert instrumented.value.response is parsed[0]
    assert instrumented.value.response["Error"]["Code"] == plain_code
    # AND the span is an error with that code and the exception recorded
    (producer,) = calls(spans, "SendMessage")
    assert producer.status.status_code is StatusCode.ERROR
    assert (producer.attributes or {})["error.type"] == plain_code
    assert [event.name for event in producer.events] == ["exception"]

    # AND a successful send returns the very dict botocore parsed
    url = create_queue(moto, "orders")
    result = sqs.send_message(QueueUrl=url, MessageBody="kept")
    assert result is parsed[-1]


def test_spans_go_to_the_tracer_provider_given(moto: MotoServer, spans: GlobalSpans) -> None:
    # GIVEN instrument_boto3() with a provider of its own
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_boto3(tracer_provider=provider)
    url = create_queue(moto, "orders")

    # WHEN a message is sent
    moto.client("sqs").send_message(QueueUrl=url, MessageBody="elsewhere")

    # THEN its span, and botocore's spans, went to that provider, not to the global one
    assert "send orders" in [span.name for span in exporter.get_finished_spans()]
    assert "SQS.CreateQueue" in [span.name for span in exporter.get_finished_spans()]
    assert spans.finished() == []
