"""What ``GET /healthz`` (liveness, details) and ``GET /readyz`` (readiness, reasons) answer, and the
``DiskWatch`` that keeps an eye on the store's disk for both (and for the log).

``/healthz`` is cheap and always ``ok`` while the process serves: a liveness probe must not restart a
collector because its disk is full. ``/readyz`` says ``degraded`` with a reason per failing check; its HTTP
status is 503 only while spans cannot be stored, so that a load balancer sends spans elsewhere then, and
200 otherwise (a collector whose stitching lags still stores every span it acknowledges).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from hopscope.collector.auth import is_authenticated
from hopscope.collector.http.guard import ConnectionStats
from hopscope.collector.ingest.forward import Forwarder, UpstreamStats
from hopscope.collector.ingest.writer import SpanWriter, WriterHealth
from hopscope.collector.model.storage import StorageFacts, byte_size
from hopscope.collector.stitch.failures import Failures
from hopscope.collector.store.base import StorageReader, StorageRecorder

log = logging.getLogger(__name__)

# Stitching that has not caught up for this long makes the collector degraded.
STITCH_LAG_DEGRADED_SECONDS = 60.0
# Spans skipped by stitching make the collector degraded for this long after the last skip.
SKIP_DEGRADED_SECONDS = 300.0
# A --forward upstream is failing after this many sends in a row failed (about 2 s with the default backoff).
FORWARD_FAILURES_DEGRADED = 3
# How often the collector looks at its store's disk on a thread of its own (the free-space warning).
DISK_CHECK_SECONDS = 30.0
# /healthz and /readyz reuse a look at the disk this young, and look again when it is older.
STORAGE_FACTS_MAX_AGE_SECONDS = 5.0
# After a warning, free space must climb this far over the threshold before a new fall warns again.
DISK_RECOVERED_FACTOR = 1.2


class ConnectionCounts(TypedDict):
    open: int
    limit: int
    closed_idle: int
    refused_busy: int
    refused_headers: int


class StorageDetails(TypedDict):
    size_bytes: int
    oldest_span_unix_nano: int | None
    retention_seconds: int | None  # the collector's --retention; None: spans are kept for ever
    free_bytes: int | None


class HealthDetails(TypedDict):
    status: Literal["ok"]
    pending_spans: int
    flows_pending: bool
    flows_lag_seconds: float
    spans_skipped: int
    spans_skipped_by_reason: dict[str, int]
    last_skip_error: str | None
    seconds_since_last_skip: float | None
    write_error: str | None
    stitch_error: str | None
    forwarding: list[UpstreamStats]
    connections: ConnectionCounts | None
    storage: StorageDetails | None


class Reason(TypedDict):
    check: Literal["writes", "stitching", "stitching_skips", "stitching_lag", "forwarding", "disk"]
    message: str


class Readiness(TypedDict):
    status: Literal["ok", "degraded"]
    accepting_spans: bool
    reasons: list[Reason]


@dataclass(frozen=True)
class ConnectionLimitView:
    """The server's connection counters and its limit (absent when the app runs without server.py)."""

    stats: ConnectionStats
    limit: int

    def counts(self) -> ConnectionCounts:
        stats = self.stats
        return ConnectionCounts(
            open=stats.open,
            limit=self.limit,
            closed_idle=stats.closed_idle,
            refused_busy=stats.refused_busy,
            refused_headers=stats.refused_headers,
        )


def health_details(
    writer: WriterHealth,
    forwarding: list[UpstreamStats],
    connections: ConnectionLimitView | None,
    storage: StorageFacts | None = None,
    retention_seconds: int | None = None,
) -> HealthDetails:
    """The details; ``storage`` None when the store's disk could not be read (the log says why)."""
    return HealthDetails(
        status="ok",
        pending_spans=writer.pending_spans,
        flows_pending=writer.flows_pending,
        flows_lag_seconds=round(writer.flows_lag_seconds, 3),
        spans_skipped=writer.spans_skipped,
        spans_skipped_by_reason=writer.spans_skipped_by_reason,
        last_skip_error=writer.last_skip_error,
        seconds_since_last_skip=None
        if writer.seconds_since_last_skip is None
        else round(writer.seconds_since_last_skip, 3),
        write_error=writer.write_error,
        stitch_error=writer.stitch_error,
        forwarding=forwarding,
        connections=connections.counts() if connections else None,
        storage=None
        if storage is None
        else StorageDetails(
            size_bytes=storage.size_bytes,
            oldest_span_unix_nano=storage.oldest_span_unix_nano,
            retention_seconds=retention_seconds,
            free_bytes=storage.free_bytes,
        ),
    )


