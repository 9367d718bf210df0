"""Dead-letter queues: find them, look inside without consuming, delete one message, purge.

SQS has no read-only look at a message. A *peek* receives messages with a visibility timeout long enough to
page through them, then makes every one visible again (visibility 0, also when the peek fails half-way);
it never deletes. Each peek raises the messages' ApproximateReceiveCount, exactly as the AWS console's
"poll for messages" does. Listing and peeking call only the actions of ``iam.READ_ONLY_ACTIONS``.

A dead letter's flow is found from the trace context it carries (the same places, in the same order, as
``process_batch`` reads them), else from its message id in the stored spans. boto3 clients are ``Any``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanContext

from hopscope.collector.aws.errors import AwsErrorKind, classify
from hopscope.instrumentation import records
from hopscope.instrumentation.conventions import AWS_TRACE_HEADER
from hopscope.instrumentation.records import MessageRecord

# Long enough to page through a few thousand messages; a killed peek hides them at most this long.
PEEK_VISIBILITY_TIMEOUT = 60
MAX_BATCH = 10  # SQS's limit for ReceiveMessage and every *Batch call

_XRAY_ROOT = re.compile(r"Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")


class DLQError(Exception):
    """An expected failure (unknown queue, no target, purge too soon), worded for one line on a terminal."""


class QueueNotFoundError(DLQError):
    pass


class FlowLookup(Protocol):
    """What a peek needs from stored spans: ``SQLiteStore`` and the collector's ``QueryLayer`` both fit."""

    def flow_of_trace(self, trace_id: bytes) -> int | None: ...

    def flow_of_message(self, message_id: str, destination: str | None = None) -> int | None: ...


@dataclass(frozen=True)
class QueueRef:
    name: str
    url: str
    arn: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


@dataclass(frozen=True)
class SourceQueue:
    """A queue whose RedrivePolicy sends its failures to a dead-letter queue."""

    name: str
    url: str
    arn: str
    max_receive_count: int | None


@dataclass(frozen=True)
class DeadLetterQueue:
    queue: QueueRef
    visible: int | None  # ApproximateNumberOfMessages; None when the queue could not be read
    in_flight: int | None  # ApproximateNumberOfMessagesNotVisible
    sources: list[SourceQueue] = field(default_factory=list)


@dataclass(frozen=True)
class MessageTrace:
    """The trace a message belongs to: its id (hex), and the producer span to link to when known."""

    trace_id: str | None
    span_context: SpanContext | None


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as a peek saw it."""

    message_id: str
    body: str
    message_attributes: Mapping[
        str, Any
    ]  # boto3's shape: {"name": {"DataType", "StringValue"/"BinaryValue"}}
    attributes: Mapping[
        str, str
    ]  # system attributes: SentTimestamp, ApproximateReceiveCount, AWSTraceHeader...
    sent_at: datetime | None
    receive_count: int | None  # as SQS reports it, this peek's receive included
    trace_id: str | None
    flow_id: int | None
    sns_message_id: str | None = None  # the SNS message id, when the body is an SNS envelope

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.sent_at is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.sent_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, with the full body; Binary attribute values base64-encoded."""
        return {
            "message_id": self.message_id,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "age_seconds": self.age_seconds(),
            "receive_count": self.receive_count,
            "trace_id": self.trace_id,
            "flow_id": self.flow_id,
            "sns_message_id": self.sns_message_id,
            "attributes": dict(self.attributes),
            "message_attributes": {
                name: _json_attribute(value) for name, value in self.message_attributes.items()
            },
            "body": self.body,
        }


def _json_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    converted = {k: v for k, v in value.items() if k in ("DataType", "StringValue")}
    binary = value.get("BinaryValue")
    if isinstance(binary, (bytes, bytearray)):
        converted["BinaryValue"] = base64.b64encode(bytes(binary)).decode("ascii")
    return converted


# -- queues ------------------------------------------------------------------------------------------------


def is_missing_queue(error: BaseException) -> bool:
    return classify(error).kind is AwsErrorKind.MISSING_QUEUE


