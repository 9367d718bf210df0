"""An instrumented order shop whose messages end in dead-letter queues, and `hopscope dlq`'s command line."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

from hopscope.instrumentation import (
    process_batch,
    record_payload,
    set_correlation_id,
    traced_handler,
)
from tests.helpers.lambda_shapes import LambdaContext, sqs_event
from tests.helpers.moto_server import MotoServer
from tests.helpers.servers import HOPSCOPE, CollectorProcess, GlobalSpans


def dlq_cli() -> list[str]:
    """The ``hopscope dlq`` console command, as a user runs it."""
    return [HOPSCOPE, "dlq"]


def aws_env(**extra: str) -> dict[str, str]:
    """The environment of a ``hopscope dlq`` subprocess: throwaway credentials, no auth token."""
    env = {k: v for k, v in os.environ.items() if k != "HOPSCOPE_AUTH_TOKEN"}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    env.update(extra)
    return env


def uid_of(body: str) -> str:
    return str(json.loads(body)["uid"])


@dataclass
class Orders:
    """``orders`` (VisibilityTimeout 1, maxReceiveCount 2) and its dead-letter queue ``orders-dlq``."""

    moto: MotoServer
    max_receive_count: int = 2
    sqs: Any = None
    url: str = ""
    arn: str = ""
    dlq_url: str = ""
    dlq_arn: str = ""
    # uid -> the message attributes the consumer first received (the originals)
    first_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sqs = self.moto.client("sqs")
        self.dlq_url = self.sqs.create_queue(QueueName="orders-dlq")["QueueUrl"]
        self.dlq_arn = self.arn_of(self.dlq_url)
        policy = {"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": self.max_receive_count}
        self.url = self.sqs.create_queue(
            QueueName="orders",
            Attributes={"VisibilityTimeout": "1", "RedrivePolicy": json.dumps(policy)},
        )["QueueUrl"]
        self.arn = self.arn_of(self.url)

    def arn_of(self, url: str) -> str:
        return str(
            self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        )

    def counts(self, url: str) -> tuple[int, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def produce(self, count: int) -> None:
        """Each order in its own checkout trace with its own correlation id, sent by instrumented boto3."""
        tracer = trace.get_tracer("test")
        for number in range(count):
            with tracer.start_as_current_span("checkout"):
                set_correlation_id(f"order-{number}")
                self.sqs.send_message(QueueUrl=self.url, MessageBody=json.dumps({"uid": f"order-{number}"}))

    def consume(self, fail: bool, until: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """Lambda's loop, one message per invocation: receive, run the handler, delete what succeeded."""

        @traced_handler
        def handler(event: dict[str, Any], context: Any) -> Any:
            def record_handler(record: dict[str, Any]) -> None:
                if fail:
                    raise RuntimeError(f"cannot bill {record_payload(record)['uid']}")

            return process_batch(event, record_handler)

        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"gave up waiting; counts {self.counts(self.url)}"
            answer = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            for message in answer.get("Messages", []):
                received.append(message)
                self.first_attributes.setdefault(
                    uid_of(message["Body"]), message.get("MessageAttributes", {})
                )
                response = handler(sqs_event([message], self.arn), LambdaContext(function_name="billing"))
                if not response["batchItemFailures"]:
                    self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return received

    def fail_into_dlq(self, count: int) -> None:
        self.produce(count)
        self.consume(fail=True, until=lambda: self.counts(self.dlq_url)[0] == count)

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Every message of a queue (consumed), for checks."""
        messages: list[dict[str, Any]] = []
        while True:
            page = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not page:
                return messages
            messages.extend(page)


def export_and_settle(spans: GlobalSpans, collector: CollectorProcess) -> None:
    """Every span recorded so far, through the real OTLP exporter; then wait until the flows are stitched."""
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")
    assert exporter.export(spans.finished()) is SpanExportResult.SUCCESS
    spans.exporter.clear()
    wait_for_flows(collector)


def wait_for_flows(collector: CollectorProcess) -> None:
    collector.wait_for_flows()


def producer_spans(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """order uid -> its ``send orders`` PRODUCER span."""
    return {
        str((s.attributes or {})["hopscope.correlation_id"]): s
        for s in spans
        if s.kind is SpanKind.PRODUCER and s.name == "send orders"
    }


def flow_of_order(http: httpx.Client, uid: str) -> int:
    (flow,) = http.get("/api/flows", params={"correlation_id": uid}).json()["flows"]
    return int(flow["flow_id"])
