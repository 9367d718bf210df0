"""Freshness benchmark: how long after its acknowledgement a span's flow can be found, under steady ingest.

Four paced connections send the small shop's spans to a ``hopscope collector`` subprocess at a steady rate
(default 10,000 spans/s for 60 s, batches of 500). For one request in every ``--sample``, the script takes a
message id from the body and, from the moment the collector acknowledges the request, asks
``GET /api/flows?message_id=`` until the message's flow is listed: that wait is the ack-to-visible lag of
flows. Every 100 ms it asks about the 4 oldest samples still waiting and 4 others in turn, so a large lag
does not load the collector with more questions. Flows follow the spans in arrival order: a sample still
waiting when one acknowledged a second after it is listed has a flow that the list does not show (a batch's
shared flow); it is then asked about in turn only, and counted apart at the end.

RED and the graph are totals, so their lag is measured on the totals: every 250 ms the script reads the
span count of ``GET /api/services`` and the hop count of ``GET /api/graph`` over the run; at the end, once
everything is stitched, their final values. A sample counts in RED (the graph) once the total reaches the
share of its final value that the spans acknowledged up to the sample make (exact for a steady mix of the
same flows, as the small shop sends). On SQLite flows, RED and graph of a chunk commit in one transaction
(store/sqlite/store.py ``_fold_chunk``), so the three lags should agree within the 250 ms between reads.
The ingest figures of the same run are printed beside them. See bench/README.md.

The collector runs twice on the same spans: as shipped (stitching in a process of its own,
ingest/stitcher.py), then with ``--stitch-in-writer`` (stitching on the writer thread), the baseline of the
printed p99 ratio.

    .venv/bin/python bench/freshness.py [--rate 10000] [--seconds 60] [--clients 4] [--batch 500] [--sample 5]
        [--no-baseline]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

sys.path.insert(0, str(Path(__file__).parent))
import workload
from ingest import Collector, in_work_directory, percentile, row, target

TARGET_P99_SECONDS = 2.0
POLL_SECONDS = 0.1
# Per poll, the oldest samples still waiting are asked about, and as many others in turn (so that one whose
# flow is never listed holds up no other).
POLL_OLDEST = 4
POLL_ROTATING = 4
TOTALS_POLL_SECONDS = 0.25
GIVE_UP_SECONDS = 300.0


def message_id_of(body: bytes) -> str | None:
    """A message id of a producer span of the request (the small shop puts one on producers and consumers;
    a consumer's own flow may be one that the list never shows, a batch's, so producers only)."""
    request = ExportTraceServiceRequest.FromString(body)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.kind != Span.SpanKind.SPAN_KIND_PRODUCER:
                    continue
                for kv in span.attributes:
                    if kv.key == workload.MESSAGE_ID_KEY and kv.value.string_value:
                        return kv.value.string_value
    return None


@dataclass
class Sample:
    message_id: str
    acknowledged_at: float
    visible_after: float | None = None


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    acknowledged: list[tuple[float, int]] = field(default_factory=list)  # (when, spans) of every request
    # (when, RED span count, graph hop count), read every TOTALS_POLL_SECONDS; then the final values
    totals: list[tuple[float, int, int]] = field(default_factory=list)
    final_totals: tuple[int, int] | None = None
    health_lags: list[float] = field(default_factory=list)  # /healthz flows_lag_seconds, with the totals
    latencies: list[float] = field(default_factory=list)  # send to 200, per request
    sent_spans: int = 0
    late_requests: int = 0  # requests that could not be sent on their beat: the collector held them up
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_paced(
    address: tuple[str, int],
    bodies: Sequence[tuple[bytes, int, str | None]],
    beats: Sequence[float],
    started: float,
    run: Run,
) -> None:
    """One keep-alive connection sending its share of the bodies, each at its beat (or at once when late)."""
    conn = http.client.HTTPConnection(*address, timeout=120)
    for (body, spans, message_id), beat in zip(bodies, beats, strict=True):
        wait = started + beat - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.1:
            with run.lock:
                run.late_requests += 1
        sent_at = time.perf_counter()
        while True:
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            if response.status != 503:
                break
            time.sleep(float(response.getheader("Retry-After") or 1))
        if response.status != 200:
            raise RuntimeError(f"collector answered {response.status}")
        acknowledged_at = time.perf_counter()
        with run.lock:
            run.sent_spans += spans
            run.acknowledged.append((acknowledged_at, spans))
            run.latencies.append(acknowledged_at - sent_at)
            if message_id is not None:
                run.samples.append(Sample(message_id, acknowledged_at))
    conn.close()


def send_all(
    address: tuple[str, int],
    bodies: Sequence[tuple[bytes, int, str | None]],
    rate: float,
    clients: int,
    run: Run,
) -> None:
    """Open loop, as many exporters are: body i is due at i * batch / rate whatever the earlier answers,
    sent by ``clients`` connections in turn, so a slow answer delays only its own connection."""
    beats, beat = [], 0.0
    for _, spans, _ in bodies:
        beats.append(beat)
        beat += spans / rate
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=send_paced, args=(address, bodies[k::clients], beats[k::clients], started, run)
        )
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.elapsed = time.perf_counter() - started


def get_json(conn: http.client.HTTPConnection, path: str) -> Any:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
    return json.loads(body)


def read_totals(conn: http.client.HTTPConnection, since_ns: int) -> tuple[int, int]:
    """RED's span count over every service and the graph's hop count over every edge, from the run's start."""
    until_ns = time.time_ns() + 3_600_000_000_000
    query = f"since={since_ns}&until={until_ns}"
    services = get_json(conn, f"/api/services?{query}")["services"]
    graph = get_json(conn, f"/api/graph?{query}")
    red = sum(int(service["red"]["span_count"]) for service in services)
    hops = sum(int(edge["red"]["span_count"]) for edge in graph["edges"])
    return red, hops


