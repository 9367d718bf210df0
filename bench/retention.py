"""Retention benchmark: does deleting expired spans stall OTLP/HTTP ingest?

One database is pre-filled with spans that started 3 days ago and copied twice. On copy A a collector
without retention ingests fresh spans (the baseline); on copy B a collector with ``--retention 1d``
ingests the same fresh spans while its writer deletes the old ones in chunks between ingest commits.
The ratio of the two ingest speeds, measured in the same run, is the figure to watch. See
bench/README.md.

    .venv/bin/python bench/retention.py [--old-spans 300000] [--spans 200000] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.store.sqlite.store import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
import ingest
import workload

TARGET_RATIO = 0.8
RETENTION = "1d"
DAY_NS = 86_400 * 10**9
RETENTION_NS = DAY_NS
OLD_AGE_NS = 3 * DAY_NS
PREFILL_REQUESTS_PER_WRITE = 8
POLL_SECONDS = 0.1
CATCH_UP_TIMEOUT_SECONDS = 120.0


# ---------------------------------------------------------------------------------------------------------
# The pre-filled database.
# ---------------------------------------------------------------------------------------------------------


def aged(body: bytes, shift_ns: int) -> ExportTraceServiceRequest:
    """The request with every span, and its events, moved ``shift_ns`` into the past."""
    request = ExportTraceServiceRequest.FromString(body)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.start_time_unix_nano -= shift_ns
                span.end_time_unix_nano -= shift_ns
                for event in span.events:
                    event.time_unix_nano -= shift_ns
    return request


def build_old_db(path: Path, spans: int, batch: int, seed: int) -> None:
    """A checkpointed database holding ``spans`` spans that started 3 days ago."""
    bodies = workload.small_shop(seed).bodies(spans, batch)
    store = SQLiteStore(path)
    try:
        for start in range(0, len(bodies), PREFILL_REQUESTS_PER_WRITE):
            chunk = bodies[start : start + PREFILL_REQUESTS_PER_WRITE]
            store.write([aged(body, OLD_AGE_NS) for body, _ in chunk])
        stored = store.count_spans()
    finally:
        store.close()  # checkpoints the WAL into the .db file, so copying the .db alone is enough
    if stored != spans:
        raise RuntimeError(f"pre-filled database holds {stored} of {spans} spans")
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise RuntimeError(f"{wal} is not empty after closing the store")


def count(db: Path, old: bool) -> int:
    """Spans that started more than a day ago (old) or since (fresh), read-only beside the collector."""
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        op = "<" if old else ">="
        query = f"SELECT count(*) FROM spans WHERE start_unix_nano {op} ?"
        (n,) = conn.execute(query, (time.time_ns() - RETENTION_NS,)).fetchone()
    finally:
        conn.close()
    return int(n)


class OldSpanWatcher:
    """Notes when no old span is left, polling on a thread with a cheap existence check.

    (A full count every poll would cost the baseline, which keeps all its old spans, more than the
    retention run.)
    """

    def __init__(self, db: Path) -> None:
        self._db = db
        self._conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        self._stop = threading.Event()
        self.gone_at: float | None = None  # time.perf_counter() of the first poll that found none
        self.fresh_when_gone = 0  # fresh spans stored by then
        self._thread = threading.Thread(target=self._run, name="old-span-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = "SELECT EXISTS (SELECT 1 FROM spans WHERE start_unix_nano < ?)"
        while not self._stop.is_set():
            (exists,) = self._conn.execute(query, (time.time_ns() - RETENTION_NS,)).fetchone()
            if not exists:
                self.gone_at = time.perf_counter()
                self.fresh_when_gone = count(self._db, old=False)
                return
            self._stop.wait(POLL_SECONDS)

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


# ---------------------------------------------------------------------------------------------------------
# One run: a collector on its own copy, the same fresh spans.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    elapsed: float
    stats: ingest.ClientStats
    old_at_first_request: int
    old_at_last_ack: int
    old_at_end: int
    gone_after: float | None  # seconds from the first request until no old span was left
    fresh_when_gone: int  # fresh spans stored by then
    fresh_stored: int
    exit_code: int

    @property
    def rate(self) -> float:
        return self.stats.acknowledged / self.elapsed

    @property
    def deleting_whole_run(self) -> bool:
        return self.gone_after is None or self.gone_after >= self.elapsed

    @property
    def rate_while_deleting(self) -> float:
        """Spans/s until no old span was left (the whole run if old spans outlasted it)."""
        if self.deleting_whole_run or not self.gone_after:
            return self.rate
        return self.fresh_when_gone / self.gone_after

    @property
    def lost(self) -> int:
        return self.stats.acknowledged - self.fresh_stored

    def latency_ms(self, fraction: float) -> float:
        return ingest.percentile(self.stats.latencies, fraction) * 1000


def measure(
    label: str, bodies: Sequence[tuple[bytes, int]], db: Path, clients: int, extra_args: Sequence[str]
) -> Run:
    collector = ingest.Collector(db, extra_args)
    with collector.killed_on_error():
        old_at_first_request = count(db, old=True)
        started = time.perf_counter()
        watcher = OldSpanWatcher(db)
        try:
            elapsed, stats = ingest.send_all(collector.address, bodies, clients, retry_sleep=None)
            old_at_last_ack = count(db, old=True)
            if extra_args:  # retention: give the writer time to finish, now without ingest
                watcher.wait(CATCH_UP_TIMEOUT_SECONDS)
            old_at_end = count(db, old=True)
        finally:
            watcher.stop()
            exit_code = collector.stop()
    gone_after = None if watcher.gone_at is None else watcher.gone_at - started
    return Run(
        label,
        elapsed,
        stats,
        old_at_first_request,
        old_at_last_ack,
        old_at_end,
        gone_after,
        watcher.fresh_when_gone,
        count(db, old=False),
        exit_code,
    )


# ---------------------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------------------


def line(label: str, value: str) -> str:
    return f"  {label:<32} {value}"


def row(label: str, baseline: str, retention: str) -> str:
    return line(label, f"{baseline:<20} {retention}")


def report(args: argparse.Namespace, bodies: Sequence[tuple[bytes, int]], base: Run, ret: Run) -> int:
    """Print the result block; the exit code is 1 only when spans were lost or a collector failed."""
    ratio = ret.rate / base.rate
    ratio_while_deleting = ret.rate_while_deleting / base.rate
    p99_ratio = ret.latency_ms(0.99) / base.latency_ms(0.99)
    deleted_while_ingesting = ret.old_at_first_request - ret.old_at_last_ack
    deleted_before = args.old_spans - ret.old_at_first_request
    if ret.gone_after is None:
        gone = f"not all gone {CATCH_UP_TIMEOUT_SECONDS:.0f} s after the last ack"
    else:
        during = "while" if ret.gone_after < ret.elapsed else "after"
        gone = f"all gone {ret.gone_after:.1f} s after the first request ({during} ingesting)"
    if ret.deleting_whole_run:
        window = "the whole run (old spans outlasted it)"
    else:
        window = f"{ret.fresh_when_gone:,} fresh spans in the first {ret.gone_after:.1f} s"
    when = time.strftime("%Y-%m-%d %H:%M")
    runs = (base, ret)
    lines = [
        f"hopscope retention benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        line("old spans", f"{args.old_spans:,} started 3 days ago, in both databases"),
        line(
            "fresh spans",
            f"{sum(n for _, n in bodies):,} in {len(bodies)} requests of <= {args.batch} spans,"
            f" {args.clients} clients",
        ),
        row("", base.label, ret.label),
        row("elapsed (HTTP)", *(f"{r.elapsed:.2f} s" for r in runs)),
        row("stored spans/s (HTTP)", *(f"{r.rate:,.0f}" for r in runs)),
        row(
            "latency p50 / p99 / max ms",
            *(f"{r.latency_ms(0.5):.0f} / {r.latency_ms(0.99):.0f} / {r.latency_ms(1.0):.0f}" for r in runs),
        ),
        row("old spans at first request", *(f"{r.old_at_first_request:,}" for r in runs)),
        row("old spans at last ack", *(f"{r.old_at_last_ack:,}" for r in runs)),
        row("old spans left at the end", *(f"{r.old_at_end:,}" for r in runs)),
        row("acknowledged / stored fresh", *(f"{r.stats.acknowledged:,} / {r.fresh_stored:,}" for r in runs)),
        row("retries (503) / reconnects", *(f"{r.stats.retries} / {r.stats.reconnects}" for r in runs)),
        row("lost spans", *(f"{r.lost}" for r in runs)),
        row("collector exit code", *(f"{r.exit_code}" for r in runs)),
        "retention",
        line("deleted before the first request", f"{deleted_before:,}"),
        line(
            "deleted while ingesting",
            f"{deleted_while_ingesting:,} ({deleted_while_ingesting / ret.elapsed:,.0f} spans/s)",
        ),
        line("old spans", gone),
        line("ingest while deleting", f"{window}: {ret.rate_while_deleting:,.0f} spans/s"),
        line(
            "ratio spans/s retention / base",
            f"{ratio:.2f} whole run, {ratio_while_deleting:.2f} while deleting",
        ),
        line("ratio p99 latency", f"{p99_ratio:.2f}"),
        "targets",
        ingest.target(
            ratio_while_deleting >= TARGET_RATIO,
            f"deleting ratio >= {TARGET_RATIO}",
            f"{ratio_while_deleting:.2f}",
        ),
        ingest.target(base.lost == ret.lost == 0, "lost spans == 0", f"{base.lost} / {ret.lost}"),
    ]
    print("\n".join(lines), flush=True)
    failed = any(r.lost or r.stats.rejected or r.exit_code for r in runs)
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--old-spans", type=int, default=300_000, help="expired spans pre-filled (default: %(default)s)"
    )
    parser.add_argument(
        "--spans", type=int, default=200_000, help="fresh spans sent per run (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=512, help="spans per request (default: %(default)s)")
    parser.add_argument("--db", type=Path, default=None, help="directory for the databases (default: temp)")
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the fresh spans (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if min(args.old_spans, args.spans, args.clients, args.batch) < 1:
        parser.error("--old-spans, --spans, --clients and --batch must be positive")
    return args


def run(args: argparse.Namespace, directory: Path) -> int:
    names = ("old.db", "baseline.db", "retention.db")
    for name in names:
        for suffix in ("", "-wal", "-shm"):
            (directory / (name + suffix)).unlink(missing_ok=True)
    old, baseline_db, retention_db = (directory / name for name in names)
    started = time.perf_counter()
    build_old_db(old, args.old_spans, args.batch, args.seed + 1_000_003)  # other ids than the fresh spans
    shutil.copyfile(old, baseline_db)
    shutil.copyfile(old, retention_db)
    print(
        f"pre-filled {args.old_spans:,} old spans in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )
    bodies = workload.small_shop(args.seed).bodies(args.spans, args.batch)
    print("baseline: collector without retention", file=sys.stderr, flush=True)
    base = measure("baseline", bodies, baseline_db, args.clients, [])
    print(f"retention: collector with --retention {RETENTION}", file=sys.stderr, flush=True)
    ret = measure(f"--retention {RETENTION}", bodies, retention_db, args.clients, ["--retention", RETENTION])
    return report(args, bodies, base, ret)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return ingest.in_work_directory(
        args.db, lambda directory: run(args, directory), prefix="hopscope-retention-"
    )


if __name__ == "__main__":
    sys.exit(main())
