"""The ClickHouse tables: ``otel_traces`` and ``otel_logs`` exactly as the OpenTelemetry Collector's
ClickHouse exporter creates them (``internal/sqltemplates/traces_table.sql``, with its
``otel_traces_trace_id_ts`` lookup table and materialized view, and ``logs_table.sql``), and hopscope's own
tables beside them, all prefixed ``hopscope_``.

A database that only Collectors write gets flows the same way: ``hopscope_span_feed`` is filled by a
materialized view on ``otel_traces``, whoever inserts, and ``hopscope collector`` stitches what arrives in it.
Every statement is idempotent, so opening a store (or a Collector starting first) creates what is missing.
Every table's DDL is here (the flow tables too), as on the SQLite side (``store/sqlite/schema.py``).
"""

from __future__ import annotations

import time

from hopscope.collector.model import conventions
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.clickhouse.expiry import FLOW_END_TABLES
from hopscope.collector.store.clickhouse.fate import FATE_STATEMENTS

SCHEMA_VERSION = 1

# The exporter's templates, with its defaults: MergeTree(), no TTL, no cluster.
_OTEL_TRACES = """
CREATE TABLE IF NOT EXISTS {db}.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

_TRACE_ID_TS = """
CREATE TABLE IF NOT EXISTS {db}.otel_traces_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = MergeTree()
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

_TRACE_ID_TS_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.otel_traces_trace_id_ts_mv
TO {db}.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) as Start,
    max(Timestamp) as End
FROM {db}.otel_traces
WHERE TraceId != ''
GROUP BY TraceId
"""

# The exporter's logs template (``internal/sqltemplates/logs_table.sql`` at commit e3bd2d1d648f, the newest
# version whose text could be read), with the same defaults. Later exporter versions make otel_logs without
# TimestampTime (ordered by toStartOfFiveMinutes(Timestamp)): hopscope neither writes nor reads TimestampTime,
# and writes EventName only where the table has it (logs.py), so a table either version made is used as is.
_OTEL_LOGS = """
CREATE TABLE IF NOT EXISTS {db}.otel_logs (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),

    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

# -- hopscope's own tables -----------------------------------------------------------------------------

_META = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_meta (
    Key String,
    Value String,
    Version UInt64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY Key
"""

# What the stitcher reads: every span inserted into otel_traces, in the order it arrived, with only what
# flows need (the attributes that stitching reads, the linked trace ids). Kept a week, or the retention if
# shorter (ttl_clauses below).
_FLOW_KEYS = ", ".join(f"'{key}'" for key in sorted(conventions.FLOW_ATTRIBUTES))
FEED_COLUMNS = (
    "TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Timestamp, Duration, StatusCode, "
    f"mapFilter((k, v) -> k IN ({_FLOW_KEYS}), SpanAttributes) AS FlowAttributes, "
    "arrayFilter((t, s) -> length(s) = 16 AND s != repeat('0', 16), Links.TraceId, Links.SpanId) "
    "AS LinkedTraceIds, "  # a link with no valid span id joins no flow: stitch/guard.py
    # each kept link's messaging.message.id ("" for none), in the order of LinkedTraceIds
    f"arrayFilter((m, s) -> length(s) = 16 AND s != repeat('0', 16), "
    f"arrayMap(a -> a['{conventions.MESSAGE_ID}'], Links.Attributes), Links.SpanId) AS LinkMessageIds"
)
_FEED = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_span_feed (
    Arrived DateTime64(9),
    TraceId String,
    SpanId String,
    ParentSpanId String,
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    ServiceName LowCardinality(String),
    Timestamp DateTime64(9),
    Duration UInt64,
    StatusCode LowCardinality(String),
    FlowAttributes Map(LowCardinality(String), String),
    LinkedTraceIds Array(String),
    LinkMessageIds Array(String)
) ENGINE = MergeTree()
PARTITION BY toDate(Arrived)
ORDER BY Arrived
TTL toDateTime(Arrived) + INTERVAL 7 DAY
"""
_FEED_MV = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.hopscope_span_feed_mv TO {db}.hopscope_span_feed "
    "AS SELECT now64(9) AS Arrived, " + FEED_COLUMNS + " FROM {db}.otel_traces"
)
# Stamped with their start time (at most a second ago) so that they are stitched in order, a chunk at a time.
_FEED_BACKFILL = (
    "INSERT INTO {db}.hopscope_span_feed SELECT least(Timestamp, now64(9) - INTERVAL 1 SECOND), "
    + FEED_COLUMNS
    + " FROM {db}.otel_traces"
)

