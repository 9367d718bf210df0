"""The service graph in ClickHouse: hop rollups computed at query time from ``otel_traces``.

The edges are the ones ``sqlite/graph.py`` counts while stitching (its docstring defines them), with the same
rules, in one ClickHouse query per read: each edge kind's branch yields one row per hop (source, target,
edge kind, the counted span's start, duration and error, the queue wait, the receive count), and one
GROUP BY folds them into per-minute rollups, histograms binned in SQL. Nothing depends on hopscope having
seen the spans at ingest, so rows that OpenTelemetry Collectors wrote are graphed the same way.

- ``sync``: SERVER spans in the range joined to their CLIENT parent in another service (counted on the
  server span).
- ``publish``: PRODUCER spans in the range that name a destination, and dependency CLIENT spans that send
  to one they name (``graph_rules.client_edge``). A destination node is named as model/destinations.py
  names it, in SQL (``_destination``: the same patterns, matched by re2; a property test holds the two
  equal).
- ``consume`` and ``subscription``: each CONSUMER span in the range is one hop, or one per link for a
  batch span that links to its messages (``messaging.batch.message_count`` and links of a valid context:
  one with an all-zero or wrong-length id pairs nothing, see stitch/guard.py); none for such a
  batch with ``hopscope.batch.record_spans`` set, none for a consumer span whose parent is such a batch.
  A hop's producer is the first of its links, then its parent, that is a PRODUCER span (or a CLIENT span
  that sends, as publish edges count them: vanilla botocore's SendMessage); a consumer span
  with neither is joined by message id and destination name to a producer in another trace (the smallest
  trace id, then span id, when several match). Queue wait = consumer start - producer end; a subscription
  hop too when the producer's destination is another.
- ``external``: CLIENT spans with ``rpc.system`` or ``db.system`` (to the destination they name without
  sending to it, else named from ``rpc.service``, ``db.system`` or ``server.address``), and CLIENT spans
  with ``server.address`` only that no SERVER span has as its parent and that ended more than
  ``EXTERNAL_GRACE_NS`` before the query.

Spans and their partners are joined on their ids as numbers (hex decoded), a message id and destination
on a 128-bit hash of them. Where SQLite's answer depends on arrival order or on the wall clock, the rule
here is the answer SQLite gives when the spans arrive in the most natural order (parents, producers and
batches first):

- Partners (a server's client parent, a consumer's producer or batch parent, a client's server child) are
  found among the spans that started within ``PENDING_HOP_TTL_NS`` of the range, whenever they arrived;
  SQLite pairs spans whatever their start times, but gives up on a partner that arrives more than an hour
  (wall clock) after the span that waits for it.
- An HTTP client span is an external call once it *ended* more than the grace period before the query,
  and no longer one if a server span beneath it is stored later. SQLite decides at the first stitch after
  the span has *waited* that long since it arrived, keeps it if a server span comes later, and does not
  count it when a consumer span beneath it came first.
- A consumer span beneath a linked batch counts no hop, even if it arrived before the batch (SQLite then
  counts it). Of several candidate producers the first is used even if it arrived last (SQLite takes the
  first of those that had arrived with the consumer, or the first candidate if none had). A consumer
  joined by message id takes the producer with the smallest trace id in another trace; in SQLite, a
  consumer that arrived first takes the first such producer to arrive, even in its own trace.
- A span stored twice (a Collector's retry) counts twice in sync, publish and external edges, as in this
  store's RED rollups; a consumer span stored twice counts once. SQLite keeps the first copy only.
- Attribute values are the exporter's text: ``hopscope.batch.record_spans`` is set unless empty or
  ``false``; ``hopscope.receive_count`` is read as a number (0 when it is none).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from hopscope.collector.model import conventions, destinations
from hopscope.collector.model import histogram as latency_histogram
from hopscope.collector.model.graph import HopRollup
from hopscope.collector.stitch.graph_rules import (
    BUCKET_NS,
    DEFAULT_MESSAGING_SYSTEM,
    DEPENDENCY_KEYS,
    EDGE_KINDS,
    EXTERNAL_GRACE_NS,
    EXTERNAL_KEYS,
    OPERATION_TYPE,
    PENDING_HOP_TTL_NS,
    RPC_METHOD,
    SEND_METHODS,
    SEND_OPERATION_TYPES,
)
from hopscope.collector.stitch.guard import MAX_SPAN_DURATION_NS, MIN_PLAUSIBLE_START_UNIX_NANO
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.spans import ERROR_STATUS_NAMES, kind_names

_MAX_NS = 2**63 - 1  # the last instant DateTime64(9) holds (2262-04-11)
_UINT64_MAX = 2**64 - 1
_TOP_BIN = latency_histogram.bin_of(_UINT64_MAX)
_SERVER, _CLIENT, _PRODUCER, _CONSUMER = 2, 3, 4, 5  # Span.SpanKind values

# -- the histogram bin in SQL ----------------------------------------------------------------------------


def bin_floors() -> list[int]:
    """floors[k - 1] = the smallest value in bin k or above (k = 1, 2, ...), found with bin_of itself;
    up to two bins more than any UInt64 reaches, whose floors are the largest UInt64."""
    floors = []
    for wanted in range(1, _TOP_BIN + 3):
        low, high = 0, _UINT64_MAX
        while low < high:
            middle = (low + high) // 2
            if latency_histogram.bin_of(middle) >= wanted:
                high = middle
            else:
                low = middle + 1
        floors.append(low)
    return floors


@functools.cache
def bin_floors_sql() -> str:
    """The WITH clause that :func:`bin_sql` needs."""
    return "WITH [" + ",".join(map(str, bin_floors())) + "]::Array(UInt64) AS bin_floors"


def bin_sql(value: str) -> str:
    """The SQL twin of ``latency_histogram.bin_of`` for a UInt64 expression, equal to it for every value.

    ``log2`` alone is off by one near some bin edges once a value no longer fits a double exactly (above
    2**53 ns): the estimate is corrected against the bins' floors. The query must begin with
    :func:`bin_floors_sql`.
    """
    estimate = f"toUInt32(log2(greatest({value}, 1001) / 1000) * 8) + 1"  # no log2(0) in the unused branch
    below, above = f"{value} < bin_floors[{estimate}]", f"{value} >= bin_floors[{estimate} + 1]"
    return f"if({value} <= 1000, 0, least(({estimate}) - ({below}) + ({above}), {_TOP_BIN}))"


# -- SQL pieces --------------------------------------------------------------------------------------------


def _text(value: str) -> str:
    """A constant of this module (attribute key, kind or status name) as a SQL string literal."""
    assert "'" not in value and "\\" not in value
    return f"'{value}'"


def _kind_is(kind: int) -> str:
    return "SpanKind IN (" + ", ".join(_text(name) for name in kind_names(kind)) + ")"


def _trace_key(column: str) -> str:
    """A trace id (32 hex digits) as a number that sorts as its bytes do: joins on it are exact and cheap."""
    return f"reinterpretAsUInt128(reverse(unhex({column})))"


def _span_key(column: str) -> str:
    return f"reinterpretAsUInt64(reverse(unhex({column})))"


def _message_key(message_id: str, destination_name: str) -> str:
    """What a consumer joined by message id alone looks its producer up by, beside (trace, span 0) keys."""
    return f"reinterpretAsUInt128(sipHash128({message_id}, {destination_name}))"


def _attribute(key: str, link: bool = False) -> str:
    """An attribute's text ('' when missing); a batch's hop reads it from its link first."""
    if not link:
        return f"SpanAttributes[{_text(key)}]"
    return f"if(mapContains({_LINK}, {_text(key)}), {_LINK}[{_text(key)}], SpanAttributes[{_text(key)}])"


def _has(key: str, link: bool = False) -> str:
    own = f"mapContains(SpanAttributes, {_text(key)})"
    return f"(mapContains({_LINK}, {_text(key)}) OR {own})" if link else own


def _transform(value: str, mapping: Mapping[str, str], otherwise: str) -> str:
    """``mapping[value]``, ``otherwise`` for a value it has no entry for."""
    keys, values = (", ".join(_text(text) for text in texts) for texts in (mapping, mapping.values()))
    return f"transform({value}, [{keys}], [{values}], {otherwise})"


def _regex(pattern: str) -> str:
    """A pattern of model/destinations.py, matched whole as Python's fullmatch does: ClickHouse's ``.``
    matches a line break unless told not to."""
    return _text(f"(?-s)^(?:{pattern})$")


def _each_destination_attribute(expression: str, link: bool) -> str:
    """``expression`` (of ``v``) for each destination attribute that is set, in order: the first that is not
    ''. One pass over the span's attributes picks those set (a lookup per key would cost nine)."""
    source = f"mapUpdate(SpanAttributes, {_LINK})" if link else "SpanAttributes"
    keys = "[" + ", ".join(map(_text, destinations.DESTINATION_KEYS_IN_ORDER)) + "]"
    present = f"mapFilter((k, v) -> v != '' AND has({keys}, k), {source})"
    values = f"arraySort((v, k) -> indexOf({keys}, k), mapValues({present}), mapKeys({present}))"
    return f"arrayFirst(x -> x != '', arrayMap(v -> {expression}, {values}))"


