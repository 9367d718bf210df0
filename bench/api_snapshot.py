"""The HTTP API's answers on the query bench's store, one file per URL, to diff two versions of the code.

The store holds the spans bench/query.py sends (``workload.large_shop``, the same seed and size), written
in-process in the order they are made, with the wall clock fixed (``time.time_ns`` is replaced in this
process): two runs on any code that keeps the behaviour write the same store and give the same answers.
Six queues' depth polls are added, which the query bench does not make, so that ``/api/queues`` has
something to say. Then the collector's app (``create_app``) serves the store on 127.0.0.1 and every URL of
a fixed list is fetched; each answer's status, headers (but ``date``) and body bytes go to a file in
``--out``, with ``MANIFEST.sha256`` over them (``sha256sum -c`` reads it).

    .venv/bin/python bench/api_snapshot.py --out /tmp/api-now
    /tmp/base14/.venv/bin/python bench/api_snapshot.py --out /tmp/api-base   # another checkout's venv
    diff -r /tmp/api-base /tmp/api-now

It imports only what both module layouts have (``hopscope.collector.app.create_app``,
``hopscope.collector.settings``) and finds ``open_store`` and the queue model where each layout keeps
them, so one script compares the code before and after a restructuring.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import importlib
import itertools
import json
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.collector.app import create_app
from hopscope.collector.settings import CollectorSettings

sys.path.insert(0, str(Path(__file__).parent))
import workload
from workload import HOUR_NS, LARGE_SHOP_SERVICES, QUEUES, SECOND_NS

NOW_NS = int(datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.timezone.utc).timestamp()) * SECOND_NS
REQUEST_NS = 50_000_000  # the fixed clock moves 50 ms per request written (the query bench's pace)
REQUESTS_PER_WRITE = 8
POLLS = 30
POLL_INTERVAL_NS = 60 * SECOND_NS
DEAD_LETTER_QUEUES = {"billing-jobs": "billing-jobs-dlq", "notification-jobs": "notification-jobs-dlq"}
FAILING_QUEUE = "audit-trail"  # its last poll failed
DROPPED_HEADERS = {"date"}
# /healthz fields that depend on when it is asked, not on the store.
VOLATILE_HEALTH_FIELDS = ("flows_lag_seconds", "seconds_since_last_skip")
HTTP_TIMEOUT_SECONDS = 300.0


class FixedClock:
    """``time.time_ns`` for this process: the time the build says, so nothing depends on the real clock."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def time_ns(self) -> int:
        return self.now_ns


def either(module_names: Sequence[str]) -> Any:
    """The first of ``module_names`` that imports: the module as one layout or the other names it."""
    for name in module_names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"none of {', '.join(module_names)}")


def open_store(path: Path) -> Any:
    module = either(("hopscope.collector.store.url", "hopscope.collector.store.open"))
    return module.open_store(str(path))


# ---------------------------------------------------------------------------------------------------------
# The store.
# ---------------------------------------------------------------------------------------------------------


def build_store(store: Any, clock: FixedClock, spans: int, seed: int) -> workload.FlowPlan:
    """The query bench's spans, written and stitched in order, the clock moving REQUEST_NS a request."""
    load = workload.large_shop(seed, spans, NOW_NS)
    bodies = load.take(spans)
    written = 0
    started = time.perf_counter()
    while chunk := list(itertools.islice(bodies, REQUESTS_PER_WRITE)):
        clock.now_ns += REQUEST_NS * len(chunk)
        written += store.write([ExportTraceServiceRequest.FromString(body) for body, _ in chunk])
        if written % 100_000 < REQUESTS_PER_WRITE * workload.BATCH:
            log(f"{written:,} spans written and stitched ({time.perf_counter() - started:.0f} s)")
    if written != spans:
        raise RuntimeError(f"the store took {written} of {spans} spans")
    return load.plan