def find_queue(sqs: Any, name_or_url: str) -> QueueRef:
    """A queue by name, URL or ARN (GetQueueUrl for a name, GetQueueAttributes for its ARN)."""
    try:
        if name_or_url.startswith(("http://", "https://")):
            url = name_or_url
        elif name_or_url.startswith("arn:"):
            parts = name_or_url.split(":")
            if len(parts) != 6:
                raise DLQError(f"not an SQS queue ARN: {name_or_url!r}")
            url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        else:
            url = sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    except Exception as exc:
        if is_missing_queue(exc):
            raise QueueNotFoundError(f"no queue {name_or_url!r} (in {_region(sqs)})") from None
        raise
    return QueueRef(name=str(arn).rsplit(":", 1)[-1], url=str(url), arn=str(arn))


def _region(sqs: Any) -> str:
    return str(getattr(getattr(sqs, "meta", None), "region_name", None) or "this region")


def _queue(sqs: Any, queue: QueueRef | str) -> QueueRef:
    return queue if isinstance(queue, QueueRef) else find_queue(sqs, queue)


def queue_counts(sqs: Any, queue: QueueRef) -> tuple[int, int]:
    """(visible, in flight): ApproximateNumberOfMessages and ApproximateNumberOfMessagesNotVisible."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes.get("ApproximateNumberOfMessages", 0)),
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


def _redrive_policy(attributes: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """(dead-letter target ARN, maxReceiveCount) of a queue's RedrivePolicy, if it has one."""
    text = attributes.get("RedrivePolicy")
    if not isinstance(text, str):
        return None
    try:
        policy = json.loads(text)
    except ValueError:
        return None
    target = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
    if not isinstance(target, str):
        return None
    try:
        count: int | None = int(policy.get("maxReceiveCount"))
    except (TypeError, ValueError):
        count = None
    return target, count


_LISTING_ATTRIBUTES = [
    "QueueArn",
    "RedrivePolicy",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
]


def dead_letter_queues(sqs: Any, prefix: str | None = None) -> list[DeadLetterQueue]:
    """Every queue some queue's RedrivePolicy names, with its counts and its sources, sorted by name.

    ListQueues plus one GetQueueAttributes per queue: the calls grow with the queues, never the messages.
    """
    urls: list[str] = []
    paginate: dict[str, Any] = {"PaginationConfig": {"PageSize": 1000}}
    if prefix:
        paginate["QueueNamePrefix"] = prefix
    for page in sqs.get_paginator("list_queues").paginate(**paginate):
        urls.extend(page.get("QueueUrls") or [])
    by_arn: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for url in urls:
        attributes = _attributes_or_none(sqs, url)
        if attributes is not None and "QueueArn" in attributes:
            by_arn[attributes["QueueArn"]] = (url, attributes)
    sources: dict[str, list[SourceQueue]] = {}
    for arn, (url, attributes) in by_arn.items():
        policy = _redrive_policy(attributes)
        if policy is not None:
            target, count = policy
            sources.setdefault(target, []).append(SourceQueue(_name(arn), url, arn, count))
    found: list[DeadLetterQueue] = []
    for target, its_sources in sources.items():
        if target not in by_arn:  # a DLQ outside the prefix (or the listing): look it up by its ARN
            try:
                ref = find_queue(sqs, target)
            except QueueNotFoundError:
                found.append(DeadLetterQueue(QueueRef(_name(target), "", target), None, None, its_sources))
                continue
            attributes = _attributes_or_none(sqs, ref.url)
            if attributes is None:
                continue
            by_arn[target] = (ref.url, attributes)
        url, attributes = by_arn[target]
        found.append(
            DeadLetterQueue(
                QueueRef(_name(target), url, target),
                int(attributes.get("ApproximateNumberOfMessages", 0)),
                int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                sorted(its_sources, key=lambda s: s.name),
            )
        )
    return sorted(found, key=lambda d: d.queue.name)


def _attributes_or_none(sqs: Any, url: str) -> Mapping[str, Any] | None:
    """A queue's listing attributes; None for a queue deleted since ListQueues."""
    try:
        attributes: Mapping[str, Any] = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=_LISTING_ATTRIBUTES
        )["Attributes"]
    except Exception as exc:
        if is_missing_queue(exc):
            return None
        raise
    return attributes