# Spans already folded into flows: ClickHouse keeps a re-sent span twice, the flows count it once.
_STITCHED = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_stitched_spans (
    TraceId String,
    SpanId String,
    StartUnixNano Int64                 -- the span's start: the row expires with the span (retention)
) ENGINE = ReplacingMergeTree
ORDER BY (TraceId, SpanId)
"""

_QUEUES = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_queues (
    Name String,
    Url String,
    Arn Nullable(String),
    DlqName Nullable(String),
    MaxReceiveCount Nullable(Int64),
    Fifo UInt8,
    LastPolled Nullable(Int64),
    LastError Nullable(String),
    LastErrorAt Nullable(Int64),
    Version UInt64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY Name
"""

_QUEUE_DEPTH = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_queue_depth (
    QueueName String,
    Polled Int64,
    Visible Int64,
    InFlight Int64,
    Delayed Int64,
    OldestAgeSeconds Nullable(Float64),
    AgeSource Nullable(String)
) ENGINE = ReplacingMergeTree
ORDER BY (QueueName, Polled)
"""

# -- the flows (stitched by flows.py) ---------------------------------------------------------------------

# One row version per change of a flow. Flow ids grow with time, so the flows a stitcher or a page of
# search results touch are mostly the last granules of the key. The skip indexes serve queries without
# FINAL only (a version filtered out by a skip index must never let an older one through).
_FLOWS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_flows (
    FlowId UInt64,
    MergedInto UInt64,                  -- the standing flow this one was merged into, or 0
    StartUnixNano Int64,                -- 2**63-1 until the flow has spans
    EndUnixNano Int64,
    SpanCount UInt64,
    TraceCount UInt64,
    ErrorCount UInt64,
    MaxReceiveCount Int64,
    EntryStartUnixNano Int64,
    EntryService Nullable(String),
    EntryOperation Nullable(String),
    EntryRank UInt8,                    -- stitch/facts.py Entry: 0 for an origin, 1 for any other span
    OperationServices Array(String),    -- the flow's (service, span name) pairs, as two arrays
    OperationNames Array(String),
    CorrelationIds Array(String),
    Version UInt64,
    INDEX flows_by_start StartUnixNano TYPE minmax GRANULARITY 1,
    INDEX flows_by_merged_into MergedInto TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree(Version)
ORDER BY FlowId
"""