def _name_of_v() -> str:
    """The SQL twin of ``destinations.name_of`` for the text ``v``; '' for ''."""
    arn, url = _regex(destinations.ARN_PATTERN), _regex(destinations.QUEUE_URL_PATTERN)
    resource = f"extractGroups(v, {arn})[2]"

    def part(separator: str, index: int) -> str:
        piece = f"splitByChar('{separator}', {resource})[{index}]"
        return f"if({piece} != '', {piece}, {resource})"

    return (
        f"multiIf(match(v, {arn}), multiIf("
        f"extractGroups(v, {arn})[1] = 'sns', {part(':', 1)}, "
        f"position({resource}, '/') > 0, {part('/', 2)}, "
        f"position({resource}, ':') > 0, {part(':', 2)}, "
        f"{resource}), "
        f"match(v, {url}), extractGroups(v, {url})[1], v)"
    )


def _destination_name(link: bool = False) -> str:
    """The SQL twin of ``destinations.destination_name``, '' for none: a name is never '' for a value that
    is not, so the first name is the first value's. A plain ``messaging.destination.name`` (the common case)
    is taken as it is, before the array of every destination attribute is built."""
    name = _attribute(conventions.DESTINATION_NAME, link)
    plain = f"{name} != '' AND NOT startsWith({name}, 'arn:') AND position({name}, '://') = 0"
    return f"if({plain}, {name}, {_each_destination_attribute(_name_of_v(), link)})"


