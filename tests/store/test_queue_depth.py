"""The SQS poller against a real moto server over HTTP: depth series, redrive graph, errors, least privilege.

GIVEN queues on the moto server, WHEN the poller polls, THEN the store holds exactly what
GetQueueAttributes reported, and the query API serves it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hopscope.collector.aws import iam
from hopscope.collector.aws.clients import aws_client
from hopscope.collector.aws.poller import QueuePoller
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.settings import SqsSettings
from tests.helpers.moto_server import MotoServer, start_moto_server
from tests.helpers.servers import CollectorProcess, free_port

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's own credential chain, as in production; moto accepts any key."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def store(new_store: Callable[..., Any]) -> Any:
    """Part of the shared store suite: the poller's series and summaries on SQLite and on ClickHouse."""
    return new_store("hopscope")


def poller_for(moto: MotoServer, store: Any, **settings: Any) -> QueuePoller:
    return QueuePoller(store, SqsSettings(endpoint_url=moto.url, **settings))


def make_queues(moto: MotoServer) -> dict[str, str]:
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName="shipping-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    shipping = sqs.create_queue(
        QueueName="shipping", Attributes={"VisibilityTimeout": "2", "RedrivePolicy": policy}
    )["QueueUrl"]
    billing = sqs.create_queue(QueueName="billing")["QueueUrl"]
    return {"shipping": shipping, "shipping-dlq": dlq, "billing": billing}


def reported(moto: MotoServer, url: str) -> tuple[int, int, int]:
    attributes = moto.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS)["Attributes"]
    return tuple(int(attributes[name]) for name in COUNTS)  # type: ignore[return-value]


def test_the_depth_series_follows_a_scripted_load_exactly(moto: MotoServer, store: Any) -> None:
    urls = make_queues(moto)
    sqs = moto.client("sqs")
    poller = poller_for(moto, store)
    expected: list[tuple[int, int, int]] = []

    def poll() -> None:
        poller.poll_once()
        expected.append(reported(moto, urls["shipping"]))

    poll()  # empty
    for number in range(5):
        sqs.send_message(QueueUrl=urls["shipping"], MessageBody=f"order {number}")
    poll()  # 5 visible
    sqs.receive_message(QueueUrl=urls["shipping"], MaxNumberOfMessages=2)
    poll()  # 3 visible, 2 in flight
    sqs.send_message(QueueUrl=urls["shipping"], MessageBody="later", DelaySeconds=60)
    poll()  # and 1 delayed
    time.sleep(2.2)  # the visibility timeout of the 2 in flight expires
    poll()  # 5 visible again, 1 delayed
    assert expected == [(0, 0, 0), (5, 0, 0), (3, 2, 0), (3, 2, 1), (5, 0, 1)]
    series = QueryLayer(store).queue_depth("shipping", 0, time.time_ns() + 1)
    assert series is not None
    samples, truncated = series
    assert not truncated
    assert [(s.visible, s.in_flight, s.delayed) for s in samples] == expected


def test_queues_know_their_dead_letter_queue_and_sources(moto: MotoServer, store: Any) -> None:
    make_queues(moto)
    poller_for(moto, store).poll_once()
    queues = {q.name: q for q in QueryLayer(store).queues()}
    assert set(queues) == {"shipping", "shipping-dlq", "billing"}
    assert (queues["shipping"].dlq_name, queues["shipping"].max_receive_count) == ("shipping-dlq", 3)
    assert queues["shipping-dlq"].sources == ["shipping"] and queues["shipping-dlq"].is_dead_letter_queue
    assert queues["billing"].dlq_name is None and not queues["billing"].is_dead_letter_queue


def test_the_oldest_age_is_estimated_on_dead_letter_queues_only_where_cloudwatch_has_none(
    moto: MotoServer, store: Any
) -> None:
    urls = make_queues(moto)
    sqs = moto.client("sqs")
    for queue in ("billing", "shipping", "shipping-dlq"):
        sqs.send_message(QueueUrl=urls[queue], MessageBody="x")
    time.sleep(1.1)
    result = poller_for(moto, store).poll_once()
    ages = {s.queue_name: (s.oldest_age_seconds, s.age_source) for s in result.samples}
    assert ages["shipping-dlq"][1] == "estimate" and ages["shipping-dlq"][0] >= 1.0  # type: ignore[operator]
    # a peek raises the receive count: on a working queue it would pass for a retry, or push a message
    # towards its DLQ, so those are never peeked
    assert ages["shipping"] == (None, None) and ages["billing"] == (None, None)
    for queue in ("shipping", "billing"):
        received = sqs.receive_message(QueueUrl=urls[queue], MessageSystemAttributeNames=["All"])["Messages"]
        assert received[0]["Attributes"]["ApproximateReceiveCount"] == "1"


