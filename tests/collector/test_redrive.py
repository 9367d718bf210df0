"""Redrive on a real moto server over HTTP (which lacks StartMessageMoveTask, so hopscope moves the messages
itself), with real SDK spans and a real collector.

THEN every message goes back with its body and message attributes, the retry lands in the original flow,
the redrive spans link each message's own trace, a killed redrive loses nothing, and where the endpoint
has a message move task, that is what runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from opentelemetry.trace import SpanKind, StatusCode

from hopscope.collector.aws.dlq import QueueRef, peek
from hopscope.collector.aws.redrive import (
    RedriveError,
    RedriveProgress,
    RedriveResult,
    move_task_unsupported,
    redrive,
)
from tests.helpers.dead_letters import (
    Orders,
    aws_env,
    dlq_cli,
    export_and_settle,
    producer_spans,
    uid_of,
    wait_for_flows,
)
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import GlobalSpans


@pytest.mark.usefixtures("instrumented")
def test_redrive_moves_every_message_back_and_the_retry_joins_the_original_flow(
    moto: MotoServer, spans: GlobalSpans, start_collector: Any
) -> None:
    # GIVEN six orders failed into the DLQ, their spans in a real collector, and each one's flow known
    orders = Orders(moto)
    orders.fail_into_dlq(6)
    producers = producer_spans(spans.finished())
    collector = start_collector()
    export_and_settle(spans, collector)
    before = {uid_of(letter.body): letter for letter in peek(orders.sqs, "orders-dlq", limit=100)}
    with collector.client() as http:
        flows_before = {
            uid: http.get("/api/flows", params={"correlation_id": uid}).json()["flows"][0]["flow_id"]
            for uid in before
        }

    # WHEN `hopscope dlq redrive` moves them back (the source queue is the default target) ...
    result = subprocess.run(
        [*dlq_cli(), "redrive", "orders-dlq", "--yes", "--aws-endpoint-url", moto.url],
        capture_output=True,
        text=True,
        env=aws_env(HOPSCOPE_ENDPOINT=collector.url),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    # ... and the consumer, fixed, processes them again
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "moved 6, failed 0, left 0"
    assert orders.counts(orders.dlq_url) == (0, 0)
    retried = orders.consume(fail=False, until=lambda: orders.counts(orders.url) == (0, 0))
    retry_spans = [  # process_batch's record spans, not the invocation spans
        s
        for s in spans.finished()
        if s.kind is SpanKind.CONSUMER and "faas.trigger" not in (s.attributes or {})
    ]
    export_and_settle(spans, collector)
    wait_for_flows(collector)

    # THEN none is lost, none duplicated, each keeps the message attributes it was first sent with
    assert sorted(uid_of(m["Body"]) for m in retried) == sorted(before) == sorted(producers)
    for message in retried:
        assert message["MessageAttributes"] == orders.first_attributes[uid_of(message["Body"])]
    # the retry ran in the original flow (an id once handed out resolves to the flow it is part of now)
    redrive_spans: dict[str, dict[str, Any]] = {}
    standing: set[int] = set()
    with collector.client() as http:
        for uid, flow_id in flows_before.items():
            flow = http.get(f"/api/flows/{flow_id}").json()
            standing.add(flow["summary"]["flow_id"])
            span_ids = {span["span_id"] for span in flow["spans"]}
            (retry,) = [
                s for s in retry_spans if s.links[0].context.span_id == producers[uid].context.span_id
            ]
            assert retry.status.status_code is not StatusCode.ERROR
            assert format(retry.context.span_id, "016x") in span_ids, uid
            assert "checkout" in {span["name"] for span in flow["spans"]}
            redrive_spans.update(
                (s["span_id"], s) for s in flow["spans"] if s["name"] == "redrive orders-dlq"
            )
    assert len(standing) == 6  # the redrive joined each message to its own flow, and merged none
    # and the redrive spans link each message's own producer span, with its original message id
    assert all(s["kind"] == "PRODUCER" for s in redrive_spans.values())
    assert {s["attributes"]["messaging.destination.name"] for s in redrive_spans.values()} == {"orders"}
    assert {s["attributes"]["hopscope.redrive.source"] for s in redrive_spans.values()} == {"orders-dlq"}
    assert [len(s["links"]) for s in redrive_spans.values()] == [1] * 6  # one span per message
    links = {(link["trace_id"], link["span_id"]): link for s in redrive_spans.values() for link in s["links"]}
    assert set(links) == {
        (format(p.context.trace_id, "032x"), format(p.context.span_id, "016x")) for p in producers.values()
    }
    for uid, producer in producers.items():
        link = links[(format(producer.context.trace_id, "032x"), format(producer.context.span_id, "016x"))]
        assert link["attributes"]["messaging.message.id"] == before[uid].message_id


def test_a_message_move_task_is_used_when_the_endpoint_has_one() -> None:
    """A botocore Stubber stands in for SQS here because no endpoint available to the tests (moto 5.2.5
    answers HTTP 500) implements StartMessageMoveTask / ListMessageMoveTasks. The client is a real boto3
    client, so every call and response is validated against the SQS API model."""
    # GIVEN an SQS client whose endpoint runs message move tasks, every operation it makes recorded
    sqs = boto3.session.Session().client(
        "sqs", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    operations: list[str] = []
    # (before-parameter-build: the Stubber answers at before-call, ahead of other handlers there)
    sqs.meta.events.register("before-parameter-build.sqs", lambda model, **_: operations.append(model.name))
    stub = Stubber(sqs)
    dlq_arn = "arn:aws:sqs:us-east-1:123456789012:orders-dlq"
    target_arn = "arn:aws:sqs:us-east-1:123456789012:orders"
    dlq_url = "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq"
    for name, url, arn in (("orders-dlq", dlq_url, dlq_arn), ("orders", dlq_url[:-4], target_arn)):
        stub.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": name})
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )
    stub.add_response(
        "start_message_move_task",
        {"TaskHandle": "handle-1"},
        {"SourceArn": dlq_arn, "DestinationArn": target_arn, "MaxNumberOfMessagesPerSecond": 50},
    )
    task = {"SourceArn": dlq_arn, "DestinationArn": target_arn, "ApproximateNumberOfMessagesToMove": 6}
    stub.add_response(
        "list_message_move_tasks",
        {
            "Results": [
                {**task, "TaskHandle": "handle-1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 2}
            ]
        },
        {"SourceArn": dlq_arn, "MaxResults": 10},
    )
    stub.add_response(
        "list_message_move_tasks",
        {"Results": [{**task, "Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 6}]},
        {"SourceArn": dlq_arn, "MaxResults": 10},
    )
    stub.add_response(
        "get_queue_attributes",
        {"Attributes": {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}},
        {
            "QueueUrl": dlq_url,
            "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        },
    )
    seen: list[RedriveProgress] = []

    # WHEN the DLQ is redriven at 50 messages/s
    with stub:
        result = redrive(sqs, "orders-dlq", "orders", rate=50, progress=seen.append, poll_interval=0)
        stub.assert_no_pending_responses()

    # THEN the task did the move, its progress was reported, and no message passed through hopscope
    assert result == RedriveResult(moved=6, failed=0, left=0, used_move_task=True)
    assert [(p.moved, p.total, p.status) for p in seen] == [(2, 6, "RUNNING"), (6, 6, "COMPLETED")]
    assert "StartMessageMoveTask" in operations
    assert not {"ReceiveMessage", "SendMessage", "SendMessageBatch", "DeleteMessageBatch"} & set(operations)


def test_a_real_move_task_error_is_raised_not_hidden_by_the_fallback() -> None:
    """A Stubber again (no endpoint here implements the operation): an AccessDenied from
    StartMessageMoveTask is the user's problem to see, not a reason to move messages another way."""
    sqs = boto3.session.Session().client(
        "sqs", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stub = Stubber(sqs)
    stub.add_client_error("start_message_move_task", "AccessDenied", "not allowed", http_status_code=403)
    dlq = QueueRef(
        "orders-dlq", "https://sqs.us-east-1.amazonaws.com/1/orders-dlq", "arn:aws:sqs:us-east-1:1:orders-dlq"
    )
    target = QueueRef(
        "orders", "https://sqs.us-east-1.amazonaws.com/1/orders", "arn:aws:sqs:us-east-1:1:orders"
    )
    with stub, pytest.raises(ClientError) as raised:
        redrive(sqs, dlq, target)
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert not move_task_unsupported(raised.value)


def test_moto_answers_start_message_move_task_as_an_unsupported_operation(moto: MotoServer) -> None:
    # GIVEN moto's real answer over HTTP to StartMessageMoveTask
    orders = Orders(moto)
    with pytest.raises(ClientError) as raised:
        orders.sqs.start_message_move_task(SourceArn=orders.dlq_arn, DestinationArn=orders.arn)
    # THEN it is recognised as "the endpoint lacks the operation", and redrive falls back to moving itself
    assert move_task_unsupported(raised.value)
    orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody="one")
    assert redrive(orders.sqs, "orders-dlq") == RedriveResult(moved=1, failed=0, left=0, used_move_task=False)


