"""Lambda's side of an invocation, outside Lambda: the context object and events of the real shapes.

The events carry the same keys as AWS's (the fixtures in tests/fixtures/lambda-events are real samples),
built from what SQS's ReceiveMessage returns, so a handler cannot tell them from the real thing.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"


@dataclass
class ClientContext:
    custom: dict[str, str] = field(default_factory=dict)


@dataclass
class LambdaContext:
    """The attributes of the runtime's ``LambdaContext`` that handlers read."""

    function_name: str = "orders-api"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_context: ClientContext | None = None
    timeout_seconds: float = 30.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}:live"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_seconds * 1000)


def sqs_record(message: dict[str, Any], queue_arn: str, region: str = REGION) -> dict[str, Any]:
    """A Lambda SQS record (the keys of the real samples) from a boto3 ReceiveMessage message."""
    attributes: dict[str, Any] = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        converted: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            converted["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        attributes[name] = converted
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {"Records": [sqs_record(message, queue_arn) for message in messages]}


def sns_event_from_envelope(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The SNS -> Lambda event that carries the same notification as an SQS envelope delivery."""
    sns = {
        "Type": envelope["Type"],
        "MessageId": envelope["MessageId"],
        "TopicArn": envelope["TopicArn"],
        "Subject": envelope.get("Subject"),
        "Message": envelope["Message"],
        "Timestamp": envelope["Timestamp"],
        "SignatureVersion": envelope.get("SignatureVersion", "1"),
        "Signature": envelope.get("Signature", ""),
        "SigningCertUrl": envelope.get("SigningCertURL", ""),
        "UnsubscribeUrl": envelope.get("UnsubscribeURL", ""),
        "MessageAttributes": envelope.get("MessageAttributes", {}),
    }
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": sns,
            }
        ]
    }