def _name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def source_queues(sqs: Any, dlq: QueueRef) -> list[str]:
    """The URLs of the queues whose RedrivePolicy names ``dlq`` (ListDeadLetterSourceQueues)."""
    urls: list[str] = []
    for page in sqs.get_paginator("list_dead_letter_source_queues").paginate(
        QueueUrl=dlq.url, PaginationConfig={"PageSize": 1000}
    ):
        urls.extend(page.get("queueUrls") or [])
    return urls


# -- trace context -----------------------------------------------------------------------------------------


def _as_record(message: Mapping[str, Any]) -> MessageRecord:
    """A ReceiveMessage message seen as the Lambda SQS record the instrumentation reads."""
    record = {
        "eventSource": records.SQS,
        "messageId": message.get("MessageId"),
        "body": message.get("Body"),
        "attributes": message.get("Attributes") or {},
        "messageAttributes": message.get("MessageAttributes") or {},
    }
    return MessageRecord(record, records.SQS)


def message_trace(message: Mapping[str, Any]) -> MessageTrace:
    """The producer's trace, tried in order: the traceparent message attribute, the SNS envelope's
    MessageAttributes in the body, the EventBridge ``detail._hopscope`` in the body, AWSTraceHeader.

    An unsampled X-Ray header still names the trace (for a flow lookup), but gives no span to link to.
    """
    record = _as_record(message)
    span_context = trace.get_current_span(record.producer_context()).get_span_context()
    if span_context.is_valid:
        return MessageTrace(format(span_context.trace_id, "032x"), span_context)
    header = (message.get("Attributes") or {}).get(AWS_TRACE_HEADER)
    match = _XRAY_ROOT.search(header) if isinstance(header, str) else None
    if match is None:
        return MessageTrace(None, None)
    trace_id = (match.group(1) + match.group(2)).lower()
    return MessageTrace(None if trace_id.strip("0") == "" else trace_id, None)


def sns_message_id(message: Mapping[str, Any]) -> str | None:
    """The SNS message id of a body that is an SNS envelope (SNS -> SQS without raw delivery)."""
    body = _as_record(message).body_object
    if body is None or not records._is_sns_envelope(body):
        return None
    value = body.get("MessageId")
    return value if isinstance(value, str) else None


def _flow_of(
    flows: FlowLookup | None, trace_id: str | None, message_id: str, sns_id: str | None
) -> int | None:
    if flows is None:
        return None
    if trace_id is not None:
        flow = flows.flow_of_trace(bytes.fromhex(trace_id))
        if flow is not None:
            return flow
    for candidate in (message_id, sns_id):
        if candidate:
            flow = flows.flow_of_message(candidate, None)
            if flow is not None:
                return flow
    return None


def dead_letter(message: Mapping[str, Any], flows: FlowLookup | None = None) -> DeadLetter:
    """A received message as a :class:`DeadLetter`, with its trace and (given ``flows``) its flow."""
    attributes = {str(k): str(v) for k, v in (message.get("Attributes") or {}).items()}
    sent = attributes.get("SentTimestamp")
    sent_at = datetime.fromtimestamp(int(sent) / 1000, tz=timezone.utc) if sent and sent.isdigit() else None
    count = attributes.get("ApproximateReceiveCount")
    message_id = str(message["MessageId"])
    traced = message_trace(message)
    sns_id = sns_message_id(message)
    return DeadLetter(
        message_id=message_id,
        body=str(message.get("Body", "")),
        message_attributes=dict(message.get("MessageAttributes") or {}),
        attributes=attributes,
        sent_at=sent_at,
        receive_count=int(count) if count and count.isdigit() else None,
        trace_id=traced.trace_id,
        flow_id=_flow_of(flows, traced.trace_id, message_id, sns_id),
        sns_message_id=sns_id,
    )


# -- receiving without consuming ---------------------------------------------------------------------------