def test_a_deleted_queue_records_its_error_and_the_others_are_still_polled(
    moto: MotoServer, store: Any
) -> None:
    urls = make_queues(moto)
    poller = poller_for(moto, store)
    poller.poll_once()
    moto.client("sqs").delete_queue(QueueUrl=urls["billing"])
    moto.client("sqs").send_message(QueueUrl=urls["shipping"], MessageBody="x")
    result = poller.poll_once()
    errors = {q.name: q.error for q in result.queues}
    assert errors["billing"] is not None and "NonExistentQueue" in errors["billing"]
    assert errors["shipping"] is None and errors["shipping-dlq"] is None
    queues = {q.name: q for q in QueryLayer(store).queues()}
    assert queues["billing"].last_error == errors["billing"]
    assert queues["shipping"].latest is not None and queues["shipping"].latest.visible == 1


def test_a_forbidden_queue_records_access_denied_and_the_others_are_still_polled(
    tmp_path: Path, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a moto server that enforces IAM after the set-up calls, and a poller whose user may not read
    # one queue's attributes
    server = start_moto_server(free_port(), {"INITIAL_NO_AUTH_ACTION_COUNT": "6"})
    try:
        sqs, iam_client = server.client("sqs"), server.client("iam")
        sqs.create_queue(QueueName="open")
        sqs.create_queue(QueueName="secret")
        iam_client.create_user(UserName="poller")
        key = iam_client.create_access_key(UserName="poller")["AccessKey"]
        deny_one = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": ["sqs:*", "cloudwatch:*"], "Resource": "*"},
                {"Effect": "Deny", "Action": "sqs:GetQueueAttributes", "Resource": "arn:aws:sqs:*:*:secret"},
            ],
        }
        iam_client.put_user_policy(UserName="poller", PolicyName="poll", PolicyDocument=json.dumps(deny_one))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        # WHEN it polls
        result = QueuePoller(store, SqsSettings(endpoint_url=server.url)).poll_once()
    finally:
        server.stop()
    # THEN the forbidden queue has its error, and the other one its sample
    errors = {q.name: q.error for q in result.queues}
    assert errors["secret"] is not None and "not authorized" in errors["secret"]
    assert errors["open"] is None
    assert [s.queue_name for s in result.samples] == ["open"]


def test_the_prefix_limits_discovery(moto: MotoServer, store: Any) -> None:
    make_queues(moto)
    result = poller_for(moto, store, queue_prefix="ship").poll_once()
    assert sorted(q.name for q in result.queues) == ["shipping", "shipping-dlq"]


def test_api_calls_grow_with_queues_not_messages(moto: MotoServer, store: Any) -> None:
    urls = make_queues(moto)
    sqs = moto.client("sqs")
    for url in urls.values():
        sqs.send_message(QueueUrl=url, MessageBody="first")
    poller = poller_for(moto, store)
    few = poller.poll_once().api_calls
    for url in urls.values():
        for start in range(0, 50, 10):
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": "more"} for i in range(start, start + 10)],
            )
    many = poller.poll_once().api_calls
    assert few == many
    sqs.create_queue(QueueName="audit")
    assert poller.poll_once().api_calls == many + 1  # one more GetQueueAttributes


def test_the_poller_needs_only_the_read_only_policy(moto: MotoServer, store: Any) -> None:
    urls = make_queues(moto)
    moto.client("sqs").send_message(QueueUrl=urls["billing"], MessageBody="x")
    called: set[str] = set()

    def factory(service: str, endpoint_url: str | None, region: str | None) -> Any:
        client = aws_client(service, endpoint_url, region)

        def record(model: Any, **_: Any) -> None:
            called.add(iam.operation_action(model.service_model.service_id, model.name))

        client.meta.events.register("before-call", record)
        return client

    QueuePoller(store, SqsSettings(endpoint_url=moto.url), client_factory=factory).poll_once()
    assert {"sqs:ListQueues", "sqs:GetQueueAttributes", "cloudwatch:GetMetricData"} <= called
    assert called <= set(iam.READ_ONLY_ACTIONS), called - set(iam.READ_ONLY_ACTIONS)


def test_the_readme_gives_both_iam_policies() -> None:
    assert iam.policy(iam.READ_ONLY_ACTIONS) in README
    assert iam.policy(iam.READ_ONLY_ACTIONS + iam.REDRIVE_ACTIONS) in README


def test_the_collector_polls_with_sqs_and_serves_the_queues(moto: MotoServer, start_collector: Any) -> None:
    urls = make_queues(moto)
    moto.client("sqs").send_message(QueueUrl=urls["shipping"], MessageBody="x")
    collector: CollectorProcess = start_collector(
        "--sqs", "--aws-endpoint-url", moto.url, "--sqs-interval", "1s"
    )
    http = collector.client()
    deadline = time.monotonic() + 20
    queues: dict[str, Any] = {}
    while time.monotonic() < deadline and len(queues) < 3:
        queues = {q["name"]: q for q in http.get("/api/queues").json()["queues"]}
        time.sleep(0.3)
    assert queues["shipping"]["visible"] == 1
    assert queues["shipping"]["dead_letter_queue"] == "shipping-dlq"
    assert queues["shipping-dlq"]["sources"] == ["shipping"]
    depth = http.get("/api/queues/shipping/depth").json()
    assert depth["samples"] and depth["samples"][-1]["visible"] == 1
    assert http.get("/api/queues/nope/depth").status_code == 404
    assert http.get("/api/queues/shipping/depth?since=soon").status_code == 400
