"""Query benchmark: the HTTP query API over a store of a million spans, built through the real ingest path.

A generated shop of 20 services on AWS Lambda, 4 SNS topics and 6 SQS queues sends about 100,000 flows
(synchronous calls, DynamoDB and S3 calls, topics fanning out to 2-3 consumers that each start a linked
trace; 1% of spans fail) to a ``hopscope collector`` subprocess over OTLP/HTTP. Spans start over the last
20 hours; the collector runs with ``--retention 24h``, so SQLite keeps them in about ten span windows of
2 hours (store/sqlite/windows.py) that every query reads across. Three ``--window``s of spans are timed
(into the empty store, with one window stored, and the last one): the last one's ingest speed over the
early ones (same run, same collector) says whether ingest slows down as the store grows. An in-process
store without stitching gets the same spans and windows first, as the baseline. Then each query of the
issue's list is repeated with different ids or parameters; medians and p90 are printed against the targets.
See bench/README.md.

    .venv/bin/python bench/query.py [--spans 1000000] [--window 100000] [--clients 4] [--repeat 21]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.store.sqlite.store import SQLiteStore
from hopscope.collector.store.sqlite.windows import read_windows

sys.path.insert(0, str(Path(__file__).parent))
import ingest
import workload
from soak import parse_duration
from workload import (
    BATCH,
    DETAIL_SPANS,
    EXTERNAL_CALLS,
    HOUR_NS,
    LARGE_SHOP_SERVICES,
    QUEUES,
    TOPICS,
    FlowPlan,
    Workload,
)

# Median latency targets from the issue (ms), and the ingest ratio late / early.
TARGET_CORRELATION_MS = 50.0
TARGET_FLOW_PAGE_MS = 300.0
TARGET_FLOW_DETAIL_MS = 100.0
TARGET_GRAPH_MS = 1_000.0
TARGET_LATENCY_MS = 500.0
TARGET_INGEST_RATIO = 0.8

LATENCY_STEP_SECONDS = 600
FILL_REQUESTS_PER_WRITE = 8  # the baseline store's untimed middle part
HTTP_TIMEOUT_SECONDS = 120.0

# ---------------------------------------------------------------------------------------------------------
# Ingest.
# ---------------------------------------------------------------------------------------------------------


def send(address: tuple[str, int], work: Iterator[tuple[bytes, int]], clients: int) -> tuple[float, int]:
    """Send every body with ``clients`` keep-alive connections; (seconds, acknowledged spans)."""
    elapsed, stats = ingest.send_all(address, work, clients, retry_sleep=None)
    if stats.rejected:
        raise RuntimeError(f"the collector rejected {stats.rejected} spans")
    return elapsed, stats.acknowledged


def short(spans: int) -> str:
    """0, 100k, 1M."""
    if spans and spans % 1_000_000 == 0:
        return f"{spans // 1_000_000}M"
    return f"{spans // 1000}k" if spans else "0"


@dataclass(frozen=True)
class Window:
    """One timed stretch of ingest: from the first request until acknowledged, then until stitched."""

    stored_before: int
    spans: int
    elapsed: float
    stitched_after: float  # seconds from the last acknowledgement until flows_pending is false
    cpu_seconds: float  # the collector's, from the first request to the last acknowledgement
    written_bytes: int  # what the collector handed to write() and pwrite() in that time (WAL, checkpoints)

    @property
    def label(self) -> str:
        return f"{short(self.stored_before)} -> {short(self.stored_before + self.spans)}"

    @property
    def rate(self) -> float:
        return self.spans / self.elapsed

    @property
    def stitched_rate(self) -> float:
        return self.spans / (self.elapsed + self.stitched_after)


@dataclass
class IngestResult:
    windows: list[Window]
    acknowledged: int = 0
    untimed_seconds: float = 0.0  # the parts between the windows, made while sent
    backlog_seconds: float = 0.0  # stitching what those parts left behind, before each window
    generated_seconds: float = 0.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def window_starts(total: int, window: int) -> list[int]:
    """Where the timed windows start: the empty store, one window stored (the issue's "with 100k stored")
    and the last window; the second only when it fits before the last."""
    return [0, window, total - window] if total >= 3 * window else [0, total - window]


def timed_window(
    collector: ingest.Collector, bodies: list[tuple[bytes, int]], clients: int, before: int
) -> Window:
    process = psutil.Process(collector.process.pid)
    cpu, written = sum(process.cpu_times()[:2]), process.io_counters().write_chars
    elapsed, acknowledged = send(collector.address, iter(bodies), clients)
    cpu, written = sum(process.cpu_times()[:2]) - cpu, process.io_counters().write_chars - written
    stitched = ingest.wait_for_flows(collector.address)
    return Window(before, acknowledged, elapsed, stitched, cpu, written)


def ingest_all(
    collector: ingest.Collector, bodies: Workload, total: int, window: int, clients: int
) -> IngestResult:
    """Every span, the windows timed; each window starts with every earlier span stitched."""
    result = IngestResult([])
    position = 0
    for start in window_starts(total, window):
        if start > position:
            started = time.perf_counter()
            _, acknowledged = send(collector.address, bodies.take(start - position), clients)
            result.untimed_seconds += time.perf_counter() - started
            result.acknowledged += acknowledged
            log(f"{start - position:,} spans made and sent in {time.perf_counter() - started:.1f} s")
            position = start
        started = time.perf_counter()
        window_bodies = list(bodies.take(window))
        result.generated_seconds += time.perf_counter() - started
        backlog = ingest.wait_for_flows(collector.address)
        result.backlog_seconds += backlog
        log(f"made {window:,} spans; stitching caught up {backlog:.1f} s after the last ack; sending")
        timed = timed_window(collector, window_bodies, clients, position)
        del window_bodies
        result.windows.append(timed)
        result.acknowledged += timed.spans
        position += window
        log(f"window {timed.label}: {timed.rate:,.0f} spans/s, stitched {timed.stitched_after:.1f} s later")
    return result


@dataclass(frozen=True)
class StoreBaseline:
    """The store alone, in-process, without stitching: the same windows, one request a write."""

    rates: list[float]
    seconds: float


def write_timed(store: SQLiteStore, bodies: Iterator[tuple[bytes, int]]) -> float:
    """Spans/s of prepare + write_prepared, one request per call; requests parsed before the clock runs."""
    requests = [(ExportTraceServiceRequest.FromString(body), n) for body, n in bodies]
    elapsed = 0.0
    for request, n in requests:
        started = time.perf_counter()
        written = store.write_prepared([store.prepare(request)])
        elapsed += time.perf_counter() - started
        if written != n:
            raise RuntimeError(f"the baseline store wrote {written} of {n} spans")
    return sum(n for _, n in requests) / elapsed


def measure_baseline(args: argparse.Namespace, now_ns: int, db: Path) -> StoreBaseline:
    """The same spans (same seed, same clock) into an in-process store, the same windows timed."""
    started = time.perf_counter()
    bodies = workload.large_shop(args.seed, args.spans, now_ns)
    store = SQLiteStore(db)
    store.use_retention(parse_duration(args.retention))  # the collector's windows
    rates = []
    try:
        position = 0
        for start in window_starts(args.spans, args.window):
            untimed = bodies.take(start - position)
            while chunk := list(itertools.islice(untimed, FILL_REQUESTS_PER_WRITE)):
                requests = [store.prepare(ExportTraceServiceRequest.FromString(b)) for b, _ in chunk]
                store.write_prepared(requests)
            rates.append(write_timed(store, bodies.take(args.window)))
            position = start + args.window
    finally:
        store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return StoreBaseline(rates, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------------
# Queries.
# ---------------------------------------------------------------------------------------------------------


class Api:
    """GET over one keep-alive connection; the time is from sending the request to the last body byte."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._conn = http.client.HTTPConnection(*address, timeout=HTTP_TIMEOUT_SECONDS)

    def get(self, path: str, params: dict[str, object] | None = None) -> tuple[float, Any]:
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        started = time.perf_counter()
        self._conn.request("GET", url)
        response = self._conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {url} answered {response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)

    def close(self) -> None:
        self._conn.close()


@dataclass
class QueryResult:
    label: str
    target_ms: float | None  # None: measured for context, no target in the issue
    seconds: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # answers that do not match what was sent
    note: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p90_ms(self) -> float:
        return ingest.percentile(self.seconds, 0.9) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.seconds) * 1000


