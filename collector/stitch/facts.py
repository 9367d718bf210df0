"""What each span tells about its trace's flow, gathered while a request is prepared for the store.

The writer thread then merges these per-trace facts into flows with a few statements per trace, never
per span, and never by rescanning stored spans (stitching stays incremental).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import conventions
from hopscope.collector.model.destinations import DESTINATION_KEYS, destination_name

_ERROR = Status.StatusCode.STATUS_CODE_ERROR
# An attribute picked out of a span, (key, value): the store reads each span's attributes once for flows, RED
# and the graph (each protobuf field read makes a new Python object).
Attribute = tuple[str, AnyValue]
_KEY_PREFIXES = tuple(prefix.encode() for prefix in conventions.FLOW_ATTRIBUTE_PREFIXES)
# A receive count is a small number; longer text (or a 64-bit integer's overflow) is not one.
_COUNT_TEXT = re.compile(r"[0-9]{1,18}")
# Spans whose messaging.message.id names a message they sent or received. CLIENT: vanilla botocore makes
# SQS SendMessage a CLIENT span (with the message id), so a vanilla producer stitches to any consumer that
# reports the id (hopscope's, or links carrying it).
_MESSAGING_KINDS = frozenset(
    {Span.SpanKind.SPAN_KIND_PRODUCER, Span.SpanKind.SPAN_KIND_CONSUMER, Span.SpanKind.SPAN_KIND_CLIENT}
)
_CONSUMER = Span.SpanKind.SPAN_KIND_CONSUMER
_LINK_MESSAGE_ID = conventions.MESSAGE_ID.encode()

# A flow's entry is its smallest candidate (rank, start, service, operation): a min() that gives the same
# answer whatever order the spans arrive in, and can be kept up to date a batch at a time.
Entry = tuple[int, int, str, str]
# Rank of an origin: a span without a parent that no message or link caused, where a request began.
ORIGIN = 0
# Rank of any other span: its cause is elsewhere (a parent, maybe never received, a link, a message). When
# a flow has no origin (its API was called with an external traceparent), its earliest span is the entry:
# a span whose parent is in the flow starts after it (up to clock skew between hosts).
CONTINUED = 1


def entry_rank(has_parent: bool, consumer: bool, linked: bool) -> int:
    """ORIGIN for a span that began a request, CONTINUED for one that carries on from elsewhere.

    A consumer span (or a linked one) without a parent was caused by a message: it never outranks the span
    that sent it, even when that span's own parent came from outside.
    """
    return CONTINUED if has_parent or consumer or linked else ORIGIN


def earlier_entry(current: Entry | None, candidate: Entry | None) -> Entry | None:
    """The entry of the two candidates (None: no candidate)."""
    if candidate is None or (current is not None and current <= candidate):
        return current
    return candidate


@dataclass(slots=True)
class TraceFacts:
    """One trace's share of a request: enough to create, grow or join its flow."""

    trace_id: bytes
    span_count: int = 0
    start_unix_nano: int = 2**63 - 1
    end_unix_nano: int = 0
    error_count: int = 0
    max_receive_count: int = 0
    # The trace's entry candidate (see Entry): its origin, else its earliest span.
    entry: Entry | None = None
    operations: set[tuple[str, str]] = field(default_factory=set)  # (service, span name)
    correlation_ids: set[str] = field(default_factory=set)
    linked_traces: set[bytes] = field(default_factory=set)
    message_keys: set[tuple[str, str]] = field(default_factory=set)  # (message id, destination)
    # Message ids that a consumer span's links carry (vanilla OpenTelemetry puts them there, one per record):
    # (message id, destination, the linked trace). Each names the message of the LINKED trace, so a batch
    # span's keys find each message's own flow, never the batch's.
    link_keys: set[tuple[str, str, bytes]] = field(default_factory=set)


