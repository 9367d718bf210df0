"""The one AWS error classifier on errors as botocore raises them: a real boto3 client calling a real
endpoint on 127.0.0.1 (a moto server, or a small server answering SQS's error wire format), an endpoint
that refuses connections, and no credentials at all.

GIVEN a failing call, WHEN its exception is classified, THEN the kind, code and message are what the
callers (the DLQ commands, redrive, the poller) rely on.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from hopscope.collector.aws.dlq import is_missing_queue
from hopscope.collector.aws.errors import AwsError, AwsErrorKind, classify
from hopscope.collector.aws.redrive import move_task_unsupported
from tests.helpers.moto_server import MotoServer

NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2, read_timeout=5)


def _client(endpoint_url: str, **credentials: str) -> Any:
    keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint_url, region_name="us-east-1", config=NO_RETRIES, **keys
    )


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


class _Answer(BaseHTTPRequestHandler):
    """Answers every POST with ``answer``: (status, headers, body), as an SQS endpoint would."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()
    thread.join(10)


def _sqs_error(type_: str, message: str, query_error: str | None) -> tuple[dict[str, str], bytes]:
    """SQS's JSON-protocol error: ``__type`` and the query-protocol code in ``x-amzn-query-error``."""
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "req-1"}
    if query_error:
        headers["x-amzn-query-error"] = query_error
    return headers, json.dumps({"__type": type_, "message": message}).encode()


ANSWERS = [
    # (HTTP status, __type, message, x-amzn-query-error) -> (kind, code, describe())
    pytest.param(
        400,
        "com.amazonaws.sqs#QueueDoesNotExist",
        "The specified queue does not exist.",
        "AWS.SimpleQueueService.NonExistentQueue;Sender",
        AwsErrorKind.MISSING_QUEUE,
        "AWS.SimpleQueueService.NonExistentQueue",
        id="missing queue",
    ),
    pytest.param(
        403,
        "com.amazonaws.sqs#PurgeQueueInProgress",
        "Only one PurgeQueue operation on orders-dlq is allowed every 60 seconds.",
        "AWS.SimpleQueueService.PurgeQueueInProgress;Sender",
        AwsErrorKind.PURGE_IN_PROGRESS,
        "AWS.SimpleQueueService.PurgeQueueInProgress",
        id="purge in progress",
    ),
    pytest.param(
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate exceeded",
        "RequestThrottled;Sender",
        AwsErrorKind.THROTTLED,
        "RequestThrottled",
        id="throttled",
    ),
    pytest.param(
        403,
        "com.amazon.coral.service#AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/poller is not authorized to perform: sqs:GetQueueUrl",
        "AccessDenied;Sender",
        AwsErrorKind.ACCESS_DENIED,
        "AccessDenied",
        id="access denied",
    ),
    pytest.param(
        400,
        "com.amazonaws.sqs#InvalidMessageContents",
        "Invalid characters found.",
        "InvalidMessageContents;Sender",
        AwsErrorKind.MESSAGE_REFUSED,
        "InvalidMessageContents",
        id="message refused",
    ),
    pytest.param(
        501,
        "InternalFailure",
        "API action 'GetQueueUrl' for service 'sqs' not yet implemented or pro feature",
        None,
        AwsErrorKind.UNSUPPORTED_OPERATION,
        "InternalFailure",
        id="unsupported: LocalStack's 501",
    ),
    pytest.param(
        400,
        "com.amazon.coral.service#UnknownOperationException",
        "",
        None,
        AwsErrorKind.UNSUPPORTED_OPERATION,
        "UnknownOperationException",
        id="unsupported: an unknown-action code",
    ),
    pytest.param(
        500,
        "com.amazon.coral.service#InternalFailure",
        "",
        None,
        AwsErrorKind.OTHER,
        "InternalFailure",
        id="other: an AWS 500 is not an unsupported operation",
    ),
]


@pytest.mark.parametrize(("status", "type_", "message", "query_error", "kind", "code"), ANSWERS)
def test_an_answer_is_classified_by_its_codes(
    endpoint: tuple[str, type[_Answer]],
    status: int,
    type_: str,
    message: str,
    query_error: str | None,
    kind: AwsErrorKind,
    code: str,
) -> None:
    # GIVEN an endpoint answering SQS's error wire format, and a real boto3 client calling it
    url, handler = endpoint
    headers, body = _sqs_error(type_, message, query_error)
    handler.answer = (status, headers, body)
    # WHEN the call fails and botocore raises its ClientError
    error = _raised(lambda: _client(url).get_queue_url(QueueName="orders"))
    assert isinstance(error, ClientError)
    # THEN the classifier reads its kind, code and message, and the one line a person is shown
    assert classify(error) == AwsError(kind, code, message, answered=True, status=status)
    assert classify(error).describe() == (f"{code}: {message}" if message else code)
    assert is_missing_queue(error) is (kind is AwsErrorKind.MISSING_QUEUE)
    assert move_task_unsupported(error) is (kind is AwsErrorKind.UNSUPPORTED_OPERATION)


def test_a_missing_queue_on_moto_is_missing_and_its_bare_500_is_an_unsupported_operation(
    moto: MotoServer,
) -> None:
    # GIVEN a real moto server
    sqs = moto.client("sqs")
    # WHEN a queue that does not exist is asked for
    missing = classify(_raised(lambda: sqs.get_queue_url(QueueName="no-such-queue")))
    # THEN it is a missing queue, by moto's code
    assert missing.kind is AwsErrorKind.MISSING_QUEUE
    assert missing.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert missing.message == "The specified queue does not exist."
    # WHEN an operation moto does not implement is called, THEN its HTML 500 page means "unsupported"
    arn = "arn:aws:sqs:us-east-1:123456789012:orders"
    unsupported = classify(_raised(lambda: sqs.start_message_move_task(SourceArn=arn)))
    assert (unsupported.kind, unsupported.code, unsupported.status) == (
        AwsErrorKind.UNSUPPORTED_OPERATION,
        "500",
        500,
    )


def test_an_endpoint_that_refuses_connections_is_unreachable() -> None:
    # GIVEN a port on 127.0.0.1 that is bound but not listening
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        # WHEN a real client calls it
        error = _raised(lambda: _client(url).list_queues())
    # THEN botocore's EndpointConnectionError is "endpoint unreachable", naming the endpoint
    assert isinstance(error, EndpointConnectionError)
    classified = classify(error)
    assert classified.kind is AwsErrorKind.ENDPOINT_UNREACHABLE
    assert (classified.code, classified.answered) == ("EndpointConnectionError", False)
    assert classified.endpoint_url == url + "/"
    assert classified.describe() == f"cannot reach {url}/"


def test_no_credentials_anywhere_is_credentials_missing(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN no AWS credentials anywhere boto3 looks
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sqs = boto3.session.Session().client(
        "sqs", endpoint_url=moto.url, region_name="us-east-1", config=NO_RETRIES
    )
    # WHEN a call needs them
    error = _raised(sqs.list_queues)
    # THEN botocore's NoCredentialsError is "credentials missing", with the line that says what to set
    assert isinstance(error, NoCredentialsError)
    classified = classify(error)
    assert (classified.kind, classified.code) == (AwsErrorKind.CREDENTIALS_MISSING, "NoCredentialsError")
    assert classified.describe() == (
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    )


def test_an_error_that_is_not_aws_is_other_with_its_class_and_text() -> None:
    classified = classify(KeyError("QueueUrl"))
    assert classified == AwsError(AwsErrorKind.OTHER, "KeyError", "'QueueUrl'", answered=False)
    assert classified.describe() == "'QueueUrl'"
