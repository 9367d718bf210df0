"""What ``GET /healthz`` (liveness, details) and ``GET /readyz`` (readiness, reasons) answer.

``/healthz`` is cheap and always ``ok`` while the process serves: a liveness probe must not restart a
collector because its disk is full. ``/readyz`` says ``degraded`` with a reason per failing check; its HTTP
status is 503 only while spans cannot be stored, so that a load balancer sends spans elsewhere then, and
200 otherwise (a collector whose stitching lags still stores every span it acknowledges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from hopscope.collector.http.guard import ConnectionStats
from hopscope.collector.ingest.forward import UpstreamStats
from hopscope.collector.ingest.writer import WriterHealth

# Stitching that has not caught up for this long makes the collector degraded.
STITCH_LAG_DEGRADED_SECONDS = 60.0
# Spans skipped by stitching make the collector degraded for this long after the last skip.
SKIP_DEGRADED_SECONDS = 300.0
# A --forward upstream is failing after this many sends in a row failed (about 2 s with the default backoff).
FORWARD_FAILURES_DEGRADED = 3


class ConnectionCounts(TypedDict):
    open: int
    limit: int
    closed_idle: int
    refused_busy: int
    refused_headers: int


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


class Reason(TypedDict):
    check: Literal["writes", "stitching", "stitching_skips", "stitching_lag", "forwarding"]
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
    writer: WriterHealth, forwarding: list[UpstreamStats], connections: ConnectionLimitView | None
) -> HealthDetails:
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
    )


def readiness(writer: WriterHealth, forwarding: list[UpstreamStats]) -> Readiness:
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
    return Readiness(
        status="degraded" if reasons else "ok",
        accepting_spans=writer.write_error is None,
        reasons=reasons,
    )
