"""Soak benchmark: sustained ingest with and without ``--retention``: does the disk plateau, and at what cost?

Four client threads, each with one keep-alive connection, send the small shop's spans to a ``hopscope
collector`` subprocess as fast as it takes them, for ``--minutes``, twice: first without retention (the
baseline), then with ``--retention`` (default 2m). The spans are made while the run goes (a generator
thread a few requests ahead), their times at the moment they are made, so that retention finds them old
after its period as it would in production. Every 10 s the script sums the size of the store's files (the
database and its ``-wal`` and ``-shm``), and prints the series with the number of span windows.

Checks (issue 16):
- the size plateaus: the samples at the end of each of the last 3 minutes within +-10% of each other;
- no span older than the retention plus one span window (a twelfth of the retention, store/sqlite/windows.py)
  is kept at the end, give or take the retention's pass interval (a 48th of it);
- ingest with retention >= 0.9x ingest without it (the same machine, minutes apart);
- 0 acknowledged spans lost: every acknowledged span that started after ``stop - retention + 30 s`` (which
  no retention pass can have reached) is stored.

    .venv/bin/python bench/soak.py [--minutes 10] [--retention 2m] [--clients 4] [--batch 512]
        [--no-baseline]
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import workload
from ingest import Client, Collector, in_work_directory, row, target

from hopscope.collector.ingest.stitcher import retention_look_seconds
from hopscope.collector.store.sqlite.storage import store_files
from hopscope.collector.store.sqlite.windows import oldest_start, read_windows, window_seconds

SAMPLE_SECONDS = 10.0
PLATEAU_MINUTES = 3
PLATEAU_TOLERANCE = 0.10
TARGET_RATIO = 0.9
# Spans per generator slot: each slot's spans start from the moment it is made (the small shop puts a
# trace every 2 ms after its start), so their times stay within a few seconds of the clock.
SLOT_SPANS = 4_096
AHEAD_REQUESTS = 32
LOSS_MARGIN_NS = 30 * 1_000_000_000


def parse_duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@dataclass
class Sent:
    """What the clients sent, per request: (its earliest span start, spans acknowledged)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def fresh_bodies(batch: int, sent: Sent) -> Iterator[tuple[bytes, int]]:
    """Bodies of fresh spans, made on a thread a few requests ahead; ends once ``sent.stop`` is set."""
    ahead: queue.Queue[tuple[bytes, int, int] | None] = queue.Queue(AHEAD_REQUESTS)

    def make() -> None:
        seed = 0
        while not sent.stop.is_set():
            start = time.time_ns()
            for body, count in workload.small_shop(seed=seed, start_ns=start).take(SLOT_SPANS, batch):
                while not sent.stop.is_set():
                    try:
                        ahead.put((body, count, start), timeout=0.1)
                        break
                    except queue.Full:
                        continue
            seed += 1
        ahead.put(None)

    threading.Thread(target=make, name="soak-generator", daemon=True).start()
    while (item := ahead.get()) is not None:
        body, count, start = item
        with sent.lock:
            sent.requests.append((start, count))  # counted as sent; the client may still fail it
        yield body, count


def store_bytes(db: Path) -> int:
    return sum(path.stat().st_size for path in store_files(db) if path.exists())


