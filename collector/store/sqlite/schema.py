"""The SQLite schema: version 1's tables (spans, resources, scopes, meta) and, as migrations on top of it,
every later version's (flows, RED rollups, the service graph, queues), applied on open in one transaction.

Every table's DDL is here, as on the ClickHouse side (``store/clickhouse/schema.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from hopscope.collector.store.errors import StoreError
from hopscope.collector.store.sqlite.fate import FATE_SCHEMA
from hopscope.collector.store.sqlite.logs import LOGS_SCHEMA

SCHEMA_VERSION = 10

# Version 1 of the schema. Later versions are reached through MIGRATIONS, never by editing this.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    resource_id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    service_name TEXT NOT NULL,
    schema_url TEXT NOT NULL,
    resource BLOB NOT NULL              -- serialized opentelemetry.proto.resource.v1.Resource
);
CREATE TABLE IF NOT EXISTS scopes (
    scope_id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    schema_url TEXT NOT NULL,
    scope BLOB NOT NULL                 -- serialized opentelemetry.proto.common.v1.InstrumentationScope
);
CREATE TABLE IF NOT EXISTS spans (
    span_pk INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,                -- NULL for a root span
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_unix_nano INTEGER NOT NULL,
    end_unix_nano INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    resource_id INTEGER NOT NULL REFERENCES resources (resource_id),
    scope_id INTEGER NOT NULL REFERENCES scopes (scope_id),
    received_unix_nano INTEGER NOT NULL,
    span BLOB NOT NULL                  -- serialized opentelemetry.proto.trace.v1.Span
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_id ON spans (trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_unix_nano);
"""