def readiness(
    writer: WriterHealth, forwarding: list[UpstreamStats], storage: StorageFacts | None = None
) -> Readiness:
    """Every failing check, with what the operator needs to act on it."""
    reasons: list[Reason] = []
    if writer.write_error is not None:
        reasons.append(Reason(check="writes", message=f"storing spans fails: {writer.write_error}"))
    if writer.stitch_error is not None:
        reasons.append(
            Reason(check="stitching", message=f"stitching flows fails (retried): {writer.stitch_error}")
        )
    since = writer.seconds_since_last_skip
    if since is not None and since < SKIP_DEGRADED_SECONDS:
        reasons.append(
            Reason(
                check="stitching_skips",
                message=f"{writer.spans_skipped} span(s) left out of flows, RED and the graph, the last "
                f"{since:.0f} s ago: {writer.last_skip_error}",
            )
        )
    if writer.flows_lag_seconds > STITCH_LAG_DEGRADED_SECONDS:
        reasons.append(
            Reason(
                check="stitching_lag",
                message=f"flows trail the stored spans by {writer.flows_lag_seconds:.0f} s "
                f"(over {STITCH_LAG_DEGRADED_SECONDS:.0f} s)",
            )
        )
    for upstream in forwarding:
        if upstream["consecutive_failures"] >= FORWARD_FAILURES_DEGRADED:
            failing = upstream["failing_seconds"] or 0.0
            reasons.append(
                Reason(
                    check="forwarding",
                    message=f"forwarding to {upstream['url']} has failed {upstream['consecutive_failures']} "
                    f"times in a row for {failing:.0f} s: {upstream['last_error']}",
                )
            )
    if storage is not None and storage.disk_low:
        reasons.append(Reason(check="disk", message=low_disk_message(storage)))
    return Readiness(
        status="degraded" if reasons else "ok",
        accepting_spans=writer.write_error is None,
        reasons=reasons,
    )


def low_disk_message(facts: StorageFacts) -> str:
    """Free space, where, the threshold, and what to do."""
    assert facts.free_bytes is not None and facts.low_free_bytes is not None
    return (
        f"only {byte_size(facts.free_bytes)} free on the disk holding {facts.location} (under "
        f"{byte_size(facts.low_free_bytes)}: 1 GiB, or 5% of a small disk); when it is full, spans are "
        "refused with 503: free space there, shorten --retention, or move the store to a larger disk"
    )


class WatchedStore(StorageReader, StorageRecorder, Protocol):
    """What DiskWatch needs of the store."""


