"""Redrive: move a dead-letter queue's messages back to a queue that will process them again.

Where the endpoint has it, SQS's own message move task does the work (``StartMessageMoveTask``). Elsewhere
(moto, older LocalStack) hopscope moves them itself, at least once: receive a batch, send it to the target
with the same body and message attributes (so the retry joins the original trace and flow), and delete from
the dead-letter queue only what was sent. Interrupted at any point, nothing is lost; at worst the batch in
flight is in both queues. Each message moved (or refused by the target) gets a ``redrive {dlq}`` PRODUCER
span linked to its own trace context: one span per message, so that redriving a batch never merges the
flows of unrelated messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from hopscope.collector.aws.dlq import (
    MAX_BATCH,
    DLQError,
    QueueRef,
    find_queue,
    make_visible,
    message_trace,
    queue_counts,
    receive_page,
    source_queues,
)
from hopscope.collector.aws.errors import AwsErrorKind, classify
from hopscope.collector.model.fate import REDRIVE_SOURCE
from hopscope.instrumentation.conventions import AWS_TRACE_HEADER, MESSAGE_ID

# How long a batch in flight stays hidden in the dead-letter queue: after a crash it reappears this late.
REDRIVE_VISIBILITY_TIMEOUT = 30
# SendMessageBatch's payload limit was 256 KiB for years; chunks stay under it on any endpoint.
MAX_BATCH_BYTES = 256 * 1024
MAX_MOVE_TASK_RATE = 500  # StartMessageMoveTask's MaxNumberOfMessagesPerSecond

_FINAL_TASK_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class RedriveError(DLQError):
    pass


@dataclass(frozen=True)
class RedriveResult:
    moved: int
    failed: int  # could not be sent; still in the dead-letter queue
    left: int  # in the dead-letter queue at the end (visible + in flight)
    used_move_task: bool
    duplicated: int = 0  # sent, but their delete from the dead-letter queue failed: in both queues
    failure_reason: str | None = None


@dataclass(frozen=True)
class RedriveProgress:
    moved: int
    failed: int
    total: int | None  # messages to move, as estimated at the start
    status: str = "RUNNING"


ProgressCallback = Callable[[RedriveProgress], None]


def resolve_target(sqs: Any, dlq: QueueRef, target: QueueRef | str | None) -> QueueRef:
    """``target``, else the dead-letter queue's one source queue; several or none need an explicit one."""
    if target is not None:
        ref = target if isinstance(target, QueueRef) else find_queue(sqs, target)
        if ref.arn == dlq.arn:
            raise RedriveError(f"{dlq.name} cannot be redriven into itself; name another queue with --to")
        return ref
    urls = source_queues(sqs, dlq)
    if len(urls) == 1:
        return find_queue(sqs, urls[0])
    if not urls:
        raise RedriveError(
            f"no queue names {dlq.name} as its dead-letter queue; "
            "say where to move its messages with --to QUEUE"
        )
    names = ", ".join(sorted(url.rstrip("/").rsplit("/", 1)[-1] for url in urls))
    raise RedriveError(f"{dlq.name} is the dead-letter queue of {names}; choose one with --to QUEUE")


def move_task_unsupported(error: BaseException) -> bool:
    """Whether a StartMessageMoveTask error means "this endpoint lacks the operation", not a real failure
    (moto answers a bare HTTP 500, LocalStack 501, others an unknown-action code: see ``aws/errors``)."""
    return classify(error).kind is AwsErrorKind.UNSUPPORTED_OPERATION


