"""Ingest benchmark: OTLP/HTTP protobuf into a real collector process, against the store's own write speed.

N client threads, each with one keep-alive connection, send pre-built batches of realistic spans to a
``hopscope collector`` subprocess until every span is acknowledged (a 200 means committed). In the same
run the same requests are written in-process to a fresh ``SQLiteStore``: the ratio between the two is the
figure to watch, since absolute speeds depend on the machine. See bench/README.md.

    .venv/bin/python bench/ingest.py [--clients 4] [--spans 500000] [--batch 512]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from hopscope.collector.store.sqlite.store import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
import workload

# Targets from the issue, for the 2-core dev machine.
TARGET_SPANS_PER_SECOND = 50_000
TARGET_RATIO = 0.5
TARGET_PEAK_RSS_MB = 300

MB = 1_000_000
RSS_SAMPLE_SECONDS = 0.05
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 120.0
MAX_RECONNECTS = 3
REQUEST_TIMEOUT_SECONDS = 120.0
HOPSCOPE = Path(sys.executable).with_name("hopscope")
LISTENING = re.compile(r"listening on (http://\S+)")

# ---------------------------------------------------------------------------------------------------------
# Baseline: the store's own write speed, in-process, same requests, one write per request.
# ---------------------------------------------------------------------------------------------------------


def measure_store(bodies: Sequence[tuple[bytes, int]], db: Path) -> float:
    """Spans/s of the store alone, doing what the collector does before it acknowledges: prepare, write.

    The requests are parsed before the clock starts; one request per write. (Flow stitching follows
    the acknowledgement; the HTTP run reports how long after the last one the flows caught up.)
    """
    requests = [ExportTraceServiceRequest.FromString(body) for body, _ in bodies]
    store = SQLiteStore(db)
    try:
        written = 0
        elapsed = 0.0
        for request in requests:
            started = time.perf_counter()
            written += store.write_prepared([store.prepare(request)])
            elapsed += time.perf_counter() - started
        stored = store.count_spans()
    finally:
        store.close()
    expected = sum(n for _, n in bodies)
    if written != expected or stored != expected:
        raise RuntimeError(f"in-process store wrote {written} and holds {stored} of {expected} spans")
    return written / elapsed


# ---------------------------------------------------------------------------------------------------------
# The collector process and its memory.
# ---------------------------------------------------------------------------------------------------------


class Collector:
    """A ``hopscope collector`` subprocess on a free port; its stderr is kept for error reports."""

    def __init__(self, db: Path, extra_args: Sequence[str] = ()) -> None:
        self.process = subprocess.Popen(
            [str(HOPSCOPE), "collector", "--host", "127.0.0.1", "--port", "0", "--db", str(db), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_stderr, name="collector-stderr", daemon=True).start()
        if not self._wait_ready():
            self.kill()
            raise RuntimeError("collector did not start:\n" + "".join(self.log))

    def _wait_ready(self) -> bool:
        return self._ready.wait(STARTUP_TIMEOUT_SECONDS) and self._url is not None and self._healthy()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match and self._url is None:
                self._url = match.group(1)
                self._ready.set()
        self._ready.set()  # exited before listening

    def _healthy(self) -> bool:
        """The line is logged once the port is bound; wait until it is also served."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            conn = http.client.HTTPConnection(*self.address, timeout=5)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                time.sleep(0.02)
            finally:
                conn.close()
        return False

    @property
    def address(self) -> tuple[str, int]:
        assert self._url is not None
        host, port = self._url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        """SIGINT, wait for the drain; returns the exit code, and writes the log to stderr unless it is 0."""
        self.process.send_signal(signal.SIGINT)
        try:
            exit_code = self.process.wait(SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("collector did not exit after SIGINT") from None
        if exit_code != 0:
            sys.stderr.write("".join(self.log))
        return exit_code

    @contextlib.contextmanager
    def killed_on_error(self) -> Iterator[None]:
        """A failure in the block kills the collector and writes its log to stderr before it propagates."""
        try:
            yield
        except BaseException:
            self.kill()
            sys.stderr.write("".join(self.log))
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RssSampler:
    """Peak resident memory of a process and its children, sampled on a thread.

    On Linux the kernel's own high-water mark (VmHWM) of the main process is read too: it also catches
    peaks shorter than the sampling interval. (``ru_maxrss`` of a waited-for child is no use here: it
    starts from this process's RSS at fork time.)
    """

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._status = Path(f"/proc/{pid}/status")
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.high_water_bytes = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self._process, *self._process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in processes)
                high_water = self._kernel_high_water()
            except (psutil.Error, OSError):  # exiting
                return
            self.peak_bytes = max(self.peak_bytes, rss)
            self.high_water_bytes = max(self.high_water_bytes, high_water)
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def _kernel_high_water(self) -> int:
        if not self._status.exists():
            return 0
        for line in self._status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------------------