def watch(address: tuple[str, int], run: Run, sending: threading.Thread, since_ns: int) -> None:
    """Ask about the oldest waiting samples every POLL_SECONDS and read the totals every
    TOTALS_POLL_SECONDS, until every sample is seen after sending ended; then wait for stitching to finish
    (``/healthz``) and read the final totals."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    deadline: float | None = None
    next_totals = 0.0
    turn = 0
    settled = False  # the last /healthz, read after sending ended, said every span is stitched
    while True:
        with run.lock:
            pending = [s for s in run.samples if s.visible_after is None]
        if not pending and not sending.is_alive():
            break
        if not sending.is_alive():
            deadline = deadline or time.perf_counter() + GIVE_UP_SECONDS
            if time.perf_counter() > deadline:
                break
        # A sample waiting while one acknowledged a second after it is listed has a flow that the list does
        # not show (stitching follows arrival order): it is asked about in turn only, not among the oldest.
        seen = max((s.acknowledged_at for s in run.samples if s.visible_after is not None), default=0.0)
        hopeful = [s for s in pending if s.acknowledged_at > seen - 1.0]
        oldest = hopeful[:POLL_OLDEST]
        rest = [s for s in pending if s not in oldest]
        turn = turn % len(rest) if rest else 0
        asked = oldest + (rest[turn:] + rest[:turn])[:POLL_ROTATING]
        turn += POLL_ROTATING
        asked_after_settling = settled
        if settled:  # a last question for every sample still waiting
            asked = pending
        for sample in asked:
            flows = get_json(conn, f"/api/flows?limit=1&message_id={quote(sample.message_id)}")["flows"]
            if flows:
                sample.visible_after = time.perf_counter() - sample.acknowledged_at
        if time.perf_counter() >= next_totals:
            next_totals = time.perf_counter() + TOTALS_POLL_SECONDS
            run.totals.append((time.perf_counter(), *read_totals(conn, since_ns)))
            health = get_json(conn, "/healthz")
            run.health_lags.append(float(health["flows_lag_seconds"]))
            settled = not sending.is_alive() and not health["flows_pending"]
        if asked_after_settling:
            break  # every sample still waiting was asked about once more after everything was stitched
        time.sleep(POLL_SECONDS)
    while get_json(conn, "/healthz")["flows_pending"]:
        time.sleep(POLL_SECONDS)
    run.final_totals = read_totals(conn, since_ns)
    run.totals.append((time.perf_counter(), *run.final_totals))
    conn.close()


def total_lags(run: Run, column: int) -> list[float]:
    """Per sample: from its acknowledgement until the total (1: RED, 2: graph) reached the share of its
    final value that the spans acknowledged by then make."""
    assert run.final_totals is not None
    final = run.final_totals[column - 1]
    all_spans = sum(spans for _, spans in run.acknowledged)
    acknowledged = sorted(run.acknowledged)
    lags: list[float] = []
    for sample in run.samples:
        spans_by_then = sum(spans for at, spans in acknowledged if at <= sample.acknowledged_at)
        needed = final * spans_by_then / all_spans
        seen = next((at for at, *values in run.totals if values[column - 1] >= needed), None)
        if seen is not None:
            lags.append(max(0.0, seen - sample.acknowledged_at))
    return lags


@dataclass(frozen=True)
class Outcome:
    p99_seconds: float  # the largest of the three p99s
    exit_code: int


def build_bodies(args: argparse.Namespace) -> list[tuple[bytes, int, str | None]]:
    spans = int(args.rate * args.seconds)
    print(f"building {spans:,} spans ...", flush=True)
    shop = workload.small_shop(seed=2026)
    return [
        (body, count, message_id_of(body) if number % args.sample == 0 else None)
        for number, (body, count) in enumerate(shop.take(spans, args.batch))
    ]


def run_once(
    args: argparse.Namespace,
    directory: Path,
    bodies: list[tuple[bytes, int, str | None]],
    label: str,
    extra_args: Sequence[str] = (),
) -> Outcome:
    collector = Collector(directory / f"freshness-{len(extra_args)}.db", extra_args)
    run = Run()
    # the small shop's spans start an hour before they are built; the baseline run sends the same ones later
    since_ns = time.time_ns() - 3 * 3_600_000_000_000
    with collector.killed_on_error():
        sending = threading.Thread(
            target=send_all, args=(collector.address, bodies, args.rate, args.clients, run)
        )
        sending.start()
        watch(collector.address, run, sending, since_ns)
        sending.join()
    exit_code = collector.stop()
    lags = [s.visible_after for s in run.samples if s.visible_after is not None]
    unseen = len(run.samples) - len(lags)
    red_lags = total_lags(run, 1)
    graph_lags = total_lags(run, 2)
    p99 = max(percentile(values, 0.99) if values else float("inf") for values in (lags, red_lags, graph_lags))
    print(f"hopscope freshness benchmark, {label} ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs)")
    print(row("offered rate", f"{args.rate:,.0f} spans/s for {args.seconds} s, batches of {args.batch}"))
    print(
        row(
            "sent", f"{run.sent_spans:,} spans in {run.elapsed:.1f} s ({run.sent_spans / run.elapsed:,.0f}/s)"
        )
    )
    print(row("requests sent late", f"{run.late_requests} (more than 100 ms behind their beat)"))
    print(
        row(
            "request latency p50 / p99",
            f"{1000 * percentile(run.latencies, 0.5):.1f} / {1000 * percentile(run.latencies, 0.99):.1f} ms",
        )
    )
    print(row("samples", f"{len(run.samples)} (one request in {args.sample})"))
    print(row("flow never listed", f"{unseen} (not even once every span was stitched: not a lag)"))
    for label, values in (("flow", lags), ("RED", red_lags), ("graph", graph_lags)):
        print(row(f"ack -> {label} p50 / p99", spread(values)))
    print(row("/healthz flows_lag_seconds max", f"{max(run.health_lags, default=0.0):.2f} s (while sending)"))
    if run.final_totals is not None:
        print(row("final totals", f"RED {run.final_totals[0]:,} spans, graph {run.final_totals[1]:,} hops"))
    print("targets")
    print(
        target(
            p99 <= TARGET_P99_SECONDS,
            f"p99 <= {TARGET_P99_SECONDS:.0f} s (flow, RED, graph)",
            f"{p99:.2f} s",
        )
    )
    return Outcome(p99, exit_code)


def compare(args: argparse.Namespace, directory: Path) -> int:
    """The collector as shipped (stitching in a process of its own), then, unless ``--no-baseline``, the
    same spans with ``--stitch-in-writer`` (one core, as before issue 15's last change): their p99 ratio."""
    bodies = build_bodies(args)
    shipped = run_once(args, directory, bodies, "stitcher process (default)")
    print(flush=True)
    if not args.baseline:
        return shipped.exit_code
    baseline = run_once(args, directory, bodies, "baseline: --stitch-in-writer", ["--stitch-in-writer"])
    ratio = shipped.p99_seconds / baseline.p99_seconds if baseline.p99_seconds else float("inf")
    print(
        row(
            "p99 ratio process / writer",
            f"{ratio:.2f} ({shipped.p99_seconds:.2f} / {baseline.p99_seconds:.2f} s)",
        )
    )
    return shipped.exit_code or baseline.exit_code


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f} s (max {max(values):.2f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=10_000, help="spans per second (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=60, help="how long to send (default: %(default)s)")
    parser.add_argument(
        "--clients", type=int, default=4, help="connections sending in turn (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=500, help="spans per request (default: %(default)s)")
    parser.add_argument(
        "--sample", type=int, default=5, help="one request in N is timed (default: %(default)s)"
    )
    parser.add_argument("--db", type=Path, default=None, help="keep the databases in this folder")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the second run with --stitch-in-writer (the baseline of the ratio)",
    )
    args = parser.parse_args(argv)
    return in_work_directory(args.db, lambda directory: compare(args, directory), prefix="hopscope-fresh-")


if __name__ == "__main__":
    sys.exit(main())
