"""Logs benchmark: OTLP/HTTP log ingest against span ingest of the same bytes, and ``/api/logs`` on a million
stored records.

1. **Ingest.** Realistic Lambda log records (bodies of 100-200 characters, trace and span ids, a correlation
   id, code location, a request id; exceptions on errors) of the ingest bench's three services, packed into
   ``ExportLogsServiceRequest`` bodies of the same size as the ingest bench's span bodies (``--batch``
   spans). ``--clients`` keep-alive clients post each to a fresh ``hopscope collector`` (``/v1/logs``), and
   the spans to another fresh one (``/v1/traces``), in alternating rounds: records/s, spans/s, bytes/s of
   each and the ratio logs/spans. Both are measured in the same run, so the ratio is the figure to compare.
2. **Query.** ``--records`` records of 20 services over the last 20 hours (each correlation id with 5-20
   records across 1-4 services and their traces) are written in-process with ``SQLiteStore.write_logs`` in
   large batches, then served by ``hopscope collector``; ``GET /api/logs?correlation_id=`` of random
   stored ids is timed over HTTP against the same request shape on ``/api/flows?correlation_id=`` (an
   indexed lookup that finds nothing in a store of logs only: the API's fixed cost), in the same run. Also
   ``?service=S&severity=error`` and ``?q=WORD`` (a substring of the body: common, rare and absent words;
   an absent one reads every record).

    .venv/bin/python bench/logs.py [--clients 4] [--spans 200000] [--records 1000000] [--db DIR]

``--db DIR`` keeps ``DIR/logs.db`` (the million records) and reuses it in later runs with the same
``--records`` and ``--seed``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from hopscope.collector.model.logs import CORRELATION_ID_ATTRIBUTE, ERROR_SEVERITY, severity_name
from hopscope.collector.store.sqlite.store import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
import ingest
import workload
from query import Api, QueryResult, git_head, log
from workload import (
    ACCOUNT,
    HOUR_NS,
    INSTANCES_PER_SERVICE,
    LARGE_SHOP_SERVICES,
    MS,
    SMALL_SHOP_SERVICES,
    STACKTRACE_FRAMES,
    make_resource,
)

TARGET_CORRELATION_MS = 50.0
FILL_RECORDS_PER_REQUEST = 2_000
FILL_REQUESTS_PER_WRITE = 10
RECORD_OVERHEAD_BYTES = 3  # a LogRecord's tag and length prefix inside its ScopeLogs
STORY_SPREAD_NS = 20 * HOUR_NS  # the query store's records cover the last 20 hours

# Severity numbers (OpenTelemetry log data model) and their share of the records.
SEVERITIES = (
    (5, "DEBUG", 0.10),
    (9, "INFO", 0.70),
    (13, "WARN", 0.15),
    (17, "ERROR", 0.045),
    (21, "FATAL", 0.005),
)
# Bodies by severity: Python format strings over the story's fields, 100-200 characters once filled.
BODIES: dict[str, tuple[str, ...]] = {
    "DEBUG": (
        "cache {hit} for key order:{order} in region {region}, ttl {ttl} s, lookup took {ms} ms on shard "
        "{shard} of 64",
        "loaded {items} line items for order {order} from DynamoDB table orders-prod in {ms} ms (consistent "
        "read, {units} read units)",
    ),
    "INFO": (
        "order {order} received from customer {customer}: {items} items, total {amount} EUR, channel web, "
        "request {request}",
        "charged card ending {last4} for order {order}: {amount} EUR authorised by {provider} in {ms} ms "
        "(auth code {code})",
        "published order-events message {message} for order {order} to queue order-events ({size} bytes, "
        "attempt {attempt})",
        "stored order {order} in DynamoDB table orders-prod, consumed {units} write capacity units in "
        "{ms} ms",
        "shipment {shipment} for order {order} booked with carrier {carrier}, label {label}, delivery in "
        "{days} days",
    ),
    "WARN": (
        "stock low for sku {sku} while reserving order {order}: {left} left in warehouse {warehouse}, "
        "reorder threshold {threshold}",
        "retrying carrier call for order {order} after HTTP 503 from {carrier} (attempt {attempt} of 3, "
        "backoff {ms} ms)",
    ),
    "ERROR": (
        "payment declined for order {order}: card ending {last4} refused by {provider} with code {code} "
        "(insufficient_funds), customer {customer} notified",
        "carrier {carrier} timed out after {ms} ms booking shipment for order {order}; message {message} "
        "goes back to the queue",
    ),
    "FATAL": (
        "handler crashed processing order {order}: unrecoverable state in message {message}, invocation "
        "{request} aborted after {ms} ms",
    ),
}
# A body that about one record in RARE_EVERY carries: the rare word of the text search.
RARE_BODY = (
    "chargeback opened for order {order} by {provider}: {amount} EUR disputed by customer {customer}, "
    "evidence due in {days} days"
)
RARE_EVERY = 10_000
COMMON_WORD, RARE_WORD, ABSENT_WORD = "declined", "chargeback", "zeppelin"
# Lines of a cold start, outside any request: no trace, no correlation id (one in COLD_EVERY stories).
COLD_BODY = (
    "cold start: loaded configuration for {service} from SSM parameter /shop/prod/{service} in {ms} ms, "
    "{items} feature flags on"
)
COLD_EVERY = 20
CARRIERS = ("dhl", "ups", "fedex", "postnl", "dpd")
PROVIDERS = ("stripe", "adyen", "braintree")
FUNCTIONS = ("handle", "process", "charge", "publish", "reserve", "book_shipment")


# The bodies' fields, each drawn only when a body names it.
FIELDS: dict[str, Callable[[random.Random], object]] = {
    "hit": lambda r: r.choice(("hit", "miss")),
    "region": lambda r: r.choice(workload.REGIONS),
    "ttl": lambda r: r.choice((60, 300, 900)),
    "ms": lambda r: r.randrange(2, 2_500),
    "shard": lambda r: r.randrange(64),
    "items": lambda r: r.randrange(1, 12),
    "units": lambda r: r.randrange(1, 9),
    "customer": lambda r: f"cus-{r.randrange(10**6):06d}",
    "amount": lambda r: f"{r.uniform(5, 900):.2f}",
    "request": lambda r: r.randbytes(16).hex(),
    "last4": lambda r: f"{r.randrange(10_000):04d}",
    "provider": lambda r: r.choice(PROVIDERS),
    "code": lambda r: r.randbytes(3).hex().upper(),
    "message": lambda r: r.randbytes(16).hex(),
    "size": lambda r: r.randrange(300, 4_000),
    "attempt": lambda r: r.randrange(1, 4),
    "shipment": lambda r: f"shp-{r.randrange(10**8):08d}",
    "carrier": lambda r: r.choice(CARRIERS),
    "label": lambda r: r.randbytes(6).hex().upper(),
    "days": lambda r: r.randrange(1, 6),
    "sku": lambda r: f"SKU-{r.randrange(10**5):05d}",
    "left": lambda r: r.randrange(0, 9),
    "warehouse": lambda r: f"wh-{r.randrange(12):02d}",
    "threshold": lambda r: r.choice((10, 20, 50)),
}


class Fields(dict[str, object]):
    """A body's fields for ``str.format_map``: the order and service given, the rest drawn when named."""

    def __init__(self, r: random.Random, order: str, service: str) -> None:
        super().__init__(order=order, service=service)
        self._r = r

    def __missing__(self, key: str) -> object:
        value = self[key] = FIELDS[key](self._r)
        return value


