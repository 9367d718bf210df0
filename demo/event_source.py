"""What Lambda does between a queue and a function, done locally against the moto server.

``QueueSource`` is an SQS event source mapping with report-batch-item-failures: long-poll, invoke with an
event of the real shape, delete what succeeded, leave the ``batchItemFailures`` to be redelivered.
``SnsSource`` is SNS invoking a subscribed function: each notification, read from the hidden queue that
receives the topic's envelopes, becomes one SNS event; it is deleted after the call (no retries).

The runner's own ReceiveMessage/DeleteMessage calls run inside ``suppress_instrumentation()``: Lambda's
polling is not the function's work, so it makes no spans even though ``instrument_boto3()`` is on in the
process for the function's publishers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation

from hopscope.demo.lambda_runtime import LambdaContext, sns_event_from_envelope, sqs_event

log = logging.getLogger("hopscope.demo")

Handler = Callable[[dict[str, Any], Any], Any]
WAIT_SECONDS = 1  # long poll; bounds how long a stop takes


def _receive(sqs: Any, queue_url: str, batch_size: int) -> list[dict[str, Any]]:
    with suppress_instrumentation():
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            WaitTimeSeconds=WAIT_SECONDS,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
    return list(messages)


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    if not messages:
        return
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    with suppress_instrumentation():
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def _invoke(handler: Handler, event: dict[str, Any], function_name: str) -> Any:
    """Call the handler as Lambda would; an exception fails the whole invocation, as in Lambda."""
    try:
        return handler(event, LambdaContext(function_name=function_name))
    except Exception:
        log.exception("%s failed", function_name)
        return None


@dataclass
class QueueSource:
    """An SQS event source mapping (batch size, report-batch-item-failures) for one function."""

    sqs: Any
    queue_url: str
    queue_arn: str
    handler: Handler
    function_name: str
    batch_size: int = 10

    def poll_once(self) -> int:
        """One receive and invocation; the number of messages it handled."""
        messages = _receive(self.sqs, self.queue_url, self.batch_size)
        if not messages:
            return 0
        result = _invoke(self.handler, sqs_event(messages, self.queue_arn), self.function_name)
        if result is None:  # the invocation failed: every message comes back after its visibility timeout
            return len(messages)
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        _delete(self.sqs, self.queue_url, [m for m in messages if m["MessageId"] not in failed])
        return len(messages)


@dataclass
class SnsSource:
    """SNS invoking a subscribed function with one notification per event."""

    sqs: Any
    delivery_queue_url: str
    subscription_arn: str
    handler: Handler
    function_name: str

    def poll_once(self) -> int:
        messages = _receive(self.sqs, self.delivery_queue_url, 10)
        for message in messages:
            event = sns_event_from_envelope(json.loads(message["Body"]), self.subscription_arn)
            _invoke(self.handler, event, self.function_name)
        _delete(self.sqs, self.delivery_queue_url, messages)
        return len(messages)


def run_until(source: QueueSource | SnsSource, stop: threading.Event) -> None:
    """Poll until ``stop`` is set; an AWS error (e.g. the moto server going away) is logged, not fatal."""
    while not stop.is_set():
        try:
            source.poll_once()
        except Exception:
            log.warning("%s: polling failed", source.function_name, exc_info=True)
            stop.wait(1)
