"""Stitching in a process of its own, beside the writer thread: the second core folds spans into flows.

In one process the receiver's decoding, the writer's commits and stitching share one interpreter lock, so
at 10,000 spans/s on two cores flows trailed ingest by seconds (bench/freshness.py). A store that another
process can open (SQLite: its file, in WAL mode) is stitched by a child process instead. It reads the spans
the writer committed, folds them in its own transactions (the fold and the stitching position commit
together, as in the writer), and yields to the writer: while spans wait to be committed it starts no
transaction, for at most ``YIELD_MAX_SECONDS``, so a burst keeps its ingest speed and flows catch up after.

The child is ``python -m hopscope.collector.ingest.stitcher`` (a plain subprocess: no multiprocessing
resource tracker, nothing forked from a process with threads). Two flags live in a shared memory page (a
temporary file's, mapped by both): the writer's "spans wait to be committed" and the collector's "stop".
The child reports what the collector's health shows (skipped spans, a failing fold) as JSON lines on a
pipe; the lag itself is read from the database (``unstitched_since_unix_nano``). It exits when asked, when
the collector is gone (a SIGKILL leaves no orphan behind for long), and ignores SIGINT, which a terminal
sends to the whole process group: the collector stops it after draining the writer.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import mmap
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from hopscope.collector.stitch.failures import Failures, describe
from hopscope.collector.stitch.guard import SkippedSpans

log = logging.getLogger(__name__)

# A chunk every GAP seconds (from its start) of whatever waits, up to CHUNK_SPANS: flows trail by about the
# gap under steady ingest; a backlog is folded chunk after chunk.
GAP_SECONDS = 0.2
CHUNK_SPANS = 4_000
# Flows one expiry step takes at most (about 40 ms on the 2-core dev machine): with a step after each chunk,
# expiry keeps pace with the flows of 20,000 spans/s (2,800 flows/s) while stitching keeps up.
EXPIRY_CHUNK_FLOWS = 1_000
# Caught up, retention (the writer's of spans, the stitcher's of flows) looks again after a 48th of the
# retention, at most a minute: soon after each window of spans (a twelfth, store/sqlite/windows.py) is due.
RETENTION_LOOKS_PER_RETENTION = 48
RETENTION_LOOK_MAX_SECONDS = 60.0


def retention_look_seconds(retention_seconds: int | None) -> float:
    return min(RETENTION_LOOK_MAX_SECONDS, (retention_seconds or 0) / RETENTION_LOOKS_PER_RETENTION)


# While the writer has spans to commit the child waits, looking every POLL seconds, but at most this long:
# during a long burst flows still move, a chunk per this many seconds (as the writer's own budget does).
YIELD_MAX_SECONDS = 1.0
YIELD_POLL_SECONDS = 0.002
STOP_TIMEOUT_SECONDS = 10.0
# A child that dies is started again after this, doubling up to a minute while it keeps dying (a child that
# ran for RESTART_FORGET_SECONDS first counts as a first death again).
RESTART_BACKOFF_SECONDS = 0.5
RESTART_BACKOFF_MAX_SECONDS = 60.0
RESTART_FORGET_SECONDS = 60.0
# The shared page: byte WRITER_BUSY is 1 while the writer has spans to commit, byte STOP 1 once asked to stop.
WRITER_BUSY = 0
STOP = 1
_FLAGS_BYTES = 16


@dataclass(frozen=True)
class StitchReport:
    """What the child says after a chunk, when it changed: skipped spans by reason and the fold's failure."""

    skipped_by_reason: dict[str, int]
    last_skip_error: str | None
    stitch_error: str | None