# ---------------------------------------------------------------------------------------------------------
# Log records: stories of orders (5-20 records across 1-4 services), packed into OTLP requests.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedRecord:
    resource: tuple[str, int]  # (service, instance)
    time_unix_nano: int
    severity: tuple[int, str]
    body: str
    correlation_id: str | None
    trace_id: bytes
    span_id: bytes
    request_id: str
    line: int
    function: str
    exception: tuple[str, str, str] | None  # type, message, stack trace


class LogWorkload:
    """An endless stream of realistic Lambda log records; the same seed gives the same records."""

    def __init__(self, services: Sequence[str], seed: int, start_ns: int, story_step_ns: int) -> None:
        self._services = services
        self._r = random.Random(seed)
        self._start_ns = start_ns
        self._step_ns = story_step_ns
        self._weights = [share for _, _, share in SEVERITIES]
        self._severities = [(number, text) for number, text, _ in SEVERITIES]
        self._resources: dict[tuple[str, int], Resource] = {
            (s, i): make_resource(s, i) for s in services for i in range(INSTANCES_PER_SERVICE)
        }
        self.records = 0

    def _story(self, number: int) -> list[PlannedRecord]:
        """One order's records: 5-20, across 1-4 services, a trace per hop (an async hop starts one)."""
        r = self._r
        order = f"ord-{number:07d}-{r.randbytes(4).hex()}"
        at = self._start_ns + number * self._step_ns
        hops = r.randint(1, 4)
        count = r.randint(5, 20)
        planned: list[PlannedRecord] = []
        trace_id = r.randbytes(16)
        for hop in range(hops):
            service = r.choice(self._services)
            resource = (service, r.randrange(INSTANCES_PER_SERVICE))
            if hop and r.random() < 0.7:  # through a queue or topic: a new, linked trace
                trace_id = r.randbytes(16)
            span_id = r.randbytes(8)
            request_id = r.randbytes(16).hex()
            if number % COLD_EVERY == 0 and hop == 0:
                body = COLD_BODY.format_map(Fields(r, order, service))
                planned.append(
                    PlannedRecord(
                        resource, at, (9, "INFO"), body, None, b"", b"", request_id, 12, "init", None
                    )
                )
            share = count // hops + (1 if hop < count % hops else 0)
            for _ in range(share):
                at += r.randrange(1, 200) * MS
                severity = r.choices(self._severities, self._weights)[0]
                fields = Fields(r, order, service)
                if r.randrange(RARE_EVERY) == 0:
                    body = RARE_BODY.format_map(fields)
                else:
                    body = r.choice(BODIES[severity[1]]).format_map(fields)
                exception = None
                if severity[0] >= ERROR_SEVERITY:
                    kind = r.choice(("PaymentDeclined", "TimeoutError", "ClientError"))
                    frames = "\n  ".join(
                        f.format(svc=service, n=r.randrange(20, 400)) for f in STACKTRACE_FRAMES
                    )
                    exception = (kind, body[:80], f"Traceback (most recent call last):\n  {frames}\n{kind}")
                planned.append(
                    PlannedRecord(
                        resource,
                        at,
                        severity,
                        body,
                        order,
                        trace_id,
                        span_id,
                        request_id,
                        r.randrange(20, 400),
                        r.choice(FUNCTIONS),
                        exception,
                    )
                )
        return planned

    def planned(self) -> Iterator[PlannedRecord]:
        number = 0
        while True:
            yield from self._story(number)
            number += 1

    def requests(
        self, records_per_request: int | None, target_bytes: int | None
    ) -> Iterator[tuple[ExportLogsServiceRequest, int]]:
        """(request, record count) of ``records_per_request`` records each, or of about ``target_bytes``
        serialized (counted as records are added), grouped by resource and scope as an SDK exports them."""
        stream = self.planned()
        while True:
            request = ExportLogsServiceRequest()
            scopes: dict[tuple[str, int], ScopeLogs] = {}
            size = records = 0
            while (records_per_request is None or records < records_per_request) and (
                target_bytes is None or size < target_bytes
            ):
                planned = next(stream)
                scope_logs = scopes.get(planned.resource)
                if scope_logs is None:
                    resource_logs = request.resource_logs.add()
                    resource_logs.resource.CopyFrom(self._resources[planned.resource])
                    scope_logs = resource_logs.scope_logs.add()
                    scope_logs.scope.name = f"{planned.resource[0]}.handler"
                    scopes[planned.resource] = scope_logs
                    size += resource_logs.ByteSize() + RECORD_OVERHEAD_BYTES
                record = scope_logs.log_records.add()
                fill_record(record, planned)
                size += record.ByteSize() + RECORD_OVERHEAD_BYTES
                records += 1
            self.records += records
            yield request, records