def test_messages_the_target_refuses_stay_in_the_dlq_and_count_as_failed(
    moto: MotoServer, spans: GlobalSpans
) -> None:
    # GIVEN a target that takes at most 1 KiB per message, and a DLQ with 8 small and 2 large messages
    orders = Orders(moto)
    small = orders.sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    for number in range(10):
        body = json.dumps({"uid": number, "pad": "x" * (2000 if number in (3, 7) else 10)})
        orders.sqs.send_message(
            QueueUrl=orders.dlq_url,
            MessageBody=body,
            MessageAttributes={
                "traceparent": {
                    "DataType": "String",
                    "StringValue": f"00-{number + 1:032x}-{number + 1:016x}-01",
                },
                "raw": {"DataType": "Binary", "BinaryValue": bytes([number, 255])},
            },
        )

    # WHEN the DLQ is redriven there, with spans
    result = redrive(orders.sqs, "orders-dlq", "small", tracer=spans.provider.get_tracer("test"))

    # THEN the 8 small ones moved with their attributes, the 2 large ones are still in the DLQ, visible
    assert (result.moved, result.failed, result.left, result.used_move_task) == (8, 2, 2, False)
    assert result.failure_reason is not None and "InvalidParameterValue" in result.failure_reason
    moved = orders.drain(small)
    assert sorted(json.loads(m["Body"])["uid"] for m in moved) == [0, 1, 2, 4, 5, 6, 8, 9]
    for message in moved:
        number = json.loads(message["Body"])["uid"]
        assert message["MessageAttributes"]["raw"]["BinaryValue"] == bytes([number, 255])
        assert message["MessageAttributes"]["traceparent"]["StringValue"].startswith(f"00-{number + 1:032x}")
    assert orders.counts(orders.dlq_url) == (2, 0)
    assert sorted(json.loads(m["Body"])["uid"] for m in orders.drain(orders.dlq_url)) == [3, 7]
    redrive_spans = spans.named("redrive orders-dlq")
    assert {span.kind for span in redrive_spans} == {SpanKind.PRODUCER}
    by_trace = {span.links[0].context.trace_id: span.status.status_code for span in redrive_spans}
    assert sorted(by_trace) == list(range(1, 11))  # one span per message, each linked to its own trace
    assert sorted(t for t, code in by_trace.items() if code is StatusCode.ERROR) == [4, 8]