def run_queries(api: Api, plan: FlowPlan, repeat: int, seed: int) -> list[QueryResult]:
    r = random.Random(seed + 3)
    complete = plan.complete()
    results = []

    # (a) flows by correlation id
    result = QueryResult("flows by correlation id", TARGET_CORRELATION_MS)
    for flow in r.sample(complete, k=min(repeat, len(complete))):
        elapsed, body = api.get("/api/flows", {"correlation_id": plan.order_ids[flow]})
        result.seconds.append(elapsed)
        found = body["flows"]
        if len(found) != 1 or found[0]["span_count"] != plan.sizes[flow]:
            result.wrong.append(f"{plan.order_ids[flow]}: {[(f['flow_id'], f['span_count']) for f in found]}")
        elif found[0]["trace_count"] != plan.traces[flow]:
            result.wrong.append(f"{plan.order_ids[flow]}: {found[0]['trace_count']} traces")
    results.append(result)

    # (b) a page of 50 flows by service and status, every service in turn
    result = QueryResult("50 flows by service+error", TARGET_FLOW_PAGE_MS)
    pages: list[int] = []
    by_service: dict[str, float] = {}
    for service in itertools.islice(itertools.cycle(LARGE_SHOP_SERVICES), repeat):
        params = {"service": service, "status": "error", "limit": 50}
        elapsed, body = api.get("/api/flows", params)
        result.seconds.append(elapsed)
        by_service[service] = max(elapsed, by_service.get(service, 0.0))
        pages.append(len(body["flows"]))
        for flow in body["flows"]:
            if flow["error_count"] < 1 or service not in flow["services"]:
                result.wrong.append(f"{service}: flow {flow['flow_id']}")
    slowest = max(by_service, key=by_service.__getitem__)
    result.note = f"{min(pages)}-{max(pages)} flows per page; slowest {slowest}"
    results.append(result)

    # (c) the detail of a 50-span flow
    result = QueryResult(f"detail of a {DETAIL_SPANS}-span flow", TARGET_FLOW_DETAIL_MS)
    big = r.sample(plan.complete(DETAIL_SPANS), k=min(repeat, len(plan.complete(DETAIL_SPANS))))
    flow_ids = {}
    for flow in big:  # resolved untimed
        _, body = api.get("/api/flows", {"correlation_id": plan.order_ids[flow]})
        flow_ids[flow] = body["flows"][0]["flow_id"] if body["flows"] else None
    hops: list[int] = []
    for flow, flow_id in flow_ids.items():
        if flow_id is None:
            result.wrong.append(f"{plan.order_ids[flow]}: not found")
            continue
        elapsed, body = api.get(f"/api/flows/{flow_id}")
        result.seconds.append(elapsed)
        hops.append(len(body["hops"]))
        if len(body["spans"]) != DETAIL_SPANS:
            result.wrong.append(f"{plan.order_ids[flow]}: {len(body['spans'])} spans")
    if big:
        result.note = f"e.g. correlation id {plan.order_ids[big[0]]}; {min(hops)}-{max(hops)} async hops"
    results.append(result)

    # (d) the service graph over the last hour
    result = QueryResult("service graph over 1 h", TARGET_GRAPH_MS)
    for _ in range(repeat):
        now = time.time_ns()
        elapsed, body = api.get("/api/graph", {"since": now - HOUR_NS, "until": now})
        result.seconds.append(elapsed)
    nodes = Counter(node["type"] for node in body["nodes"])
    edges = Counter(edge["kind"] for edge in body["edges"])
    result.note = (
        f"{sum(nodes.values())} nodes ({', '.join(f'{n} {k}' for k, n in sorted(nodes.items()))}), "
        f"{sum(edges.values())} edges"
    )
    known = {f"service:{s}" for s in LARGE_SHOP_SERVICES} | {f"aws_sqs:{q}" for q in QUEUES}
    known |= {f"aws.sns:{t}" for t in TOPICS} | {f"external:{e}" for e, _ in EXTERNAL_CALLS}
    result.wrong += [f"unknown graph node {node['id']}" for node in body["nodes"] if node["id"] not in known]
    results.append(result)

    # (e) a service's RED series over 24 hours, every service in turn
    result = QueryResult("RED series over 24 h", TARGET_LATENCY_MS)
    for service in itertools.islice(itertools.cycle(LARGE_SHOP_SERVICES), repeat):
        now = time.time_ns()
        params = {"service": service, "since": now - 24 * HOUR_NS, "until": now, "step": LATENCY_STEP_SECONDS}
        elapsed, body = api.get("/api/latency", params)
        result.seconds.append(elapsed)
        points = body["points"]
        if len(points) != 24 * 3600 // LATENCY_STEP_SECONDS or not any(
            p["red"]["span_count"] for p in points
        ):
            result.wrong.append(f"{service}: {len(points)} points")
    result.note = f"{24 * 3600 // LATENCY_STEP_SECONDS} points of {LATENCY_STEP_SECONDS // 60} min"
    results.append(result)

    # For context, no target: the same rollups over a whole day (the spans cover 20 hours).
    for label, path in (
        ("service graph over 24 h", "/api/graph"),
        ("services (RED) over 24 h", "/api/services"),
    ):
        result = QueryResult(label, None)
        for _ in range(max(3, repeat // 4)):
            now = time.time_ns()
            elapsed, body = api.get(path, {"since": now - 24 * HOUR_NS, "until": now})
            result.seconds.append(elapsed)
        result.note = (
            f"{len(body['edges'])} edges" if "edges" in body else f"{len(body['services'])} services"
        )
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------------
# The run and its report.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreFacts:
    spans: int
    flows: int
    traces: int
    error_spans: int
    db_bytes: int
    span_windows: int = 0  # SQLite's span tables by time (store/sqlite/windows.py)


CLICKHOUSE_FLOW_COUNT = "SELECT count() FROM {db}.hopscope_flows FINAL WHERE MergedInto = 0 AND SpanCount > 0"
CLICKHOUSE_TRACE_COUNT = "SELECT count() FROM {db}.hopscope_trace_flows FINAL WHERE SpanCount > 0"


def clickhouse_store_facts(directory: Path) -> StoreFacts:
    """The same facts from the chdb store, opened in this process once the collector has exited."""
    from hopscope.collector.store.clickhouse.store import ClickHouseStore
    from hopscope.collector.store.url import open_store

    store = open_store(f"chdb://{directory / 'clickhouse'}", read_only=True)
    assert isinstance(store, ClickHouseStore)
    db = store.client.database
    try:
        spans = store.count_spans()
        (flows,) = store.client.query(CLICKHOUSE_FLOW_COUNT.format(db=db))[0]
        (traces,) = store.client.query(CLICKHOUSE_TRACE_COUNT.format(db=db))[0]
        (errors,) = store.client.query(
            f"SELECT countIf(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) FROM {db}.otel_traces"
        )[0]
        (size,) = store.client.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = {db:String}", {"db": db}
        )[0]
    finally:
        store.close()
    return StoreFacts(spans, int(flows), int(traces), int(errors), int(size))


def store_facts(db: Path) -> StoreFacts:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (spans,) = conn.execute("SELECT count(*) FROM spans").fetchone()
        (flows,) = conn.execute(
            "SELECT count(*) FROM flows WHERE merged_into IS NULL AND span_count > 0"
        ).fetchone()
        (traces,) = conn.execute("SELECT count(*) FROM trace_flows WHERE span_count > 0").fetchone()
        (errors,) = conn.execute("SELECT count(*) FROM spans WHERE status_code = 2").fetchone()
        windows = len(read_windows(conn))
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return StoreFacts(spans, flows, traces, errors, size, windows)


def window_row(label: str, values: list[str], ratios: Sequence[str] = ()) -> str:
    return f"  {label:<31}" + "".join(f"{v:>15}" for v in values) + "".join(f"{r:>12}" for r in ratios)


def rate_row(label: str, rates: list[float]) -> str:
    """Spans/s of each window, then the last one's over each earlier one."""
    return window_row(label, [f"{r:,.0f}" for r in rates], [f"{rates[-1] / r:.2f}" for r in rates[:-1]])


def ratio_labels(windows: list[Window]) -> list[str]:
    return ["last/first", "last/2nd"][: len(windows) - 1]


def git_head() -> str:
    """The commit measured, and whether the tree had changes outside bench/."""
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" + uncommitted changes" if changed else "")
    return "unknown"


