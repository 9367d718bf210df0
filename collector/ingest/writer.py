"""The single writer thread between the receiver and the store: bounded, group-committing, durable.

The receiver hands over a request's spans, prepared as the store's rows, and gets a future; the future
resolves only after the store has committed the spans, and only then does the receiver answer 200.
Requests that wait together are committed in one transaction (group commit), which is what makes a
durable commit per request affordable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from hopscope.collector.ingest.stitcher import StitcherProcess, retention_look_seconds
from hopscope.collector.stitch.failures import Failures, describe
from hopscope.collector.store.base import Prepared, WriteSide

log = logging.getLogger(__name__)

# Spans committed in one transaction at most; larger groups only delay the first acknowledgement.
MAX_GROUP_SPANS = 16_384
# Spans are stitched into flows by the writer between commits, in chunks, on one of three budgets:
# - steady ingest (the spans arrive at a rate that keeping up with costs at most STITCH_STEADY_NEED of the
#   writer thread's CPU, at the measured CPU cost of a stitched span): a chunk every
#   STITCH_KEEP_UP_GAP_SECONDS (counted from its start) of whatever waits, up to STITCH_KEEP_UP_SHARE of the
#   writer, so flows, RED and the graph trail the spans by about the gap (bench/freshness.py);
# - a burst (they arrive faster): one chunk of STITCH_BUSY_CHUNK_SPANS per STITCH_BUSY_GAP_SECONDS after the
#   last, a bounded share, so ingest keeps its speed (bench/ingest.py) and flows catch up later;
# - idle (nothing committed for INGEST_IDLE_SECONDS): chunk after chunk.
# The rate at which spans arrive is only seen while stitching takes little of the writer: keeping up slows
# the commits, and clients that wait for their answers (most exporters) then send slower too, so a burst
# would look steady. Hence ingest that starts is a burst until INGEST_RATE_WINDOW_SECONDS of the bounded
# share have measured its rate, and steady ingest pauses stitching for STITCH_PROBE_SECONDS every
# STITCH_PROBE_INTERVAL_SECONDS to measure the rate again; a probe finds a burst only when keeping up would
# take more than STITCH_BURST_NEED of the writer (the requests that waited during the last chunk arrive in
# the probe too, so its rate runs high).
# On the dev machine (2 cores) keeping up with 10,000 spans/s needs 0.75-0.9 of the writer, with a burst of
# 4 waiting clients 1.0-1.4 (bench/README.md): the thresholds sit between, with room for the probe's excess.
STITCH_KEEP_UP_GAP_SECONDS = 0.25
STITCH_KEEP_UP_SHARE = 0.9
STITCH_STEADY_NEED = 0.95
STITCH_BURST_NEED = 1.1
STITCH_PROBE_SECONDS = 0.5
STITCH_PROBE_INTERVAL_SECONDS = 10.0
STITCH_BUSY_CHUNK_SPANS = 8_000
STITCH_BUSY_GAP_SECONDS = 1.0
STITCH_IDLE_CHUNK_SPANS = 10_000
INGEST_RATE_WINDOW_SECONDS = 2.0
# CPU seconds per stitched span until measured (the bench's spans on SQLite, 2-core dev machine: 45-55 us);
# chunks of at least STITCH_COST_MIN_SPANS update it (weight STITCH_COST_WEIGHT for the newest).
STITCH_COST_DEFAULT_SECONDS = 50e-6
STITCH_COST_MIN_SPANS = 500
STITCH_COST_WEIGHT = 0.3
RETENTION_CHUNK_SPANS = 2_000
# Flows (with their rows), and rows of each rollup table, one expiry step deletes at most (store/base.py
# Retention.expire_before) when this thread stitches (--stitch-in-writer; a stitcher process expires flows
# itself, ingest/stitcher.py): a step is one short transaction (8-15 ms for 200 flows on the 2-core dev
# machine). A retention turn drops a window of spans (or deletes a chunk of them) and takes a step.
RETENTION_CHUNK_FLOWS = 200
# While spans keep arriving, a retention turn that left work waits RETENTION_BUSY_SHARE_GAP times its own
# length (at least RETENTION_BUSY_GAP_SECONDS) before the next: retention takes at most a quarter of the
# writer, however small the ingest groups are. When nothing has arrived for INGEST_IDLE_SECONDS, turns run
# one after another.
RETENTION_BUSY_GAP_SECONDS = 0.01
RETENTION_BUSY_SHARE_GAP = 3.0
INGEST_IDLE_SECONDS = 1.0
_WRITE_FAILED = "storing spans failed (answered 503): %s"


class QueueFullError(RuntimeError):
    """More spans are waiting for the store than the queue holds; the client should retry later."""


class WriterClosedError(RuntimeError):
    """The writer is shutting down and takes no new spans."""


@dataclass(frozen=True)
class WriterHealth:
    """What the writer knows about its own state, for the collector's health and readiness answers."""

    pending_spans: int
    flows_pending: bool
    # How long the oldest stored span not yet in flows (on SQLite: nor in RED and the graph) has waited,
    # from its arrival (0.0 while stitching is caught up).
    flows_lag_seconds: float
    # Spans of this database left out of RED and the graph (unusable times) or of flows too (a failed
    # fold), by reason; see stitch/guard.py.
    spans_skipped: int
    spans_skipped_by_reason: dict[str, int]
    last_skip_error: str | None
    # Seconds since spans were last skipped (None: never in this run).
    seconds_since_last_skip: float | None
    # Why the last commit failed (disk full, ...), until a later commit succeeds.
    write_error: str | None
    # Why stitching fails for the environment's sake (retried with backoff), until it works again.
    stitch_error: str | None