def fill_record(record: LogRecord, planned: PlannedRecord) -> None:
    """A record as the SDK's LoggingHandler exports one, with hopscope's correlation id and the request id."""
    record.time_unix_nano = planned.time_unix_nano
    record.observed_time_unix_nano = planned.time_unix_nano + 40_000
    record.severity_number = planned.severity[0]  # type: ignore[assignment]
    record.severity_text = planned.severity[1]
    record.body.string_value = planned.body
    if planned.trace_id:
        record.trace_id = planned.trace_id
        record.span_id = planned.span_id
        record.flags = 1
    service = planned.resource[0]
    attributes = record.attributes
    if planned.correlation_id is not None:
        attributes.add(key=CORRELATION_ID_ATTRIBUTE).value.string_value = planned.correlation_id
    attributes.add(key="code.file.path").value.string_value = f"/var/task/{service}/handler.py"
    attributes.add(key="code.function.name").value.string_value = planned.function
    attributes.add(key="code.line.number").value.int_value = planned.line
    attributes.add(key="faas.invocation_id").value.string_value = planned.request_id
    attributes.add(
        key="cloud.resource_id"
    ).value.string_value = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{service}-prod"
    if planned.exception is not None:
        kind, message, stacktrace = planned.exception
        attributes.add(key="exception.type", value=AnyValue(string_value=kind))
        attributes.add(key="exception.message", value=AnyValue(string_value=message))
        attributes.add(key="exception.stacktrace", value=AnyValue(string_value=stacktrace))