class StitcherProcess:
    """Starts, watches and stops the child that stitches the store at ``url``; any thread may ask it.

    ``skipped`` is the collector's record of skipped spans (the store's), kept current from the reports.
    """

    def __init__(self, url: str, skipped: SkippedSpans, retention_seconds: int | None = None) -> None:
        self._url = url
        self._retention_seconds = retention_seconds or 0
        self._skipped = skipped
        self._flags_file = tempfile.TemporaryFile(prefix="hopscope-stitcher-")  # noqa: SIM115 - until close
        self._flags_file.truncate(_FLAGS_BYTES)
        # one writer per byte (the writer thread; the collector on close): no lock
        self._flags = mmap.mmap(self._flags_file.fileno(), _FLAGS_BYTES)
        self._process: subprocess.Popen[bytes] | None = None
        self._reports: IO[bytes] | None = None
        self._watcher: threading.Thread | None = None
        self._stop_asked = threading.Event()
        self.stitch_error: str | None = None
        self.restarts = 0
        self._deaths_in_a_row = 0
        self._started_at = 0.0

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="hopscope-stitcher-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        receive, send = os.pipe()
        flags = self._flags_file.fileno()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, "--store", self._url, "--flags-fd", str(flags),
                 "--report-fd", str(send), "--parent", str(os.getpid()),
                 "--retention", str(self._retention_seconds)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(flags, send),
            )  # fmt: skip
        finally:
            os.close(send)  # the child holds the sending end: its exit ends the pipe
        self._started_at = time.monotonic()
        self._reports = os.fdopen(receive, "rb")

    def writer_busy(self, busy: bool) -> None:
        """The writer has spans to commit (True) or none (False): the child starts no fold meanwhile."""
        self._flags[WRITER_BUSY] = 1 if busy else 0

    def close(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Let the child finish its chunk and exit; terminate it if it does not within ``timeout``."""
        self._stop_asked.set()
        self._flags[STOP] = 1
        process = self._process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the stitcher did not stop within %.0f s; terminating it", timeout)
                process.terminate()
                process.wait(timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
        self._flags.close()
        self._flags_file.close()

    def _watch(self) -> None:
        """Apply the child's reports; when it dies unasked, log it once per cause and start another."""
        failures = Failures(log)
        while True:
            reports, process = self._reports, self._process
            assert reports is not None and process is not None
            with reports:
                for line in reports:
                    self._apply(StitchReport(**json.loads(line)))
            code = process.wait()
            if self._stop_asked.is_set():
                return
            failures.failed(
                None, "the stitcher process exited (code %s); starting it again", code, kind=f"exit {code}"
            )
            self.stitch_error = f"the stitcher process exited (code {code}); restarted"
            if time.monotonic() - self._started_at >= RESTART_FORGET_SECONDS:
                self._deaths_in_a_row = 0
            backoff = RESTART_BACKOFF_SECONDS * 2**self._deaths_in_a_row
            self._deaths_in_a_row += 1
            self._stop_asked.wait(min(backoff, RESTART_BACKOFF_MAX_SECONDS))
            if self._stop_asked.is_set():
                return
            self.restarts += 1
            self._spawn()

    def _apply(self, report: StitchReport) -> None:
        skipped = self._skipped
        if Counter(report.skipped_by_reason) != skipped.by_reason:
            skipped.by_reason = Counter(report.skipped_by_reason)
            skipped.last_error = report.last_skip_error
            skipped.last_monotonic = time.monotonic()
        self.stitch_error = report.stitch_error


def main(argv: Sequence[str] | None = None) -> None:
    """The child's main: open the store for stitching and fold until stopped or orphaned."""
    parser = argparse.ArgumentParser(prog="python -m hopscope.collector.ingest.stitcher")
    parser.add_argument("--store", required=True)
    parser.add_argument("--flags-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--retention", type=int, default=0, help="seconds; 0: flows are kept for ever")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from hopscope.collector.store.url import open_store  # noqa: PLC0415 - in the child only

    flags = mmap.mmap(args.flags_fd, _FLAGS_BYTES)
    reports = os.fdopen(args.report_fd, "w", buffering=1)
    try:
        store = open_store(args.store, stitch_only=True)
    except Exception:
        log.exception("the stitcher cannot open %s", args.store)
        raise SystemExit(2) from None
    try:
        _ChildLoop(store, reports, flags, args.parent, args.retention).run()
    finally:
        with contextlib.suppress(Exception):
            store.close()
        with contextlib.suppress(OSError):
            reports.close()


class _ChildLoop:
    def __init__(
        self, store: Any, reports: IO[str], flags: mmap.mmap, parent_pid: int, retention_seconds: int = 0
    ) -> None:
        self._store = store
        self._reports = reports
        self._flags = flags
        self._parent_pid = parent_pid
        self._failures = Failures(log)
        self._sent: StitchReport | None = None
        self._orphaned = False
        self._retention_ns = retention_seconds * 1_000_000_000
        self._expiry_interval = retention_look_seconds(retention_seconds)
        self._next_expiry = 0.0
        self._expiry_failures = Failures(log)

    def _done(self) -> bool:
        return self._orphaned or bool(self._flags[STOP]) or os.getppid() != self._parent_pid

    def run(self) -> None:
        """A chunk when one is due, and with ``--retention`` an expiry step after it when one is due."""
        next_chunk = 0.0
        while not self._done():
            now = time.monotonic()
            expiry_due = self._retention_ns > 0 and now >= self._next_expiry
            if now < next_chunk and not expiry_due:
                wake = min(next_chunk, self._next_expiry) if self._retention_ns else next_chunk
                time.sleep(min(wake - now, 0.05))
                continue
            self._yield_to_writer()
            if now >= next_chunk:
                next_chunk = self._stitch_chunk()
            if expiry_due:
                self._expire_step()

    def _stitch_chunk(self) -> float:
        """Fold a chunk; returns when the next one is due."""
        started = time.monotonic()
        try:
            stitched = self._store.stitch_flows(CHUNK_SPANS)
        except Exception as exc:  # the environment: the same chunk again after a backoff
            self._failures.failed(exc, "stitching flows failed (retried with backoff): %s", describe(exc))
            self._report()
            return time.monotonic() + self._failures.backoff
        self._failures.succeeded("stitching flows works again")
        self._report()
        # a full chunk: more wait, go on at once; else the next one a gap after this one started
        return started if stitched >= CHUNK_SPANS else started + GAP_SECONDS

    def _expire_step(self) -> None:
        """One step of flows' and rollups' expiry (store/sqlite/expiry.py): this process writes flows, so
        the step never waits for their lock; again at once while it finds work."""
        cutoff = time.time_ns() - self._retention_ns
        try:
            found = self._store.expire_before(cutoff, EXPIRY_CHUNK_FLOWS, orphans=False)
        except Exception as exc:
            self._expiry_failures.failed(exc, "expiring flows failed (retried later): %s", describe(exc))
            self._next_expiry = time.monotonic() + self._expiry_failures.backoff
            return
        self._expiry_failures.succeeded("expiring flows works again")
        self._next_expiry = time.monotonic() + (0.0 if found else self._expiry_interval)

    def _yield_to_writer(self) -> None:
        deadline = time.monotonic() + YIELD_MAX_SECONDS
        while self._flags[WRITER_BUSY] and time.monotonic() < deadline and not self._done():
            time.sleep(YIELD_POLL_SECONDS)

    def _report(self) -> None:
        skipped: SkippedSpans = self._store.skipped_spans
        report = StitchReport(dict(skipped.by_reason), skipped.last_error, self._failures.current)
        if report != self._sent:
            try:
                self._reports.write(json.dumps(dataclasses.asdict(report)) + "\n")
            except BrokenPipeError:  # the collector is gone
                self._orphaned = True
            self._sent = report


if __name__ == "__main__":
    main()