def receive_page(sqs: Any, queue: QueueRef, count: int, visibility_timeout: int, wait: int = 0) -> list[Any]:
    """One ReceiveMessage with everything a message carries: system and message attributes."""
    answer = sqs.receive_message(
        QueueUrl=queue.url,
        MaxNumberOfMessages=max(1, min(MAX_BATCH, count)),
        VisibilityTimeout=visibility_timeout,
        WaitTimeSeconds=wait,
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    return list(answer.get("Messages") or [])


def _receive_pages(
    sqs: Any, queue: QueueRef, limit: int, visibility_timeout: int, held: dict[str, str]
) -> Iterator[Mapping[str, Any]]:
    """Each message once, up to ``limit``, holding every receipt handle in ``held`` (id -> handle).

    A short poll may answer empty while messages remain (SQS samples its servers): when fewer than the
    queue's count have come back, one long poll (1 s, every server) decides. A page of messages already
    seen means their visibility ran out while paging: stop there.
    """
    expected = queue_counts(sqs, queue)[0]
    seen = 0
    while seen < limit:
        page = receive_page(sqs, queue, limit - seen, visibility_timeout)
        if not page and seen < expected:
            page = receive_page(sqs, queue, limit - seen, visibility_timeout, wait=1)
        if not page:
            return
        # Every handle is held before the first message is handed out: a caller that stops early (a
        # delete that found its message) still makes the rest of the page visible again.
        fresh = [message for message in page if message["MessageId"] not in held]
        held.update((message["MessageId"], message["ReceiptHandle"]) for message in page)
        if not fresh:
            return
        for message in fresh[: limit - seen]:
            seen += 1
            yield message


def make_visible(sqs: Any, queue: QueueRef, receipt_handles: Iterable[str]) -> int:
    """Visibility back to 0 for every handle (ChangeMessageVisibilityBatch); the number that failed."""
    handles = list(receipt_handles)
    failed = 0
    for start in range(0, len(handles), MAX_BATCH):
        chunk = handles[start : start + MAX_BATCH]
        answer = sqs.change_message_visibility_batch(
            QueueUrl=queue.url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(chunk)
            ],
        )
        failed += len(answer.get("Failed") or [])
    return failed


def _restore(sqs: Any, queue: QueueRef, held: Mapping[str, str], quietly: bool) -> None:
    """Make every held message visible again; ``quietly`` while another error is already on its way."""
    try:
        make_visible(sqs, queue, held.values())
    except Exception:
        if not quietly:
            raise


def peek(
    sqs: Any,
    queue: QueueRef | str,
    limit: int = 10,
    flows: FlowLookup | None = None,
    *,
    visibility_timeout: int = PEEK_VISIBILITY_TIMEOUT,
) -> list[DeadLetter]:
    """Up to ``limit`` messages of ``queue``, each once, left in the queue and visible again.

    Never deletes. Raises each message's ApproximateReceiveCount by one (SQS has no other way to look).
    """
    ref = _queue(sqs, queue)
    held: dict[str, str] = {}
    received: list[Mapping[str, Any]] = []
    failed = True
    try:
        received.extend(_receive_pages(sqs, ref, limit, visibility_timeout, held))
        failed = False
    finally:
        _restore(sqs, ref, held, quietly=failed)
    return [dead_letter(message, flows) for message in received]


def delete_message(
    sqs: Any, queue: QueueRef | str, message_id: str, *, visibility_timeout: int = PEEK_VISIBILITY_TIMEOUT
) -> bool:
    """Delete one message by its id: page through the queue to find its receipt handle, delete it, and
    make every other message seen on the way visible again. False when no such message is visible."""
    ref = _queue(sqs, queue)
    held: dict[str, str] = {}
    found = False
    failed = True
    try:
        for message in _receive_pages(sqs, ref, 2**31, visibility_timeout, held):
            if message["MessageId"] == message_id:
                sqs.delete_message(QueueUrl=ref.url, ReceiptHandle=held.pop(message_id))
                found = True
                break
        failed = False
    finally:
        _restore(sqs, ref, held, quietly=failed)
    return found


def purge(sqs: Any, queue: QueueRef | str) -> None:
    """Delete every message of ``queue`` (PurgeQueue; SQS allows one purge per queue per 60 s)."""
    ref = _queue(sqs, queue)
    try:
        sqs.purge_queue(QueueUrl=ref.url)
    except Exception as exc:
        if classify(exc).kind is AwsErrorKind.PURGE_IN_PROGRESS:
            raise DLQError(
                f"{ref.name} was purged less than 60 s ago; SQS allows one purge a minute"
            ) from None
        raise