def _canonical(system: str, otherwise: str) -> str:
    """The SQL twin of ``destinations._canonical``: ``lower`` changes ASCII letters only, as there."""
    return _transform(f"lower({system})", destinations.SYSTEM_ALIASES, otherwise)


def _messaging_system(link: bool = False) -> str:
    """The SQL twin of ``destinations.messaging_system``: '' for none."""
    arn = _regex(destinations.ARN_PATTERN)
    arn_system = _transform(f"extractGroups(v, {arn})[1]", destinations.ARN_SYSTEMS, "''")
    is_sqs_url = " OR ".join(
        [*(f"startsWith(v, {_text(prefix)})" for prefix in destinations.SQS_URL_PREFIXES),
         f"position(v, {_text(destinations.SQS_URL_INFIX)}) > 0"]
    )  # fmt: skip
    sqs = _text(destinations.SQS_URL_SYSTEM)
    of_value = f"multiIf(match(v, {arn}), {arn_system}, {is_sqs_url}, {sqs}, '')"
    named = _each_destination_attribute(of_value, link)
    system = _attribute(conventions.MESSAGING_SYSTEM, link)
    return f"if({system} != '', {_canonical(system, system)}, {named})"


def _destination(link: bool = False) -> str:
    """The SQL twin of ``destinations.destination_node``: the destination node ("system:name"), '' for
    none."""
    name, system = _destination_name(link), _messaging_system(link)
    service = _attribute("rpc.service", link)
    default = _text(DEFAULT_MESSAGING_SYSTEM)
    fallback = f"if({service} != '', {_canonical(service, default)}, {default})"
    return f"if({name} != '', concat(if({system} != '', {system}, {fallback}), ':', {name}), '')"