# ---------------------------------------------------------------------------------------------------------
# 1. Ingest: log records against spans of the same bytes per request, through a real collector.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestRun:
    items: int
    bytes: int
    elapsed: float
    latencies: list[float]
    stored: int
    exit_code: int

    @property
    def rate(self) -> float:
        return self.items / self.elapsed

    @property
    def byte_rate(self) -> float:
        return self.bytes / self.elapsed


def post_all(bodies: Sequence[tuple[bytes, int]], db: Path, clients: int, path: str) -> IngestRun:
    """Every body to a fresh collector's ``path``; the items it stored (counted once it exited)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    collector = ingest.Collector(db)
    with collector.killed_on_error():
        elapsed, stats = ingest.send_all(collector.address, bodies, clients, retry_sleep=None, path=path)
        exit_code = collector.stop()
    if stats.rejected:
        raise RuntimeError(f"the collector rejected {stats.rejected} items on {path}")
    store = SQLiteStore(db, read_only=True)
    try:
        stored = store.count_logs() if path == "/v1/logs" else store.count_spans()
    finally:
        store.close()
    total_bytes = sum(len(body) for body, _ in bodies)
    return IngestRun(stats.acknowledged, total_bytes, elapsed, stats.latencies, stored, exit_code)


@dataclass
class IngestResult:
    span_bodies: list[tuple[bytes, int]]
    log_bodies: list[tuple[bytes, int]]
    spans: list[IngestRun] = field(default_factory=list)
    logs: list[IngestRun] = field(default_factory=list)
    # The store alone, in-process (prepare + write_prepared, one request a call): spans/s, records/s.
    store_rates: tuple[float, float] | None = None


def measure_store_logs(bodies: Sequence[tuple[bytes, int]], db: Path) -> float:
    """Records/s of the store alone, as bench/ingest.py's ``measure_store`` does for spans: requests
    parsed before the clock runs, then what the collector does before it acknowledges, one request a call."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    requests = [ExportLogsServiceRequest.FromString(body) for body, _ in bodies]
    store = SQLiteStore(db)
    try:
        elapsed = 0.0
        for request in requests:
            started = time.perf_counter()
            store.write_prepared([store.prepare_logs(request)])
            elapsed += time.perf_counter() - started
        stored = store.count_logs()
    finally:
        store.close()
    expected = sum(n for _, n in bodies)
    if stored != expected:
        raise RuntimeError(f"in-process store holds {stored} of {expected} log records")
    return expected / elapsed