# Schema version 2: flows. Applied as a migration on top of version 1.
FLOWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
    flow_id INTEGER PRIMARY KEY,
    merged_into INTEGER,                -- the standing flow this one was merged into, or NULL
    start_unix_nano INTEGER,
    end_unix_nano INTEGER,
    span_count INTEGER NOT NULL DEFAULT 0,
    trace_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    max_receive_count INTEGER NOT NULL DEFAULT 0,
    entry_start_unix_nano INTEGER,
    entry_service TEXT,
    entry_operation TEXT
);
CREATE INDEX IF NOT EXISTS flows_by_start ON flows (start_unix_nano) WHERE merged_into IS NULL;
CREATE INDEX IF NOT EXISTS flows_by_merged_into ON flows (merged_into) WHERE merged_into IS NOT NULL;
CREATE TABLE IF NOT EXISTS trace_flows (
    trace_id BLOB PRIMARY KEY,
    flow_id INTEGER NOT NULL,
    span_count INTEGER NOT NULL         -- 0 while the trace is only known from a link
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_flows_by_flow ON trace_flows (flow_id);
CREATE TABLE IF NOT EXISTS flow_operations (
    operation TEXT NOT NULL,
    service_name TEXT NOT NULL,
    flow_id INTEGER NOT NULL,
    PRIMARY KEY (operation, service_name, flow_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_operations_by_service ON flow_operations (service_name, flow_id);
CREATE INDEX IF NOT EXISTS flow_operations_by_flow ON flow_operations (flow_id);
CREATE TABLE IF NOT EXISTS flow_correlations (
    correlation_id TEXT NOT NULL,
    flow_id INTEGER NOT NULL,
    PRIMARY KEY (correlation_id, flow_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_correlations_by_flow ON flow_correlations (flow_id);
CREATE TABLE IF NOT EXISTS message_keys (
    message_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    trace_id BLOB NOT NULL,
    PRIMARY KEY (message_id, destination, trace_id)
) WITHOUT ROWID;
"""

# Schema version 3: RED rollups.
RED_SCHEMA = """
CREATE TABLE IF NOT EXISTS red_rollups (
    service_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    kind INTEGER NOT NULL,
    bucket_start_unix_nano INTEGER NOT NULL,    -- the minute the spans started in
    span_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    duration_sum_ns INTEGER NOT NULL,
    histogram TEXT NOT NULL,                    -- latency_histogram.encode()
    -- time first: each minute's rows are written together, so a stitching commit touches few pages
    PRIMARY KEY (bucket_start_unix_nano, service_name, operation, kind)
) WITHOUT ROWID;
"""

# Schema version 4: the service graph.
GRAPH_SCHEMA = """
CREATE TABLE IF NOT EXISTS hop_rollups (
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    edge_kind TEXT NOT NULL,
    bucket_start_unix_nano INTEGER NOT NULL,
    hop_count INTEGER NOT NULL,
    error_count INTEGER NOT NULL,
    duration_histogram TEXT NOT NULL,
    wait_histogram TEXT NOT NULL,
    max_receive_count INTEGER NOT NULL,
    PRIMARY KEY (bucket_start_unix_nano, source, target, edge_kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_hops (
    trace_id BLOB NOT NULL,             -- the span that is awaited (a client parent, a producer)
    span_id BLOB NOT NULL,
    hop TEXT NOT NULL,                  -- JSON: what to count once it arrives
    waiting_since_unix_nano INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_hops_by_span ON pending_hops (trace_id, span_id);
CREATE INDEX IF NOT EXISTS pending_hops_by_age ON pending_hops (waiting_since_unix_nano);
"""

# Schema version 5: queues and their depth.
QUEUES_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    arn TEXT,
    dlq_name TEXT,
    max_receive_count INTEGER,
    fifo INTEGER NOT NULL DEFAULT 0,
    last_polled_unix_nano INTEGER,
    last_error TEXT,
    last_error_unix_nano INTEGER
);
CREATE TABLE IF NOT EXISTS queue_depth (
    queue_name TEXT NOT NULL,
    polled_unix_nano INTEGER NOT NULL,
    visible INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    delayed INTEGER NOT NULL,
    oldest_age_seconds REAL,
    age_source TEXT,
    PRIMARY KEY (queue_name, polled_unix_nano)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_depth_by_time ON queue_depth (polled_unix_nano);
"""

# Schema version 6: the rank of a flow's entry (stitch/facts.py Entry), so that a flow whose first span has
# a parent still gets an entry, and an origin (a span without a parent) still wins. The entries of earlier
# versions were all origins.
ENTRY_RANK_SCHEMA = """
ALTER TABLE flows ADD COLUMN entry_rank INTEGER;   -- NULL while the flow has no entry
UPDATE flows SET entry_rank = 0 WHERE entry_service IS NOT NULL;
"""

# Schema version 7: shared spans. A span that links to several traces (a batch consumer's invocation) joins
# none of them: its trace is shared by the flows of the traces it links to (``shared_links``), and a flow
# made only of such traces is not a message flow of its own (``shared_only``: hidden from the flow list).
SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS shared_links (
    linked_trace_id BLOB NOT NULL,      -- a trace whose flow the batch trace belongs to as well
    trace_id BLOB NOT NULL,             -- the batch trace
    PRIMARY KEY (linked_trace_id, trace_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shared_links_by_trace ON shared_links (trace_id);
ALTER TABLE flows ADD COLUMN shared_only INTEGER NOT NULL DEFAULT 0;
"""

# Schema version 9: spans in time windows (sqlite/windows.py). The spans table becomes ``spans_other``, the
# table of spans that no window takes (all of them without --retention), and ``spans`` a view over every span
# table, so that a file of version 8 is read as it was and its spans expire row by row.
WINDOWS_SCHEMA = """
ALTER TABLE spans RENAME TO spans_other;
CREATE VIEW spans AS SELECT * FROM spans_other;
"""

# MIGRATIONS[n] takes a database from version n - 1 to version n.
MIGRATIONS: dict[int, str] = {
    2: FLOWS_SCHEMA,
    3: RED_SCHEMA,
    4: GRAPH_SCHEMA,
    5: QUEUES_SCHEMA,
    6: ENTRY_RANK_SCHEMA,
    7: SHARED_SCHEMA,
    8: FATE_SCHEMA,  # a message's fate: successful deliveries and dead letters (sqlite/fate.py)
    9: WINDOWS_SCHEMA,
    10: LOGS_SCHEMA,  # log records (sqlite/logs.py)
}


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create version 1 where nothing is, then apply every migration the file lacks; call it inside one
    write transaction, so that a file is never left half-migrated."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
        for statement in _statements(SCHEMA):
            conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 1  # a new file has just been given version 1
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has schema version {version}; this hopscope knows up to {SCHEMA_VERSION}")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _statements(MIGRATIONS[target]):
            conn.execute(statement)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


def check_version(conn: sqlite3.Connection, path: Path) -> None:
    """StoreError unless the file is a hopscope database of this schema version (readers do not migrate)."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise StoreError(f"{path} is not a hopscope database (no hopscope tables)") from exc
        raise StoreError(f"cannot read {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a hopscope database: {exc}") from exc
    if row is None or int(row[0]) != SCHEMA_VERSION:
        found = row[0] if row else "none"
        raise StoreError(f"{path} has schema version {found}; expected {SCHEMA_VERSION}")


def _statements(script: str) -> Iterable[str]:
    """Split a script into statements: ``executescript`` would commit the open transaction."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