def record_queue_polls(store: Any, clock: FixedClock, seed: int) -> None:
    """POLLS polls of the six queues and two dead-letter queues, a minute apart, the last a minute ago."""
    queues = either(("hopscope.collector.model.queues", "hopscope.collector.queue_model"))
    r = random.Random(seed)
    names = [*QUEUES, *DEAD_LETTER_QUEUES.values()]
    first = clock.now_ns - POLLS * POLL_INTERVAL_NS
    for poll in range(POLLS):
        polled = first + poll * POLL_INTERVAL_NS
        states = []
        samples = []
        for name in names:
            failing = name == FAILING_QUEUE and poll == POLLS - 1
            dlq = DEAD_LETTER_QUEUES.get(name)
            states.append(
                queues.QueueState(
                    name=name,
                    url=f"https://sqs.eu-west-1.amazonaws.com/{workload.ACCOUNT}/{name}",
                    arn=f"arn:aws:sqs:eu-west-1:{workload.ACCOUNT}:{name}",
                    dlq_name=dlq,
                    max_receive_count=3 if dlq else None,
                    error="AWS.SimpleQueueService.NonExistentQueue: queue deleted" if failing else None,
                )
            )
            if not failing:
                samples.append(
                    queues.DepthSample(
                        queue_name=name,
                        polled_unix_nano=polled,
                        visible=r.randrange(0, 500),
                        in_flight=r.randrange(0, 40),
                        delayed=r.randrange(0, 3),
                        oldest_age_seconds=round(r.uniform(0, 900), 3) if r.random() < 0.8 else None,
                        age_source=r.choice(("cloudwatch", "estimate")),
                    )
                )
        store.record_queue_poll(polled, states, samples)


# ---------------------------------------------------------------------------------------------------------
# The URLs.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Get:
    label: str  # the file name: stable however the answers turn out
    path: str
    params: tuple[tuple[str, str | int | float], ...] = ()

    @property
    def url(self) -> str:
        return self.path + ("?" + urllib.parse.urlencode(self.params) if self.params else "")