# Clients.
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ClientStats:
    latencies: list[float] = field(default_factory=list)
    acknowledged: int = 0
    rejected: int = 0
    retries: int = 0
    reconnects: int = 0


def rejected_items(path: str, payload: bytes) -> int:
    """Spans (``/v1/traces``) or log records (``/v1/logs``) a 200 answer's partial success rejected."""
    if path == "/v1/logs":
        return ExportLogsServiceResponse.FromString(payload).partial_success.rejected_log_records
    return ExportTraceServiceResponse.FromString(payload).partial_success.rejected_spans


class Client:
    """One keep-alive connection sending bodies taken from a shared iterator until it is empty."""

    def __init__(
        self,
        address: tuple[str, int],
        work: Iterator[tuple[bytes, int]],
        lock: threading.Lock,
        retry_sleep: float | None,
        path: str = "/v1/traces",
    ) -> None:
        self._address = address
        self._path = path
        self._work = work
        self._lock = lock
        self._retry_sleep = retry_sleep
        self._conn = self._connect()
        self.stats = ClientStats()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (item := self._next()) is not None:
                self._send(*item)
        except BaseException as exc:
            self.error = exc
        finally:
            self._conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self._address, timeout=REQUEST_TIMEOUT_SECONDS)

    def _next(self) -> tuple[bytes, int] | None:
        with self._lock:
            return next(self._work, None)

    def _send(self, body: bytes, spans: int) -> None:
        reconnects = 0
        while True:
            started = time.perf_counter()
            try:
                self._conn.request(
                    "POST", self._path, body=body, headers={"Content-Type": "application/x-protobuf"}
                )
                response = self._conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                reconnects += 1
                if reconnects > MAX_RECONNECTS:
                    raise
                self.stats.reconnects += 1
                self._conn.close()
                self._conn = self._connect()
                continue
            latency = time.perf_counter() - started
            if response.status == 503:
                self.stats.retries += 1
                # As OTLP exporters should: wait what Retry-After says, unless --retry-sleep overrides it.
                retry_after = float(response.getheader("Retry-After") or 1)
                time.sleep(retry_after if self._retry_sleep is None else self._retry_sleep)
                continue
            if response.status != 200:
                raise RuntimeError(f"collector answered {response.status}: {payload[:300]!r}")
            rejected = rejected_items(self._path, payload)
            self.stats.latencies.append(latency)
            self.stats.acknowledged += spans - rejected
            self.stats.rejected += rejected
            return


@dataclass(frozen=True)
class HttpResult:
    elapsed: float
    stats: ClientStats
    peak_rss_bytes: int
    rss_high_water_bytes: int
    stored: int
    exit_code: int
    flows_lag_seconds: float