def measure_ingest(args: argparse.Namespace, directory: Path) -> IngestResult:
    started = time.perf_counter()
    span_bodies = workload.small_shop(args.seed).bodies(args.spans, args.batch)
    target_bytes = int(statistics.mean(len(body) for body, _ in span_bodies))
    logs = LogWorkload(SMALL_SHOP_SERVICES, args.seed, time.time_ns() - HOUR_NS, 50 * MS)
    requests = logs.requests(None, target_bytes)
    log_bodies = [
        (request.SerializeToString(), n) for request, n in itertools.islice(requests, len(span_bodies))
    ]
    log(
        f"ingest: {len(span_bodies)} span bodies and as many log bodies of ~{target_bytes / 1024:.0f} KiB "
        f"made in {time.perf_counter() - started:.1f} s"
    )
    result = IngestResult(span_bodies, log_bodies)
    for round_number in range(1, args.rounds + 1):
        run = post_all(span_bodies, directory / "ingest-spans.db", args.clients, "/v1/traces")
        result.spans.append(run)
        log(f"round {round_number}: {run.rate:,.0f} spans/s ({run.byte_rate / 1e6:.1f} MB/s)")
        run = post_all(log_bodies, directory / "ingest-logs.db", args.clients, "/v1/logs")
        result.logs.append(run)
        log(f"round {round_number}: {run.rate:,.0f} log records/s ({run.byte_rate / 1e6:.1f} MB/s)")
    if not args.no_baseline:
        for suffix in ("", "-wal", "-shm"):
            (directory / ("ingest-spans.db" + suffix)).unlink(missing_ok=True)
        spans_rate = ingest.measure_store(span_bodies, directory / "ingest-spans.db")
        result.store_rates = (spans_rate, measure_store_logs(log_bodies, directory / "ingest-logs.db"))
        log(f"in-process store: {result.store_rates[0]:,.0f} spans/s, {result.store_rates[1]:,.0f} records/s")
    for name in ("ingest-spans.db", "ingest-logs.db"):
        for suffix in ("", "-wal", "-shm"):
            (directory / (name + suffix)).unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------------------------
# 2. Query: a million records written in-process, served by a collector, searched over HTTP.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryStore:
    db: Path
    records: int
    fill_seconds: float | None  # None: reused from an earlier run
    db_bytes: int


def fill_store(args: argparse.Namespace, directory: Path) -> QueryStore:
    """``--records`` records into ``logs.db`` in-process (or the one an earlier run left, when it matches)."""
    db = directory / "logs.db"
    marker = directory / "logs.db.json"
    wanted = {"records": args.records, "seed": args.seed, "services": len(LARGE_SHOP_SERVICES)}
    with contextlib.suppress(OSError, ValueError):
        if db.exists() and json.loads(marker.read_text()) == wanted:
            log(f"query: reusing {db} ({args.records:,} records, seed {args.seed})")
            return QueryStore(db, args.records, None, db_size(db))
    marker.unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    started = time.perf_counter()
    now = time.time_ns()
    step = STORY_SPREAD_NS * 12 // args.records  # about 12 records a story
    logs = LogWorkload(LARGE_SHOP_SERVICES, args.seed + 7, now - STORY_SPREAD_NS, step)
    requests = logs.requests(FILL_RECORDS_PER_REQUEST, None)
    store = SQLiteStore(db, durable=False)
    written = 0
    next_report = 100_000
    try:
        while written < args.records:
            batch = [request for request, _ in itertools.islice(requests, FILL_REQUESTS_PER_WRITE)]
            trim(batch, args.records - written)
            written += store.write_logs(batch)
            if written >= next_report:
                elapsed = time.perf_counter() - started
                log(f"query: {written:,} records written ({written / elapsed:,.0f}/s)")
                next_report += 100_000
        stored = store.count_logs()
    finally:
        store.close()
    if stored != args.records:
        raise RuntimeError(f"the store holds {stored:,} of {args.records:,} records")
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps(wanted))
    return QueryStore(db, stored, seconds, db_size(db))