def test_max_and_rate_bound_the_move(moto: MotoServer) -> None:
    # GIVEN 25 dead letters
    orders = Orders(moto)
    for number in range(25):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))

    # WHEN at most 15 are redriven at 10 messages/s
    started = time.monotonic()
    result = redrive(orders.sqs, "orders-dlq", max_messages=15, rate=10)
    elapsed = time.monotonic() - started

    # THEN exactly 15 moved (two batches, the second a second after the first) and 10 are left
    assert (result.moved, result.failed, result.left) == (15, 0, 10)
    assert orders.counts(orders.url) == (15, 0)
    assert 0.9 <= elapsed < 10


def test_a_fifo_dlq_goes_back_in_its_groups(moto: MotoServer) -> None:
    # GIVEN a FIFO queue's FIFO DLQ holding messages of two groups
    sqs = moto.client("sqs")
    dlq_url = sqs.create_queue(QueueName="orders-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    target_url = sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for number in range(6):
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=f"m{number}",
            MessageGroupId=f"g{number % 2}",
            MessageDeduplicationId=f"d{number}",
        )

    # WHEN it is redriven to the FIFO queue
    result = redrive(sqs, "orders-dlq.fifo", "orders.fifo")

    # THEN every message is there, in its group, in order
    assert (result.moved, result.left) == (6, 0)
    groups: dict[str, list[str]] = {}
    while page := sqs.receive_message(
        QueueUrl=target_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
    ).get("Messages"):
        for message in page:
            groups.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
            sqs.delete_message(QueueUrl=target_url, ReceiptHandle=message["ReceiptHandle"])
    assert groups == {"g0": ["m0", "m2", "m4"], "g1": ["m1", "m3", "m5"]}