class FlowFacts:
    """Collects :class:`TraceFacts` span by span."""

    def __init__(self) -> None:
        self.traces: dict[bytes, TraceFacts] = {}

    def _fold(  # noqa: PLR0917 - the hot path of stitching: positional is cheapest
        self, trace_id: bytes, start: int, end: int, error: bool, rank: int, service_name: str, name: str
    ) -> TraceFacts:
        """What every span tells, whatever form it came in; returns its trace's facts."""
        facts = self.traces.get(trace_id)
        if facts is None:
            facts = self.traces[trace_id] = TraceFacts(trace_id)
        facts.span_count += 1
        if start < facts.start_unix_nano:  # noqa: PLR1730 - hot path: a compare is cheaper than min()
            facts.start_unix_nano = start
        if end > facts.end_unix_nano:  # noqa: PLR1730
            facts.end_unix_nano = end
        if error:
            facts.error_count += 1
        entry = facts.entry
        # hot path: the tuple is built only when the span may be the entry
        if entry is None or rank < entry[0] or (rank == entry[0] and start <= entry[1]):
            candidate = (rank, start, service_name, name)
            if entry is None or candidate < entry:
                facts.entry = candidate
        facts.operations.add((service_name, name))
        return facts

    def add_row(  # noqa: PLR0917 - called once per span while stitching
        self,
        trace_id: bytes,
        start: int,
        end: int,
        error: bool,
        root: bool,
        service_name: str,
        name: str,
        kind: int,
        linked_trace_ids: Sequence[bytes],
        attributes: Mapping[str, str],
        link_message_ids: Sequence[str] = (),
    ) -> None:
        """Fold in a span read back from a table that keeps attribute values as text (ClickHouse's).

        ``link_message_ids`` holds each link's ``messaging.message.id`` ("" for none), in the order of
        ``linked_trace_ids``.
        """
        rank = entry_rank(not root, kind == _CONSUMER, len(linked_trace_ids) > 0)
        facts = self._fold(trace_id, start, end, error, rank, service_name, name)
        for linked in linked_trace_ids:
            if linked != trace_id:
                facts.linked_traces.add(linked)
        if not attributes and not any(link_message_ids):
            return
        receive_count = attributes.get(conventions.RECEIVE_COUNT)
        # text of any length or any digit set (isdigit() takes "²") never reaches int()
        if receive_count and _COUNT_TEXT.fullmatch(receive_count):
            facts.max_receive_count = max(facts.max_receive_count, int(receive_count))
        for key in conventions.CORRELATION_ATTRIBUTES:
            if attributes.get(key):
                facts.correlation_ids.add(attributes[key])
        message_id = attributes.get(conventions.MESSAGE_ID, "")
        destination = destination_name(attributes) or ""
        if message_id and kind in _MESSAGING_KINDS:
            facts.message_keys.add((message_id, destination))
        if kind == _CONSUMER:
            for linked, linked_message in zip(linked_trace_ids, link_message_ids, strict=False):
                if linked_message and linked != trace_id:
                    _add_link_key(facts, linked_message, destination, linked)

    def add(
        self,
        span: Span,
        service_name: str,
        serialized: bytes,
        times: tuple[int, int] | None = None,
        attributes: Iterable[Attribute] | None = None,
    ) -> None:
        """Fold one span in; ``serialized`` is the span's own encoding, used to skip attribute scans.

        Looking for a key in the encoded bytes (in C) is much cheaper than walking the attributes in
        Python, and most spans carry none of the keys that stitching reads. ``times`` replaces the span's
        own (start, end) when those are unusable (see stitch/guard.py). ``attributes``: the span's
        attributes as (key, value), or any part of them that holds all of ``FLOW_ATTRIBUTES`` (in their
        order), when the caller has already picked them out.
        """
        trace_id = span.trace_id
        start, end = times or (span.start_time_unix_nano, span.end_time_unix_nano)
        facts = self._fold(
            trace_id,
            start,
            end,
            span.status.code == _ERROR,
            # entry_rank(), inlined: this runs for every span
            CONTINUED if span.parent_span_id or span.kind == _CONSUMER or span.links else ORIGIN,
            service_name,
            span.name,
        )
        if span.links:
            for link in span.links:
                if link.trace_id != trace_id:
                    facts.linked_traces.add(link.trace_id)
        if attributes is None and _KEY_PREFIXES[0] not in serialized and _KEY_PREFIXES[1] not in serialized:
            return  # (picked attributes are few: walking them costs less than the two searches)
        message_id = destination = ""
        named: dict[str, object] | None = None  # destination attributes other than the plain name
        flow_keys = conventions.FLOW_ATTRIBUTES
        if attributes is None:
            attributes = ((kv.key, kv.value) for kv in span.attributes if kv.key in flow_keys)
        for key, value in attributes:
            if key not in flow_keys:
                continue
            if key == conventions.MESSAGE_ID:
                message_id = _text(value.string_value, value.int_value)
            elif key == conventions.DESTINATION_NAME:
                destination = value.string_value
            elif key in DESTINATION_KEYS:
                if named is None:
                    named = {}
                named[key] = value.string_value
            elif key == conventions.RECEIVE_COUNT:
                facts.max_receive_count = max(facts.max_receive_count, 0, value.int_value)
            elif value.string_value:  # a correlation attribute
                facts.correlation_ids.add(value.string_value)
        if named is not None or ":" in destination or "/" in destination:  # an ARN, a URL, an older key
            destination = destination_name({**(named or {}), conventions.DESTINATION_NAME: destination}) or ""
        if message_id and span.kind in _MESSAGING_KINDS:
            facts.message_keys.add((message_id, destination))
        if span.kind == _CONSUMER and span.links and _LINK_MESSAGE_ID in serialized:
            for link in span.links:
                if link.trace_id == trace_id:
                    continue
                for attribute in link.attributes:
                    if attribute.key == conventions.MESSAGE_ID:
                        value = attribute.value
                        linked_message = _text(value.string_value, value.int_value)
                        if linked_message:
                            _add_link_key(facts, linked_message, destination, link.trace_id)
                        break


def _add_link_key(facts: TraceFacts, message_id: str, destination: str, linked_trace: bytes) -> None:
    """Index a message id that a consumer span's link carries, as the linked trace's message.

    A key the span carries itself is not repeated (hopscope's consumer spans carry both).
    """
    if (message_id, destination) not in facts.message_keys:
        facts.link_keys.add((message_id, destination, linked_trace))


def _text(string_value: str, int_value: int) -> str:
    return string_value or (str(int_value) if int_value else "")
