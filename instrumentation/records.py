"""One record of a batch event (SQS, SNS, Kinesis, DynamoDB), read the same way whatever its envelope.

A record says where it came from, which message it is, how long it waited, how often it was received,
which producer sent it (its trace context) and what the application sent (its payload).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from opentelemetry import context

from hopscope.instrumentation import carriers
from hopscope.instrumentation.conventions import (
    AWS_TRACE_HEADER,
    EVENTBRIDGE_DETAIL_KEY,
    SYSTEM_DYNAMODB,
    SYSTEM_KINESIS,
    SYSTEM_SNS,
    SYSTEM_SQS,
)

SQS = "aws:sqs"
SNS = "aws:sns"
KINESIS = "aws:kinesis"
DYNAMODB = "aws:dynamodb"
S3 = "aws:s3"

# The producer contexts that the invocation span already read from its event's records, so that
# process_batch reuses them (no second parse, no second warning for a malformed value).
_KNOWN_PRODUCERS = context.create_key("hopscope-record-producers")
KnownProducers = dict[int, tuple[Mapping[str, Any], context.Context]]


def with_known_producers(ctx: context.Context, known: KnownProducers) -> context.Context:
    """``ctx`` remembering the producer contexts read for these records (keyed by the record object)."""
    return context.set_value(_KNOWN_PRODUCERS, known, ctx) if known else ctx


_SYSTEMS = {
    SQS: SYSTEM_SQS,
    SNS: SYSTEM_SNS,
    KINESIS: SYSTEM_KINESIS,
    DYNAMODB: SYSTEM_DYNAMODB,
    S3: "aws.s3",
}


def event_source(record: Any) -> str | None:
    """``aws:sqs``, ``aws:sns``, ``aws:kinesis``, ``aws:dynamodb``, ``aws:s3``, or None."""
    if not isinstance(record, Mapping):
        return None
    source = record.get("eventSource") or record.get("EventSource")
    return source if isinstance(source, str) else None


def _name_from_arn(arn: Any) -> str | None:
    """The resource name of an ARN: queue and topic after the last ':', stream and table after 'type/'."""
    if not isinstance(arn, str) or not arn:
        return None
    resource = arn.split(":", 5)[-1]
    if "/" in resource:  # stream/NAME, table/NAME/stream/DATE
        return resource.split("/")[1]
    return resource


def _iso_to_unix_ms(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _json_object(text: Any) -> dict[str, Any] | None:
    if isinstance(text, dict):  # some test harnesses hand the body over already decoded
        return text
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _is_sns_envelope(body: Mapping[str, Any]) -> bool:
    return body.get("Type") == "Notification" and "TopicArn" in body and "Message" in body


def _is_eventbridge_event(body: Mapping[str, Any]) -> bool:
    return "detail-type" in body and "source" in body and "detail" in body


@dataclass(frozen=True)
class MessageRecord:
    """A view of one Lambda event record; computed fields are read once, on first use."""

    raw: Mapping[str, Any]
    source: str

    @classmethod
    def of(cls, record: Any) -> MessageRecord | None:
        source = event_source(record)
        return None if source is None else cls(record, source)

    @property
    def system(self) -> str:
        return _SYSTEMS.get(self.source, self.source.replace(":", "."))

    @cached_property
    def body_object(self) -> dict[str, Any] | None:
        """An SQS body that is a JSON object (an SNS envelope, an EventBridge event, an S3 notification)."""
        return _json_object(self.raw.get("body")) if self.source == SQS else None

    @property
    def sns(self) -> Mapping[str, Any]:
        sns = self.raw.get("Sns")
        return sns if isinstance(sns, Mapping) else {}

    @property
    def message_id(self) -> str | None:
        if self.source == SQS:
            value = self.raw.get("messageId")
        elif self.source == SNS:
            value = self.sns.get("MessageId")
        else:
            value = self.raw.get("eventID")
        return value if isinstance(value, str) else None

    @property
    def destination(self) -> str | None:
        """The queue, topic, stream or table the record was read from."""
        if self.source == SNS:
            return _name_from_arn(self.sns.get("TopicArn"))
        if self.source == S3:
            bucket = (
                self.raw.get("s3", {}).get("bucket", {}) if isinstance(self.raw.get("s3"), Mapping) else {}
            )
            name = bucket.get("name") if isinstance(bucket, Mapping) else None
            return name if isinstance(name, str) else None
        return _name_from_arn(self.raw.get("eventSourceARN"))

    @property
    def attributes(self) -> Mapping[str, Any]:
        attributes = self.raw.get("attributes")
        return attributes if isinstance(attributes, Mapping) else {}

    @property
    def receive_count(self) -> int | None:
        value = _number(self.attributes.get("ApproximateReceiveCount"))
        return None if value is None else int(value)

    @property
    def message_group_id(self) -> str | None:
        value = self.attributes.get("MessageGroupId")
        return value if isinstance(value, str) else None

    @property
    def sent_unix_ms(self) -> float | None:
        """When the message entered the hop that delivered it (the queue, the topic, the stream)."""
        if self.source == SQS:
            return _number(self.attributes.get("SentTimestamp"))
        if self.source == SNS:
            return _iso_to_unix_ms(self.sns.get("Timestamp"))
        if self.source == KINESIS:
            seconds = _number((self.raw.get("kinesis") or {}).get("approximateArrivalTimestamp"))
            return None if seconds is None else seconds * 1000
        if self.source == DYNAMODB:
            seconds = _number((self.raw.get("dynamodb") or {}).get("ApproximateCreationDateTime"))
            return None if seconds is None else seconds * 1000
        return _iso_to_unix_ms(self.raw.get("eventTime"))

    @property
    def failure_id(self) -> str | None:
        """The ``itemIdentifier`` that reports this record failed: SQS message id, stream sequence number."""
        if self.source == KINESIS:
            value = (self.raw.get("kinesis") or {}).get("sequenceNumber")
        elif self.source == DYNAMODB:
            value = (self.raw.get("dynamodb") or {}).get("SequenceNumber")
        else:
            value = self.message_id
        return value if isinstance(value, str) else None

    def producer_context(self) -> context.Context:
        """The producer's context, tried in order: message attributes, the SNS envelope in the body, the
        EventBridge detail in the body, AWSTraceHeader (only as a fallback)."""
        known = context.get_value(_KNOWN_PRODUCERS)
        if isinstance(known, dict):
            hit = known.get(id(self.raw))
            if hit is not None and hit[0] is self.raw:
                return hit[1]  # type: ignore[no-any-return]
        return self.read_producer_context()

    def read_producer_context(self) -> context.Context:
        """``producer_context`` read from the record itself."""
        where = f"{self.source} message {self.message_id}"
        carrier: dict[str, str] = {}
        if self.source == SQS:
            carrier = carriers.sqs_attribute_carrier(self.raw.get("messageAttributes"))
            body = self.body_object
            if not carrier and body is not None:
                if _is_sns_envelope(body):
                    carrier = carriers.sns_attribute_carrier(body.get("MessageAttributes"))
                elif _is_eventbridge_event(body):
                    carrier = carriers.eventbridge_carrier(body.get("detail"))
        elif self.source == SNS:
            carrier = carriers.sns_attribute_carrier(self.sns.get("MessageAttributes"))
        ctx = carriers.extract_w3c(carrier, where)
        if carriers.has_parent(ctx):
            return ctx
        header = self.attributes.get(AWS_TRACE_HEADER)
        return carriers.extract_xray(header if isinstance(header, str) else None, where, ctx)


def _decoded(text: Any) -> Any:
    """JSON text as what it holds; anything else as it is."""
    if isinstance(text, str):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _without_context_key(detail: Any) -> Any:
    if isinstance(detail, Mapping) and EVENTBRIDGE_DETAIL_KEY in detail:
        return {k: v for k, v in detail.items() if k != EVENTBRIDGE_DETAIL_KEY}
    return detail


def record_payload(record: Mapping[str, Any]) -> Any:
    """What the application sent, whatever the envelope: plain SQS, SNS in SQS (either delivery), EventBridge
    in SQS, SNS, Kinesis (base64 data) and DynamoDB (the stream record). JSON text comes back decoded."""
    view = MessageRecord.of(record)
    if view is None:
        return record
    if view.source == SQS:
        body = view.body_object
        if body is not None and _is_sns_envelope(body):
            return _decoded(body["Message"])
        if body is not None and _is_eventbridge_event(body):
            return _without_context_key(body["detail"])
        return body if body is not None else _decoded(record.get("body"))
    if view.source == SNS:
        return _decoded(view.sns.get("Message"))
    if view.source == KINESIS:
        data = (record.get("kinesis") or {}).get("data")
        if not isinstance(data, str):
            return data
        try:
            return _decoded(base64.b64decode(data, validate=True).decode("utf-8"))
        except (binascii.Error, ValueError, TypeError):
            return data
    if view.source == DYNAMODB:
        return record.get("dynamodb")
    return record


def eventbridge_payload(event: Mapping[str, Any]) -> Any:
    """The detail of an EventBridge event delivered to Lambda directly, without hopscope's context key."""
    return _without_context_key(event.get("detail"))