def test_the_default_target_must_be_unambiguous(moto: MotoServer) -> None:
    # GIVEN a DLQ of two source queues, and a queue that is no queue's DLQ
    orders = Orders(moto)
    policy = json.dumps({"deadLetterTargetArn": orders.dlq_arn, "maxReceiveCount": 3})
    orders.sqs.create_queue(QueueName="refunds", Attributes={"RedrivePolicy": policy})
    orders.sqs.create_queue(QueueName="lonely")

    # WHEN redriven without a target / THEN the error asks for --to
    with pytest.raises(RedriveError, match=r"orders, refunds; choose one with --to"):
        redrive(orders.sqs, "orders-dlq")
    with pytest.raises(RedriveError, match=r"--to"):
        redrive(orders.sqs, "lonely")
    with pytest.raises(RedriveError, match=r"into itself"):
        redrive(orders.sqs, "orders-dlq", "orders-dlq")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_redrive_loses_no_message(moto: MotoServer, tmp_path: Path, stop: signal.Signals) -> None:
    # GIVEN 60 dead letters, each with a unique id in its body (a re-sent message gets a new MessageId)
    orders = Orders(moto)
    for start in range(0, 60, 10):
        orders.sqs.send_message_batch(
            QueueUrl=orders.dlq_url,
            Entries=[{"Id": str(n), "MessageBody": json.dumps({"uid": n})} for n in range(start, start + 10)],
        )

    # WHEN a redrive at 5 messages/s is killed (SIGKILL) or interrupted (SIGINT) once some have moved
    proc = subprocess.Popen(
        [
            *dlq_cli(),
            "redrive",
            "orders-dlq",
            "--rate",
            "5",
            "--yes",
            "--visibility-timeout",
            "2",
            "--aws-endpoint-url",
            moto.url,
            "--collector",
            "http://127.0.0.1:9",
            "--db",
            str(tmp_path / "none.db"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=aws_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while orders.counts(orders.url)[0] < 15:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the redrive did not get going"
            time.sleep(0.05)
        proc.send_signal(stop)
        code = proc.wait(30)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait(10)
    if stop is signal.SIGINT:  # Ctrl-C: one line, no traceback, exit 130
        assert code == 130, err
        assert "interrupted after moving" in err and "Traceback" not in err, err

    # THEN once a batch in flight has become visible again, every message is in the DLQ or the target,
    # with at most one batch (5 at 5 messages/s) in both
    deadline = time.monotonic() + 10
    while orders.counts(orders.dlq_url)[1]:
        assert time.monotonic() < deadline, "messages stayed in flight"
        time.sleep(0.2)
    in_dlq = [uid_of(m["Body"]) for m in orders.drain(orders.dlq_url)]
    in_target = [uid_of(m["Body"]) for m in orders.drain(orders.url)]
    assert in_dlq and len(in_target) >= 15  # killed half-way, really
    assert set(in_dlq) | set(in_target) == {str(n) for n in range(60)}
    assert len(in_dlq) + len(in_target) - 60 <= 5
    assert len(set(in_target)) == len(in_target) and len(set(in_dlq)) == len(in_dlq)