_LINK = "`Links.Attributes`[hop]"
_ERROR = "StatusCode IN (" + ", ".join(_text(name) for name in ERROR_STATUS_NAMES) + ")"
_START = "toUnixTimestamp64Nano(Timestamp)"
_SINCE = "Timestamp >= fromUnixTimestamp64Nano({lo:Int64})"
# Spans with unusable times are left out of RED and the graph, as on SQLite (see stitch/guard.py).
USABLE_TIMES_SQL = (
    f"Duration <= {MAX_SPAN_DURATION_NS} "
    f"AND Timestamp >= fromUnixTimestamp64Nano({MIN_PLAUSIBLE_START_UNIX_NANO})"
)
_IN_RANGE = f"{_SINCE} AND Timestamp < fromUnixTimestamp64Nano({{hi:Int64}}) AND {USABLE_TIMES_SQL}"
_IN_WINDOW = (
    "Timestamp >= fromUnixTimestamp64Nano({wlo:Int64}) AND Timestamp < fromUnixTimestamp64Nano({whi:Int64}) "
    f"AND {USABLE_TIMES_SQL}"
)
# The positions of a span's links of a valid context: a link of an invalid one (all-zero or wrong-length
# ids, which SDKs may record) pairs no hop, as in stitch/guard.py's joinable_link.
_VALID_LINKS = (
    "arrayFilter(i -> length(`Links.TraceId`[i]) = 32 AND `Links.TraceId`[i] != repeat('0', 32) "
    "AND length(`Links.SpanId`[i]) = 16 AND `Links.SpanId`[i] != repeat('0', 16), "
    "arrayEnumerate(`Links.SpanId`))"
)
_BATCH = f"(notEmpty({_VALID_LINKS}) AND {_has(conventions.BATCH_MESSAGE_COUNT)})"
_RECORD_SPANS = f"({_attribute(conventions.RECORD_SPANS)} NOT IN ('', 'false'))"
_MESSAGE_ID = _attribute(conventions.MESSAGE_ID)
_DESTINATION_NAME = _destination_name()
_NO_WAIT = "CAST(NULL, 'Nullable(Int64)')"
_ZERO = "toInt64(0)"

# -- the edge kinds: each yields source, target, kind, start, duration, error, wait, receive_count --------

_SYNC = f"""
SELECT concat('service:', c.service) AS source, concat('service:', s.ServiceName) AS target, 'sync' AS kind,
    s.start AS start, s.Duration AS duration, s.error AS error, {_NO_WAIT} AS wait, {_ZERO} AS receive_count
FROM (
    SELECT {_trace_key("TraceId")} AS trace, {_span_key("ParentSpanId")} AS parent, ServiceName,
        {_START} AS start, Duration, {_ERROR} AS error
    FROM {{table}} WHERE {_kind_is(_SERVER)} AND {_IN_RANGE} AND ParentSpanId != ''
) AS s
ANY INNER JOIN (
    SELECT {_trace_key("TraceId")} AS trace, {_span_key("SpanId")} AS span, ServiceName AS service
    FROM {{table}} WHERE {_kind_is(_CLIENT)} AND {_IN_WINDOW}
) AS c ON s.trace = c.trace AND s.parent = c.span
WHERE c.service != s.ServiceName
"""

_IS_DEPENDENCY = " OR ".join(_has(key) for key in DEPENDENCY_KEYS)
_SENDS = (
    f"({_attribute(RPC_METHOD)} IN ({', '.join(map(_text, sorted(SEND_METHODS)))}) "
    f"OR {_attribute(OPERATION_TYPE)} IN ({', '.join(map(_text, sorted(SEND_OPERATION_TYPES)))}))"
)
# A dependency call that names a destination counts on the destination's node (graph_rules.client_edge):
# a publish edge when it sends, an external one otherwise.
_CALLS_DESTINATION = f"{_kind_is(_CLIENT)} AND ({_IS_DEPENDENCY}) AND {_destination_name()} != ''"

# A consumer's producer: a PRODUCER span, or a dependency call that sends to the destination it names.
_SENDER = f"({_kind_is(_PRODUCER)} OR ({_CALLS_DESTINATION} AND {_SENDS}))"

_PUBLISH = f"""
SELECT concat('service:', ServiceName) AS source, {_destination()} AS target, 'publish' AS kind,
    {_START} AS start, Duration AS duration, {_ERROR} AS error, {_NO_WAIT} AS wait, {_ZERO} AS receive_count
FROM {{table}} WHERE {_IN_RANGE} AND target != '' AND {_SENDER}
"""

