"""Dead-letter queues on a real moto server over HTTP: messages that really failed (an instrumented producer,
a ``@traced_handler`` consumer that always raises, moto moving them after maxReceiveCount), spans exported
with the real OTLP exporter to a real collector.

THEN a peek lists every dead letter with the flow the collector has for its trace and consumes nothing;
listing and peeking call only read-only actions; destructive commands need ``--yes``.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hopscope.cli import dlq_command
from hopscope.collector.aws import iam
from hopscope.collector.aws.dlq import (
    DeadLetter,
    QueueNotFoundError,
    dead_letter_queues,
    delete_message,
    find_queue,
    peek,
)
from hopscope.collector.store.sqlite.store import SQLiteStore
from tests.helpers.dead_letters import (
    Orders,
    aws_env,
    dlq_cli,
    export_and_settle,
    flow_of_order,
    producer_spans,
    uid_of,
)
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import GlobalSpans

# -- shared with test_redrive.py ---------------------------------------------------------------------------


# -- the tests ---------------------------------------------------------------------------------------------


def test_show_lists_every_dead_letter_with_its_flow_and_consumes_nothing(
    moto: MotoServer,
    spans: GlobalSpans,
    instrumented: None,
    start_collector: Any,
    aws_credentials: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN six orders whose consumer always fails, moved by moto to the DLQ after two receives each,
    # and every span of it in a real collector
    orders = Orders(moto)
    orders.fail_into_dlq(6)
    producers = producer_spans(spans.finished())
    collector = start_collector()
    export_and_settle(spans, collector)
    before = orders.counts(orders.dlq_url)
    assert before == (6, 0)

    # WHEN the dead letters are peeked through the API and shown by the CLI as JSON
    store = SQLiteStore(collector.db, read_only=True)
    try:
        letters = peek(orders.sqs, "orders-dlq", limit=100, flows=store)
    finally:
        store.close()
    code = dlq_command.main(
        [
            "show",
            "orders-dlq",
            "--json",
            "--limit",
            "100",
            "--aws-endpoint-url",
            moto.url,
            "--db",
            str(collector.db),
        ]
    )
    out, err = capsys.readouterr()

    # THEN all six are listed with the flow the collector has for each order, and none was consumed
    assert code == 0
    shown = json.loads(out)["messages"]
    assert err.count("ApproximateReceiveCount") == 1
    assert orders.counts(orders.dlq_url) == before
    with collector.client() as http:
        expected_flows = {uid: flow_of_order(http, uid) for uid in producers}
        for letter in letters:
            uid = uid_of(letter.body)
            assert http.get(f"/api/traces/{letter.trace_id}").status_code == 200
    assert len(set(expected_flows.values())) == 6  # one flow per order: the lookup must pick the right one
    assert sorted(uid_of(letter.body) for letter in letters) == sorted(producers)
    for letter in letters:
        uid = uid_of(letter.body)
        assert letter.flow_id == expected_flows[uid]
        assert letter.trace_id == format(producers[uid].context.trace_id, "032x")
        assert (
            letter.receive_count is not None and letter.receive_count >= 3
        )  # two failures, moto's move, the peek
        assert letter.sent_at is not None and 0 <= (letter.age_seconds() or -1) < 120
        assert letter.message_id == producers[uid].attributes["messaging.message.id"]  # type: ignore[index]
    assert {m["message_id"]: m["flow_id"] for m in shown} == {lt.message_id: lt.flow_id for lt in letters}
    assert all(json.loads(m["body"])["uid"] for m in shown)  # full bodies


def test_a_peek_that_fails_half_way_makes_every_message_visible_again(moto: MotoServer) -> None:
    # GIVEN 25 dead letters, and a network that fails on the second ReceiveMessage
    orders = Orders(moto)
    for number in range(25):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))
    receives: list[str] = []

    def network_down_on_second_receive(model: Any, **kwargs: Any) -> None:
        receives.append(model.name)
        if len(receives) == 2:
            raise ConnectionError("network down")

    orders.sqs.meta.events.register("before-call.sqs.ReceiveMessage", network_down_on_second_receive)

    # WHEN a peek of all of them fails after the first page
    with pytest.raises(ConnectionError):
        peek(orders.sqs, "orders-dlq", limit=25)

    # THEN the ten it had received are visible again at once, not after the visibility timeout
    assert orders.counts(orders.dlq_url) == (25, 0)


def test_peek_finds_the_flow_from_an_sns_envelope_and_from_an_aws_trace_header(moto: MotoServer) -> None:
    # GIVEN a dead letter that is an SNS envelope with trace context in its MessageAttributes, and one that
    # carries only the X-Ray AWSTraceHeader system attribute
    orders = Orders(moto)
    w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-message-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
        "Message": "{}",
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "MessageAttributes": {
            "traceparent": {"Type": "String", "Value": f"00-{w3c_trace}-00f067aa0ba902b7-01"}
        },
    }
    orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps(envelope))
    orders.sqs.send_message(
        QueueUrl=orders.dlq_url,
        MessageBody="plain",
        MessageSystemAttributes={
            "AWSTraceHeader": {
                "DataType": "String",
                "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            }
        },
    )

    class Flows:
        """Stored flows: the W3C trace, the X-Ray trace; asked questions are recorded."""

        def __init__(self) -> None:
            self.asked: list[Any] = []

        def flow_of_trace(self, trace_id: bytes) -> int | None:
            self.asked.append(trace_id.hex())
            return {w3c_trace: 7, "5759e988bd862e3fe1be46a994272793": 9}.get(trace_id.hex())

        def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
            self.asked.append(message_id)
            return None

    # WHEN they are peeked
    flows = Flows()
    letters = {letter.body[:5]: letter for letter in peek(orders.sqs, "orders-dlq", flows=flows)}

    # THEN the envelope's context and the X-Ray Root (even unsampled) name their traces and flows
    assert letters['{"Typ'].trace_id == w3c_trace and letters['{"Typ'].flow_id == 7
    assert letters['{"Typ'].sns_message_id == "sns-message-1"
    assert letters["plain"].trace_id == "5759e988bd862e3fe1be46a994272793" and letters["plain"].flow_id == 9


def test_peek_falls_back_to_the_message_ids_in_stored_spans(moto: MotoServer) -> None:
    # GIVEN an SNS envelope without trace context, whose SNS message id the stored spans know
    orders = Orders(moto)
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-2",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": "x",
    }
    orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps(envelope))

    class Flows:
        def flow_of_trace(self, trace_id: bytes) -> int | None:
            raise AssertionError("no trace context to look up")

        def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None:
            return 4 if message_id == "sns-2" else None

    # WHEN it is peeked / THEN its flow comes from the SNS message id
    (letter,) = peek(orders.sqs, "orders-dlq", flows=Flows())
    assert (letter.trace_id, letter.flow_id) == (None, 4)


def test_listing_and_peeking_call_only_read_only_actions(moto: MotoServer) -> None:
    # GIVEN a DLQ with messages, and every operation the client makes recorded by botocore's own events
    orders = Orders(moto)
    for number in range(12):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))
    operations: list[str] = []
    orders.sqs.meta.events.register("before-call.sqs", lambda model, **_: operations.append(model.name))

    # WHEN the DLQs are listed and one is peeked
    (dlq,) = dead_letter_queues(orders.sqs)
    letters = peek(orders.sqs, "orders-dlq", limit=12)

    # THEN each call is one of the read-only actions (and the peek did receive and restore)
    assert len(letters) == 12 and dlq.visible == 12
    assert {"ListQueues", "GetQueueAttributes", "ReceiveMessage", "ChangeMessageVisibilityBatch"} <= set(
        operations
    )
    for operation in operations:
        assert iam.operation_action("SQS", operation) in iam.READ_ONLY_ACTIONS, operation


def test_listing_finds_each_dlq_with_its_sources_in_calls_that_grow_with_queues_not_messages(
    moto: MotoServer,
) -> None:
    # GIVEN two queues sending to one DLQ, a third with its own, and an unrelated queue
    sqs = moto.client("sqs")
    urls = {
        name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("shared-dlq", "solo-dlq", "plain")
    }
    arn = {
        n: sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for n, u in urls.items()
    }
    for name, target, count in (
        ("billing", "shared-dlq", 3),
        ("shipping", "shared-dlq", 5),
        ("audit", "solo-dlq", 1),
    ):
        policy = json.dumps({"deadLetterTargetArn": arn[target], "maxReceiveCount": count})
        sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})
    calls: list[str] = []
    sqs.meta.events.register("before-call.sqs", lambda model, **_: calls.append(model.name))

    # WHEN they are listed, before and after 40 messages arrive in a DLQ
    first = dead_letter_queues(sqs)
    calls_before = len(calls)
    for number in range(40):
        sqs.send_message(QueueUrl=urls["shared-dlq"], MessageBody=str(number))
    calls.clear()
    second = dead_letter_queues(sqs)

    # THEN each DLQ is listed with its count and its sources, and the call count did not grow
    assert [(d.queue.name, d.visible) for d in first] == [("shared-dlq", 0), ("solo-dlq", 0)]
    assert [(d.queue.name, d.visible) for d in second] == [("shared-dlq", 40), ("solo-dlq", 0)]
    assert [(s.name, s.max_receive_count) for s in second[0].sources] == [("billing", 3), ("shipping", 5)]
    assert len(calls) == calls_before == 1 + 6  # ListQueues + one GetQueueAttributes per queue
    # with a prefix, the DLQs that the queues under it name, even a DLQ outside the prefix
    (shipping,) = dead_letter_queues(sqs, prefix="ship")
    assert (shipping.queue.name, [s.name for s in shipping.sources]) == ("shared-dlq", ["shipping"])
    assert [d.queue.name for d in dead_letter_queues(sqs, prefix="audit")] == ["solo-dlq"]


def test_destructive_commands_refuse_without_yes_in_a_non_interactive_shell(moto: MotoServer) -> None:
    # GIVEN a DLQ with three messages
    orders = Orders(moto)
    for number in range(3):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))
    (letter, *_) = peek(orders.sqs, "orders-dlq")
    common = ["--aws-endpoint-url", moto.url]

    # WHEN redrive, delete and purge run without --yes, stdin not a terminal
    for command in (
        ["redrive", "orders-dlq"],
        ["delete", "orders-dlq", letter.message_id],
        ["purge", "orders-dlq"],
    ):
        result = subprocess.run(
            [*dlq_cli(), *command, *common],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=aws_env(),
            timeout=60,
        )
        # THEN each refuses with exit 2 and one line naming --yes, and nothing changed
        assert result.returncode == 2, result.stderr
        assert "--yes" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert orders.counts(orders.dlq_url) == (3, 0)
    assert orders.counts(orders.url) == (0, 0)


def test_delete_yes_deletes_exactly_that_message(
    moto: MotoServer, aws_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a DLQ with five messages
    orders = Orders(moto)
    for number in range(5):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))
    victim = next(lt for lt in peek(orders.sqs, "orders-dlq", limit=5) if json.loads(lt.body)["uid"] == 3)

    # WHEN one is deleted by its id
    code = dlq_command.main(
        ["delete", "orders-dlq", victim.message_id, "--yes", "--aws-endpoint-url", moto.url]
    )

    # THEN only that one is gone, the others are visible, and a second delete finds nothing
    assert code == 0
    assert victim.message_id in capsys.readouterr().out
    assert orders.counts(orders.dlq_url) == (4, 0)
    assert sorted(json.loads(m["Body"])["uid"] for m in orders.drain(orders.dlq_url)) == [0, 1, 2, 4]
    assert not delete_message(orders.sqs, "orders-dlq", victim.message_id)


def test_purge_yes_empties_the_queue(moto: MotoServer, aws_credentials: None) -> None:
    # GIVEN a DLQ with messages, and its source queue with one of its own
    orders = Orders(moto)
    for number in range(7):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=str(number))
    orders.sqs.send_message(QueueUrl=orders.url, MessageBody="keep me")

    # WHEN the DLQ is purged with --yes
    code = dlq_command.main(["purge", "orders-dlq", "--yes", "--aws-endpoint-url", moto.url])

    # THEN it is empty, and no other queue was touched
    assert code == 0
    assert orders.counts(orders.dlq_url) == (0, 0)
    assert orders.counts(orders.url) == (1, 0)


def test_list_and_show_print_tables(
    moto: MotoServer, aws_credentials: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # GIVEN a DLQ with two messages and no hopscope database
    orders = Orders(moto)
    for number in range(2):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=json.dumps({"uid": number}))
    common = ["--aws-endpoint-url", moto.url, "--db", str(tmp_path / "missing.db")]

    # WHEN the DLQs are listed and the DLQ is shown
    assert dlq_command.main(["list", *common]) == 0
    listing = capsys.readouterr().out
    assert dlq_command.main(["show", "orders-dlq", *common]) == 0
    shown = capsys.readouterr().out

    # THEN the listing names the DLQ, its count, its source and maxReceiveCount; the messages show whole ids
    # and "-" for flows (no database is not an error)
    row = next(line for line in listing.splitlines() if "orders-dlq" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["orders-dlq", "2", "0", "orders", "2"]
    letters = peek(orders.sqs, "orders-dlq")
    for letter in letters:
        line = next(line for line in shown.splitlines() if letter.message_id in line)
        assert [cell.strip() for cell in line.strip("│ ").split("│")][3] == "-"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["show", "no-such-queue"], "no queue 'no-such-queue'"),
        (["list", "--aws-endpoint-url", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
        (["delete", "no-such-queue", "m-1", "--yes"], "no queue 'no-such-queue'"),
    ],
)
def test_errors_are_one_line_without_a_traceback(
    moto: MotoServer,
    aws_credentials: None,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: str,
) -> None:
    # GIVEN a command that cannot succeed / WHEN it runs
    if "--aws-endpoint-url" not in argv:
        argv = [*argv, "--aws-endpoint-url", moto.url]
    code = dlq_command.main(argv)

    # THEN it exits non-zero with one line on stderr
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_missing_credentials_are_one_line(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # GIVEN no AWS credentials anywhere boto3 looks
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    # WHEN a command needs them / THEN one line says so
    assert dlq_command.main(["list", "--aws-endpoint-url", moto.url]) == 1
    err = capsys.readouterr().err
    assert "no AWS credentials" in err and len(err.strip().splitlines()) == 1


def test_find_queue_accepts_a_name_a_url_and_an_arn(moto: MotoServer) -> None:
    orders = Orders(moto)
    by_name = find_queue(orders.sqs, "orders-dlq")
    assert find_queue(orders.sqs, orders.dlq_url) == by_name == find_queue(orders.sqs, orders.dlq_arn)
    assert (by_name.name, by_name.arn) == ("orders-dlq", orders.dlq_arn)
    with pytest.raises(QueueNotFoundError):
        find_queue(orders.sqs, "nope")


def test_dead_letter_json_encodes_binary_attributes(moto: MotoServer) -> None:
    orders = Orders(moto)
    orders.sqs.send_message(
        QueueUrl=orders.dlq_url,
        MessageBody="x",
        MessageAttributes={"raw": {"DataType": "Binary", "BinaryValue": b"\x00\xff"}},
    )
    (letter,) = peek(orders.sqs, "orders-dlq")
    assert isinstance(letter, DeadLetter)
    document = json.loads(json.dumps(letter.to_json()))
    assert document["message_attributes"]["raw"] == {"DataType": "Binary", "BinaryValue": "AP8="}


@pytest.mark.parametrize(("answer", "code", "left"), [("no", 1, 4), ("yes", 0, 0)])
def test_on_a_terminal_purge_asks_and_only_yes_goes_ahead(
    moto: MotoServer, answer: str, code: int, left: int
) -> None:
    # GIVEN a DLQ with four messages, and a command whose stdin is a real pseudo-terminal
    orders = Orders(moto)
    for number in range(4):
        orders.sqs.send_message(QueueUrl=orders.dlq_url, MessageBody=str(number))
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*dlq_cli(), "purge", "orders-dlq", "--aws-endpoint-url", moto.url],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=aws_env(),
        )
        # WHEN the user types the answer at the prompt
        os.write(controller, f"{answer}\n".encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)

    # THEN it asked, and only "yes" purged the queue
    assert "type yes to delete every message of orders-dlq" in out
    assert proc.returncode == code, err
    assert orders.counts(orders.dlq_url) == (left, 0)