# trace id (lowercase hex, as otel_traces.TraceId) -> the flow it first joined. Trace ids are random, and
# most that a stitcher asks for are new: the bloom filter answers "not here" without reading the granules.
_TRACE_FLOWS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_trace_flows (
    TraceId String,
    FlowId UInt64,                      -- the flow the trace first joined: resolve it through hopscope_flows
    SpanCount UInt64,                   -- 0 while the trace is only known from a link
    Version UInt64,
    FlowEndUnixNano Int64,              -- see _FLOW_END
    INDEX trace_flows_by_trace TraceId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree(Version)
ORDER BY TraceId
SETTINGS index_granularity = 1024
"""

# The same rows ordered by flow, for the traces of a flow; a trace's FlowId never changes, so the key holds.
_FLOW_TRACES = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_flow_traces (
    FlowId UInt64,
    TraceId String,
    SpanCount UInt64,
    Version UInt64,
    FlowEndUnixNano Int64
) ENGINE = ReplacingMergeTree(Version)
ORDER BY (FlowId, TraceId)
"""

_FLOW_TRACES_MV = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.hopscope_flow_traces_mv TO {db}.hopscope_flow_traces
AS SELECT FlowId, TraceId, SpanCount, Version, FlowEndUnixNano FROM {db}.hopscope_trace_flows
"""

# Search by service or span name: one row per pair and standing flow (rows of absorbed flows stay behind,
# and the search keeps standing flows only). Few services, so a span name alone still skips well.
_FLOW_OPERATIONS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_flow_operations (
    ServiceName LowCardinality(String),
    Operation String,
    FlowId UInt64,
    FlowEndUnixNano Int64
) ENGINE = ReplacingMergeTree
ORDER BY (ServiceName, Operation, FlowId)
"""

_FLOW_CORRELATIONS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_flow_correlations (
    CorrelationId String,
    FlowId UInt64,
    FlowEndUnixNano Int64
) ENGINE = ReplacingMergeTree
ORDER BY (CorrelationId, FlowId)
"""

_MESSAGE_KEYS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_message_keys (
    MessageId String,
    Destination String,
    TraceId String,
    FlowEndUnixNano Int64,
    INDEX message_keys_by_message MessageId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree
ORDER BY (MessageId, Destination, TraceId)
SETTINGS index_granularity = 1024
"""

# Tables made before the entry had a rank: their entries were all origins.
_FLOWS_ENTRY_RANK = (
    "ALTER TABLE {db}.hopscope_flows ADD COLUMN IF NOT EXISTS EntryRank UInt8 DEFAULT 0 AFTER EntryOperation"
)

# A batch trace's links (see sqlite/schema.py SHARED_SCHEMA), looked up by the linked trace.
_SHARED_LINKS = """
CREATE TABLE IF NOT EXISTS {db}.hopscope_shared_links (
    LinkedTraceId String,
    TraceId String,
    FlowEndUnixNano Int64
) ENGINE = ReplacingMergeTree
ORDER BY (LinkedTraceId, TraceId)
"""

# 1 while every trace of the flow is a batch trace shared by other flows: not a message flow of its own.
_FLOWS_SHARED_ONLY = (
    "ALTER TABLE {db}.hopscope_flows ADD COLUMN IF NOT EXISTS SharedOnly UInt8 DEFAULT 0 AFTER EntryRank"
)

FLOW_STATEMENTS = (
    _FLOWS,
    _FLOWS_ENTRY_RANK,
    _FLOWS_SHARED_ONLY,
    _TRACE_FLOWS,
    _FLOW_TRACES,
    _FLOW_TRACES_MV,
    _FLOW_OPERATIONS,
    _FLOW_CORRELATIONS,
    _MESSAGE_KEYS,
    _SHARED_LINKS,
)


# Tables made before retention reached them: their rows count as written now (the column's default is the
# time of this upgrade), so they expire one retention after it.
def _ttl_columns(now_unix_nano: int) -> tuple[str, ...]:
    added = [
        f"ALTER TABLE {{db}}.{table} ADD COLUMN IF NOT EXISTS FlowEndUnixNano Int64 DEFAULT {now_unix_nano}"
        for table in FLOW_END_TABLES
    ]
    added.append(
        "ALTER TABLE {db}.hopscope_stitched_spans "
        f"ADD COLUMN IF NOT EXISTS StartUnixNano Int64 DEFAULT {now_unix_nano}"
    )
    return tuple(added)


OTEL_STATEMENTS = (_OTEL_TRACES, _TRACE_ID_TS, _TRACE_ID_TS_MV, _OTEL_LOGS)
OWN_STATEMENTS = (_META, _STITCHED, _QUEUES, _QUEUE_DEPTH, *FATE_STATEMENTS)  # fate: clickhouse/fate.py


def create(client: ClickHouseClient) -> None:
    """Create every table that is missing."""
    db = client.database
    tables = [statement for statement in FLOW_STATEMENTS if statement is not _FLOW_TRACES_MV]
    # the time columns before the view that reads one
    statements = (*OTEL_STATEMENTS, *OWN_STATEMENTS, *tables, *_ttl_columns(time.time_ns()), _FLOW_TRACES_MV)
    for statement in statements:
        client.command(statement.format(db=db))
    view = client.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = {db:String} AND name = 'hopscope_flow_traces_mv'",
        {"db": db},
    )
    if view and "FlowEndUnixNano" not in str(view[0][0]):  # made before retention: the one writer is here
        client.command(f"DROP VIEW IF EXISTS {db}.hopscope_flow_traces_mv")
        client.command(_FLOW_TRACES_MV.format(db=db))
    has_feed = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'hopscope_span_feed'",
        {"db": db},
    )[0][0]
    if not has_feed:
        client.command(_FEED.format(db=db))
        client.command(_FEED_MV.format(db=db))
        client.command(_FEED_BACKFILL.format(db=db))
    else:  # a feed made before links' message ids were read: they stay empty until its view is made again
        client.command(
            f"ALTER TABLE {db}.hopscope_span_feed ADD COLUMN IF NOT EXISTS LinkMessageIds Array(String)"
        )