_DEPENDENCY_NAME = (
    "multiIf("
    + ", ".join(f"{_attribute(key)} != '', {_attribute(key)}" for key in EXTERNAL_KEYS[:-1])
    + f", {_attribute(EXTERNAL_KEYS[-1])})"
)
_EXTERNAL = f"""
SELECT concat('service:', ServiceName) AS source,
    if(destination != '', destination, concat('external:', name)) AS target, 'external' AS kind,
    start, duration, error, {_NO_WAIT} AS wait, {_ZERO} AS receive_count
FROM (
    SELECT TraceId, SpanId, ServiceName, {_START} AS start, Duration AS duration, {_ERROR} AS error,
        {_IS_DEPENDENCY} AS dependency, if(dependency, {_destination()}, '') AS destination,
        if(dependency, {_DEPENDENCY_NAME}, {_attribute("server.address")}) AS name,
        dependency AND destination != '' AND {_SENDS} AS publishes
    FROM {{table}} WHERE {_kind_is(_CLIENT)} AND {_IN_RANGE}
)
WHERE NOT publishes AND (destination != '' OR name != '') AND (dependency OR (
    start + toInt64(duration) < {{ended_before:Int64}}
    AND ({_trace_key("TraceId")}, {_span_key("SpanId")}) NOT IN (
        SELECT {_trace_key("TraceId")}, {_span_key("ParentSpanId")} FROM {{table}}
        WHERE {_kind_is(_SERVER)} AND {_IN_WINDOW} AND ParentSpanId != ''
    )
))
"""

# Linked batch spans: a consumer span beneath one counts no hop.
_BATCHES = f"""
SELECT {_trace_key("TraceId")} AS p_trace, {_span_key("SpanId")} AS p_span
FROM {{table}} WHERE {_kind_is(_CONSUMER)} AND {_IN_WINDOW} AND SpanId != '' AND {_BATCH}
"""

# What a consumer's hop looks its producer up by: the producer's (trace, span) or its message key. The
# batch spans are there too, tagged 2, for the consumer spans whose parent they are.
_PARTNERS = f"""
SELECT key.1 AS k1, key.2 AS k2, tag, p_trace, p_span, p_end, p_destination
FROM (
    SELECT {_trace_key("TraceId")} AS p_trace, {_span_key("SpanId")} AS p_span, toUInt8(1) AS tag,
        {_START} + toInt64(Duration) AS p_end, {_destination()} AS p_destination,
        if({_MESSAGE_ID} != '' AND {_DESTINATION_NAME} != '',
           [(p_trace, p_span), ({_message_key(_MESSAGE_ID, _DESTINATION_NAME)}, toUInt64(0))],
           [(p_trace, p_span)]) AS keys
    FROM {{table}} WHERE {_SENDER} AND {_IN_WINDOW} AND SpanId != ''
    UNION ALL
    SELECT p_trace, p_span, toUInt8(2) AS tag, {_ZERO} AS p_end, '' AS p_destination,
        [(p_trace, p_span)] AS keys
    FROM ({_BATCHES})
)
ARRAY JOIN keys AS key
"""

_CONSUMER_COLUMNS = f"""
    SELECT {_trace_key("TraceId")} AS c_trace, {_span_key("SpanId")} AS c_span, ServiceName AS c_service,
        {_START} AS c_start, Duration AS c_duration, {_ERROR} AS c_error"""
# A number, 0 when it is none: NaN and the infinities (valid doubles, kept as text) have no Int64.
_RECEIVE_COUNT = "toInt64(if(isFinite(toFloat64OrZero({0})), toFloat64OrZero({0}), 0))"

