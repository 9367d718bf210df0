"""A message's fate: what became of each message of a flow, and the facts the stores keep to tell it.

Two facts come from outside the flow's spans, so the stores keep them beside the flows:

- **Dead letters**: the SQS poller peeks at each dead-letter queue and records which messages it saw
  there (:class:`DeadLetterPeek`); a message is "in the dead-letter queue now" until a complete peek (or an
  empty queue) no longer finds it.
- **Successful deliveries**: while stitching, each successful consumer span that carries a message id is
  one delivery of that message to its consumer service (:class:`Delivery`). SQS delivers at least once: a
  message whose visibility timeout ran out while its first processing was still going is delivered again,
  and each success after the first is a *duplicate delivery* (what SQS asks handlers to be idempotent for).

Everything else (retries, redrives) is read from the flow's own spans when its detail is asked for.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypedDict

from hopscope.collector.model import conventions
from hopscope.collector.model.destinations import destination_name
from hopscope.collector.model.flows import SpanRef

# The span attribute ``hopscope dlq redrive`` writes on each ``redrive {dlq}`` span (aws/redrive.py).
REDRIVE_SOURCE = "hopscope.redrive.source"
# A receive count is a small number; longer text is not one (as stitch/facts.py reads it).
_COUNT_TEXT = re.compile(r"[0-9]{1,18}")


class Fate(enum.Enum):
    """What became of one message, the most telling first."""

    DEAD_LETTERED = "dead_lettered"  # in a dead-letter queue now
    REDRIVEN = "redriven"  # moved back out of a dead-letter queue by a redrive
    DUPLICATE = "duplicate_delivery"  # processed successfully more than once by the same consumer
    RETRIED = "retried"  # processed after failed attempts
    PROCESSED = "processed"
    FAILED = "failed"  # every attempt seen failed, and no dead-letter queue holds it (yet)
    NO_PROCESSING = "no_processing"  # sent, then gone without a trace of processing


class FateFilter(enum.Enum):
    """A flow-list filter on the fates of the flow's messages."""

    DEAD_LETTERED = "dead_lettered"
    DUPLICATES = "duplicates"


@dataclass(frozen=True, slots=True)
class DeadLetterSighting:
    """One message a poller's peek found in a dead-letter queue."""

    message_id: str
    trace_id: str | None = None  # the producer's trace (hex), from the message's trace context
    sns_message_id: str | None = None  # when the body is an SNS envelope
    receive_count: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterPeek:
    """What one poll saw in one dead-letter queue. ``complete``: the peek saw every message the queue
    held (an empty queue is a complete peek of nothing), so the messages seen before and not now are gone."""

    queue_name: str
    sightings: tuple[DeadLetterSighting, ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message seen in a dead-letter queue: since when, last when, and when it was found gone."""

    queue_name: str
    message_id: str
    trace_id: str | None
    sns_message_id: str | None
    receive_count: int | None
    first_seen_unix_nano: int
    last_seen_unix_nano: int
    gone_unix_nano: int | None = None

    @property
    def present(self) -> bool:
        return self.gone_unix_nano is None


def merge_peek(
    known: Mapping[str, DeadLetterRecord], peek: DeadLetterPeek, polled_unix_nano: int
) -> list[DeadLetterRecord]:
    """The records of ``peek.queue_name`` that change with this peek (``known``: its stored records by
    message id): every message seen now, and, after a complete peek, those no longer there (now gone)."""
    changed: list[DeadLetterRecord] = []
    seen: set[str] = set()
    for sighting in peek.sightings:
        if sighting.message_id in seen:
            continue
        seen.add(sighting.message_id)
        old = known.get(sighting.message_id)
        first = old.first_seen_unix_nano if old is not None and old.present else polled_unix_nano
        changed.append(
            DeadLetterRecord(
                peek.queue_name,
                sighting.message_id,
                sighting.trace_id,
                sighting.sns_message_id,
                sighting.receive_count,
                first,
                polled_unix_nano,
            )
        )
    if peek.complete:
        changed.extend(
            replace(old, gone_unix_nano=polled_unix_nano)
            for message_id, old in known.items()
            if old.present and message_id not in seen
        )
    return changed


@dataclass(frozen=True, slots=True)
class Delivery:
    """One successful processing of a message by a consumer service, as the stores count them.

    ``attempt`` names the delivery: SQS's receive count when the span has one (hopscope's invocation span
    and its per-record span of the same delivery share it), else the span's own id (vanilla OpenTelemetry
    makes one consumer span per delivery).
    """

    message_id: str
    destination: str
    consumer_service: str
    attempt: str
    trace_id: bytes
    start_unix_nano: int


def delivery_of(  # noqa: PLR0917 - the stores call it per span with what their rows hold
    consumer: bool,
    error: bool,
    service_name: str,
    trace_id: bytes,
    span_id: bytes,
    start_unix_nano: int,
    attributes: Mapping[str, str],
) -> Delivery | None:
    """The successful delivery a span records, if it is one: a CONSUMER span, not an error, with a message
    id (``attributes`` as text, as ClickHouse's span feed holds them)."""
    if not consumer or error:
        return None
    message_id = attributes.get(conventions.MESSAGE_ID, "")
    if not message_id:
        return None
    count = attributes.get(conventions.RECEIVE_COUNT, "")
    attempt = f"receive:{count}" if _COUNT_TEXT.fullmatch(count) else f"span:{span_id.hex()}"
    return Delivery(
        message_id,
        destination_name(attributes) or "",  # whatever form the span names it in, as flows and the graph
        service_name,
        attempt,
        trace_id,
        start_unix_nano,
    )


@dataclass(frozen=True, slots=True)
class DuplicateRate:
    """A consumer service's successful processings of one destination's messages, and how many of them
    were duplicate deliveries (a second or later success of the same message)."""

    destination: str
    consumer_service: str
    messages: int  # distinct messages processed successfully
    duplicate_deliveries: int

    @property
    def rate(self) -> float:
        """Duplicate deliveries per message processed."""
        return self.duplicate_deliveries / self.messages if self.messages else 0.0


def duplicate_rates(rows: Iterable[tuple[str, str, int, int]]) -> list[DuplicateRate]:
    """(destination, consumer service, messages, successful deliveries) rows as sorted rates."""
    return sorted(
        (
            DuplicateRate(str(dest), str(service), int(messages), int(deliveries) - int(messages))
            for dest, service, messages, deliveries in rows
        ),
        key=lambda rate: (rate.destination, rate.consumer_service),
    )


class MessageFate(TypedDict):
    """What became of one message of a flow (``GET /api/flows/{id}``'s ``messages``)."""

    message_id: str | None  # None when the producer span carries no message id
    destination: str
    producer: SpanRef | None  # None when only the consumer's spans are in the flow
    producer_service: str | None
    fate: str  # a Fate value
    summary: str  # the fate in one plain sentence
    deliveries: int  # deliveries seen (attempts), retries included
    failed_deliveries: int
    retries: int  # deliveries after each consumer's first
    duplicate_deliveries: int
    consumers: list[str]
    dead_letter_queue: str | None  # where it is now, or was
    dead_lettered_since_unix_nano: int | None
    left_dead_letter_queue_unix_nano: int | None  # when a poll found it gone
    redriven_to: str | None
    redrive_spans: list[SpanRef]
    retry_spans: list[SpanRef]  # the processing after the redrive