def window_count(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return len(read_windows(conn))
    except sqlite3.Error:  # not created yet
        return 0
    finally:
        conn.close()


@dataclass(frozen=True)
class Outcome:
    spans_per_second: float
    sizes: list[tuple[float, int]]  # (seconds since the start, bytes)
    oldest_age_seconds: float | None
    oldest_flow_age_seconds: float | None  # the end of the earliest standing flow with spans
    oldest_rollup_age_seconds: float | None  # the start of the earliest RED rollup's minute
    lost: int
    exit_code: int


def soak(args: argparse.Namespace, db: Path, retention_seconds: int | None) -> Outcome:
    extra = ["--retention", f"{retention_seconds}s"] if retention_seconds else []
    for old in store_files(db):  # a --db folder kept from an earlier run: each run starts empty
        old.unlink()
    collector = Collector(db, extra)
    sent = Sent()
    work = fresh_bodies(args.batch, sent)
    lock = threading.Lock()
    sizes: list[tuple[float, int]] = []
    with collector.killed_on_error():
        clients = [Client(collector.address, work, lock, None) for _ in range(args.clients)]
        threads = [threading.Thread(target=c.run, name=f"soak-client-{i}") for i, c in enumerate(clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = started + args.minutes * 60
        while (now := time.monotonic()) < deadline:
            time.sleep(min(SAMPLE_SECONDS, deadline - now))
            sizes.append((time.monotonic() - started, store_bytes(db)))
            wal = Path(f"{db}-wal")
            wal_mb = wal.stat().st_size / 1e6 if wal.exists() else 0.0
            sent_spans = sum(count for _, count in sent.requests)
            print(
                f"  {sizes[-1][0]:6.0f} s  {sizes[-1][1] / 1e6:9.1f} MB (WAL {wal_mb:7.1f} MB), "
                f"{window_count(db):3} windows, {sent_spans:>11,} spans sent",
                flush=True,
            )
        sent.stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stopped_ns = time.time_ns()
        for client in clients:
            if client.error is not None:
                raise client.error
    exit_code = collector.stop()
    acknowledged = sum(c.stats.acknowledged for c in clients)
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        oldest = oldest_start(conn)
        (flow_end,) = conn.execute(
            "SELECT min(end_unix_nano) FROM flows WHERE merged_into IS NULL AND span_count > 0"
        ).fetchone()
        (bucket,) = conn.execute("SELECT min(bucket_start_unix_nano) FROM red_rollups").fetchone()
        lost = 0
        if retention_seconds:
            safe_after = stopped_ns - retention_seconds * 1_000_000_000 + LOSS_MARGIN_NS
            must_be_kept = sum(count for start, count in sent.requests if start >= safe_after)
            (kept,) = conn.execute(
                "SELECT count(*) FROM spans WHERE start_unix_nano >= ?", (safe_after,)
            ).fetchone()
            lost = max(0, must_be_kept - kept)
        else:
            (kept,) = conn.execute("SELECT count(*) FROM spans").fetchone()
            lost = max(0, acknowledged - kept)
    finally:
        conn.close()
    return Outcome(
        spans_per_second=acknowledged / elapsed,
        sizes=sizes,
        oldest_age_seconds=None if oldest is None else (stopped_ns - oldest) / 1e9,
        oldest_flow_age_seconds=None if flow_end is None else (stopped_ns - flow_end) / 1e9,
        oldest_rollup_age_seconds=None if bucket is None else (stopped_ns - bucket) / 1e9,
        lost=lost,
        exit_code=exit_code,
    )


def plateau(sizes: Sequence[tuple[float, int]]) -> tuple[bool, list[int]]:
    """The sample closest to the end of each of the last PLATEAU_MINUTES minutes, and whether they agree."""
    end = sizes[-1][0]
    picks = [min(sizes, key=lambda s: abs(s[0] - (end - 60 * k)))[1] for k in range(PLATEAU_MINUTES)][::-1]
    return max(picks) <= (1 + PLATEAU_TOLERANCE) * min(picks), picks


def run(args: argparse.Namespace, directory: Path) -> int:
    retention = parse_duration(args.retention)
    print(
        f"hopscope soak benchmark: {args.minutes} min per run, "
        f"{args.clients} clients, batches of {args.batch}"
    )
    baseline = None
    if args.baseline:
        print("baseline: no retention", flush=True)
        baseline = soak(args, directory / "baseline.db", None)
    print(f"with --retention {retention}s", flush=True)
    kept = soak(args, directory / "retention.db", retention)
    ok_plateau, picks = plateau(kept.sizes)
    window = retention + window_seconds(retention) + retention_look_seconds(retention)
    print("results")
    if baseline is not None:
        print(row("ingest, no retention", f"{baseline.spans_per_second:,.0f} spans/s"))
        print(row("size at the end, no retention", f"{baseline.sizes[-1][1] / 1e6:,.1f} MB"))
    print(row("ingest, with retention", f"{kept.spans_per_second:,.0f} spans/s"))
    print(row("last 3 minutes' sizes", " / ".join(f"{p / 1e6:,.1f} MB" for p in picks)))
    age = "-" if kept.oldest_age_seconds is None else f"{kept.oldest_age_seconds:.0f} s"
    limit = f"limit {window:.1f} s: retention, a window of {window_seconds(retention)} s, a pass interval"
    print(row("oldest span kept", f"{age} old ({limit})"))
    flow_age = "-" if kept.oldest_flow_age_seconds is None else f"{kept.oldest_flow_age_seconds:.0f} s"
    rollup_age = "-" if kept.oldest_rollup_age_seconds is None else f"{kept.oldest_rollup_age_seconds:.0f} s"
    print(row("oldest flow's end / RED minute", f"{flow_age} / {rollup_age} old (retention {retention} s)"))
    print(row("acknowledged spans lost", f"{kept.lost} (baseline {baseline.lost if baseline else '-'})"))
    print("targets")
    print(
        target(
            ok_plateau, "size plateaus (+-10%, last 3 minutes)", " / ".join(f"{p / 1e6:.0f}" for p in picks)
        )
    )
    print(
        target(kept.oldest_age_seconds is not None and kept.oldest_age_seconds <= window, "oldest span", age)
    )
    if baseline is not None:
        ratio = kept.spans_per_second / baseline.spans_per_second
        print(target(ratio >= TARGET_RATIO, f"ingest ratio >= {TARGET_RATIO}", f"{ratio:.2f}"))
    print(
        target(kept.lost == 0 and (baseline is None or baseline.lost == 0), "lost spans == 0", str(kept.lost))
    )
    return kept.exit_code or (baseline.exit_code if baseline else 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10, help="per run (default: %(default)s)")
    parser.add_argument(
        "--retention", default="2m", help="the collector's --retention (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=512, help="spans per request (default: %(default)s)")
    parser.add_argument("--db", type=Path, default=None, help="keep the databases in this folder")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the run without retention"
    )
    args = parser.parse_args(argv)
    return in_work_directory(args.db, lambda directory: run(args, directory), prefix="hopscope-soak-")


if __name__ == "__main__":
    sys.exit(main())
