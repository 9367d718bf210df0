"""What became of each message of a flow, read from the flow's spans and hops and the stored dead letters.

A message is a producer span (not a ``redrive`` span, which re-sends one) with its deliveries: the async
hops from it (one per delivery). Consumer spans with a message id whose producer is not in the flow are
messages too. A dead-letter record belongs to a message by its SQS message id (the same in the dead-letter
queue as in its source queue), by the SNS message id of its envelope, or, when none matches, by the
producer's trace. A redrive is a ``redrive {dlq}`` span linked to the message's producer (or carrying its
message id); the deliveries that start after it are the retry's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from hopscope.collector.model import conventions
from hopscope.collector.model.destinations import destination_name
from hopscope.collector.model.fate import REDRIVE_SOURCE, DeadLetterRecord, Fate, MessageFate
from hopscope.collector.model.flows import AsyncHop, FlowSpan, SpanRef


def lookup_keys(spans: Iterable[FlowSpan]) -> tuple[list[str], list[bytes]]:
    """The message ids and producer traces under which a flow's dead letters are stored."""
    message_ids: set[str] = set()
    trace_ids: set[bytes] = set()
    for span in spans:
        message_id = span["attributes"].get(conventions.MESSAGE_ID)
        if span["kind"] in {"PRODUCER", "CONSUMER"} and message_id is not None:
            message_ids.add(str(message_id))
        if span["kind"] == "PRODUCER":
            trace_ids.add(bytes.fromhex(span["trace_id"]))
    return sorted(message_ids), sorted(trace_ids)


def _ref(span: FlowSpan) -> SpanRef:
    return {"trace_id": span["trace_id"], "span_id": span["span_id"]}


def _message_id(span: FlowSpan) -> str | None:
    value = span["attributes"].get(conventions.MESSAGE_ID)
    return None if value is None else str(value)


def _destination(span: FlowSpan) -> str:
    """The destination's name whatever form the span gives it, as the flow's hops name it."""
    return destination_name(span["attributes"]) or ""


@dataclass
class _Message:
    message_id: str | None
    destination: str
    producer: FlowSpan | None
    deliveries: list[FlowSpan] = field(default_factory=list)
    redrives: list[FlowSpan] = field(default_factory=list)
    records: list[DeadLetterRecord] = field(default_factory=list)

    def ids(self) -> set[str]:
        """Its SQS/SNS message ids: the producer's and those its consumers saw."""
        ids = {self.message_id} if self.message_id else set()
        ids.update(m for m in map(_message_id, self.deliveries) if m)
        return ids


def message_fates(
    spans: list[FlowSpan], hops: list[AsyncHop], records: list[DeadLetterRecord]
) -> list[MessageFate]:
    """Every message of the flow with its fate, in the order its producer (or first consumer) started."""
    by_id = {(span["trace_id"], span["span_id"]): span for span in spans}
    messages: dict[tuple[str, str], _Message] = {}
    for span in spans:
        if span["kind"] == "PRODUCER" and REDRIVE_SOURCE not in span["attributes"]:
            messages[(span["trace_id"], span["span_id"])] = _Message(
                _message_id(span), _destination(span), span
            )
    delivered: set[tuple[str, str]] = set()
    for hop in hops:
        producer_key = (hop["producer"]["trace_id"], hop["producer"]["span_id"])
        consumer = by_id.get((hop["consumer"]["trace_id"], hop["consumer"]["span_id"]))
        message = messages.get(producer_key)
        if consumer is not None and message is not None:
            message.deliveries.append(consumer)
            delivered.add((consumer["trace_id"], consumer["span_id"]))
    # Consumers of messages whose producer is not in the flow (a consumer span of a delivery already
    # counted, such as an invocation span beside its per-record span, carries a known message id).
    claimed = {message_id for message in messages.values() for message_id in message.ids()}
    orphans: dict[tuple[str, str], _Message] = {}
    for span in spans:
        message_id = _message_id(span)
        if span["kind"] != "CONSUMER" or message_id is None or message_id in claimed:
            continue
        if (span["trace_id"], span["span_id"]) in delivered:
            continue
        key = (message_id, _destination(span))
        orphan = orphans.setdefault(key, _Message(message_id, key[1], None))
        if not any(_same_delivery(span, other) for other in orphan.deliveries):
            orphan.deliveries.append(span)
    messages.update((("", f"{m}\x00{d}"), orphan) for (m, d), orphan in orphans.items())
    # Producers that are no messaging span (no message id, no delivery) are left out.
    found = [m for m in messages.values() if m.message_id or m.deliveries]
    _attach_redrives(found, spans)
    unclaimed = _attach_records(found, records)
    fates = [_fate(message) for message in sorted(found, key=_started)]
    fates.extend(_fate(_Message(r.message_id, "", None, records=[r])) for r in unclaimed)
    return fates


def _same_delivery(span: FlowSpan, other: FlowSpan) -> bool:
    """Two consumer spans of one delivery (an invocation span and its per-record span): same service and
    the same invocation id, else the same receive count."""
    if span["service"] != other["service"]:
        return False
    for key in ("faas.invocation_id", conventions.RECEIVE_COUNT):
        mine, theirs = span["attributes"].get(key), other["attributes"].get(key)
        if mine is not None and theirs is not None:
            return mine == theirs
    return False


def _started(message: _Message) -> tuple[int, str]:
    first = message.producer or min(message.deliveries, key=lambda span: span["start_unix_nano"])
    return first["start_unix_nano"], first["span_id"]


