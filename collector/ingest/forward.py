"""Re-send every accepted batch to upstream OTLP/HTTP endpoints, in the background (``--forward URL``).

Forwarding never slows or fails ingest: the receiver hands a committed batch to :meth:`Forwarder.offer`,
which only appends it to one bounded in-memory queue per upstream (or counts it as dropped) and returns.
One daemon thread per upstream sends the queue in order, one ``application/x-protobuf`` POST per batch.

- **Drop policy**: when an upstream's queue is full (its bytes would exceed ``max_queue_bytes``) the
  *newest* batch is dropped, as the OpenTelemetry Collector's sending queue does: what is already queued
  stays, in order, and is delivered when the upstream is back.
- **Retried** (same batch kept at the head of the queue; the wait is the longer of an exponential backoff,
  ``initial_backoff`` doubling to ``max_backoff``, and ``Retry-After`` capped at ``max_backoff``):
  connection errors, timeouts and the statuses the OTLP specification calls retryable, 429, 502, 503, 504.
- **Dropped** (counted, logged once per status): every other answer, 401 and 403 included; retrying with
  the same request cannot succeed, and holding the batch would block the batches behind it.
- **Logged** once per distinct failure, with the traceback when there is an exception, until a delivery
  (see ``stitch/failures``): an upstream that stays down is one line, not one per retry.
- A 2xx whose ``partial_success`` counts ``rejected_spans`` makes those spans dropped, the rest forwarded.
- **Logs** go the same way to the upstream's ``/v1/logs`` (its traces URL with ``/v1/traces`` replaced), on
  a queue and thread of their own, so that one signal's backlog never holds up the other's; an upstream
  URL whose path does not end in ``/v1/traces`` gets no logs (there is no knowing its logs path). An
  upstream that answers ``/v1/logs`` with 404 or 405 takes traces only (Jaeger, Zipkin's OTLP receivers):
  one line says so, and its log records are dropped from then on (counted) without making it "failing".
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypedDict
from urllib.parse import urlsplit, urlunsplit

import httpx
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from hopscope.collector.stitch.failures import Failures

log = logging.getLogger(__name__)

# The OTLP exporters' default timeout per export.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# What an OTLP/HTTP upstream that does not take a signal at all answers on its path.
NO_SUCH_SIGNAL_STATUSES = frozenset({404, 405})
_NO_LOGS = "no /v1/logs"
PROTOBUF = "application/x-protobuf"
_PARTIAL_SUCCESS = "partial_success"
_REJECTED_SPAN_KEYS = ("rejectedSpans", "rejected_spans")
_REJECTED_LOG_KEYS = ("rejectedLogRecords", "rejected_log_records")
TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"


def logs_url(traces_url: str) -> str | None:
    """The upstream's OTLP/HTTP logs URL: its traces URL with ``/v1/traces`` replaced by ``/v1/logs``
    (query kept); None when the traces path does not end in ``/v1/traces``."""
    parts = urlsplit(traces_url)
    path = parts.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        return None
    return urlunsplit(parts._replace(path=path[: -len(TRACES_PATH)] + LOGS_PATH))


class UpstreamStats(TypedDict):
    url: str
    signal: str  # "traces" or "logs"; for "logs" the *_spans counts count log records
    forwarded_spans: int
    dropped_spans: int
    queued_spans: int
    queued_bytes: int
    last_error: str | None
    # Sends in a row that failed (refused, timed out, or answered other than 2xx); 0 after a delivery.
    consecutive_failures: int
    # Seconds since the first of those failures; None while the upstream takes batches.
    failing_seconds: float | None


@dataclass(frozen=True)
class _Batch:
    body: bytes
    spans: int


@dataclass(frozen=True)
class _Outcome:
    """What one POST did: delivered (some spans maybe rejected), to retry after a delay, or to drop."""

    forwarded: int = 0
    retry_after: float | None = None  # set: keep the batch and try again (None inside: use the backoff)
    retry: bool = False
    error_kind: str | None = None
    error: str | None = None
    exception: BaseException | None = None  # its traceback goes to the log

    @property
    def delivered(self) -> bool:
        """The upstream took the batch (a 2xx), even if it rejected some of its spans."""
        return self.error_kind is None or self.error_kind == _PARTIAL_SUCCESS


class _Upstream:
    """One upstream endpoint: its bounded queue, its counters and its sending thread."""

    def __init__(
        self,
        url: str,
        *,
        max_queue_bytes: int,
        initial_backoff: float,
        max_backoff: float,
        request_timeout: float,
        signal: str = "traces",
    ) -> None:
        self.signal = signal
        self._target = url
        self.url = _redacted(url)  # what stats and logs show
        self._max_queue_bytes = max_queue_bytes
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._request_timeout = request_timeout
        self._queue: deque[_Batch] = deque()
        self._queued_bytes = 0
        self._queued_spans = 0
        self._cond = threading.Condition()
        self._wake = threading.Event()  # set by close(): ends a backoff sleep early
        self._closing = False
        self._deadline = math.inf
        self._forwarded_spans = 0
        self._dropped_spans = 0
        self._last_error: str | None = None
        self._consecutive_failures = 0
        self._failing_since: float | None = None
        self._full_logged = False
        self._retry_failures = Failures(log, logging.WARNING)  # by kind, until a clean delivery
        self._unexpected_failures = Failures(log)  # errors not expected of httpx, until a delivery
        self._logged_drop_kinds: set[str] = set()
        # A logs upstream that has no /v1/logs (404 or 405): its records are dropped, it is not failing.
        self.takes_nothing = False
        self._client = httpx.Client(
            timeout=request_timeout, headers={"Content-Type": PROTOBUF, "User-Agent": "hopscope-forwarder"}
        )
        self._thread = threading.Thread(target=self._run, name=f"hopscope-forward {url}", daemon=True)

    # -- called from the event loop and from close() ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def offer(self, batch: _Batch) -> None:
        with self._cond:
            if self.takes_nothing:
                self._dropped_spans += batch.spans
                return
            if self._closing or self._queued_bytes + len(batch.body) > self._max_queue_bytes:
                self._dropped_spans += batch.spans
                if not self._full_logged and not self._closing:
                    self._full_logged = True
                    log.warning(
                        "forwarding queue for %s is full (%d bytes): dropping new spans until it drains",
                        self.url,
                        self._queued_bytes,
                    )
                return
            self._full_logged = False
            self._queue.append(batch)
            self._queued_bytes += len(batch.body)
            self._queued_spans += batch.spans
            self._cond.notify()

    def stats(self) -> UpstreamStats:
        with self._cond:
            return UpstreamStats(
                url=self.url,
                signal=self.signal,
                forwarded_spans=self._forwarded_spans,
                dropped_spans=self._dropped_spans,
                queued_spans=self._queued_spans,
                queued_bytes=self._queued_bytes,
                last_error=self._last_error,
                consecutive_failures=self._consecutive_failures,
                failing_seconds=None
                if self._failing_since is None
                else time.monotonic() - self._failing_since,
            )

    def begin_close(self, deadline: float) -> None:
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify()
        self._wake.set()

    def join(self, deadline: float) -> None:
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            self._client.close()
        else:  # a POST still in flight; the daemon thread ends with the process
            self._abandon()

    # -- the sending thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._initial_backoff
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                if time.monotonic() >= self._deadline:
                    self._abandon_locked()
                    return
                batch = self._queue[0]
            outcome = self._send(batch)
            if outcome.retry:
                # The longer of the backoff and Retry-After, as the OpenTelemetry Collector waits.
                delay = max(backoff, min(outcome.retry_after or 0.0, self._max_backoff))
                backoff = min(backoff * 2, self._max_backoff)
                self._record_failure(outcome)
                if self._wake.wait(min(delay, max(0.0, self._deadline - time.monotonic()))):
                    self._wake.clear()  # woken by close(): the next waits are the backoff again
                continue
            backoff = self._initial_backoff
            with self._cond:
                if self._queue and self._queue[0] is batch:  # else abandoned at shutdown, counted there
                    self._queue.popleft()
                    self._queued_bytes -= len(batch.body)
                    self._queued_spans -= batch.spans
                    self._forwarded_spans += outcome.forwarded
                    self._dropped_spans += batch.spans - outcome.forwarded
                if outcome.delivered:
                    self._consecutive_failures = 0
                    self._failing_since = None
            if outcome.delivered:
                self._unexpected_failures.succeeded()
            if outcome.error_kind is None:
                self._retry_failures.succeeded("forwarding to %s works again", self.url)
            else:
                self._record_failure(outcome)

    def _send(self, batch: _Batch) -> _Outcome:
        timeout = min(self._request_timeout, max(0.1, self._deadline - time.monotonic()))
        try:
            response = self._client.post(self._target, content=batch.body, timeout=timeout)
        except httpx.TransportError as exc:  # refused, reset, DNS, timeouts: the upstream may come back
            return _Outcome(
                retry=True, error_kind=type(exc).__name__, error=f"{type(exc).__name__}: {exc}", exception=exc
            )
        except Exception as exc:  # not expected; never let it kill the thread or block the queue
            self._unexpected_failures.failed(exc, "forwarding to %s failed unexpectedly", self.url)
            return _Outcome(error_kind=type(exc).__name__, error=f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            rejected, message = _partial_success(response, logs=self.signal == "logs")
            rejected = min(rejected, batch.spans)
            if rejected:
                return _Outcome(
                    forwarded=batch.spans - rejected,
                    error_kind=_PARTIAL_SUCCESS,
                    error=f"upstream rejected {rejected} span(s): {message}",
                )
            return _Outcome(forwarded=batch.spans)
        error = f"HTTP {status}: {response.text[:200].strip()}"
        if self.signal == "logs" and status in NO_SUCH_SIGNAL_STATUSES:
            return _Outcome(error_kind=_NO_LOGS, error=error)
        if status in RETRYABLE_STATUSES:
            return _Outcome(
                retry=True, retry_after=_retry_after(response), error_kind=f"HTTP {status}", error=error
            )
        return _Outcome(error_kind=f"HTTP {status}", error=error)

    def _record_failure(self, outcome: _Outcome) -> None:
        assert outcome.error_kind is not None
        if outcome.error_kind == _NO_LOGS:
            self._take_no_logs(outcome)
            return
        with self._cond:
            self._last_error = outcome.error
            if not outcome.delivered:
                self._consecutive_failures += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
        if outcome.retry:
            self._retry_failures.failed(
                outcome.exception,
                "forwarding to %s failed, retrying with backoff: %s",
                self.url,
                outcome.error,
                kind=outcome.error_kind,
            )
        elif outcome.error_kind not in self._logged_drop_kinds:
            self._logged_drop_kinds.add(outcome.error_kind)
            log.warning(
                "forwarding to %s: %s; those spans are dropped (logged once per kind of answer)",
                self.url,
                outcome.error,
            )

    def _take_no_logs(self, outcome: _Outcome) -> None:
        """The upstream has no /v1/logs: drop what is queued and what comes, once said, never "failing"."""
        with self._cond:
            self.takes_nothing = True
            self._last_error = f"the upstream takes no log records ({outcome.error}); they are not forwarded"
            self._dropped_spans += self._queued_spans
            self._queue.clear()
            self._queued_bytes = self._queued_spans = 0
        log.warning(
            "forwarding to %s: the upstream takes no log records (%s); log records are not forwarded to it",
            self.url,
            outcome.error,
        )

    def _abandon(self) -> None:
        with self._cond:
            self._abandon_locked()

    def _abandon_locked(self) -> None:
        """Give up on what is still queued (the shutdown deadline passed): count it as dropped."""
        if self._queued_spans:
            log.warning(
                "forwarding to %s: %d spans still queued at shutdown are dropped",
                self.url,
                self._queued_spans,
            )
        self._dropped_spans += self._queued_spans
        self._queue.clear()
        self._queued_bytes = self._queued_spans = 0


class Forwarder:
    """One per collector: an :class:`_Upstream` (queue + thread) per URL; :meth:`offer` never blocks."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_queue_bytes: int,
        initial_backoff: float,
        max_backoff: float,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._upstreams = [
            _Upstream(
                url,
                max_queue_bytes=max_queue_bytes,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
                request_timeout=request_timeout,
            )
            for url in urls
        ]
        self._log_upstreams = [
            _Upstream(
                target,
                max_queue_bytes=max_queue_bytes,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
                request_timeout=request_timeout,
                signal="logs",
            )
            for target in (logs_url(url) for url in urls)
            if target is not None
        ]

    def start(self) -> None:
        for upstream in self._upstreams:
            log.info("forwarding accepted spans to %s", upstream.url)
            upstream.start()
        for upstream in self._log_upstreams:
            log.info("forwarding accepted log records to %s", upstream.url)
            upstream.start()

    def offer(self, body: bytes, spans: int) -> None:
        """Queue a committed batch (a serialized ExportTraceServiceRequest) for every upstream."""
        batch = _Batch(body, spans)
        for upstream in self._upstreams:
            upstream.offer(batch)

    def offer_logs(self, body: bytes, records: int) -> None:
        """Queue a committed batch of log records (a serialized ExportLogsServiceRequest) for every
        upstream's /v1/logs."""
        batch = _Batch(body, records)
        for upstream in self._log_upstreams:
            upstream.offer(batch)

    def stats(self) -> list[UpstreamStats]:
        return [upstream.stats() for upstream in [*self._upstreams, *self._log_upstreams]]

    def close(self, timeout: float) -> None:
        """Send what is queued for at most ``timeout`` seconds, then drop the rest and return."""
        deadline = time.monotonic() + timeout
        upstreams = [*self._upstreams, *self._log_upstreams]
        for upstream in upstreams:
            upstream.begin_close(deadline)
        for upstream in upstreams:
            upstream.join(deadline)