def row(label: str, value: str) -> str:
    return f"  {label:<30} {value}"


def target(ok: bool, label: str, value: str) -> str:
    return f"  {'PASS' if ok else 'MISS'}  {label:<42} {value}"


def report(
    args: argparse.Namespace,
    plan: FlowPlan,
    ingested: IngestResult,
    baseline: StoreBaseline | None,
    facts: StoreFacts,
    queries: list[QueryResult],
    exit_code: int,
    total_seconds: float,
) -> int:
    lost = ingested.acknowledged - facts.spans
    sent_flows = sum(1 for n in plan.sent if n)
    sent_traces = len(plan.sent_traces)
    wrong = sum(len(q.wrong) for q in queries)
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"hopscope query benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        row("spans", f"{ingested.acknowledged:,} in requests of <= {BATCH}, {args.clients} clients"),
        row(
            "flows sent / stored",
            f"{sent_flows:,} / {facts.flows:,} ({len(plan.complete(DETAIL_SPANS))} of {DETAIL_SPANS} spans)",
        ),
        row("traces sent / stored", f"{sent_traces:,} / {facts.traces:,}"),
        row("error spans sent / stored", f"{plan.errors:,} / {facts.error_spans:,}"),
        row(
            "services / destinations",
            f"{len(LARGE_SHOP_SERVICES)} / {len(TOPICS)} SNS topics + {len(QUEUES)} SQS queues",
        ),
        row("store", args.store),
        row("retention / span windows", f"{args.retention} / {facts.span_windows}"),
        row(
            "database",
            f"{facts.db_bytes / 1e6:,.0f} MB ({'active parts' if args.store == 'chdb' else 'file + WAL'})",
        ),
        row("acknowledged / stored", f"{ingested.acknowledged:,} / {facts.spans:,}"),
        row("lost spans", f"{lost}"),
        row("collector exit code", f"{exit_code}"),
        row("wrong answers", f"{wrong}"),
        row("code", f"{git_head()}"),
        row("whole run", f"{total_seconds:.0f} s"),
    ]
    windows = ingested.windows
    lines.append(
        window_row(
            f"ingest windows ({args.clients} clients)", [w.label for w in windows], ratio_labels(windows)
        )
    )

    lines.append(rate_row("acknowledged spans/s", [w.rate for w in windows]))
    lines.append(rate_row("spans/s incl. stitching", [w.stitched_rate for w in windows]))
    if baseline is not None:
        lines.append(rate_row("in-process store (no stitching)", baseline.rates))
    lines += [
        window_row("stitched after the last ack", [f"{w.stitched_after:.1f} s" for w in windows]),
        window_row(
            "collector CPU per 1k spans", [f"{w.cpu_seconds * 1e6 / w.spans:.1f} ms" for w in windows]
        ),
        window_row(
            "collector writes per span", [f"{w.written_bytes / w.spans / 1024:.1f} KiB" for w in windows]
        ),
        row(
            "between the windows",
            f"{ingested.untimed_seconds:.1f} s to make and send the rest, "
            f"{ingested.backlog_seconds:.1f} s more to stitch it",
        ),
        f"queries ({args.repeat} each, ms)             median      p90      max",
    ]
    for q in queries:
        runs = "" if q.target_ms is not None else f" ({len(q.seconds)} runs, no target)"
        lines.append(
            f"  {q.label:<34} {q.median_ms:>8.1f} {q.p90_ms:>8.1f} {q.max_ms:>8.1f}   {q.note}{runs}"
        )
    lines.append("targets")
    for q in queries:
        if q.target_ms is not None:
            label = f"{q.label} <= {q.target_ms:,.0f} ms"
            lines.append(target(q.median_ms <= q.target_ms, label, f"{q.median_ms:.1f}"))
    last = windows[-1]
    for early in windows[:-1]:
        ratio = last.rate / early.rate
        label = f"ingest {last.label} / {early.label} >= {TARGET_INGEST_RATIO}"
        lines.append(target(ratio >= TARGET_INGEST_RATIO, label, f"{ratio:.2f}"))
    lines.append(target(lost == 0, "lost spans == 0", f"{lost}"))
    for q in queries:
        for problem in q.wrong[:5]:
            lines.append(f"  wrong answer ({q.label}): {problem}")
    print("\n".join(lines), flush=True)
    return 1 if lost or exit_code != 0 else 0


