"""The service graph in SQLite: hop rollups per edge and minute, kept up to date while stitching.

Nodes are services, destinations (SQS queues, SNS topics, EventBridge buses: ``{system}:{name}`` as
model/destinations.py reads them from ``messaging.system`` and ``messaging.destination.name``, the older
attribute names, an ARN or a queue URL) and external dependencies (client spans of AWS SDK, RPC or database
calls, named from ``rpc.service``, ``db.system`` or ``server.address``). Edges:

- ``sync``: a client span's service -> the service of the server span beneath it;
- ``publish``: a producer span's service -> its destination, and so does a dependency call that sends to a
  destination it names (vanilla botocore's SQS SendMessage is a CLIENT span: stitch/graph_rules.py);
- ``consume``: a destination -> the service of a consumer span (queue wait = consumer start minus the
  linked, parent or same-message producer's end, a sending client span being one; and the highest receive
  count);
- ``subscription``: the producer's destination -> the consumer's, when they differ (SNS -> SQS);
- ``external``: a service -> an external dependency, or -> the destination a dependency call names without
  sending to it (ReceiveMessage, DeleteMessage).

A server span whose client parent has not arrived yet (or a consumer whose producer has not) waits in
``pending_hops`` and is counted when that span arrives, so the graph does not depend on arrival order.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from hopscope.collector.model import conventions
from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.model.destinations import destination_name, destination_node
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.model.red import FAAS_INVOCATION_ID, FAAS_TRIGGER
from hopscope.collector.otlp.values import any_value
from hopscope.collector.stitch.facts import Attribute
from hopscope.collector.stitch.graph_rules import (
    BUCKET_NS,
    CLIENT_EDGE_KEYS,
    DEFAULT_MESSAGING_SYSTEM,
    DEPENDENCY_KEYS,
    EXTERNAL_GRACE_NS,
    PENDING_HOP_TTL_NS,
    client_edge,
)
from hopscope.collector.stitch.guard import joinable_link
from hopscope.collector.store.sqlite.red import merge_windows

_EXTERNAL = '{"type": "external"'  # how an external candidate's JSON begins
_ERROR = Status.StatusCode.STATUS_CODE_ERROR
_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})  # any_value: as they are


class _KIND:
    """The span kinds the graph compares, as plain ints: each ``Span.SpanKind.X`` is a call of protobuf's enum
    wrapper's ``__getattr__``, several per span, which cost a fifth of stitching's CPU (bench/README.md)."""

    SPAN_KIND_SERVER = int(Span.SpanKind.SPAN_KIND_SERVER)
    SPAN_KIND_CLIENT = int(Span.SpanKind.SPAN_KIND_CLIENT)
    SPAN_KIND_PRODUCER = int(Span.SpanKind.SPAN_KIND_PRODUCER)
    SPAN_KIND_CONSUMER = int(Span.SpanKind.SPAN_KIND_CONSUMER)


# The only attributes the graph reads; converting just these keeps stitching cheap.
_GRAPH_KEYS = frozenset(
    {
        *CLIENT_EDGE_KEYS,
        conventions.RECEIVE_COUNT,
        conventions.MESSAGE_ID,
        conventions.BATCH_MESSAGE_COUNT,
        conventions.RECORD_SPANS,
    }
)

# Every attribute that stitching into SQLite reads (flows, RED's span roles, the graph): the store picks these
# out of each span once, and each part reads its own among them.
STITCH_KEYS = frozenset({*_GRAPH_KEYS, *conventions.FLOW_ATTRIBUTES, FAAS_INVOCATION_ID, FAAS_TRIGGER})

EdgeKey = tuple[str, str, str, int]  # source, target, edge kind, bucket start

# Keys per statement of a chunk's look-ups (two parameters each: under SQLite's oldest limit of 999).
_LOOKUP_KEYS = 400
_Key = TypeVar("_Key")


def _batches(keys: Iterable[_Key]) -> list[list[_Key]]:
    listed = list(keys)
    return [listed[i : i + _LOOKUP_KEYS] for i in range(0, len(listed), _LOOKUP_KEYS)]


def _pairs(keys: list[tuple[bytes, bytes]]) -> tuple[str, list[bytes]]:
    """A VALUES list of (trace id, span id) pairs and its parameters: joined to an index, one search each."""
    return ",".join(["(?, ?)"] * len(keys)), [part for key in keys for part in key]


_Value = TypeVar("_Value")


class _once(Generic[_Value]):
    """``functools.cached_property`` without the lock it takes on each first read in Python 3.11: computed
    on the first read, then a plain attribute of the instance (a non-data descriptor is shadowed by it)."""

    def __init__(self, compute: Callable[[Any], _Value]) -> None:
        self._compute = compute
        self._name = compute.__name__

    def __get__(self, instance: Any, owner: type | None = None) -> _Value:
        value = instance.__dict__[self._name] = self._compute(instance)
        return value


@dataclass
class _SpanInfo:
    service: str
    kind: int
    start: int
    end: int
    error: bool
    attributes: dict[str, Any]
    link_count: int = 0

    @property
    def is_linked_batch(self) -> bool:
        """A consumer span of a whole batch that links to its messages: it counts one hop per link."""
        return (
            self.kind == _KIND.SPAN_KIND_CONSUMER
            and self.link_count > 0
            and (conventions.BATCH_MESSAGE_COUNT in self.attributes)
        )

    @_once  # each is read again for every hop waiting for the span
    def sends(self) -> bool:
        """A producer span, or a dependency call that sends to the destination it names (vanilla botocore's
        SQS SendMessage is a CLIENT span): either is a consumer's producer."""
        if self.kind == _KIND.SPAN_KIND_PRODUCER:
            return True
        if self.kind != _KIND.SPAN_KIND_CLIENT:
            return False
        edge = client_edge(self.attributes)
        return edge is not None and edge[1] == "publish"

    @_once
    def destination(self) -> str | None:
        """The destination's node, named by its name whatever form the span gives (model/destinations.py)."""
        return destination_node(self.attributes, DEFAULT_MESSAGING_SYSTEM)

    @_once
    def message_key(self) -> tuple[bytes, bytes] | None:
        """Where a consumer joined by message id alone waits in ``pending_hops`` for its producer."""
        message_id = self.attributes.get(conventions.MESSAGE_ID)
        if message_id is None:
            return None
        destination = destination_name(self.attributes)
        if not destination:
            return None
        digest = hashlib.blake2b(f"{message_id}\0{destination}".encode(), digest_size=16).digest()
        return digest, b"message\0"


