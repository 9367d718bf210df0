"""What the ClickHouse store takes on disk (``StorageReader``), and the retention the collector records.

Read from the server's own bookkeeping, never from a scan: ``system.parts`` (bytes on disk of each active
part), ``system.disks`` (free and total space of the disks those parts are on) and ``min(Timestamp)`` of
``otel_traces``, which ClickHouse answers from each part's partition min/max index (the table is
partitioned by ``toDate(Timestamp)``).
"""

from __future__ import annotations

import time

from hopscope.collector.model.storage import StorageFacts
from hopscope.collector.store.clickhouse.client import ClickHouseClient
from hopscope.collector.store.errors import ClickHouseError

# The hopscope_meta key of the --retention the collector writing this database runs with (seconds; 0: none).
RETENTION_KEY = "collector_retention_seconds"

# The tables counted: the exporter's spans table and its trace-id index, its logs table, and every
# hopscope_* table (the materialized views store nothing of their own). Other tables of the database (an
# OpenTelemetry Collector's metrics) are not the store's.
_OWN_PARTS = (
    "database = {db:String} AND active "
    "AND (table IN ('otel_traces', 'otel_traces_trace_id_ts', 'otel_logs') OR startsWith(table, 'hopscope_'))"
)


def storage_facts(client: ClickHouseClient, label: str) -> StorageFacts:
    """Bytes on disk of the store's active parts, its oldest span, the free space of the disks holding
    them (the fullest, when several) and the recorded retention."""
    db = client.database
    params = {"db": db}
    [[size]] = client.query(f"SELECT sum(bytes_on_disk) FROM system.parts WHERE {_OWN_PARTS}", params)
    try:
        disks = client.query(
            "SELECT free_space, total_space FROM system.disks WHERE name IN "
            f"(SELECT DISTINCT disk_name FROM system.parts WHERE {_OWN_PARTS}) OR name = 'default' "
            "ORDER BY free_space LIMIT 1",
            params,
        )
    except ClickHouseError:  # a user without access to system.disks: free space unknown, not an error
        disks = []
    [[count, oldest]] = client.query(
        f"SELECT count(), toUnixTimestamp64Nano(min(Timestamp)) FROM {db}.otel_traces"
    )
    recorded = client.query(
        f"SELECT argMax(Value, Version), count() FROM {db}.hopscope_meta WHERE Key = {{key:String}}",
        {"key": RETENTION_KEY},
    )
    return StorageFacts(
        location=label,
        size_bytes=int(size or 0),
        oldest_span_unix_nano=int(oldest) if int(count) else None,
        free_bytes=int(disks[0][0]) if disks else None,
        disk_bytes=int(disks[0][1]) if disks else None,
        retention_seconds=int(recorded[0][0]) if recorded and int(recorded[0][1]) else None,
    )


def record_retention(client: ClickHouseClient, retention_seconds: int | None) -> None:
    """Note the collector's ``--retention`` (None: kept for ever) in ``hopscope_meta``."""
    client.insert(
        f"{client.database}.hopscope_meta",
        ("Key", "Value", "Version"),
        [(RETENTION_KEY, str(retention_seconds or 0), time.time_ns())],
    )