def redrive(
    sqs: Any,
    dlq: QueueRef | str,
    target: QueueRef | str | None = None,
    *,
    max_messages: int | None = None,
    rate: float | None = None,
    progress: ProgressCallback | None = None,
    tracer: Tracer | None = None,
    visibility_timeout: int = REDRIVE_VISIBILITY_TIMEOUT,
    poll_interval: float = 1.0,
) -> RedriveResult:
    """Move up to ``max_messages`` (default all) of ``dlq`` to ``target`` at ``rate`` messages/s at most.

    A move task is used when the endpoint has one and it can do what was asked (it has no message cap and
    no rate below 1/s); otherwise the client-side move, which also records the redrive spans.
    """
    source = dlq if isinstance(dlq, QueueRef) else find_queue(sqs, dlq)
    destination = resolve_target(sqs, source, target)
    if max_messages is None and (rate is None or rate >= 1):
        result = _move_task(
            sqs, source, destination, rate=rate, progress=progress, poll_interval=poll_interval
        )
        if result is not None:
            return result
    return _ClientSideMove(
        sqs,
        source,
        destination,
        max_messages=max_messages,
        rate=rate,
        progress=progress,
        tracer=tracer,
        visibility_timeout=visibility_timeout,
    ).run()


# -- SQS's message move task -------------------------------------------------------------------------------


def _move_task(
    sqs: Any,
    dlq: QueueRef,
    target: QueueRef,
    *,
    rate: float | None,
    progress: ProgressCallback | None,
    poll_interval: float,
) -> RedriveResult | None:
    """The move by StartMessageMoveTask, followed to its end; None when the endpoint lacks it."""
    params: dict[str, Any] = {"SourceArn": dlq.arn, "DestinationArn": target.arn}
    if rate is not None:
        params["MaxNumberOfMessagesPerSecond"] = max(1, min(MAX_MOVE_TASK_RATE, int(rate)))
    try:
        handle = sqs.start_message_move_task(**params).get("TaskHandle")
    except Exception as exc:
        if move_task_unsupported(exc):
            return None
        raise
    while True:
        task = _task_state(sqs, dlq, handle)
        status = str(task.get("Status", "RUNNING"))
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        to_move = task.get("ApproximateNumberOfMessagesToMove")
        total = int(to_move) if to_move is not None else None
        if progress is not None:
            progress(RedriveProgress(moved, 0, total, status))
        if status in _FINAL_TASK_STATES:
            break
        time.sleep(poll_interval)
    failed = 0 if status == "COMPLETED" or total is None else max(0, total - moved)
    reason = task.get("FailureReason") or (None if status == "COMPLETED" else status.lower())
    visible, in_flight = queue_counts(sqs, dlq)
    return RedriveResult(moved, failed, visible + in_flight, True, failure_reason=reason)


def _task_state(sqs: Any, dlq: QueueRef, handle: str | None) -> Mapping[str, Any]:
    """Our task among the source's recent ones (a finished task no longer shows its handle: the newest)."""
    results = sqs.list_message_move_tasks(SourceArn=dlq.arn, MaxResults=10).get("Results") or []
    for task in results:
        if handle is not None and task.get("TaskHandle") == handle:
            return task  # type: ignore[no-any-return]
    if not results:
        raise RedriveError(f"the message move task of {dlq.name} disappeared")
    return results[0]  # type: ignore[no-any-return]


# -- the client-side move ----------------------------------------------------------------------------------


class _Pacer:
    """At most ``rate`` messages per second on average: each batch pushes the next one's start back."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._next = time.monotonic()

    def wait(self) -> None:
        if self._rate:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def spent(self, messages: int) -> None:
        if self._rate:
            self._next = max(self._next, time.monotonic()) + messages / self._rate


def send_attributes(received: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """ReceiveMessage's message attributes in SendMessage's shape (Binary values as bytes)."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in (received or {}).items():
        if not isinstance(value, Mapping):
            continue
        converted: dict[str, Any] = {"DataType": value.get("DataType", "String")}
        if value.get("StringValue") is not None:
            converted["StringValue"] = value["StringValue"]
        if value.get("BinaryValue") is not None:
            binary = value["BinaryValue"]
            converted["BinaryValue"] = binary.encode() if isinstance(binary, str) else bytes(binary)
        attributes[name] = converted
    return attributes