def iso(unix_ns: int) -> str:
    return datetime.datetime.fromtimestamp(unix_ns // SECOND_NS, datetime.timezone.utc).isoformat()


def fixed_urls(now: int) -> list[Get]:
    """The URLs that need nothing from the store: searches, rollups, queues, bad parameters, the shell."""
    hour, day = (("since", now - HOUR_NS), ("until", now)), (("since", now - 24 * HOUR_NS), ("until", now))
    middle = (("since", now - 12 * HOUR_NS), ("until", now - 6 * HOUR_NS))
    empty = (("since", now + HOUR_NS), ("until", now + 2 * HOUR_NS))
    as_iso = (("since", iso(now - 3 * HOUR_NS)), ("until", iso(now - 2 * HOUR_NS)))
    gets = [
        Get("openapi", "/openapi.json"),
        Get("healthz", "/healthz"),
        Get("readyz", "/readyz"),
        Get("shell-404", "/no/such/endpoint"),
        Get("shell-405-v1-traces", "/v1/traces"),
        # /api/flows: filters, sorts, pages
        Get("flows-default", "/api/flows"),
        Get("flows-limit-1000", "/api/flows", (("limit", 1000),)),
        Get("flows-page-3", "/api/flows", (("limit", 20), ("offset", 40))),
        Get("flows-far-offset", "/api/flows", (("limit", 10), ("offset", 10**6))),
        Get("flows-sort-start", "/api/flows", (("sort", "start"), ("limit", 100))),
        Get("flows-sort-duration", "/api/flows", (("sort", "duration"), ("limit", 100))),
        Get("flows-sort-duration-day", "/api/flows", (("sort", "duration"), ("limit", 200), *day)),
        Get("flows-errors", "/api/flows", (("status", "error"), ("limit", 200))),
        Get("flows-hour", "/api/flows", (*hour, ("limit", 500))),
        Get("flows-middle", "/api/flows", (*middle, ("limit", 100), ("sort", "duration"))),
        Get("flows-iso-range", "/api/flows", (*as_iso, ("limit", 100))),
        Get("flows-empty-range", "/api/flows", empty),
        Get("flows-min-duration", "/api/flows", (("min_duration_ms", 2500), ("limit", 200))),
        Get("flows-min-duration-frac", "/api/flows", (("min_duration_ms", 123.5), ("sort", "duration"))),
        Get("flows-operation", "/api/flows", (("operation", "POST /orders"), ("limit", 100))),
        Get(
            "flows-service-operation",
            "/api/flows",
            (("service", "checkout"), ("operation", "POST /checkout"), ("sort", "duration")),
        ),
        Get("flows-attr-queue", "/api/flows", (("attr", "messaging.destination.name:billing-jobs"),)),
        Get(
            "flows-attr-two",
            "/api/flows",
            (
                ("attr", "faas.trigger:pubsub"),
                ("attr", "messaging.consumer.group.name:shipping"),
                ("limit", 100),
            ),
        ),
        Get("flows-attr-int", "/api/flows", (("attr", "hopscope.receive_count:3"), ("limit", 100))),
        Get("flows-unknown-correlation", "/api/flows", (("correlation_id", "ord-no-such-order"),)),
        Get("flows-unknown-message", "/api/flows", (("message_id", "no-such-message"),)),
        Get("flows-400-status", "/api/flows", (("status", "ok"),)),
        Get("flows-400-sort", "/api/flows", (("sort", "name"),)),
        Get("flows-400-limit", "/api/flows", (("limit", 0),)),
        Get("flows-400-limit-high", "/api/flows", (("limit", 1001),)),
        Get("flows-400-offset", "/api/flows", (("offset", -1),)),
        Get("flows-400-since", "/api/flows", (("since", "yesterday"),)),
        Get("flows-inverted-range", "/api/flows", (("since", now), ("until", now - HOUR_NS))),
        Get("flows-400-attr", "/api/flows", (("attr", "no-colon"),)),
        Get("flows-400-min-duration", "/api/flows", (("min_duration_ms", "-5"),)),
        # /api/flows/{id}, /api/traces/{id}: what is never there, and what is not an id
        Get("flow-404", "/api/flows/999999999"),
        Get("flow-400-zero", "/api/flows/0"),
        Get("flow-400-text", "/api/flows/abc"),
        Get("flow-otlp-404", "/api/flows/999999999/otlp"),
        Get("flow-otlp-400", "/api/flows/-1/otlp"),
        Get("trace-404", "/api/traces/" + "ab" * 16),
        Get("trace-400-zero", "/api/traces/" + "0" * 32),
        Get("trace-400-short", "/api/traces/abc"),
        # /api/services, /api/graph: ranges
        Get("services-default", "/api/services"),
        Get("services-hour", "/api/services", hour),
        Get("services-day", "/api/services", day),
        Get("services-middle", "/api/services", middle),
        Get("services-iso", "/api/services", as_iso),
        Get("services-empty", "/api/services", empty),
        Get("services-400", "/api/services", (("until", "soon"),)),
        Get("graph-default", "/api/graph"),
        Get("graph-hour", "/api/graph", hour),
        Get("graph-day", "/api/graph", day),
        Get("graph-middle", "/api/graph", middle),
        Get("graph-iso", "/api/graph", as_iso),
        Get("graph-empty", "/api/graph", empty),
        Get("graph-400", "/api/graph", (("since", now), ("until", now - 1))),
        # /api/latency: every service over a day, steps, operations
        *(
            Get(f"latency-day-{service}", "/api/latency", (("service", service), *day, ("step", 600)))
            for service in LARGE_SHOP_SERVICES
        ),
        Get("latency-default", "/api/latency", (("service", "orders-api"),)),
        Get("latency-hour-step-60", "/api/latency", (("service", "billing"), *hour, ("step", 60))),
        Get("latency-iso", "/api/latency", (("service", "catalog"), *as_iso)),
        Get(
            "latency-operation",
            "/api/latency",
            (("service", "orders-api"), ("operation", "POST /orders"), *day, ("step", 3600)),
        ),
        Get("latency-unknown-service", "/api/latency", (("service", "no-such-service"), *hour)),
        Get("latency-400-no-service", "/api/latency", hour),
        Get("latency-400-step", "/api/latency", (("service", "billing"), ("step", 61))),
        Get("latency-400-step-small", "/api/latency", (("service", "billing"), ("step", 0))),
        # /api/queues
        Get("queues", "/api/queues"),
        *(Get(f"queue-depth-{name}", f"/api/queues/{name}/depth") for name in QUEUES),
        Get("queue-depth-dlq-range", "/api/queues/billing-jobs-dlq/depth", hour),
        Get("queue-depth-empty-range", "/api/queues/billing-jobs/depth", empty),
        Get("queue-depth-404", "/api/queues/no-such-queue/depth"),
        Get("queue-depth-404-bad-name", "/api/queues/bad%20name/depth"),
        Get("queue-depth-400-range", "/api/queues/billing-jobs/depth", (("since", "never"),)),
    ]
    return gets


def chosen_flows(plan: workload.FlowPlan, seed: int) -> list[tuple[str, str]]:
    """(label, order id) of the flows whose search, detail, OTLP and traces are fetched: each size, seeded."""
    r = random.Random(seed)
    complete = plan.complete()
    chosen = [("first", complete[0]), ("last-complete", complete[-1])]
    for low, high in ((3, 5), (6, 12), (13, 24), (25, 40), (workload.DETAIL_SPANS, workload.DETAIL_SPANS)):
        sized = [flow for flow in complete if low <= plan.sizes[flow] <= high]
        chosen += [(f"{low}-{high}-spans-{i}", flow) for i, flow in enumerate(r.sample(sized, k=2))]
    multi = [flow for flow in complete if plan.traces[flow] >= 4]
    chosen += [(f"{plan.traces[flow]}-traces", flow) for flow in r.sample(multi, k=2)]
    partial = [flow for flow, (n, sent) in enumerate(zip(plan.sizes, plan.sent, strict=True)) if 0 < sent < n]
    chosen += [("partly-sent", flow) for flow in partial[:1]]
    return [(label, plan.order_ids[flow]) for label, flow in chosen]


# ---------------------------------------------------------------------------------------------------------
# Fetching and writing.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    def __init__(self, address: tuple[str, int]) -> None:
        self._conn = http.client.HTTPConnection(*address, timeout=HTTP_TIMEOUT_SECONDS)

    def get(self, url: str) -> Answer:
        self._conn.request("GET", url)
        response = self._conn.getresponse()
        body = response.read()
        headers = sorted((k.lower(), v) for k, v in response.getheaders() if k.lower() not in DROPPED_HEADERS)
        return Answer(response.status, headers, body)

    def close(self) -> None:
        self._conn.close()


def snapshot_text(get: Get, answer: Answer) -> bytes:
    """What is compared: the URL, status, headers and body (``/healthz`` without its volatile fields and
    its length)."""
    body, headers = answer.body, answer.headers
    if get.path == "/healthz" and answer.status == 200:
        headers = [(k, v) for k, v in headers if k != "content-length"]
        document = answer.json()
        for key in VOLATILE_HEALTH_FIELDS:
            if key in document:
                document[key] = "(volatile, left out)"
        body = json.dumps(document, indent=1, sort_keys=True).encode()
    head = [f"GET {get.url}", f"status {answer.status}", *(f"{k}: {v}" for k, v in headers)]
    return "\n".join(head).encode() + b"\n\n" + body + b"\n"


def fetch_all(client: Client, plan: workload.FlowPlan, now: int, seed: int, out: Path) -> int:
    """Every URL, in a fixed order, to ``out``; the flow and trace URLs come from the flows' searches."""
    labels: set[str] = set()

    def save(get: Get) -> Answer:
        if get.label in labels:
            raise ValueError(f"two URLs are labelled {get.label}")
        labels.add(get.label)
        answer = client.get(get.url)
        (out / f"{get.label}.txt").write_bytes(snapshot_text(get, answer))
        return answer

    for get in fixed_urls(now):
        save(get)
    for label, order_id in chosen_flows(plan, seed):
        found = save(
            Get(f"flows-by-correlation-{label}", "/api/flows", (("correlation_id", order_id),))
        ).json()
        for flow in found.get("flows", [])[:1]:
            flow_id = flow["flow_id"]
            detail = save(Get(f"flow-{label}", f"/api/flows/{flow_id}"))
            save(Get(f"flow-otlp-{label}", f"/api/flows/{flow_id}/otlp"))
            if flow.get("entry_service"):
                params = (("service", flow["entry_service"]), ("limit", 20))
                save(Get(f"flows-service-{label}", "/api/flows", params))
            for n, trace_id in enumerate(trace_ids(detail)[:2]):
                save(Get(f"trace-{label}-{n}", f"/api/traces/{trace_id}"))
            for n, message_id in enumerate(message_ids(detail)[:1]):
                save(Get(f"flows-by-message-{label}-{n}", "/api/flows", (("message_id", message_id),)))
    return len(labels)


def trace_ids(detail: Answer) -> list[str]:
    if detail.status != 200:
        return []
    seen: dict[str, None] = {}
    for span in detail.json().get("spans", []):
        seen.setdefault(span["trace_id"], None)
    return list(seen)


def message_ids(detail: Answer) -> list[str]:
    """The message ids the flow's spans carry (producers and consumers), in span order."""
    if detail.status != 200:
        return []
    ids = [span["attributes"].get(workload.MESSAGE_ID_KEY) for span in detail.json().get("spans", [])]
    return list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))


