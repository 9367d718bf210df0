"""What the SQS poller learns about a queue, and what the query layer serves about it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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


def depth_sample(row: Sequence[object]) -> DepthSample:
    """A stored sample (queue, polled, visible, in flight, delayed, oldest age, age source), any store's."""
    name, polled, visible, in_flight, delayed, age, source = row
    return DepthSample(
        str(name), int(polled), int(visible), int(in_flight), int(delayed),  # type: ignore[call-overload]
        None if age is None else float(age),  # type: ignore[arg-type]
        None if source is None else str(source),
    )  # fmt: skip


def queue_summaries(rows: Iterable[Sequence[Any]], latest: Mapping[str, DepthSample]) -> list[QueueSummary]:
    """Summaries from stored queue rows (name, url, arn, DLQ name, max receive count, last polled, last error,
    its time) and each queue's latest sample: the queues that dead-letter into each one are found here."""
    queues = list(rows)
    sources: dict[str, list[str]] = {}
    for name, _url, _arn, dlq_name, *_rest in queues:
        if dlq_name:
            sources.setdefault(dlq_name, []).append(name)
    return [
        QueueSummary(
            name=name, url=url, arn=arn, dlq_name=dlq_name, max_receive_count=max_receive_count,
            sources=sorted(sources.get(name, [])), latest=latest.get(name),
            last_polled_unix_nano=last_polled, last_error=last_error, last_error_unix_nano=last_error_at,
        )
        for name, url, arn, dlq_name, max_receive_count, last_polled, last_error, last_error_at in queues
    ]  # fmt: skip