@dataclass
class _Job:
    prepared: Prepared  # what the store's prepare() (or prepare_logs()) made of one request
    spans: int  # its spans, or its log records: both count against the queue's bound
    future: Future[None] = field(default_factory=Future)
    received: int = field(default_factory=time.time_ns)  # unix ns, when handed to the writer


class SpanWriter:
    """Owns the store's write side; call :meth:`submit` from any thread.

    With ``retention_seconds`` set it also deletes expired spans, a small chunk at a time between
    ingest commits, so retention never stalls ingest. With ``stitch_in_process`` (and a store that another
    process can open) a stitcher process folds the spans into flows (ingest/stitcher.py); otherwise this
    thread does, between commits, on the budget of :meth:`stitch_budget`.
    """

    def __init__(
        self,
        store: WriteSide,
        *,
        max_pending_spans: int,
        retention_seconds: int | None = None,
        max_group_spans: int = MAX_GROUP_SPANS,
        stitch_in_process: bool = False,
    ) -> None:
        self._store = store
        url = store.stitcher_url if stitch_in_process else None
        self.stitcher = StitcherProcess(url, store.skipped_spans, retention_seconds) if url else None
        self._max_pending = max_pending_spans
        self._max_group = max_group_spans
        self._retention_ns = retention_seconds * 1_000_000_000 if retention_seconds else None
        self._retention_interval = retention_look_seconds(retention_seconds)
        store.use_retention(retention_seconds)
        self._jobs: deque[_Job] = deque()
        self._pending_spans = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hopscope-span-writer", daemon=True)
        self._next_retention = 0.0
        self._last_commit = float("-inf")
        self._next_stitch = 0.0
        self.spans_stitched = 0
        self.spans_written = 0
        self.spans_expired = 0
        self.logs_expired = 0  # log records deleted by retention (the same --retention as spans)
        self.rows_expired = 0  # flows, rollups and the rows that point to them (expire_before)
        self.write_error: str | None = None
        # When the oldest span not yet stitched arrived (unix ns; None: caught up), for the lag in health().
        self._unstitched_since: int | None = None
        # Spans committed recently, as (monotonic time, spans): the ingest rate the stitching budget follows.
        self._recent_commits: deque[tuple[float, int]] = deque()
        self._recent_spans = 0
        self._committed_spans = 0  # in all, for a probe's rate
        self._active_since = float("-inf")  # when ingest last started after an idle spell
        self.steady = False  # whether ingest counts as steady (else a burst): see STITCH_PROBE_SECONDS
        self._probe: tuple[float, int] | None = None  # a probe's start and the spans committed by then
        self._next_probe = 0.0
        self.stitch_cost_seconds = STITCH_COST_DEFAULT_SECONDS
        self._note_stitched()  # spans a previous run left unstitched already count in the lag
        # Each distinct failure logged once with its traceback; the backoff keeps a broken disk or server
        # from making the writer spin.
        self._stitch_failures = Failures(log)
        self._write_failures = Failures(log)
        self._retention_failures = Failures(log)

    @property
    def pending_spans(self) -> int:
        return self._pending_spans

    @property
    def flows_pending(self) -> bool:
        """True while stored spans still wait to be stitched into flows."""
        if self.stitcher is not None:  # the stitcher process moves the position kept in the database
            return self._store.unstitched_since_unix_nano() is not None
        return self._store.flows_pending

    @property
    def saturated(self) -> bool:
        """True while a new request would be refused: lets the receiver refuse before reading a body."""
        return self._pending_spans >= self._max_pending

    def health(self) -> WriterHealth:
        now = time.monotonic()
        if self.stitcher is None:
            since = self._unstitched_since
            pending = self._store.flows_pending
            stitch_error = self._stitch_failures.current
        else:  # the position is the stitcher process's, kept in the database
            since = self._unstitched_since_in_store()
            pending = since is not None
            stitch_error = self.stitcher.stitch_error
        skipped = self._store.skipped_spans
        last_skip = skipped.last_monotonic
        return WriterHealth(
            pending_spans=self._pending_spans,
            flows_pending=pending,
            flows_lag_seconds=0.0 if since is None else max(0.0, (time.time_ns() - since) / 1e9),
            spans_skipped=skipped.total,
            spans_skipped_by_reason=dict(skipped.by_reason),
            last_skip_error=skipped.last_error,
            seconds_since_last_skip=None if last_skip is None else now - last_skip,
            write_error=self.write_error,
            stitch_error=stitch_error,
        )

    def _unstitched_since_in_store(self) -> int | None:
        try:
            return self._store.unstitched_since_unix_nano()
        except Exception:  # only the lag figure is missing; the stitcher reports the store's failures
            log.debug("cannot read the stitching position", exc_info=True)
            return None

    def start(self) -> None:
        if self.stitcher is not None:
            self.stitcher.start()
        self._thread.start()

    def submit(self, prepared: Prepared, spans: int) -> Future[None]:
        """Queue a request's spans (or log records, ``spans`` of them); the future resolves once they are
        committed, or fails with the error."""
        job = _Job(prepared, spans)
        with self._cond:
            if self._closing:
                raise WriterClosedError("the collector is shutting down")
            if self._pending_spans and self._pending_spans + spans > self._max_pending:
                raise QueueFullError(f"{self._pending_spans} spans are waiting to be stored")
            self._pending_spans += spans
            self._jobs.append(job)
            if self.stitcher is not None:
                self.stitcher.writer_busy(True)
            self._cond.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking spans, commit every queued one, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.stitcher is not None:
            self.stitcher.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._jobs and self.stitcher is not None:
                    self.stitcher.writer_busy(False)  # the stitcher may take the file meanwhile
                if not self._jobs and not self._closing and not self._chore_due():
                    self._cond.wait(self._wait_seconds())
                group = self._take_group()
                closing = self._closing
            if group:
                self._commit(group)
            if self._stitch_due():
                self._stitch_chunk()
            if self._retention_due():
                self._expire_chunk()
            if closing and not group:
                return

    def _ingest_active(self, now: float) -> bool:
        return now - self._last_commit < INGEST_IDLE_SECONDS

    def _chore_due(self) -> bool:
        return self._stitch_due() or self._retention_due()

    def _stitch_due(self) -> bool:
        if self.stitcher is not None:
            return False
        return self._store.flows_pending and time.monotonic() >= self._next_stitch

    def ingest_rate(self, now: float | None = None) -> float:
        """Spans committed per second over the last INGEST_RATE_WINDOW_SECONDS."""
        self._forget_commits(time.monotonic() if now is None else now)
        return self._recent_spans / INGEST_RATE_WINDOW_SECONDS

    def _forget_commits(self, now: float) -> None:
        recent = self._recent_commits
        while recent and recent[0][0] <= now - INGEST_RATE_WINDOW_SECONDS:
            self._recent_spans -= recent.popleft()[1]

    def stitch_budget(self, now: float) -> tuple[int, float, bool]:
        """The next chunk: (spans at most, seconds to the chunk after, whether counted from its start).

        Steady ingest gets a chunk per STITCH_KEEP_UP_GAP_SECONDS of up to STITCH_KEEP_UP_SHARE of the
        writer's CPU, usually more than its rate needs, so flows keep up and a backlog drains; a burst, which
        keeping up with would take (nearly) all of the writer, gets the bounded share; idle time everything.
        A chunk of 0 spans is a probe: no stitching until the next, to measure the rate spans arrive at.
        """
        if not self._ingest_active(now):
            self.steady, self._probe = False, None
            return STITCH_IDLE_CHUNK_SPANS, 0.0, False
        cost = self.stitch_cost_seconds
        if self._probe is not None:  # the probe ends: its rate is the rate at which spans arrive
            started, committed = self._probe
            self._probe = None
            rate = (self._committed_spans - committed) / max(now - started, 1e-3)
            self._set_steady(rate * cost <= STITCH_BURST_NEED, now)
            self._next_probe = now + STITCH_PROBE_INTERVAL_SECONDS
        elif not self.steady:  # the bounded share leaves commits their speed: the rate is the arrival rate
            if now - self._active_since >= INGEST_RATE_WINDOW_SECONDS:
                self._set_steady(self.ingest_rate(now) * cost <= STITCH_STEADY_NEED, now)
        elif now >= self._next_probe:
            self._probe = (now, self._committed_spans)
            return 0, STITCH_PROBE_SECONDS, True
        if self.steady:
            spans = int(STITCH_KEEP_UP_SHARE * STITCH_KEEP_UP_GAP_SECONDS / cost)
            return max(STITCH_COST_MIN_SPANS, spans), STITCH_KEEP_UP_GAP_SECONDS, True
        return STITCH_BUSY_CHUNK_SPANS, STITCH_BUSY_GAP_SECONDS, False

    def _set_steady(self, steady: bool, now: float) -> None:
        if steady and not self.steady:
            self._next_probe = now + STITCH_PROBE_INTERVAL_SECONDS
        self.steady = steady

    def _stitch_chunk(self) -> None:
        """Flows follow the spans a chunk at a time, on the budget of :meth:`stitch_budget`.

        The store skips spans whose data fails (stitch/guard.py); what still raises is the environment (disk
        full, a lost server): the same chunk is retried after a backoff that doubles up to a minute, and
        each distinct failure is logged once with its traceback.
        """
        started = time.monotonic()
        chunk, gap, from_start = self.stitch_budget(started)
        if not chunk:  # a probe
            self._next_stitch = started + gap
            return
        cpu = time.thread_time()
        try:
            stitched = self._store.stitch_flows(chunk)
        except Exception as exc:  # the spans are stored; their flows catch up on the next try or restart
            self._stitch_failures.failed(
                exc, "stitching flows failed (retried with backoff): %s", describe(exc)
            )
            self._next_stitch = time.monotonic() + self._stitch_failures.backoff
            return
        cpu = time.thread_time() - cpu
        if stitched >= STITCH_COST_MIN_SPANS:
            weight = STITCH_COST_WEIGHT
            self.stitch_cost_seconds = (1 - weight) * self.stitch_cost_seconds + weight * cpu / stitched
        self.spans_stitched += stitched
        self._stitch_failures.succeeded("stitching flows works again")
        self._next_stitch = (started if from_start else time.monotonic()) + gap
        self._note_stitched()

    def _note_stitched(self) -> None:
        """After a chunk: when the oldest span still waiting arrived (read back from the store)."""
        if not self._store.flows_pending:
            self._unstitched_since = None
            return
        try:
            self._unstitched_since = self._store.unstitched_since_unix_nano()
        except Exception:  # only the lag figure is stale; stitching reports the store's failures itself
            log.debug("cannot read the stitching position", exc_info=True)

    def _note_committed(self, received_unix_nano: int, spans: int) -> None:
        """After a commit: its spans count in the ingest rate, and start the lag if flows were current."""
        now = time.monotonic()
        self._recent_commits.append((now, spans))
        self._recent_spans += spans
        self._committed_spans += spans
        self._forget_commits(now)
        if self._unstitched_since is None and self._store.flows_pending:
            self._unstitched_since = received_unix_nano

    def _take_group(self) -> list[_Job]:
        group: list[_Job] = []
        spans = 0
        while self._jobs and (not group or spans + self._jobs[0].spans <= self._max_group):
            job = self._jobs.popleft()
            group.append(job)
            spans += job.spans
        return group

    def _commit(self, group: list[_Job]) -> None:
        now = time.monotonic()
        if not self._ingest_active(now):
            self._active_since = now
        self._last_commit = now
        try:
            self.spans_written += self._store.write_prepared([job.prepared for job in group])
            outcomes: list[BaseException | None] = [None] * len(group)
        except Exception as exc:
            if len(group) == 1:
                self._write_failures.failed(exc, _WRITE_FAILED, describe(exc))
                outcomes = [exc]
            else:  # find the request that fails; the others still get stored
                outcomes = [self._commit_one(job) for job in group]
        if all(outcome is None for outcome in outcomes):
            self._write_failures.succeeded("storing spans works again")
        self.write_error = self._write_failures.current
        stored = [job for job, outcome in zip(group, outcomes, strict=True) if outcome is None]
        if stored:
            self._note_committed(min(job.received for job in stored), sum(job.spans for job in stored))
        with self._cond:
            self._pending_spans -= sum(job.spans for job in group)
        for job, outcome in zip(group, outcomes, strict=True):
            if outcome is None:
                job.future.set_result(None)
            else:
                job.future.set_exception(outcome)

    def _commit_one(self, job: _Job) -> BaseException | None:
        try:
            self.spans_written += self._store.write_prepared([job.prepared])
        except Exception as exc:
            self._write_failures.failed(exc, _WRITE_FAILED, describe(exc))
            return exc
        return None

    def _retention_due(self) -> bool:
        return self._retention_ns is not None and time.monotonic() >= self._next_retention

    def _wait_seconds(self) -> float | None:
        now = time.monotonic()
        stitching = self.stitcher is None and self._store.flows_pending
        waits = [max(0.0, self._next_stitch - now)] if stitching else []
        poll = self._store.feed_poll_seconds
        if poll is not None:  # others write to the store too: look for their spans now and then
            waits.append(poll)
        if self._retention_ns is not None:
            waits.append(max(0.0, self._next_retention - now))
        return min(waits, default=None)

    def _expire_chunk(self) -> None:
        """A chunk of expired spans and a step of what goes with them (flows, their rows, rollups, orphans:
        the store's ``expire_before``), each one short transaction."""
        assert self._retention_ns is not None
        cutoff = time.time_ns() - self._retention_ns
        began = time.monotonic()
        more = False
        deleted = 0
        try:
            deleted = self._store.delete_spans_started_before(cutoff, RETENTION_CHUNK_SPANS)
            logs_deleted = self._store.delete_logs_before(cutoff, RETENTION_CHUNK_SPANS)
            self.logs_expired += logs_deleted
            # a stitcher process expires flows and rollups itself (ingest/stitcher.py): only orphans here
            expired = self._store.expire_before(cutoff, RETENTION_CHUNK_FLOWS, flows=self.stitcher is None)
            self.rows_expired += expired
            more = deleted >= RETENTION_CHUNK_SPANS or logs_deleted >= RETENTION_CHUNK_SPANS or expired > 0
        except Exception as exc:
            self._retention_failures.failed(
                exc, "deleting expired spans failed (retried later): %s", describe(exc)
            )
        else:
            self._retention_failures.succeeded("deleting expired spans works again")
        self.spans_expired += deleted
        now = time.monotonic()
        if not more:  # caught up: look again later
            self._next_retention = now + self._retention_interval
        elif self._ingest_active(now):
            gap = max(RETENTION_BUSY_GAP_SECONDS, (now - began) * RETENTION_BUSY_SHARE_GAP)
            self._next_retention = now + gap
        else:
            self._next_retention = now
