"""Freshness benchmark: how long after its acknowledgement a span's flow can be found, under steady ingest.

Four paced connections send the small shop's spans to a ``hopscope collector`` subprocess at a steady rate
(default 10,000 spans/s for 60 s, batches of 500). For one request in every ``--sample``, the script takes a
message id from the body and, from the moment the collector acknowledges the request, asks
``GET /api/flows?message_id=`` every 50 ms until the message's flow is listed: that wait is the
ack-to-visible lag. On SQLite a chunk's flows, RED rollups and graph hops are folded in one transaction
(store/sqlite/store.py ``_fold_chunk``), so the flow's lag is also when the span counts in RED and the graph.
The ingest figures of the same run are printed beside it. See bench/README.md.

    .venv/bin/python bench/freshness.py [--rate 10000] [--seconds 60] [--clients 4] [--batch 500] [--sample 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).parent))
import workload
from ingest import Collector, in_work_directory, percentile, row, target

TARGET_P99_SECONDS = 2.0
POLL_SECONDS = 0.05
GIVE_UP_SECONDS = 300.0


def message_id_of(body: bytes) -> str | None:
    """A message id carried by a span of the request (the small shop puts one on producers and consumers)."""
    request = ExportTraceServiceRequest.FromString(body)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
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
        while True:
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            if response.status != 503:
                break
            time.sleep(float(response.getheader("Retry-After") or 1))
        if response.status != 200:
            raise RuntimeError(f"collector answered {response.status}")
        with run.lock:
            run.sent_spans += spans
            if message_id is not None:
                run.samples.append(Sample(message_id, time.perf_counter()))
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


def watch(address: tuple[str, int], run: Run, sending: threading.Thread) -> None:
    """Poll every pending sample until its flow is listed; stops when all are seen after sending ended."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    deadline: float | None = None
    while True:
        with run.lock:
            pending = [s for s in run.samples if s.visible_after is None]
        if not pending and not sending.is_alive():
            break
        if not sending.is_alive():
            deadline = deadline or time.perf_counter() + GIVE_UP_SECONDS
            if time.perf_counter() > deadline:
                break
        for sample in pending:
            conn.request("GET", f"/api/flows?limit=1&message_id={quote(sample.message_id)}")
            flows = json.loads(conn.getresponse().read())["flows"]
            if flows:
                sample.visible_after = time.perf_counter() - sample.acknowledged_at
        time.sleep(POLL_SECONDS)
    conn.close()


def run_once(args: argparse.Namespace, directory: Path) -> int:
    spans = int(args.rate * args.seconds)
    print(f"building {spans:,} spans ...", flush=True)
    shop = workload.small_shop(seed=2026)
    bodies = [
        (body, count, message_id_of(body) if number % args.sample == 0 else None)
        for number, (body, count) in enumerate(shop.take(spans, args.batch))
    ]
    collector = Collector(directory / "freshness.db")
    run = Run()
    with collector.killed_on_error():
        sending = threading.Thread(
            target=send_all, args=(collector.address, bodies, args.rate, args.clients, run)
        )
        sending.start()
        watch(collector.address, run, sending)
        sending.join()
    exit_code = collector.stop()
    lags = [s.visible_after for s in run.samples if s.visible_after is not None]
    unseen = len(run.samples) - len(lags)
    p50 = percentile(lags, 0.50) if lags else float("nan")
    p99 = percentile(lags, 0.99) if lags else float("nan")
    print(f"hopscope freshness benchmark ({time.strftime('%Y-%m-%d %H:%M')})")
    print(row("offered rate", f"{args.rate:,.0f} spans/s for {args.seconds} s, batches of {args.batch}"))
    print(
        row(
            "sent", f"{run.sent_spans:,} spans in {run.elapsed:.1f} s ({run.sent_spans / run.elapsed:,.0f}/s)"
        )
    )
    print(row("requests sent late", f"{run.late_requests} (more than 100 ms behind their beat)"))
    print(row("samples", f"{len(run.samples)} (one request in {args.sample}); never seen: {unseen}"))
    print(row("ack -> flow visible p50", f"{p50:.2f} s"))
    print(row("ack -> flow visible p99", f"{p99:.2f} s"))
    print(row("ack -> flow visible max", f"{max(lags):.2f} s" if lags else "-"))
    print("targets")
    print(
        target(
            p99 <= TARGET_P99_SECONDS and unseen == 0, f"p99 <= {TARGET_P99_SECONDS:.0f} s", f"{p99:.2f} s"
        )
    )
    return 1 if exit_code != 0 else 0


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
    parser.add_argument("--db", type=Path, default=None, help="keep the database in this folder")
    args = parser.parse_args(argv)
    return in_work_directory(args.db, lambda directory: run_once(args, directory), prefix="hopscope-fresh-")


if __name__ == "__main__":
    sys.exit(main())