def write_manifest(out: Path) -> Path:
    manifest = out / "MANIFEST.sha256"
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" for path in sorted(out.glob("*.txt"))
    ]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------------
# The server and the run.
# ---------------------------------------------------------------------------------------------------------


class Server:
    """The collector's app on uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._socket.getsockname()
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="uvicorn", daemon=True
        )

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(60)
        self._socket.close()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, directory: Path) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.txt"), out / "MANIFEST.sha256"]:
        old.unlink(missing_ok=True)
    clock = FixedClock(NOW_NS)
    time.time_ns = clock.time_ns  # every store, stitching and query default in this process
    started = time.perf_counter()
    store = open_store(directory / "api-snapshot.db")
    try:
        plan = build_store(store, clock, args.spans, args.seed)
        clock.now_ns += 60 * SECOND_NS  # the query bench asks its questions after the last write
        record_queue_polls(store, clock, args.seed)
        log(f"store built in {time.perf_counter() - started:.0f} s; serving it")
        with Server(create_app(CollectorSettings(), store)) as server:
            client = Client(server.address)
            try:
                count = fetch_all(client, plan, clock.now_ns, args.seed, out)
            finally:
                client.close()
    finally:
        store.close()
    manifest = write_manifest(out)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    log(f"{count} answers in {out} ({time.perf_counter() - started:.0f} s); manifest sha256 {digest}")
    print(digest)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the answers (emptied first)")
    parser.add_argument(
        "--spans",
        type=int,
        default=1_000_000,
        help="spans in the store (default: the query bench's %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="the query bench's seed (default: %(default)s)"
    )
    parser.add_argument(
        "--db", type=Path, default=None, help="directory for the database (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.spans < 10_000:
        parser.error("--spans must be at least 10000 (the URLs ask for flows of every size)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.db is not None:
        args.db.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            (args.db / f"api-snapshot.db{suffix}").unlink(missing_ok=True)
        return run(args, args.db)
    with tempfile.TemporaryDirectory(prefix="hopscope-api-snapshot-") as directory:
        return run(args, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