def _attach_redrives(messages: list[_Message], spans: list[FlowSpan]) -> None:
    by_producer = {
        (m.producer["trace_id"], m.producer["span_id"]): m for m in messages if m.producer is not None
    }
    by_id = {message_id: m for m in messages for message_id in m.ids()}
    for span in spans:
        if span["kind"] != "PRODUCER" or REDRIVE_SOURCE not in span["attributes"]:
            continue
        owner = next(
            (by_producer[key] for key in ((lk["trace_id"], lk["span_id"]) for lk in span["links"])
             if key in by_producer),
            None,
        )  # fmt: skip
        if owner is None:
            owner = by_id.get(_message_id(span) or "")
        if owner is not None:
            owner.redrives.append(span)


def _attach_records(messages: list[_Message], records: list[DeadLetterRecord]) -> list[DeadLetterRecord]:
    """Give each dead-letter record to its message; returns those no message of the flow claims."""
    by_id = {message_id: m for m in messages for message_id in m.ids()}
    by_trace: dict[str, list[_Message]] = {}
    for message in messages:
        if message.producer is not None:
            by_trace.setdefault(message.producer["trace_id"], []).append(message)
    unclaimed = []
    for record in records:
        owner = by_id.get(record.message_id) or by_id.get(record.sns_message_id or "")
        if owner is None and record.trace_id is not None:
            candidates = by_trace.get(record.trace_id, [])
            owner = candidates[0] if len(candidates) == 1 else None
        if owner is None:
            unclaimed.append(record)
        else:
            owner.records.append(record)
    return unclaimed


def _times(count: int, what: str) -> str:
    """``1 failed delivery``, ``2 failed deliveries``."""
    if count == 1:
        return f"1 {what}"
    return f"{count} {what[:-1]}ies" if what.endswith("y") else f"{count} {what}s"


def _fate(message: _Message) -> MessageFate:
    redrive_start = min((span["start_unix_nano"] for span in message.redrives), default=None)
    before = [s for s in message.deliveries if redrive_start is None or s["start_unix_nano"] < redrive_start]
    retry = [
        s for s in message.deliveries if redrive_start is not None and s["start_unix_nano"] >= redrive_start
    ]
    failed = [s for s in message.deliveries if s["status"]["code"] == "ERROR"]
    successes: dict[tuple[str, str | None], int] = {}
    for span in message.deliveries:
        if span["status"]["code"] != "ERROR":
            key = (span["service"], _message_id(span))
            successes[key] = successes.get(key, 0) + 1
    duplicates = sum(count - 1 for count in successes.values())
    consumers = sorted({span["service"] for span in message.deliveries})
    present = [r for r in message.records if r.present]
    last_redrive = max((span["start_unix_nano"] for span in message.redrives), default=None)
    in_queue = [r for r in present if last_redrive is None or r.last_seen_unix_nano > last_redrive]
    latest_record = max(message.records, key=lambda r: r.last_seen_unix_nano, default=None)
    redriven_to = _destination(message.redrives[-1]) or None if message.redrives else None
    failures = f"failed {_times(len(failed), 'delivery')}" if failed else ""
    by = f" by {', '.join(consumers)}" if consumers else ""
    if in_queue:
        fate = Fate.DEAD_LETTERED
        text = f"in dead-letter queue {in_queue[0].queue_name} now"
        text = f"{failures}; {text}" if failures else text[0].upper() + text[1:]
    elif message.redrives:
        fate = Fate.REDRIVEN
        source = message.redrives[-1]["attributes"].get(REDRIVE_SOURCE)
        text = f"redriven from {source} to {redriven_to or 'its queue'}"
        text = (
            f"{failures}, dead-lettered, then {text}" if failures and before else text[0].upper() + text[1:]
        )
        retried_ok = [s for s in retry if s["status"]["code"] != "ERROR"]
        if retried_ok:
            text += f"; processed{by} on retry"
        elif retry:
            text += "; the retry failed too"
        else:
            text += "; no processing of the retry yet"
    elif duplicates:
        fate = Fate.DUPLICATE
        text = f"Processed successfully more than once{by}: {_times(duplicates, 'duplicate delivery')}"
    elif successes and failed:
        fate = Fate.RETRIED
        text = f"Processed{by} after {_times(len(failed), 'failed delivery')}"
    elif successes:
        fate = Fate.PROCESSED
        text = f"Processed{by}"
    elif failed or message.records:
        fate = Fate.FAILED
        text = (failures or "never seen processed").capitalize()
        if latest_record is not None:
            text += f"; was in dead-letter queue {latest_record.queue_name}, gone since (deleted or purged)"
    else:
        fate = Fate.NO_PROCESSING
        text = "Sent; gone without a trace of processing (or still waiting in its queue)"
    return {
        "message_id": message.message_id,
        "destination": message.destination,
        "producer": None if message.producer is None else _ref(message.producer),
        "producer_service": None if message.producer is None else message.producer["service"],
        "fate": fate.value,
        "summary": text,
        "deliveries": len(message.deliveries),
        "failed_deliveries": len(failed),
        # a fan-out (SNS to several queues) delivers once to each consumer: only a consumer's later
        # deliveries are retries
        "retries": sum(
            count - 1 for count in Counter(span["service"] for span in message.deliveries).values()
        ),
        "duplicate_deliveries": duplicates,
        "consumers": consumers,
        "dead_letter_queue": latest_record.queue_name if latest_record is not None else None,
        "dead_lettered_since_unix_nano": in_queue[0].first_seen_unix_nano if in_queue else None,
        "left_dead_letter_queue_unix_nano": (
            latest_record.gone_unix_nano if latest_record is not None and not in_queue else None
        ),
        "redriven_to": redriven_to,
        "redrive_spans": [_ref(span) for span in message.redrives],
        "retry_spans": [_ref(span) for span in retry],
    }