def _redacted(url: str) -> str:
    """The URL without a password, if it carries one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _partial_success(response: httpx.Response, *, logs: bool = False) -> tuple[int, str]:
    """``(rejected_spans, error_message)`` of an ExportTraceServiceResponse (``rejected_log_records`` of an
    ExportLogsServiceResponse with ``logs``), protobuf or JSON; 0 if none."""
    content = response.content
    if not content:
        return 0, ""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == PROTOBUF:
        try:
            if logs:
                log_partial = ExportLogsServiceResponse.FromString(content).partial_success
                return log_partial.rejected_log_records, log_partial.error_message
            partial = ExportTraceServiceResponse.FromString(content).partial_success
        except DecodeError:
            return 0, ""
        return partial.rejected_spans, partial.error_message
    if media_type == "application/json":
        try:
            document = json.loads(content)
            partial_json = document.get("partialSuccess") or document.get("partial_success") or {}
            keys = _REJECTED_LOG_KEYS if logs else _REJECTED_SPAN_KEYS
            rejected = int(partial_json.get(keys[0]) or partial_json.get(keys[1]) or 0)
            message = str(partial_json.get("errorMessage") or partial_json.get("error_message") or "")
        except (ValueError, TypeError, AttributeError):
            return 0, ""
        return max(0, rejected), message
    return 0, ""
