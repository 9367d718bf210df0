"""What the SQS poller learns about a queue, and what the query layer serves about it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue as one poll saw it: its place in the redrive graph, and its last error if the poll failed."""

    name: str
    url: str
    arn: str | None = None
    dlq_name: str | None = None  # from its RedrivePolicy's deadLetterTargetArn
    max_receive_count: int | None = None
    fifo: bool = False
    error: str | None = None  # e.g. "AWS.SimpleQueueService.NonExistentQueue: queue deleted"


@dataclass(frozen=True, slots=True)
class DepthSample:
    """The message counts GetQueueAttributes reported at one poll (and the oldest message's age)."""

    queue_name: str
    polled_unix_nano: int
    visible: int
    in_flight: int
    delayed: int
    oldest_age_seconds: float | None = None
    age_source: str | None = None  # "cloudwatch" or "estimate" (a peek at SentTimestamp)


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """A queue for ``GET /api/queues``: the latest counts, its DLQ and sources, and how polling goes."""

    name: str
    url: str
    arn: str | None
    dlq_name: str | None
    max_receive_count: int | None
    sources: list[str] = field(default_factory=list)  # queues whose dead letters land here
    latest: DepthSample | None = None
    last_polled_unix_nano: int | None = None
    last_error: str | None = None
    last_error_unix_nano: int | None = None

    @property
    def is_dead_letter_queue(self) -> bool:
        return bool(self.sources)
