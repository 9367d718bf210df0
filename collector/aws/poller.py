"""The SQS poller: finds queues, reads their depth and redrive policy, and records both in the store.

Each poll costs one ListQueues page per 1,000 queues, one GetQueueAttributes per queue, one CloudWatch
GetMetricData per 500 queues, and, for each dead-letter queue holding messages, one ReceiveMessage (a peek
of up to 10 messages, left visible): API calls grow with the number of queues, never with messages.
The peek tells which messages sit in the dead-letter queue now (their ids and trace context, recorded for
each message's fate in its flow: model/fate.py), and the oldest one's age where CloudWatch has none.
A queue that fails (deleted, forbidden, throttled) has its error recorded; the others are still polled.
What fails for the whole poll (the endpoint, ListQueues, CloudWatch, the store) is logged once per distinct
failure, with its traceback, and once when it works again: never once per poll.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from hopscope.collector.aws.clients import aws_client
from hopscope.collector.aws.dlq import dead_letter
from hopscope.collector.aws.errors import AwsErrorKind, classify
from hopscope.collector.model.fate import DeadLetterPeek, DeadLetterSighting
from hopscope.collector.model.queues import DepthSample, QueueState
from hopscope.collector.stitch.failures import Failures
from hopscope.collector.store.base import FateRecorder, QueueRecorder

log = logging.getLogger("hopscope.collector.sqs")

# Without --retention, depth samples are kept this long.
DEFAULT_DEPTH_RETENTION_SECONDS = 7 * 86400
# Queues that spans named within this window are polled even when ListQueues does not list them.
SEEN_IN_SPANS_WINDOW_SECONDS = 86400
_COUNT_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "QueueArn",
    "RedrivePolicy",
    "FifoQueue",
]
_METRIC_QUERIES_PER_CALL = 500
POLL_CONCURRENCY = 8


class PollTarget(Protocol):
    """Where and how often to poll: the collector's ``SqsSettings`` (``--sqs``) is one."""

    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def queue_prefix(self) -> str | None: ...
    @property
    def interval_seconds(self) -> float: ...


class PollStore(QueueRecorder, FateRecorder, Protocol):
    """Where a poll goes: the queues and their depth, and what each dead-letter queue's peek saw."""


@dataclass
class PollResult:
    queues: list[QueueState] = field(default_factory=list)
    samples: list[DepthSample] = field(default_factory=list)
    api_calls: int = 0
    dead_letters: list[DeadLetterPeek] = field(default_factory=list)