def run(args: argparse.Namespace, directory: Path) -> int:
    started = time.perf_counter()
    db = directory / "query.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    now_ns = time.time_ns()
    baseline = None
    if args.store == "chdb":
        shutil.rmtree(directory / "clickhouse", ignore_errors=True)
    if not args.no_baseline:
        log("baseline: the same spans into an in-process store, without stitching")
        baseline = measure_baseline(args, now_ns, directory / "baseline.db")
        rates = " / ".join(f"{rate:,.0f}" for rate in baseline.rates)
        log(f"baseline: {rates} spans/s ({baseline.seconds:.0f} s)")
    bodies = workload.large_shop(args.seed, args.spans, now_ns)
    store_args = ["--store", f"chdb://{directory / 'clickhouse'}"] if args.store == "chdb" else []
    store_args += ["--retention", args.retention]
    collector = ingest.Collector(db, store_args)
    with collector.killed_on_error():
        ingested = ingest_all(collector, bodies, args.spans, args.window, args.clients)
        api = Api(collector.address)
        try:
            log("querying")
            queries = run_queries(api, bodies.plan, args.repeat, args.seed)
        finally:
            api.close()
        if args.hold:
            log(f"holding the collector at {collector.address} (pid {collector.process.pid}); Enter to stop")
            sys.stdin.readline()
        exit_code = collector.stop()
    facts = clickhouse_store_facts(directory) if args.store == "chdb" else store_facts(db)
    elapsed = time.perf_counter() - started
    return report(args, bodies.plan, ingested, baseline, facts, queries, exit_code, elapsed)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in all (default: %(default)s)")
    parser.add_argument(
        "--window", type=int, default=100_000, help="spans in each timed ingest window (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=21, help="runs of each query (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the generated spans (default: %(default)s)"
    )
    parser.add_argument(
        "--db", type=Path, default=None, help="directory for the database (default: a temp dir)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process store baseline (saves about 40 s)"
    )
    parser.add_argument(
        "--retention",
        default="24h",
        help="the collector's --retention: the spans (of the last 20 h) lie in a dozen SQLite windows of 2 h "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--hold", action="store_true", help="keep the collector running after the queries, until Enter"
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "chdb"),
        default="sqlite",
        help="the collector's store: SQLite (--db) or ClickHouse in its process (--store chdb://; implies "
        "--no-baseline, which is SQLite's in-process writer)",
    )
    args = parser.parse_args(argv)
    if args.store == "chdb":
        args.no_baseline = True
    if args.clients < 1 or args.repeat < 1 or args.window < 1 or args.spans < 2 * args.window:
        parser.error("--clients, --repeat and --window must be positive, and --spans at least 2 x --window")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return ingest.in_work_directory(args.db, lambda directory: run(args, directory))


if __name__ == "__main__":
    sys.exit(main())