# One row per hop and candidate producer: hop 0 is a consumer span's only hop, hop i a linked batch's for
# its i-th link. Candidate kinds: 0 a link, 1 the parent, 2 the message key; position: their order.
_CANDIDATES = f"""
SELECT c_trace, c_span, hop, c_service, c_start, c_duration, c_error, c_destination, c_receive_count,
    candidate.1 AS k1, candidate.2 AS k2, candidate.3 AS candidate_kind, position
FROM (
    {_CONSUMER_COLUMNS}, toUInt64(0) AS hop, {_destination()} AS c_destination,
        {_RECEIVE_COUNT.format(_attribute(conventions.RECEIVE_COUNT))} AS c_receive_count,
        arrayConcat(
            arrayMap(
                i -> ({_trace_key("`Links.TraceId`[i]")}, {_span_key("`Links.SpanId`[i]")}, 0), {_VALID_LINKS}
            ),
            if(ParentSpanId != '', [(c_trace, {_span_key("ParentSpanId")}, 1)], []),
            if(empty({_VALID_LINKS}) AND ParentSpanId = ''
                    AND {_MESSAGE_ID} != '' AND {_DESTINATION_NAME} != '',
               [({_message_key(_MESSAGE_ID, _DESTINATION_NAME)}, toUInt64(0), 2)], [])
        ) AS candidates
    FROM {{table}} WHERE {_kind_is(_CONSUMER)} AND {_IN_RANGE} AND NOT {_BATCH}
    UNION ALL
    {_CONSUMER_COLUMNS}, hop, {_destination(link=True)} AS c_destination,
        {_RECEIVE_COUNT.format(_attribute(conventions.RECEIVE_COUNT, link=True))} AS c_receive_count,
        [({_trace_key("`Links.TraceId`[hop]")}, {_span_key("`Links.SpanId`[hop]")}, 0)] AS candidates
    FROM {{table}} ARRAY JOIN {_VALID_LINKS} AS hop
    WHERE {_kind_is(_CONSUMER)} AND {_IN_RANGE} AND {_BATCH} AND NOT {_RECORD_SPANS}
)
LEFT ARRAY JOIN candidates AS candidate, arrayEnumerate(candidates) AS position
"""

# Per hop: its producer (the first candidate that is one), whether its parent is a linked batch.
_HOPS = f"""
SELECT any(c_service) AS service, any(c_start) AS start, any(c_duration) AS duration, any(c_error) AS error,
    any(c_destination) AS own_destination, any(c_receive_count) AS receive_count,
    max(candidate_kind = 1 AND tag = 2) AS below_batch, max(matched) AS found,
    argMinIf((p_end, p_destination), (position, p_trace, p_span), matched) AS producer,
    if(own_destination != '', own_destination, if(found, producer.2, '')) AS destination
FROM (
    SELECT h.*, p.tag AS tag, p.p_trace AS p_trace, p.p_span AS p_span, p.p_end AS p_end,
        p.p_destination AS p_destination,
        h.position > 0 AND p.tag = 1 AND (h.candidate_kind != 2 OR p.p_trace != h.c_trace) AS matched
    FROM ({_CANDIDATES}) AS h
    LEFT JOIN ({_PARTNERS}) AS p ON h.k1 = p.k1 AND h.k2 = p.k2
)
GROUP BY c_trace, c_span, hop
HAVING NOT below_batch AND destination != ''
"""

_CONSUME = f"""
SELECT edge.1 AS source, edge.2 AS target, edge.3 AS kind, start, duration, error, wait,
    edge.4 AS receive_count
FROM (
    SELECT arrayJoin(arrayConcat(
            [(destination, concat('service:', service), 'consume', receive_count)],
            if(found AND producer.2 != '' AND producer.2 != destination,
               [(producer.2, destination, 'subscription', {_ZERO})], [])
        )) AS edge,
        start, duration, error, if(found, greatest(start - producer.1, 0), NULL) AS wait
    FROM ({_HOPS})
)
"""

_BRANCHES = {"sync": _SYNC, "publish": _PUBLISH, "consume": _CONSUME, "external": _EXTERNAL}


def _union(client: ClickHouseClient, kinds: Sequence[str]) -> str:
    wanted = {"consume" if kind == "subscription" else kind for kind in kinds}
    table = f"{client.database}.otel_traces"
    return "\nUNION ALL\n".join(
        sql.replace("{table}", table) for name, sql in _BRANCHES.items() if name in wanted
    )


def _params(lo: int, hi: int) -> dict[str, object]:
    """The range's bounds and the partners' window around it."""
    return {
        "lo": lo,
        "hi": hi,
        "wlo": max(0, lo - PENDING_HOP_TTL_NS),
        "whi": min(_MAX_NS, hi + PENDING_HOP_TTL_NS),
    }


