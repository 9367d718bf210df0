"""Retention on ClickHouse: a TTL on every hopscope_* table but hopscope_meta, following ``--retention``.

ClickHouse drops expired rows when it merges a table, so expiry is DDL here (``apply_retention``, at the
collector's start) where SQLite deletes rows a step at a time (store/sqlite/expiry.py); the flow readers
leave out flows past their TTL until the merge (store.py ``_expired_before``).
"""

from __future__ import annotations

import time

from hopscope.collector.store.clickhouse.client import ClickHouseClient

# -- retention: a TTL on every hopscope_* table but hopscope_meta, following ``--retention`` --------------
#
# _FLOW_END: the tables that point to a flow carry the end of that flow's last span as it was when the row
# was written (FlowEndUnixNano), and hopscope_flows its own EndUnixNano, so a flow's row and every row that
# points to it expire together, one retention after the flow's last span ended. A flow that outlives the
# retention loses the rows of its early traces (and their spans) first: partly expired. Every TTL below grows
# with the row's Version, so the last version of a ReplacingMergeTree row always expires last and never lets
# an older version through. hopscope_meta keeps the stitching position and the last flow id: no TTL.

FLOW_END_TABLES = (
    "hopscope_trace_flows",
    "hopscope_flow_traces",
    "hopscope_flow_operations",
    "hopscope_flow_correlations",
    "hopscope_message_keys",
    "hopscope_shared_links",
)
# table -> the unix-nano time (an SQL expression of its columns) that its TTL counts from
TTL_FROM: dict[str, str] = {
    "hopscope_flows": "if(EndUnixNano > 0, EndUnixNano, toInt64(Version))",  # 0: a flow with no span yet
    **dict.fromkeys(FLOW_END_TABLES, "FlowEndUnixNano"),
    "hopscope_stitched_spans": "StartUnixNano",  # as otel_traces by --retention: the span's start
    "hopscope_message_deliveries": "StartUnixNano",
    "hopscope_duplicate_deliveries": "toInt64(Version)",
    "hopscope_dead_letters": "greatest(LastSeen, ifNull(Gone, 0))",
    "hopscope_queues": "toInt64(Version)",
    "hopscope_queue_depth": "Polled",
}
FEED_TABLE = "hopscope_span_feed"
FEED_DAYS = 7  # the span feed's TTL without retention: spans wait at most this long to be stitched
_TTL_LAYOUT = 1  # bump when TTL_FROM changes, so that every start after applies the new expressions
_TTL_KEY = "ttl_retention"


def ttl_clauses(retention_seconds: int | None) -> dict[str, str | None]:
    """Every hopscope_* table's TTL expression for this retention (None: no TTL)."""
    clauses: dict[str, str | None] = {
        table: (
            f"toDateTime(least(intDiv(greatest({column}, 0), 1000000000), 4294967295)) "
            f"+ toIntervalSecond({retention_seconds})"
            if retention_seconds
            else None
        )
        for table, column in TTL_FROM.items()
    }
    feed_seconds = min(retention_seconds or FEED_DAYS * 86400, FEED_DAYS * 86400)
    clauses[FEED_TABLE] = f"toDateTime(Arrived) + toIntervalSecond({feed_seconds})"
    return clauses


def ttl_merge_seconds(retention_seconds: int) -> int:
    """How often a table is merged to drop expired rows: ClickHouse's default (4 hours) would keep a short
    retention's flows listed for hours, a merge per minute is the most a short retention asks."""
    return min(max(retention_seconds // 2, 60), 4 * 3600)


def recorded_retention(client: ClickHouseClient) -> int | None:
    """The retention (seconds) that the collector last applied to this database, None for none."""
    rows = client.query(
        f"SELECT argMax(Value, Version) FROM {client.database}.hopscope_meta WHERE Key = {{key:String}}",
        {"key": _TTL_KEY},
    )
    value = str(rows[0][0]) if rows and rows[0][0] else ""
    seconds = int(value.split(":", 1)[1]) if ":" in value else 0
    return seconds or None


def apply_retention(client: ClickHouseClient, retention_seconds: int | None) -> list[str]:
    """Give every hopscope_* table the TTL of this retention (or remove it); returns the tables altered.

    Idempotent: a table is altered only when the retention differs from the one recorded in hopscope_meta at
    the last start, or when its TTL is missing (or present without retention). A MODIFY TTL rewrites the
    table's parts once (ClickHouse's materialize_ttl_after_modify): an unchanged start alters nothing.
    otel_traces belongs to the exporter and keeps its own ``ttl``: it is never altered here.
    """
    db = client.database
    created = {
        str(name): str(query)
        for name, query in client.query(
            "SELECT name, create_table_query FROM system.tables "
            "WHERE database = {db:String} AND startsWith(name, 'hopscope_')",
            {"db": db},
        )
    }
    rows = client.query(
        f"SELECT argMax(Value, Version) FROM {db}.hopscope_meta WHERE Key = {{key:String}}", {"key": _TTL_KEY}
    )
    wanted = f"{_TTL_LAYOUT}:{retention_seconds or 0}"
    recorded = str(rows[0][0]) if rows else ""
    altered = []
    for table, clause in ttl_clauses(retention_seconds).items():
        if table not in created:
            continue
        has_ttl = " TTL " in created[table]
        if recorded == wanted and has_ttl == (clause is not None):
            continue
        if clause is not None:
            client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {clause}")
        elif has_ttl:
            client.command(f"ALTER TABLE {db}.{table} REMOVE TTL")
        if retention_seconds:
            merge = ttl_merge_seconds(retention_seconds)
            client.command(f"ALTER TABLE {db}.{table} MODIFY SETTING merge_with_ttl_timeout = {merge}")
        elif "merge_with_ttl_timeout" in created[table]:
            client.command(f"ALTER TABLE {db}.{table} RESET SETTING merge_with_ttl_timeout")
        altered.append(table)
    if recorded != wanted:
        client.insert(
            f"{db}.hopscope_meta", ("Key", "Value", "Version"), [(_TTL_KEY, wanted, time.time_ns())]
        )
    return altered
