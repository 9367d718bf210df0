"""The soak benchmark's short variant (bench/soak.py runs 10 minutes at full rate): a real collector with
``--retention 30s`` takes the small shop's spans, made with the clock's times, for 100 s at an even pace.

Retention keeps pace: the store's files stop growing, the span windows (store/sqlite/windows.py) are
dropped as they age, and flows, RED rollups and hop rollups expire on the same clock, while no span within
the retention is lost. No timing is asserted; the ages checked allow for a window and the pass interval.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from hopscope.collector.store.sqlite.red import BUCKET_NS
from hopscope.collector.store.sqlite.storage import store_files
from hopscope.collector.store.sqlite.windows import FUTURE_WINDOWS, oldest_start, read_windows, window_seconds
from tests.helpers.servers import CollectorProcess

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import workload  # the benchmarks' span generator

RETENTION_S = 30
WINDOW_NS = window_seconds(RETENTION_S) * 1_000_000_000
RETENTION_NS = RETENTION_S * 1_000_000_000
RUN_SECONDS = 100
REQUEST_SPANS = 250
REQUESTS_PER_SECOND = 4  # 1,000 spans/s
SAMPLE_SECONDS = 5
# The size's samples at the end of each of the last 3 periods of this many seconds agree within +-25%:
# the file holds retention plus a window; the write-ahead log comes and goes around it.
PLATEAU_PERIOD_SECONDS = 15
PLATEAU_TOLERANCE = 0.25
SLACK_NS = 10 * 1_000_000_000  # a retention pass's interval, the stop, a busy CI machine


def _size(db: Path) -> int:
    return sum(path.stat().st_size for path in store_files(db) if path.exists())


def test_retention_keeps_the_store_flat_and_expires_flows_and_rollups_with_the_spans(tmp_path: Path) -> None:
    db = tmp_path / "soak.db"
    collector = CollectorProcess(db, ["--retention", f"{RETENTION_S}s"]).start()
    sent: list[tuple[int, int]] = []  # (the request's earliest start, spans acknowledged)
    sizes: list[tuple[float, int]] = []
    try:
        with collector.client() as http:
            began = time.monotonic()
            number = 0
            while (elapsed := time.monotonic() - began) < RUN_SECONDS:
                start = time.time_ns()
                ((body, count),) = workload.small_shop(seed=number, start_ns=start).take(
                    REQUEST_SPANS, REQUEST_SPANS
                )
                answer = http.post(
                    "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
                )
                assert answer.status_code == 200, answer.text
                sent.append((start, count))
                number += 1
                if not sizes or elapsed - sizes[-1][0] >= SAMPLE_SECONDS:
                    sizes.append((elapsed, _size(db)))
                time.sleep(max(0.0, began + number / REQUESTS_PER_SECOND - time.monotonic()))
        collector.wait_for_flows(timeout=60)
        stopped = time.time_ns()
    finally:
        assert collector.stop() == 0, "".join(collector.log)

    # THEN the store's size plateaus: the samples at the end of each of the last three periods agree
    end = sizes[-1][0]
    ends = [end - PLATEAU_PERIOD_SECONDS * k for k in range(3)]
    picks = [min(sizes, key=lambda sample: abs(sample[0] - at))[1] for at in ends]
    assert max(picks) <= (1 + PLATEAU_TOLERANCE) * min(picks), (picks, sizes)
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        # every window older than the retention is gone: those within it (and the slack) and those ahead of
        # the clock stay
        windows = read_windows(conn)
        most = (RETENTION_NS + SLACK_NS) // WINDOW_NS + FUTURE_WINDOWS + 2  # a part window on each edge
        assert windows and len(windows) <= most, windows
        assert windows[0].end > stopped - RETENTION_NS - SLACK_NS
        oldest = oldest_start(conn)
        assert oldest is not None and oldest >= stopped - RETENTION_NS - WINDOW_NS - SLACK_NS
        # flows, RED and hop rollups expired on the same clock (rollups by the minute they count)
        (flow_end,) = conn.execute(
            "SELECT min(end_unix_nano) FROM flows WHERE merged_into IS NULL AND span_count > 0"
        ).fetchone()
        assert flow_end >= stopped - RETENTION_NS - SLACK_NS
        for table in ("trace_flows", "flow_operations", "flow_correlations"):  # nothing left pointing nowhere
            (dangling,) = conn.execute(
                f"SELECT count(*) FROM {table} r LEFT JOIN flows f ON f.flow_id = r.flow_id "
                "WHERE f.flow_id IS NULL"
            ).fetchone()
            assert dangling == 0, table
        for table in ("red_rollups", "hop_rollups"):
            (bucket,) = conn.execute(f"SELECT min(bucket_start_unix_nano) FROM {table}").fetchone()
            assert bucket is not None and bucket >= stopped - RETENTION_NS - BUCKET_NS - SLACK_NS, table
        # no span within the retention is lost
        safe_after = stopped - RETENTION_NS + SLACK_NS
        must_be_kept = sum(count for start, count in sent if start >= safe_after)
        query = "SELECT count(*) FROM spans WHERE start_unix_nano >= ?"
        (kept,) = conn.execute(query, (safe_after,)).fetchone()
        assert must_be_kept > 0 and kept >= must_be_kept
    finally:
        conn.close()