class DiskWatch:
    """Looks at the store's storage facts, and warns in the log once each time free space falls low.

    A thread of its own looks every ``check_seconds`` (first recording the collector's ``--retention`` in
    the store, for the dashboard); ``/healthz`` and ``/readyz`` reuse the last look while it is younger than
    ``max_age_seconds`` and look again otherwise, so both stay cheap, and a fall seen by either warns too.
    The warning comes again only after free space climbed back over ``DISK_RECOVERED_FACTOR`` times the
    threshold (logged too), so a disk that hovers at the threshold does not fill the log.
    """

    def __init__(
        self,
        store: WatchedStore,
        retention_seconds: int | None,
        *,
        check_seconds: float = DISK_CHECK_SECONDS,
        max_age_seconds: float = STORAGE_FACTS_MAX_AGE_SECONDS,
    ) -> None:
        self._store = store
        self.retention_seconds = retention_seconds
        self._check_seconds = check_seconds
        self._max_age = max_age_seconds
        self._lock = threading.Lock()
        self._facts: StorageFacts | None = None
        self._looked = -float("inf")
        self._low = False
        self._retention_recorded = False
        self._failures = Failures(log, logging.WARNING)
        self._retention_failures = Failures(log, logging.WARNING)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hopscope-disk-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            self._record_retention()
            self.check()
            if self._stopped.wait(self._check_seconds):
                return

    def _record_retention(self) -> None:
        if self._retention_recorded:
            return
        try:
            self._store.record_retention(self.retention_seconds)
        except Exception as exc:  # retried at the next look; the dashboard shows the retention as unknown
            self._retention_failures.failed(exc, "cannot record --retention in the store (retried): %s", exc)
        else:
            self._retention_failures.succeeded("--retention is recorded in the store")
            self._retention_recorded = True

    def facts(self) -> StorageFacts | None:
        """The last look if young enough, else a new one; None when the store's disk cannot be read."""
        with self._lock:
            if time.monotonic() - self._looked < self._max_age:
                return self._facts
        return self.check()

    def check(self) -> StorageFacts | None:
        """Look now: read the facts and warn (or note the recovery) on a crossing."""
        with self._lock:
            self._looked = time.monotonic()
            try:
                facts = self._store.storage_facts()
            except Exception as exc:  # a lost ClickHouse server: the writer's own checks report it too
                self._failures.failed(exc, "cannot read the store's size and free disk space: %s", exc)
                self._facts = None
                return None
            self._failures.succeeded("the store's size and free disk space can be read again")
            self._facts = facts
            self._note_crossing(facts)
            return facts

    def _note_crossing(self, facts: StorageFacts) -> None:
        threshold = facts.low_free_bytes
        if facts.free_bytes is None or threshold is None:
            return
        if not self._low and facts.disk_low:
            self._low = True
            log.warning(
                "disk space is low: %s; the store takes %s, %s, %s",
                low_disk_message(facts),
                byte_size(facts.size_bytes),
                _oldest(facts.oldest_span_unix_nano),
                "kept for ever (no --retention)"
                if not self.retention_seconds
                else f"kept {self.retention_seconds} s (--retention)",
            )
        elif self._low and facts.free_bytes >= threshold * DISK_RECOVERED_FACTOR:
            self._low = False
            log.info(
                "disk space is back: %s free on the disk holding %s",
                byte_size(facts.free_bytes),
                facts.location,
            )


def _oldest(unix_nano: int | None) -> str:
    if unix_nano is None:
        return "no span kept"
    try:
        moment = datetime.datetime.fromtimestamp(unix_nano / 1e9, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):  # a span's start time is whatever its sender said
        return f"its oldest span started {unix_nano} ns after the epoch"
    return f"its oldest span started {moment.isoformat(timespec='seconds')}"


class HealthEndpoints:
    """``GET /healthz`` and ``GET /readyz`` over the writer, the forwarder, the server's connections and
    the disk watch (a look at the disk runs on a worker thread, off the event loop)."""

    def __init__(
        self,
        writer: SpanWriter,
        forwarder: Forwarder | None,
        connections: ConnectionLimitView | None,
        disk: DiskWatch,
    ) -> None:
        self._writer = writer
        self._forwarder = forwarder
        self._connections = connections
        self.disk = disk

    async def healthz(self, request: Request) -> JSONResponse:
        """Liveness: ``ok`` while the process serves; the details only with the token, when one is set."""
        if not is_authenticated(request.scope):
            return JSONResponse({"status": "ok"})
        forwarding = self._forwarder.stats() if self._forwarder else []
        storage = await run_in_threadpool(self.disk.facts)
        return JSONResponse(
            health_details(
                self._writer.health(), forwarding, self._connections, storage, self.disk.retention_seconds
            )
        )

    async def readyz(self, request: Request) -> JSONResponse:
        """Readiness: ``degraded`` with reasons; 503 while spans cannot be stored."""
        storage = await run_in_threadpool(self.disk.facts)
        ready = readiness(self._writer.health(), self._forwarder.stats() if self._forwarder else [], storage)
        status_code = 200 if ready["accepting_spans"] else 503
        if not is_authenticated(request.scope):
            return JSONResponse({"status": ready["status"]}, status_code=status_code)
        return JSONResponse(ready, status_code=status_code)