def _records(request: ExportLogsServiceRequest) -> int:
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def trim(batch: list[ExportLogsServiceRequest], keep: int) -> None:
    """Drop records from the end of ``batch`` so that it holds at most ``keep``."""
    excess = sum(_records(r) for r in batch) - keep
    for request in reversed(batch):
        for resource_logs in reversed(request.resource_logs):
            for scope_logs in reversed(resource_logs.scope_logs):
                while excess > 0 and scope_logs.log_records:
                    del scope_logs.log_records[-1]
                    excess -= 1


def store_mix(db: Path) -> tuple[str, str]:
    """The stored records' severities (shares) and correlation ids (how many, records each)."""
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        by_severity = conn.execute(
            "SELECT severity_number, count(*) FROM logs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        ids, with_id = conn.execute(
            "SELECT count(DISTINCT correlation_id), count(correlation_id) FROM logs"
        ).fetchone()
    finally:
        conn.close()
    total = sum(n for _, n in by_severity)
    severities = ", ".join(f"{severity_name(number)} {n / total:.1%}" for number, n in by_severity)
    return severities, f"{ids:,} ({with_id / ids:.1f} records each); {total - with_id:,} records without one"


def db_size(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if not p.name.endswith(".json"))


def run_queries(api: Api, db: Path, repeat: int, seed: int) -> list[QueryResult]:
    """Each query ``repeat`` times (different ids or services), its answers checked against the file."""
    r = random.Random(seed + 11)
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (top,) = conn.execute("SELECT max(log_pk) FROM logs").fetchone()
        ids: list[str] = []
        while len(ids) < repeat:
            row = conn.execute(
                "SELECT correlation_id FROM logs WHERE log_pk = ?", (r.randint(1, top),)
            ).fetchone()
            if row and row[0] and row[0] not in ids:
                ids.append(row[0])
        counts = {
            i: conn.execute("SELECT count(*) FROM logs WHERE correlation_id = ?", (i,)).fetchone()[0]
            for i in ids
        }
        errors = dict(
            conn.execute(
                "SELECT service_name, count(*) FROM logs WHERE severity_number >= ? GROUP BY 1 ORDER BY 1",
                (ERROR_SEVERITY,),
            ).fetchall()
        )
        services = list(errors)
        words = {
            word: conn.execute("SELECT count(*) FROM logs WHERE body LIKE ?", (f"%{word}%",)).fetchone()[0]
            for word in (COMMON_WORD, RARE_WORD, ABSENT_WORD)
        }
    finally:
        conn.close()
    results: list[QueryResult] = []

    baseline = QueryResult("baseline: flows by correlation id", None)
    result = QueryResult("logs by correlation id", TARGET_CORRELATION_MS)
    for correlation_id in ids:  # interleaved, so that both see the same moments of the machine
        elapsed, body = api.get("/api/flows", {"correlation_id": correlation_id})
        baseline.seconds.append(elapsed)
        elapsed, body = api.get("/api/logs", {"correlation_id": correlation_id})
        result.seconds.append(elapsed)
        lines = body["logs"]
        if len(lines) != min(counts[correlation_id], 200) or any(
            line["correlation_id"] != correlation_id for line in lines
        ):
            result.wrong.append(f"{correlation_id}: {len(lines)} of {counts[correlation_id]} records")
    sizes = sorted(counts.values())
    result.note = f"{sizes[0]}-{sizes[-1]} records per id, e.g. {ids[0]}"
    baseline.note = "same ids; a store of logs only has no flows: the API's fixed cost"
    results += [result, baseline]

    result = QueryResult("service + severity=error", None)
    for service in (services * repeat)[:repeat]:
        elapsed, body = api.get("/api/logs", {"service": service, "severity": "error"})
        result.seconds.append(elapsed)
        lines = body["logs"]
        if len(lines) != min(errors[service], 200) or any(
            line["service"] != service or line["severity_number"] < ERROR_SEVERITY for line in lines
        ):
            result.wrong.append(f"{service}: {len(lines)} records")
    fewest, most = min(errors.values()), max(errors.values())
    result.note = f"{len(services)} services in turn, the 200 newest of their {fewest:,}-{most:,}"
    results.append(result)

    for word, label in ((COMMON_WORD, "common"), (RARE_WORD, "rare"), (ABSENT_WORD, "absent")):
        result = QueryResult(f"q={word} ({label} word)", None)
        for _ in range(max(3, repeat // 4) if word != COMMON_WORD else repeat):
            elapsed, body = api.get("/api/logs", {"q": word})
            result.seconds.append(elapsed)
            lines = body["logs"]
            if len(lines) != min(words[word], 200) or any(word not in line["body"] for line in lines):
                result.wrong.append(f"q={word}: {len(lines)} of {words[word]} records")
        result.note = f"in {words[word]:,} records"
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------------
# The run and its report.
# ---------------------------------------------------------------------------------------------------------


def row(label: str, value: str) -> str:
    return f"  {label:<34} {value}"


def rate_line(label: str, spans: float, span_bytes: float, records: float, record_bytes: float) -> str:
    """Spans/s and records/s, the MB/s of request bodies each makes (bytes an item: its bodies' average)."""
    return (
        f"  {label:<34} {spans:>10,.0f} {spans * span_bytes / 1e6:>7.1f} {records:>11,.0f} "
        f"{records * record_bytes / 1e6:>7.1f} {records / spans:>11.2f}"
    )


def report(
    args: argparse.Namespace,
    ingested: IngestResult | None,
    store: QueryStore | None,
    queries: list[QueryResult],
    exit_codes: list[int],
    total_seconds: float,
) -> int:
    when = time.strftime("%Y-%m-%d %H:%M")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"hopscope logs benchmark ({when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]})",
        row("code", git_head()),
        row("load average at the end", load),
        row("whole run", f"{total_seconds:.0f} s"),
    ]
    lost = 0
    if ingested is not None:
        span_kib = statistics.mean(len(b) for b, _ in ingested.span_bodies) / 1024
        log_kib = statistics.mean(len(b) for b, _ in ingested.log_bodies) / 1024
        span_count = sum(n for _, n in ingested.span_bodies)
        record_count = sum(n for _, n in ingested.log_bodies)
        span_bytes = sum(len(b) for b, _ in ingested.span_bodies) / span_count
        record_bytes = sum(len(b) for b, _ in ingested.log_bodies) / record_count
        lines += [
            "ingest (OTLP/HTTP protobuf, uncompressed; a fresh collector and database per run)",
            row("requests", f"{len(ingested.span_bodies)} of each, {args.clients} keep-alive clients"),
            row(
                "span bodies",
                f"{span_count:,} spans, avg {span_kib:.0f} KiB "
                f"({span_count / len(ingested.span_bodies):.0f} spans)",
            ),
            row(
                "log bodies",
                f"{record_count:,} records, avg {log_kib:.0f} KiB "
                f"({record_count / len(ingested.log_bodies):.0f} records, "
                f"{sum(len(b) for b, _ in ingested.log_bodies) / record_count:.0f} B a record)",
            ),
            f"  {'round':<34} {'spans/s':>10} {'MB/s':>7} {'records/s':>11} {'MB/s':>7} {'logs/spans':>11}",
        ]
        for number, (spans, logs) in enumerate(zip(ingested.spans, ingested.logs, strict=True), 1):
            lines.append(rate_line(str(number), spans.rate, span_bytes, logs.rate, record_bytes))
        spans_rate = sum(r.items for r in ingested.spans) / sum(r.elapsed for r in ingested.spans)
        logs_rate = sum(r.items for r in ingested.logs) / sum(r.elapsed for r in ingested.logs)
        lines.append(rate_line("all rounds", spans_rate, span_bytes, logs_rate, record_bytes))
        ratios = sorted(
            logs.rate / spans.rate for spans, logs in zip(ingested.spans, ingested.logs, strict=True)
        )
        lines.append(
            row(
                "ratio logs/spans by round",
                f"median {statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})",
            )
        )
        if ingested.store_rates is not None:
            store_spans, store_logs = ingested.store_rates
            label = "in-process store (no HTTP)"
            lines.append(rate_line(label, store_spans, span_bytes, store_logs, record_bytes))
        for label, runs in (("spans", ingested.spans), ("log records", ingested.logs)):
            latencies = [s * 1000 for run in runs for s in run.latencies]
            acknowledged = sum(run.items for run in runs)
            stored = sum(run.stored for run in runs)
            lost += acknowledged - stored
            lines.append(
                row(
                    f"{label}: p50 / p99 latency",
                    f"{ingest.percentile(latencies, 0.5):.1f} / {ingest.percentile(latencies, 0.99):.1f} ms; "
                    f"acknowledged / stored {acknowledged:,} / {stored:,}",
                )
            )
    if store is not None:
        severities, correlation_ids = store_mix(store.db)
        fill = "reused" if store.fill_seconds is None else f"written in {store.fill_seconds:.0f} s"
        lines += [
            "query (GET over one keep-alive connection, ms)",
            row("records", f"{store.records:,} of {len(LARGE_SHOP_SERVICES)} services, {fill}"),
            row("database", f"{store.db_bytes / 1e6:,.0f} MB (file + WAL)"),
            row("severities", severities),
            row("correlation ids", correlation_ids),
            f"  {'':<34} {'median':>8} {'p95':>8} {'max':>8}  {'runs':>4}",
        ]
        for q in queries:
            p95 = ingest.percentile(q.seconds, 0.95) * 1000
            lines.append(
                f"  {q.label:<34} {q.median_ms:>8.1f} {p95:>8.1f} {q.max_ms:>8.1f}  {len(q.seconds):>4}"
                f"   {q.note}"
            )
    wrong = sum(len(q.wrong) for q in queries)
    lines.append("targets")
    if queries:
        by_id, baseline = queries[0], queries[1]
        ok = by_id.median_ms <= TARGET_CORRELATION_MS
        lines.append(
            f"  {'PASS' if ok else 'MISS'}  logs by correlation id <= {TARGET_CORRELATION_MS:.0f} ms median"
            f"      {by_id.median_ms:.1f} ({by_id.median_ms / baseline.median_ms:.1f}x the baseline)"
        )
        lines.append(f"  {'PASS' if not wrong else 'MISS'}  wrong answers == 0{'':<26}{wrong}")
    lines.append(f"  {'PASS' if not lost else 'MISS'}  lost (acknowledged - stored) == 0{'':<11}{lost}")
    for q in queries:
        for problem in q.wrong[:5]:
            lines.append(f"  wrong answer ({q.label}): {problem}")
    print("\n".join(lines), flush=True)
    return 1 if lost or any(exit_codes) else 0


def run(args: argparse.Namespace, directory: Path) -> int:
    started = time.perf_counter()
    ingested = None if args.no_ingest else measure_ingest(args, directory)
    exit_codes = [r.exit_code for r in (ingested.spans + ingested.logs)] if ingested else []
    store = None
    queries: list[QueryResult] = []
    if not args.no_query:
        store = fill_store(args, directory)
        log(f"query: {store.records:,} records; starting the collector")
        collector = ingest.Collector(store.db)
        with collector.killed_on_error():
            api = Api(collector.address)
            try:
                queries = run_queries(api, store.db, args.repeat, args.seed)
            finally:
                api.close()
            exit_codes.append(collector.stop())
    return report(args, ingested, store, queries, exit_codes, time.perf_counter() - started)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--spans",
        type=int,
        default=200_000,
        help="spans sent per round; log records fill as many requests "
        "of the same bytes (default: %(default)s)",
    )
    parser.add_argument("--batch", type=int, default=512, help="spans per request (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of spans then logs (default: %(default)s)"
    )
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="log records of the query store (default: %(default)s)"
    )
    parser.add_argument("--repeat", type=int, default=101, help="runs of each query (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the workloads (default: %(default)s)")
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="directory of the databases; logs.db is kept and reused (default: a temp dir, removed)",
    )
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest comparison")
    parser.add_argument("--no-query", action="store_true", help="skip the query part")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the in-process store figures of the ingest part"
    )
    args = parser.parse_args(argv)
    if min(args.clients, args.spans, args.batch, args.rounds, args.records, args.repeat) < 1:
        parser.error("--clients, --spans, --batch, --rounds, --records and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return ingest.in_work_directory(args.db, lambda directory: run(args, directory))


if __name__ == "__main__":
    sys.exit(main())