def _message_key(info: _SpanInfo) -> tuple[bytes, bytes] | None:
    return info.message_key


def _info(span: Span, service: str, attributes: Sequence[Attribute] | None = None) -> _SpanInfo:
    """What the graph reads of a span; ``attributes``: its attributes as (key, value), or any part of them
    that holds every one of ``_GRAPH_KEYS`` (in their order), when the caller has them at hand."""
    kind = span.kind
    return _SpanInfo(
        service,
        kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code == _ERROR,
        # the graph reads no attribute of a server span, nor its links
        {}
        if kind == _KIND.SPAN_KIND_SERVER
        else _graph_attributes(span.attributes)
        if attributes is None
        else {key: _value(value) for key, value in attributes if key in _GRAPH_KEYS},
        sum(joinable_link(link.trace_id, link.span_id) for link in span.links)
        if kind == _KIND.SPAN_KIND_CONSUMER and span.links
        else 0,
    )


def _may_be_external(info: _SpanInfo) -> bool:
    """A client span that calls no dependency and names a server address: maybe an uninstrumented server."""
    attributes = info.attributes
    return bool(attributes.get("server.address")) and not any(k in attributes for k in DEPENDENCY_KEYS)


def _receive_count(value: Any) -> int:
    """A receive count read as a number, 0 when it is none: NaN, an infinity or text that is no number
    (as ClickHouse's graph reads it)."""
    if isinstance(value, int):
        return int(value)  # a bool too, as 0 or 1
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) else 0


def _joinable_links(span: Span) -> list[Span.Link]:
    """The links that can name a producer: one of an invalid context joins no hop (stitch/guard.py)."""
    return [link for link in span.links if joinable_link(link.trace_id, link.span_id)]


def _graph_attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in attributes if kv.key in _GRAPH_KEYS}