def send_all(
    address: tuple[str, int],
    bodies: Iterable[tuple[bytes, int]],
    clients: int,
    retry_sleep: float | None,
    path: str = "/v1/traces",
) -> tuple[float, ClientStats]:
    """Send every body with ``clients`` keep-alive connections to ``path`` (``/v1/traces`` or
    ``/v1/logs``); (seconds, the clients' stats summed, items counted as the bodies say)."""
    lock = threading.Lock()
    work = iter(bodies)
    workers = [Client(address, work, lock, retry_sleep, path) for _ in range(clients)]
    threads = [threading.Thread(target=w.run, name=f"client-{i}") for i, w in enumerate(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for worker in workers:
        if worker.error is not None:
            raise RuntimeError(f"a client failed: {worker.error!r}") from worker.error
    total = ClientStats()
    for worker in workers:
        total.latencies += worker.stats.latencies
        total.acknowledged += worker.stats.acknowledged
        total.rejected += worker.stats.rejected
        total.retries += worker.stats.retries
        total.reconnects += worker.stats.reconnects
    return elapsed, total


def measure_http(
    bodies: Sequence[tuple[bytes, int]], db: Path, clients: int, retry_sleep: float | None
) -> HttpResult:
    collector = Collector(db)
    with collector.killed_on_error():
        sampler = RssSampler(collector.process.pid)
        try:
            elapsed, stats = send_all(collector.address, bodies, clients, retry_sleep)
            flows_lag = wait_for_flows(collector.address)
        finally:
            exit_code = collector.stop()
            sampler.stop()
    store = SQLiteStore(db, read_only=True)
    try:
        stored = store.count_spans()
    finally:
        store.close()
    return HttpResult(
        elapsed, stats, sampler.peak_bytes, sampler.high_water_bytes, stored, exit_code, flows_lag
    )


def wait_for_flows(address: tuple[str, int]) -> float:
    """Seconds from the last acknowledgement until every stored span is stitched into its flow."""
    started = time.perf_counter()
    while time.perf_counter() - started < 600:
        conn = http.client.HTTPConnection(*address, timeout=10)
        try:
            conn.request("GET", "/healthz")
            if not json.loads(conn.getresponse().read())["flows_pending"]:
                return time.perf_counter() - started
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError("flows were still not stitched 600 s after the last acknowledgement")


# ---------------------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def row(label: str, value: str) -> str:
    return f"  {label:<28} {value}"


def target(ok: bool, label: str, value: str) -> str:
    return f"  {'PASS' if ok else 'MISS'}  {label:<26} {value}"


def report(
    args: argparse.Namespace, bodies: Sequence[tuple[bytes, int]], baseline: float, http: HttpResult
) -> int:
    """Print the result block; the exit code is 1 only when spans were lost or the collector failed."""
    stats = http.stats
    rate = stats.acknowledged / http.elapsed
    ratio = rate / baseline
    peak_mb = max(http.peak_rss_bytes, http.rss_high_water_bytes) / MB
    lost = stats.acknowledged - http.stored
    latencies_ms = [s * 1000 for s in stats.latencies]
    p50, p99 = percentile(latencies_ms, 0.50), percentile(latencies_ms, 0.99)
    avg_kib = statistics.mean(len(body) for body, _ in bodies) / 1024
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"hopscope ingest benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        row("spans", f"{sum(n for _, n in bodies):,} in {len(bodies)} requests of <= {args.batch} spans"),
        row("avg request body", f"{avg_kib:.0f} KiB (protobuf, uncompressed)"),
        row("clients", f"{args.clients} (keep-alive HTTP/1.1)"),
        row("elapsed (HTTP)", f"{http.elapsed:.2f} s"),
        row("stored spans/s (HTTP)", f"{rate:,.0f}"),
        row("request latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms"),
        row("collector peak RSS", f"{http.peak_rss_bytes / MB:.1f} MB sampled every 50 ms"),
        row("collector RSS high-water", f"{http.rss_high_water_bytes / MB:.1f} MB (kernel VmHWM)"),
        row("in-process store spans/s", f"{baseline:,.0f} (prepare + write_prepared, one request per call)"),
        row("ratio HTTP / in-process", f"{ratio:.2f}"),
        row("retries (503) / reconnects", f"{stats.retries} / {stats.reconnects}"),
        row("acknowledged / stored", f"{stats.acknowledged:,} / {http.stored:,} (rejected {stats.rejected})"),
        row("lost spans", f"{lost}"),
        row("collector exit code", f"{http.exit_code}"),
        row("flows stitched", f"{http.flows_lag_seconds:.1f} s after the last acknowledgement"),
        "targets",
        target(rate >= TARGET_SPANS_PER_SECOND, f"spans/s >= {TARGET_SPANS_PER_SECOND:,}", f"{rate:,.0f}"),
        target(ratio >= TARGET_RATIO, f"ratio >= {TARGET_RATIO}", f"{ratio:.2f}"),
        target(peak_mb <= TARGET_PEAK_RSS_MB, f"peak RSS <= {TARGET_PEAK_RSS_MB} MB", f"{peak_mb:.1f} MB"),
        target(lost == 0, "lost spans == 0", f"{lost}"),
    ]
    print("\n".join(lines), flush=True)
    return 1 if lost > 0 or stats.rejected or http.exit_code != 0 else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--spans", type=int, default=500_000, help="spans to send in all (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=512, help="spans per request (default: %(default)s)")
    parser.add_argument(
        "--db", type=Path, default=None, help="directory for both databases (default: a temp dir)"
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="seed of the generated spans (default: %(default)s)"
    )
    parser.add_argument(
        "--retry-sleep",
        type=float,
        default=None,
        help="seconds to wait before re-sending after a 503 (default: the answer's Retry-After)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.spans < 1 or args.batch < 1:
        parser.error("--clients, --spans and --batch must be positive")
    return args


def run(args: argparse.Namespace, directory: Path) -> int:
    for name in ("baseline.db", "http.db"):
        for suffix in ("", "-wal", "-shm"):
            (directory / (name + suffix)).unlink(missing_ok=True)
    started = time.perf_counter()
    bodies = workload.small_shop(args.seed).bodies(args.spans, args.batch)
    print(
        f"generated {len(bodies)} request bodies in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    baseline = measure_store(bodies, directory / "baseline.db")
    print(f"in-process store: {baseline:,.0f} spans/s; starting the collector", file=sys.stderr, flush=True)
    http = measure_http(bodies, directory / "http.db", args.clients, args.retry_sleep)
    return report(args, bodies, baseline, http)


def in_work_directory(db: Path | None, run: Callable[[Path], int], prefix: str = "hopscope-bench-") -> int:
    """Run a benchmark in ``--db`` (kept) or in a temporary folder (removed afterwards)."""
    if db is not None:
        db.mkdir(parents=True, exist_ok=True)
        return run(db)
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        return run(Path(directory))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return in_work_directory(args.db, lambda directory: run(args, directory))


if __name__ == "__main__":
    sys.exit(main())
