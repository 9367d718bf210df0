"""Each dashboard page's AppTest run time on the query bench's store of a million spans.

Every run starts with Streamlit's caches cleared (the cold path a user meets after the TTL), and each page
is timed ``--repeat`` times; the figure is the median. The baseline, measured in the same run, is the same
page on an empty database (Streamlit's own cost plus the hint). Target: <= 1 s median per page.

    .venv/bin/python bench/dashboard.py [--db DIR] [--repeat 5]

``--db DIR`` reuses ``DIR/query.db`` when it exists; otherwise ``bench/query.py --db DIR`` builds it first
(a few minutes).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

import hopscope.dashboard
from hopscope.collector.model.flows import FlowFilter, FlowSort
from hopscope.collector.query.layer import QueryLayer
from hopscope.collector.store.sqlite.store import SQLiteStore

APP = Path(hopscope.dashboard.__file__).parent / "app.py"
PAGES = ["overview", "service_map", "flows", "flow_detail", "logs", "latency", "queues", "dead_letters"]
TARGET_SECONDS = 1.0


def page_seconds(db: Path, page: str, query: dict[str, str]) -> float:
    os.environ["HOPSCOPE_DASHBOARD_DB"] = str(db)
    st.cache_data.clear()
    st.cache_resource.clear()
    start = time.perf_counter()
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.query_params.update(query)
    if page != "overview":  # straight to the page, as a shared link opens it (the overview is not run first)
        app.switch_page(f"views/{page}.py")
    app.run()
    elapsed = time.perf_counter() - start
    if app.exception:
        raise SystemExit(f"{page}: {app.exception[0].value}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    # Bare-mode warnings, two per run (the caches cleared outside a session): each run sets Streamlit's
    # loggers' levels again, so these two are switched off instead.
    for name in ("runtime.caching.cache_data_api", "runtime.scriptrunner_utils.script_run_context"):
        logging.getLogger(f"streamlit.{name}").disabled = True
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="directory of query.db (built when missing)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    directory = args.db or Path(tempfile.mkdtemp(prefix="hopscope-bench-"))
    db = directory / "query.db"
    if not db.exists():
        print(f"building {db} with bench/query.py (a million spans) ...", flush=True)
        script = Path(__file__).with_name("query.py")
        subprocess.run(
            [sys.executable, str(script), "--db", str(directory), "--no-baseline", "--repeat", "3"],
            check=True,
        )
    store = SQLiteStore(db, read_only=True)
    layer = QueryLayer(store)
    spans = store.count_spans()
    (slowest,) = layer.search_flows(FlowFilter(sort=FlowSort.DURATION, limit=1))
    services = sorted(s.service for s in layer.services(0, time.time_ns()))
    store.close()
    empty = directory / "empty.db"
    SQLiteStore(empty).close()
    print(f"{spans:,} spans; flow {slowest.flow_id} ({slowest.span_count} spans) on the flow page")
    print(f"{'page':14} {'median s':>9} {'empty db s':>11} {'ratio':>7}  target <= {TARGET_SECONDS} s")
    missed = 0
    for page in PAGES:
        query = {"range": "24h"}
        if page == "flow_detail":
            query["flow"] = str(slowest.flow_id)
        if page == "latency":
            query["service"] = services[0]
        full = statistics.median(page_seconds(db, page, query) for _ in range(args.repeat))
        bare = statistics.median(page_seconds(empty, page, query) for _ in range(args.repeat))
        verdict = "PASS" if full <= TARGET_SECONDS else "MISS"
        missed += verdict == "MISS"
        print(f"{page:14} {full:9.2f} {bare:11.2f} {full / bare:7.1f}  {verdict}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