def _value(value: AnyValue) -> Any:
    """``any_value``, the common case (a scalar) without a second call."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in _SCALARS else any_value(value)


class GraphRollups:
    """One stitching chunk's hops, folded into ``hop_rollups`` by :meth:`apply`."""

    def __init__(self) -> None:
        self._chunk: dict[tuple[bytes, bytes], tuple[Span, str, Sequence[Attribute] | None]] = {}
        self.rollups: dict[EdgeKey, HopRollup] = {}
        self._pending: list[tuple[bytes, bytes, str]] = []
        # Client spans of this chunk that a server span beneath them has already been paired with: when the
        # server comes first in the chunk, the client must not then wait to become an external call.
        self._served: set[tuple[bytes, bytes]] = set()
        # Read once per chunk (one statement per _LOOKUP_KEYS keys, not one per span): the span infos asked
        # for (chunk-local or stored), the stored spans a chunk span may pair with, the hops waiting for the
        # chunk's clients and producers, and the client calls that have a stored server span beneath them.
        self._infos: dict[tuple[bytes, bytes], _SpanInfo] = {}
        self._stored: dict[tuple[bytes, bytes], tuple[str, bytes] | None] = {}
        self._waiting: dict[tuple[bytes, bytes], list[tuple[int, str]]] = {}
        self._resolved_rowids: list[tuple[int]] = []
        self._served_externals: list[tuple[bytes, bytes, str]] = []
        self._awaited: set[tuple[bytes, bytes]] = set()
        self._with_server: set[tuple[bytes, bytes]] | None = None
        self._local_servers: set[tuple[bytes, bytes]] = set()  # (trace id, parent span id) of chunk servers
        self._maybe_external: list[tuple[bytes, bytes]] = []  # chunk calls that may need _has_server

    def add(self, span: Span, service: str, attributes: Sequence[Attribute] | None = None) -> None:
        """Take a span of the chunk (``attributes``: as :func:`_info` takes them)."""
        if span.kind in (_KIND.SPAN_KIND_SERVER, _KIND.SPAN_KIND_CONSUMER, _KIND.SPAN_KIND_PRODUCER,
                         _KIND.SPAN_KIND_CLIENT):  # fmt: skip
            self._chunk[(span.trace_id, span.span_id)] = (span, service, attributes)

    def apply(self, conn: sqlite3.Connection) -> None:
        self._prefetch(conn)
        for key, (span, service, attributes) in self._chunk.items():
            trace_id, span_id = key
            info = self._infos.get(key)
            if info is None:
                info = self._infos[key] = _info(span, service, attributes)
            if span.kind == _KIND.SPAN_KIND_PRODUCER:
                if info.destination:
                    self._count(f"service:{service}", info.destination, "publish", info)
                self._resolve(conn, trace_id, span_id, info)
                message_key = _message_key(info)
                if message_key is not None:
                    self._resolve(conn, *message_key, info)
            elif span.kind == _KIND.SPAN_KIND_CLIENT:
                edge = client_edge(info.attributes)
                if edge is not None:
                    self._count(f"service:{service}", *edge, info)
                served = self._resolve(conn, trace_id, span_id, info) or (trace_id, span_id) in self._served
                message_key = _message_key(info) if edge is not None and edge[1] == "publish" else None
                if message_key is not None:  # a consumer joined by message id to a vanilla SendMessage
                    self._resolve(conn, *message_key, info)
                if not served and _may_be_external(info) and not self._has_server(conn, trace_id, span_id):
                    # maybe an uninstrumented server
                    address = str(info.attributes["server.address"])
                    candidate = {"type": "external", "service": service, "target": address,
                                 "start": info.start, "end": info.end, "error": info.error}  # fmt: skip
                    self._pending.append((trace_id, span_id, json.dumps(candidate)))
            elif span.kind == _KIND.SPAN_KIND_SERVER and span.parent_span_id:
                self._server(conn, (trace_id, span.parent_span_id), info)
            elif span.kind == _KIND.SPAN_KIND_CONSUMER:
                self._consumer(conn, span, info)
        conn.executemany("DELETE FROM pending_hops WHERE rowid = ?", self._resolved_rowids)
        conn.executemany(
            "DELETE FROM pending_hops WHERE trace_id = ? AND span_id = ? AND hop LIKE ?",
            self._served_externals,
        )
        self._expire_external_candidates(conn)
        self._write(conn)

    # -- pairing -----------------------------------------------------------------------------------------

    def _prefetch(self, conn: sqlite3.Connection) -> None:
        """Read what the chunk's spans will ask the store about, a few statements for the whole chunk."""
        chunk = self._chunk
        parents: dict[tuple[bytes, bytes], None] = {}  # the stored spans a chunk span may pair with
        awaited: dict[tuple[bytes, bytes], None] = {}  # the chunk's spans that hops may wait for
        local_servers = self._local_servers
        for key, (span, service, attributes) in chunk.items():
            kind = span.kind
            if kind == _KIND.SPAN_KIND_SERVER:
                parent_key = (key[0], span.parent_span_id)
                local_servers.add(parent_key)
                if span.parent_span_id:
                    parents[parent_key] = None
            elif kind == _KIND.SPAN_KIND_CONSUMER:
                if span.parent_span_id:
                    parents[(key[0], span.parent_span_id)] = None
                for link in span.links:
                    parents[(link.trace_id, link.span_id)] = None
            else:  # a producer or a client: hops wait for it, by its id or its message
                awaited[key] = None
                info = self._infos[key] = _info(span, service, attributes)
                message_key = _message_key(info)
                if message_key is not None:
                    awaited[message_key] = None
                if kind == _KIND.SPAN_KIND_CLIENT and _may_be_external(info):
                    self._maybe_external.append(key)
        stored = self._stored
        for key in parents:
            if key not in chunk:
                stored[key] = None
        for batch in _batches(stored):
            values, parameters = _pairs(batch)
            for trace_id, span_id, service, blob in conn.execute(
                f"WITH k(t, s) AS (VALUES {values}) SELECT p.trace_id, p.span_id, p.service_name, p.span "
                "FROM k CROSS JOIN spans p ON p.trace_id = k.t AND p.span_id = k.s",
                parameters,
            ):
                stored[(trace_id, span_id)] = (service, blob)
        self._awaited = set(awaited)
        waiting = self._waiting
        for batch in _batches(awaited):
            values, parameters = _pairs(batch)
            for rowid, trace_id, span_id, hop in conn.execute(
                f"WITH k(t, s) AS (VALUES {values}) SELECT p.rowid, p.trace_id, p.span_id, p.hop "
                "FROM k CROSS JOIN pending_hops p ON p.trace_id = k.t AND p.span_id = k.s",
                parameters,
            ):
                waiting.setdefault((trace_id, span_id), []).append((rowid, hop))
        for rows in waiting.values():
            rows.sort()

    def _find(self, conn: sqlite3.Connection, key: tuple[bytes, bytes]) -> _SpanInfo | None:
        info = self._infos.get(key)
        if info is not None:
            return info
        local = self._chunk.get(key)
        if local is not None:
            info = _info(*local)
        else:
            if key in self._stored:
                row = self._stored[key]
            else:  # not asked for in advance
                row = conn.execute(
                    "SELECT service_name, span FROM spans WHERE trace_id = ? AND span_id = ?", key
                ).fetchone()
                self._stored[key] = row
            if row is None:
                return None
            info = _info(Span.FromString(row[1]), row[0])
        self._infos[key] = info
        return info

    def _has_server(self, conn: sqlite3.Connection, trace_id: bytes, span_id: bytes) -> bool:
        """Whether a server span beneath this client is stored, stitched or not: a server stitched before
        its client (or stored, and stitched after) has already counted, or will count, the sync hop."""
        if self._with_server is None:  # the servers beneath any of the chunk's calls that may ask, in one go
            # a server of this chunk is stored too: the calls it is beneath need not be looked up
            self._with_server = self._local_servers
            calls = {key[0] for key in self._maybe_external if key not in self._with_server}
            for batch in _batches(calls):
                self._with_server.update(
                    conn.execute(
                        f"SELECT trace_id, parent_span_id FROM spans WHERE kind = ? AND trace_id IN "
                        f"({','.join('?' * len(batch))})",
                        (_KIND.SPAN_KIND_SERVER, *batch),
                    )
                )
        return (trace_id, span_id) in self._with_server

    def _server(self, conn: sqlite3.Connection, parent_key: tuple[bytes, bytes], info: _SpanInfo) -> None:
        parent = self._find(conn, parent_key)
        hop = {
            "type": "sync",
            "service": info.service,
            "start": info.start,
            "end": info.end,
            "error": info.error,
        }
        if parent is None:
            self._pending.append((*parent_key, json.dumps(hop)))
            return
        self._count_sync(parent, hop)
        # the parent has a server beneath it after all: it is not an external call (a candidate of this
        # chunk is left out by _write, a stored one deleted by apply)
        self._served.add(parent_key)
        if parent_key not in self._awaited:  # a call stitched before: its candidate may be stored
            self._served_externals.append((*parent_key, _EXTERNAL + "%"))
            return
        waiting = self._waiting.get(parent_key)  # read in advance, unless resolved already
        if waiting:
            self._resolved_rowids.extend((rowid,) for rowid, hop in waiting if hop.startswith(_EXTERNAL))
            waiting[:] = [row for row in waiting if not row[1].startswith(_EXTERNAL)]

    def _count_sync(self, parent: _SpanInfo, hop: dict[str, Any]) -> None:
        if parent.kind == _KIND.SPAN_KIND_CLIENT and parent.service != hop["service"]:
            child = _SpanInfo(
                hop["service"], _KIND.SPAN_KIND_SERVER, hop["start"], hop["end"], hop["error"], {}
            )
            self._count(f"service:{parent.service}", f"service:{hop['service']}", "sync", child)

    def _consumer(self, conn: sqlite3.Connection, span: Span, info: _SpanInfo) -> None:
        """A consume hop per message: a batch span that links to its messages counts one per link, and the
        per-record spans beneath it (hopscope's ``process_batch``) count none: no message counts twice.
        """
        if info.is_linked_batch:
            if info.attributes.get(conventions.RECORD_SPANS):
                return  # hopscope's process_batch: each record's own span counts its hop
            for link in _joinable_links(span):
                one = replace(info, attributes={**info.attributes, **_graph_attributes(link.attributes)})
                self._consume(conn, span.trace_id, one, [(link.trace_id, link.span_id)])
            return
        producers = [(link.trace_id, link.span_id) for link in _joinable_links(span)]
        if span.parent_span_id:
            parent = self._find(conn, (span.trace_id, span.parent_span_id))
            if parent is not None and parent.is_linked_batch:
                return
            producers.append((span.trace_id, span.parent_span_id))
        self._consume(conn, span.trace_id, info, producers)

    def _consume(
        self, conn: sqlite3.Connection, trace_id: bytes, info: _SpanInfo, producers: list[tuple[bytes, bytes]]
    ) -> None:
        receive_count = _receive_count(info.attributes.get(conventions.RECEIVE_COUNT))
        hop = {
            "type": "consume",
            "service": info.service,
            "destination": info.destination,
            "start": info.start,
            "end": info.end,
            "error": info.error,
            "receive_count": receive_count,
        }
        for key in producers:
            producer = self._find(conn, key)
            if producer is not None and producer.sends:
                self._count_consume(producer, hop)
                return
        if producers and info.destination is None:  # the producer names the destination: wait for it
            self._pending.append((*producers[0], json.dumps(hop)))
            return
        message_key = _message_key(info)
        if not producers and message_key is not None:  # joined by message id alone
            producer = self._producer_of_message(conn, trace_id, info)
            if producer is not None:
                self._count_consume(producer, hop)
                return
            producers.append(message_key)
        if producers:
            self._pending.append((*producers[0], json.dumps({**hop, "counted": True})))
        if info.destination is not None:
            self._count(
                info.destination, f"service:{info.service}", "consume", info, receive_count=receive_count
            )

    def _count_consume(self, producer: _SpanInfo | None, hop: dict[str, Any]) -> None:
        consumer = _SpanInfo(
            hop["service"], _KIND.SPAN_KIND_CONSUMER, hop["start"], hop["end"], hop["error"], {}
        )
        destination = hop["destination"] or (producer.destination if producer else None)
        wait = hop["start"] - producer.end if producer is not None else None
        if destination is None:
            return
        if not hop.get("counted"):
            self._count(destination, f"service:{hop['service']}", "consume", consumer,
                        wait=wait, receive_count=hop["receive_count"])  # fmt: skip
        elif wait is not None:  # counted on arrival; only its queue wait was missing
            self._count(destination, f"service:{hop['service']}", "consume", consumer, wait=wait, hops=0)
        if producer is not None and producer.destination and producer.destination != destination:
            self._count(producer.destination, destination, "subscription", consumer, wait=wait)

    def _producer_of_message(
        self, conn: sqlite3.Connection, trace_id: bytes, info: _SpanInfo
    ) -> _SpanInfo | None:
        """The producer span (or sending client span) of the consumer's message id and destination, in
        another trace."""
        message_id = str(info.attributes[conventions.MESSAGE_ID])
        destination = destination_name(info.attributes)
        traces = conn.execute(
            "SELECT trace_id FROM message_keys WHERE message_id = ? AND destination = ? AND trace_id != ?",
            (message_id, destination, trace_id),
        ).fetchall()
        for (other,) in traces:
            for service, blob in conn.execute(
                "SELECT service_name, span FROM spans WHERE trace_id = ? AND kind IN (?, ?)",
                (other, _KIND.SPAN_KIND_PRODUCER, _KIND.SPAN_KIND_CLIENT),
            ):
                candidate = _info(Span.FromString(blob), service)
                if candidate.sends and _message_key(candidate) == _message_key(info):
                    return candidate
        return None

    def _resolve(self, conn: sqlite3.Connection, trace_id: bytes, span_id: bytes, info: _SpanInfo) -> int:
        """Count the hops that were waiting for this (client or producer) span; returns how many."""
        key = (trace_id, span_id)
        rows = self._waiting.pop(key, None)
        if rows is None:
            if key in self._awaited:  # read in advance: nothing waits (any more)
                return 0
            rows = conn.execute(
                "SELECT rowid, hop FROM pending_hops WHERE trace_id = ? AND span_id = ?", key
            ).fetchall()
        for rowid, text in rows:
            hop = json.loads(text)
            if hop["type"] == "sync":
                self._count_sync(info, hop)
            elif info.sends:
                self._count_consume(info, hop)
            self._resolved_rowids.append((rowid,))
        return len(rows)

    def _expire_external_candidates(self, conn: sqlite3.Connection) -> None:
        """Client calls whose server never showed up within the grace period are external calls."""
        cutoff = time.time_ns() - EXTERNAL_GRACE_NS
        rows = conn.execute(
            "SELECT rowid, hop FROM pending_hops WHERE waiting_since_unix_nano < ? AND hop LIKE ?",
            (cutoff, _EXTERNAL + "%"),
        ).fetchall()
        for rowid, text in rows:
            hop = json.loads(text)
            call = _SpanInfo(
                hop["service"], _KIND.SPAN_KIND_CLIENT, hop["start"], hop["end"], hop["error"], {}
            )
            self._count(f"service:{hop['service']}", f"external:{hop['target']}", "external", call)
            conn.execute("DELETE FROM pending_hops WHERE rowid = ?", (rowid,))

    # -- rollups -----------------------------------------------------------------------------------------

    def _count(
        self,
        source: str,
        target: str,
        edge_kind: str,
        span: _SpanInfo,
        *,
        wait: int | None = None,
        receive_count: int = 0,
        hops: int = 1,
    ) -> None:
        key = (source, target, edge_kind, span.start - span.start % BUCKET_NS)
        rollup = self.rollups.get(key)
        if rollup is None:
            rollup = self.rollups[key] = HopRollup()
        if hops:
            rollup.hop_count += hops
            rollup.error_count += span.error
            rollup.durations[latency_histogram.bin_of(max(0, span.end - span.start))] += 1
        if wait is not None:
            rollup.waits[latency_histogram.bin_of(max(0, wait))] += 1
        rollup.max_receive_count = max(rollup.max_receive_count, receive_count)

    def _write(self, conn: sqlite3.Connection) -> None:
        now = time.time_ns()
        served = self._served
        conn.executemany(
            "INSERT INTO pending_hops (trace_id, span_id, hop, waiting_since_unix_nano) VALUES (?, ?, ?, ?)",
            [
                (*pending, now)
                for pending in self._pending
                if not (pending[:2] in served and pending[2].startswith(_EXTERNAL))
            ],
        )
        conn.execute(
            "DELETE FROM pending_hops WHERE waiting_since_unix_nano < ?", (now - PENDING_HOP_TTL_NS,)
        )
        rows = []
        for key, delta in self.rollups.items():
            source, target, edge_kind, bucket = key
            existing = conn.execute(
                "SELECT hop_count, error_count, duration_histogram, wait_histogram, max_receive_count "
                "FROM hop_rollups WHERE bucket_start_unix_nano = ? AND source = ? AND target = ? "
                "AND edge_kind = ?",
                (bucket, source, target, edge_kind),
            ).fetchone()
            if existing is not None:
                delta.hop_count += existing[0]
                delta.error_count += existing[1]
                delta.durations.update(latency_histogram.decode(existing[2]))
                delta.waits.update(latency_histogram.decode(existing[3]))
                delta.max_receive_count = max(delta.max_receive_count, existing[4])
            rows.append(
                (
                    bucket,
                    source,
                    target,
                    edge_kind,
                    delta.hop_count,
                    delta.error_count,
                    latency_histogram.encode(delta.durations),
                    latency_histogram.encode(delta.waits),
                    delta.max_receive_count,
                )
            )
        conn.executemany(
            "INSERT OR REPLACE INTO hop_rollups (bucket_start_unix_nano, source, target, edge_kind, "
            "hop_count, error_count, duration_histogram, wait_histogram, max_receive_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def read_hop_rollups(
    conn: sqlite3.Connection, since_unix_nano: int, until_unix_nano: int, kinds: tuple[str, ...] | None = None
) -> list[tuple[str, str, str, HopRollup]]:
    """Hop rollups of the minutes starting in [since, until), merged per edge: (source, target, edge kind,
    rollup), one per edge and week of the range; only edges of ``kinds`` when given.

    Decoding each minute's histograms was the cost (a day of a wide system: 90,000 rows, 1.5 s): SQLite
    sums the counts and concatenates each edge's histograms, parsed once per edge (``merge_encoded``). A
    week at a time keeps the concatenation far under SQLite's longest string whatever the range.
    """
    only = f" AND edge_kind IN ({','.join('?' * len(kinds))})" if kinds else ""
    merged: list[tuple[str, str, str, HopRollup]] = []
    lo = since_unix_nano - since_unix_nano % BUCKET_NS
    for start, end in merge_windows(conn, "hop_rollups", lo, until_unix_nano):
        rows = conn.execute(
            "SELECT source, target, edge_kind, SUM(hop_count), SUM(error_count), "
            "group_concat(duration_histogram, ''), group_concat(wait_histogram, ''), MAX(max_receive_count) "
            "FROM hop_rollups WHERE bucket_start_unix_nano >= ? AND bucket_start_unix_nano < ?"
            + only
            + " GROUP BY source, target, edge_kind",
            (start, end, *(kinds or ())),
        )
        merged.extend(
            (
                source,
                target,
                edge_kind,
                HopRollup(
                    count,
                    errors,
                    latency_histogram.merge_encoded(durations),
                    latency_histogram.merge_encoded(waits),
                    receive,
                ),
            )
            for source, target, edge_kind, count, errors, durations, waits, receive in rows
        )
    return merged


def destinations_seen(conn: sqlite3.Connection, system_prefix: str, since_unix_nano: int) -> list[str]:
    """Queue names that spans sent to or consumed from since then (graph nodes ``aws_sqs:NAME``)."""
    rows = conn.execute(
        "SELECT source, target FROM hop_rollups WHERE bucket_start_unix_nano >= ?"
        " AND (source LIKE ? OR target LIKE ?)",
        (since_unix_nano, system_prefix + "%", system_prefix + "%"),
    ).fetchall()
    names = {node for row in rows for node in row if str(node).startswith(system_prefix)}
    return sorted(str(node)[len(system_prefix) :] for node in names)