def queue_name_of(url_or_arn: str) -> str:
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class QueuePoller:
    """Polls on its own thread every ``interval_seconds``; :meth:`poll_once` is the whole job."""

    def __init__(
        self,
        store: PollStore,
        settings: PollTarget,
        *,
        retention_seconds: int | None = None,
        client_factory: Callable[[str, str | None, str | None], Any] = aws_client,
    ) -> None:
        self._store = store
        self._settings = settings
        self._retention_seconds = retention_seconds or DEFAULT_DEPTH_RETENTION_SECONDS
        self._sqs = client_factory("sqs", settings.endpoint_url, settings.region)
        self._cloudwatch = client_factory("cloudwatch", settings.endpoint_url, settings.region)
        self._calls = 0
        self._calls_lock = threading.Lock()
        for client in (self._sqs, self._cloudwatch):
            client.meta.events.register("before-call", self._count_call)
        self._urls: dict[str, str] = {}  # every queue polled so far, deleted ones included
        self._missing: set[str] = set()  # names seen in spans that GetQueueUrl does not know
        self._poll_failures = Failures(log, logging.WARNING)
        self._list_failures = Failures(log, logging.WARNING)
        self._url_failures: dict[str, Failures] = {}  # by queue name, while GetQueueUrl fails
        self._cloudwatch_failures = Failures(log, logging.WARNING)
        self._unreadable_policies: set[tuple[str, str]] = set()  # (queue, RedrivePolicy) logged once
        # Per-queue calls run a few at a time: at AWS latencies a serial poll of hundreds of queues would
        # outlast the interval.
        self._pool = ThreadPoolExecutor(max_workers=POLL_CONCURRENCY, thread_name_prefix="hopscope-sqs")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hopscope-sqs-poller", daemon=True)

    # -- the thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.poll_once()
                failed = sum(1 for q in result.queues if q.error)
                log.debug(
                    "polled %d queues (%d failed) in %d API calls",
                    len(result.queues),
                    failed,
                    result.api_calls,
                )
            except Exception as exc:  # a bad poll must not end polling
                self._poll_failures.failed(exc, "SQS poll failed")
            else:
                self._poll_failures.succeeded("SQS polling works again")
            self._stop.wait(self._settings.interval_seconds)

    def _count_call(self, **_: Any) -> None:
        with self._calls_lock:
            self._calls += 1

    # -- one poll ----------------------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        """Discover, read every queue, record the poll; returns what was recorded and the API calls made."""
        calls_before = self._calls
        now = time.time_ns()
        self._discover(now)
        result = PollResult()
        queues = sorted(self._urls.items())
        for state, sample in self._pool.map(lambda item: self._read_queue(item[0], item[1], now), queues):
            result.queues.append(state)
            if sample is not None:
                result.samples.append(sample)
        states = {q.name: q for q in result.queues}
        peeked = self._peek_dead_letter_queues(result.samples, states)
        result.samples = self._with_oldest_age(result.samples, states, peeked)
        result.dead_letters = self._dead_letter_peeks(result.samples, states, peeked)
        for name in sorted(self._missing):
            result.queues.append(
                QueueState(name, "", error="QueueDoesNotExist: seen in spans, not found by GetQueueUrl")
            )
        keep_after = now - self._retention_seconds * 1_000_000_000
        self._store.record_queue_poll(now, result.queues, result.samples, keep_after)
        self._store.record_dead_letters(now, result.dead_letters, keep_after)
        result.api_calls = self._calls - calls_before
        return result

    def _discover(self, now: int) -> None:
        """Queues by ListQueues (with the prefix), plus those that spans sent to or consumed from."""
        kwargs: dict[str, Any] = {"MaxResults": 1000}
        if self._settings.queue_prefix:
            kwargs["QueueNamePrefix"] = self._settings.queue_prefix
        try:
            while True:
                page = self._sqs.list_queues(**kwargs)
                for url in page.get("QueueUrls", []):
                    self._urls.setdefault(queue_name_of(url), url)
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:
            self._list_failures.failed(
                exc, "SQS ListQueues failed (%s); polling the queues already known", classify(exc).code
            )
        else:
            self._list_failures.succeeded("SQS ListQueues works again")
        since = now - SEEN_IN_SPANS_WINDOW_SECONDS * 1_000_000_000
        for name in self._store.queue_destinations_seen(since):
            if name in self._urls or (
                self._settings.queue_prefix and not name.startswith(self._settings.queue_prefix)
            ):
                continue
            try:
                self._urls[name] = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
                self._missing.discard(name)
                self._url_failures.pop(name, None)
            except Exception as exc:
                error = classify(exc)
                if error.kind is AwsErrorKind.MISSING_QUEUE:
                    self._missing.add(name)
                    self._url_failures.pop(name, None)
                else:
                    failures = self._url_failures.setdefault(name, Failures(log, logging.WARNING))
                    failures.failed(exc, "SQS GetQueueUrl %s failed: %s", name, error.code)

    def _read_queue(self, name: str, url: str, now: int) -> tuple[QueueState, DepthSample | None]:
        try:
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNT_ATTRIBUTES)[
                "Attributes"
            ]
        except Exception as exc:
            error = classify(exc)
            return QueueState(name, url, error=f"{error.code}: {error.message or exc}"), None
        dlq_name = max_receive_count = None
        policy_text = attributes.get("RedrivePolicy")
        if policy_text:
            try:
                policy = json.loads(policy_text)
                dlq_name = queue_name_of(str(policy["deadLetterTargetArn"]))
                max_receive_count = int(policy["maxReceiveCount"])
            except (ValueError, KeyError, TypeError):
                # Once per queue and policy: each name is read by one pool thread per poll.
                if (name, policy_text) not in self._unreadable_policies:
                    self._unreadable_policies.add((name, policy_text))
                    log.warning(
                        "queue %s has a RedrivePolicy hopscope cannot read: %.200s", name, policy_text
                    )
        state = QueueState(
            name=name,
            url=url,
            arn=attributes.get("QueueArn"),
            dlq_name=dlq_name,
            max_receive_count=max_receive_count,
            fifo=attributes.get("FifoQueue") == "true",
        )
        sample = DepthSample(
            queue_name=name,
            polled_unix_nano=now,
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )
        return state, sample

    # -- dead-letter queues: a peek, and the oldest message's age ----------------------------------------

    @staticmethod
    def _peekable(states: dict[str, QueueState]) -> set[str]:
        """Dead-letter queues without a redrive policy of their own: a peek raises ApproximateReceiveCount,
        which there can neither send a message on to another DLQ nor pass for a retry of a consumer (a DLQ
        has none). Working queues are never peeked."""
        dead_letter_queues = {state.dlq_name for state in states.values() if state.dlq_name}
        return {
            name
            for name in dead_letter_queues
            if name in states and states[name].dlq_name is None and not states[name].error
        }

    def _peek_dead_letter_queues(
        self, samples: list[DepthSample], states: dict[str, QueueState]
    ) -> dict[str, list[dict[str, Any]]]:
        """Queue name -> up to 10 of its messages, for each peekable dead-letter queue holding visible
        ones; a queue whose peek failed is left out."""
        peekable = self._peekable(states)
        names = [s.queue_name for s in samples if s.visible and s.queue_name in peekable]
        peeks = zip(names, self._pool.map(lambda name: self._peek(states[name].url), names), strict=True)
        return {name: messages for name, messages in peeks if messages is not None}

    def _peek(self, url: str) -> list[dict[str, Any]] | None:
        """Up to 10 messages with every attribute, received without hiding them (visibility 0)."""
        try:
            answer = self._sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=0,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except Exception as exc:
            log.debug("SQS peek of a dead-letter queue failed: %s", classify(exc).code)
            return None
        return list(answer.get("Messages") or [])

    def _dead_letter_peeks(
        self,
        samples: list[DepthSample],
        states: dict[str, QueueState],
        peeked: dict[str, list[dict[str, Any]]],
    ) -> list[DeadLetterPeek]:
        """What each peekable dead-letter queue holds now: complete when the peek saw as many messages as
        the queue counts (an empty queue: nothing), so that those seen before and not now are gone."""
        peekable = self._peekable(states)
        peeks = []
        for sample in samples:
            if sample.queue_name not in peekable:
                continue
            held = sample.visible + sample.in_flight
            if sample.queue_name not in peeked:
                if held == 0:
                    peeks.append(DeadLetterPeek(sample.queue_name, (), complete=True))
                continue
            sightings: dict[str, DeadLetterSighting] = {}
            for message in peeked[sample.queue_name]:
                try:
                    letter = dead_letter(message)
                except (KeyError, TypeError, ValueError):  # a message without an id: nothing to record
                    continue
                sightings[letter.message_id] = DeadLetterSighting(
                    letter.message_id, letter.trace_id, letter.sns_message_id, letter.receive_count
                )
            peeks.append(
                DeadLetterPeek(sample.queue_name, tuple(sightings.values()), complete=len(sightings) >= held)
            )
        return peeks

    def _with_oldest_age(
        self,
        samples: list[DepthSample],
        states: dict[str, QueueState],
        peeked: dict[str, list[dict[str, Any]]],
    ) -> list[DepthSample]:
        ages = self._cloudwatch_ages([s.queue_name for s in samples if s.visible])

        def aged(sample: DepthSample) -> DepthSample:
            age, source = ages.get(sample.queue_name), "cloudwatch"
            if age is None and sample.queue_name in peeked:
                age, source = _oldest_age(peeked[sample.queue_name]), "estimate"
            if age is None:
                return sample
            return dataclasses.replace(sample, oldest_age_seconds=age, age_source=source)

        return [aged(sample) for sample in samples]

    def _cloudwatch_ages(self, names: list[str]) -> dict[str, float]:
        """ApproximateAgeOfOldestMessage (Maximum over the last 5 minutes) where CloudWatch has it."""
        ages: dict[str, float] = {}
        end = time.time()
        for start in range(0, len(names), _METRIC_QUERIES_PER_CALL):
            chunk = names[start : start + _METRIC_QUERIES_PER_CALL]
            queries = [
                {
                    "Id": f"q{index}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SQS",
                            "MetricName": "ApproximateAgeOfOldestMessage",
                            "Dimensions": [{"Name": "QueueName", "Value": name}],
                        },
                        "Period": 60,
                        "Stat": "Maximum",
                    },
                }
                for index, name in enumerate(chunk)
            ]
            try:
                answer = self._cloudwatch.get_metric_data(
                    MetricDataQueries=queries, StartTime=end - 300, EndTime=end, ScanBy="TimestampDescending"
                )
            except Exception as exc:
                self._cloudwatch_failures.failed(
                    exc, "CloudWatch GetMetricData failed (%s): ages are estimated", classify(exc).code
                )
                return ages
            for result in answer.get("MetricDataResults", []):
                values = result.get("Values") or []
                if values:
                    ages[chunk[int(result["Id"][1:])]] = float(values[0])
        if names:
            self._cloudwatch_failures.succeeded("CloudWatch GetMetricData works again")
        return ages


def _oldest_age(messages: list[dict[str, Any]]) -> float | None:
    """Seconds since the oldest SentTimestamp among peeked messages."""
    sent = [
        int(m["Attributes"]["SentTimestamp"])
        for m in messages
        if str((m.get("Attributes") or {}).get("SentTimestamp", "")).isdigit()
    ]
    if not sent:
        return None
    return max(0.0, time.time() - min(sent) / 1000)