def _entry(index: int, message: Mapping[str, Any], fifo: bool) -> dict[str, Any]:
    """A SendMessageBatch entry carrying the message as it was: body, message attributes, AWSTraceHeader."""
    entry: dict[str, Any] = {"Id": f"m{index}", "MessageBody": message["Body"]}
    attributes = send_attributes(message.get("MessageAttributes"))
    if attributes:
        entry["MessageAttributes"] = attributes
    system = message.get("Attributes") or {}
    header = system.get(AWS_TRACE_HEADER)
    if isinstance(header, str) and header:
        entry["MessageSystemAttributes"] = {AWS_TRACE_HEADER: {"DataType": "String", "StringValue": header}}
    if fifo:
        entry["MessageGroupId"] = system.get("MessageGroupId") or "hopscope-redrive"
        # The original id as the deduplication id: a batch sent twice (after a crash) is kept once.
        entry["MessageDeduplicationId"] = message["MessageId"]
    return entry


def _entry_bytes(entry: Mapping[str, Any]) -> int:
    size = len(str(entry["MessageBody"]).encode())
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode()) + len(value.get("BinaryValue", b""))
    return size


def _chunks(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Entries grouped so that no SendMessageBatch passes the batch payload limit."""
    chunks: list[list[dict[str, Any]]] = []
    size = 0
    for entry in entries:
        entry_size = _entry_bytes(entry)
        if not chunks or size + entry_size > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry_size
    return chunks


class _ClientSideMove:
    """receive -> send -> delete, a batch at a time; what was not sent goes back to visible in the DLQ."""

    def __init__(
        self,
        sqs: Any,
        dlq: QueueRef,
        target: QueueRef,
        *,
        max_messages: int | None,
        rate: float | None,
        progress: ProgressCallback | None,
        tracer: Tracer | None,
        visibility_timeout: int,
    ) -> None:
        self.sqs = sqs
        self.dlq = dlq
        self.target = target
        self.max_messages = max_messages
        self.progress = progress
        self.tracer = tracer
        self.visibility_timeout = visibility_timeout
        self.pacer = _Pacer(rate)
        self.batch_size = MAX_BATCH if rate is None else max(1, min(MAX_BATCH, int(rate)))
        self.moved = 0
        self.failed = 0
        self.duplicated = 0
        self.reasons: list[str] = []
        # Failed messages stay hidden until the end, so that one bad message is not received forever.
        self.held_failed: dict[str, str] = {}  # message id -> receipt handle
        self.unsent: list[Mapping[str, Any]] = []  # received, not (yet) sent: made visible on any exit

    def run(self) -> RedriveResult:
        visible, _ = queue_counts(self.sqs, self.dlq)
        total = visible if self.max_messages is None else min(visible, self.max_messages)
        interrupted = True
        try:
            while self.max_messages is None or self.moved + self.failed < self.max_messages:
                want = self.batch_size
                if self.max_messages is not None:
                    want = min(want, self.max_messages - self.moved - self.failed)
                batch = self._receive(want, self.moved + self.failed < total)
                if not batch:
                    break
                self._move(batch)
                if self.progress is not None:
                    self.progress(RedriveProgress(self.moved, self.failed, total))
            interrupted = False
        finally:
            self._release(quietly=interrupted)
        visible, in_flight = queue_counts(self.sqs, self.dlq)
        reason = "; ".join(sorted(set(self.reasons))) or None
        return RedriveResult(
            self.moved, self.failed, visible + in_flight, False, self.duplicated, failure_reason=reason
        )

    def _receive(self, want: int, more_expected: bool) -> list[Mapping[str, Any]]:
        """The next batch of messages not already failed here; empty when the queue is done."""
        self.pacer.wait()
        page = receive_page(self.sqs, self.dlq, want, self.visibility_timeout)
        if not page and more_expected:
            page = receive_page(self.sqs, self.dlq, want, self.visibility_timeout, wait=1)
        fresh: list[Mapping[str, Any]] = []
        for message in page:
            if message["MessageId"] in self.held_failed:
                self.held_failed[message["MessageId"]] = message["ReceiptHandle"]  # hidden again
            else:
                fresh.append(message)
        self.unsent = fresh
        self.pacer.spent(len(fresh))
        return fresh

    def _move(self, batch: list[Mapping[str, Any]]) -> None:
        started = time.time_ns()
        sent, failures = self._send(batch)
        for message, reason in failures:
            self.held_failed[message["MessageId"]] = message["ReceiptHandle"]
            self.reasons.append(reason)
        self.unsent = []
        self.failed += len(failures)
        if sent:
            self.moved += len(sent)
            self._delete(sent)
        self._record_spans(started, sent, failures)

    def _send(
        self, batch: list[Mapping[str, Any]]
    ) -> tuple[list[Mapping[str, Any]], list[tuple[Mapping[str, Any], str]]]:
        """(sent, [(not sent, why)]): SendMessageBatch, one SendMessage at a time when a batch is refused
        for its content, so that one bad message does not hold back the others."""
        entries = [_entry(i, message, self.target.fifo) for i, message in enumerate(batch)]
        by_id = {entry["Id"]: message for entry, message in zip(entries, batch, strict=True)}
        sent: list[Mapping[str, Any]] = []
        failures: list[tuple[Mapping[str, Any], str]] = []
        for chunk in _chunks(entries):
            try:
                answer = self.sqs.send_message_batch(QueueUrl=self.target.url, Entries=chunk)
            except Exception as exc:  # refused for a message's content: send one by one
                if classify(exc).kind is not AwsErrorKind.MESSAGE_REFUSED:
                    raise
                for entry in chunk:
                    reason = self._send_one(entry)
                    if reason is None:
                        sent.append(by_id[entry["Id"]])
                    else:
                        failures.append((by_id[entry["Id"]], reason))
                continue
            sent.extend(by_id[item["Id"]] for item in answer.get("Successful") or [])
            failures.extend(
                (by_id[item["Id"]], str(item.get("Code") or "send failed"))
                for item in answer.get("Failed") or []
            )
        return sent, failures

    def _send_one(self, entry: Mapping[str, Any]) -> str | None:
        params = {k: v for k, v in entry.items() if k != "Id"}
        try:
            self.sqs.send_message(QueueUrl=self.target.url, **params)
        except Exception as exc:
            error = classify(exc)
            if error.kind is not AwsErrorKind.MESSAGE_REFUSED:
                raise
            return error.code
        return None

    def _delete(self, sent: list[Mapping[str, Any]]) -> None:
        for start in range(0, len(sent), MAX_BATCH):
            chunk = sent[start : start + MAX_BATCH]
            answer = self.sqs.delete_message_batch(
                QueueUrl=self.dlq.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            self.duplicated += len(answer.get("Failed") or [])

    def _record_spans(
        self,
        started: int,
        sent: Sequence[Mapping[str, Any]],
        failures: Sequence[tuple[Mapping[str, Any], str]],
    ) -> None:
        if self.tracer is None:
            return
        outcomes = [(message, None) for message in sent] + list(failures)
        for message, reason in outcomes:
            span_context = message_trace(message).span_context
            links = (
                [] if span_context is None else [Link(span_context, {MESSAGE_ID: str(message["MessageId"])})]
            )
            span = self.tracer.start_span(
                f"redrive {self.dlq.name}",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "redrive",
                    "messaging.destination.name": self.target.name,
                    MESSAGE_ID: str(message["MessageId"]),
                    REDRIVE_SOURCE: self.dlq.name,  # how a flow tells a redrive (model/fate.py)
                },
                links=links,
                start_time=started,
            )
            if reason is not None:
                span.set_status(Status(StatusCode.ERROR, f"not sent: {reason}"))
            span.end()

    def _release(self, quietly: bool) -> None:
        """Every message received here and not sent becomes visible again in the dead-letter queue."""
        handles = [m["ReceiptHandle"] for m in self.unsent] + list(self.held_failed.values())
        self.unsent = []
        self.held_failed = {}
        try:
            make_visible(self.sqs, self.dlq, handles)
        except Exception:
            if not quietly:
                raise