def _minute_after(unix_nano: int) -> int:
    """The first minute bucket that starts at or after the instant."""
    return -(-unix_nano // BUCKET_NS) * BUCKET_NS


def read_hop_rollups(
    client: ClickHouseClient,
    since_unix_nano: int,
    until_unix_nano: int,
    kinds: tuple[str, ...] | None = None,
) -> list[tuple[str, str, str, HopRollup]]:
    """Hop rollups of the minutes starting in [since, until), merged per edge: (source, target, edge kind,
    rollup), what ``sqlite/graph.py``'s ``read_hop_rollups`` gives once the same spans are stitched; only
    edges of ``kinds`` when given."""
    wanted = kinds or EDGE_KINDS
    lo = since_unix_nano - since_unix_nano % BUCKET_NS
    hi = min(_minute_after(until_unix_nano), _MAX_NS)  # a span counts when its minute starts before until
    if hi <= lo or not set(wanted) & set(EDGE_KINDS):
        return []
    rows = client.query(
        f"{bin_floors_sql()} "
        "SELECT source, target, kind, "
        f"count(), countIf(error), sumMap([{bin_sql('toUInt64(duration)')}], [toUInt64(1)]), "
        f"sumMapIf([{bin_sql('toUInt64(assumeNotNull(wait))')}], [toUInt64(1)], wait IS NOT NULL), "
        f"greatest(max(receive_count), 0) FROM ({_union(client, wanted)}) "
        "WHERE kind IN {kinds:Array(String)} GROUP BY source, target, kind",
        {
            **_params(lo, hi),
            "kinds": list(wanted),
            "ended_before": time.time_ns() - EXTERNAL_GRACE_NS,
        },
    )
    return [
        (
            source,
            target,
            kind,
            HopRollup(int(count), int(errors), _counter(durations), _counter(waits), int(most)),
        )
        for source, target, kind, count, errors, durations, waits, most in rows
    ]


# Queues seen since an instant, the cheap way: the destinations of producer spans since then, of dependency
# calls that name one (publish or external edges to it), of consumer hops since then (those that count),
# and, marked 1, of the producers in the hour before, which only count when a consumer hop since then
# resolves to them.
_DESTINATIONS = f"""
SELECT DISTINCT node, old FROM (
    SELECT {_destination()} AS node, 0 AS old
    FROM {{table}} WHERE {_kind_is(_PRODUCER)} AND {_SINCE}
    UNION ALL
    SELECT {_destination()} AS node, 0 AS old
    FROM {{table}} WHERE {_CALLS_DESTINATION} AND {_SINCE}
    UNION ALL
    SELECT {_destination()} AS node, 0 AS old
    FROM {{table}} WHERE {_kind_is(_CONSUMER)} AND {_SINCE} AND NOT {_BATCH}
        AND (ParentSpanId = '' OR ({_trace_key("TraceId")}, {_span_key("ParentSpanId")}) NOT IN ({_BATCHES}))
    UNION ALL
    SELECT {_destination(link=True)} AS node, 0 AS old
    FROM {{table}} ARRAY JOIN {_VALID_LINKS} AS hop
    WHERE {_kind_is(_CONSUMER)} AND {_SINCE} AND {_BATCH} AND NOT {_RECORD_SPANS}
    UNION ALL
    SELECT {_destination()} AS node, 1 AS old FROM {{table}}
    WHERE {_SENDER} AND Timestamp >= fromUnixTimestamp64Nano({{wlo:Int64}})
        AND Timestamp < fromUnixTimestamp64Nano({{lo:Int64}})
)
WHERE startsWith(node, {{prefix:String}})
"""


def destinations_seen(client: ClickHouseClient, system_prefix: str, since_unix_nano: int) -> list[str]:
    """Names of the destinations (``system_prefix`` "aws_sqs:") that spans sent to or consumed from since
    then: the nodes of the publish, consume and subscription hops of the minutes starting at or after it,
    what ``store.sqlite.graph.destinations_seen`` gives."""
    lo = _minute_after(since_unix_nano)
    params = {**_params(lo, _MAX_NS), "prefix": system_prefix}
    table = f"{client.database}.otel_traces"
    rows = client.query(_DESTINATIONS.replace("{table}", table), params)
    seen = {str(node) for node, old in rows if not old}
    if any(str(node) not in seen for node, old in rows if old):  # resolve the consumer hops to know
        nodes = client.query(
            "SELECT DISTINCT arrayJoin([source, target]) AS node "
            f"FROM ({_union(client, ('publish', 'consume'))}) "
            "WHERE startsWith(node, {prefix:String})",
            params,
        )
        seen.update(str(node) for (node,) in nodes)
    return sorted(node[len(system_prefix) :] for node in seen)


def _counter(histogram: Any) -> Counter[int]:
    keys, values = histogram
    return Counter({int(k): int(v) for k, v in zip(keys, values, strict=True) if int(v)})
