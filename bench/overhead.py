"""Per-invocation overhead of hopscope's instrumentation, against baselines measured in the same run.

(a) an HTTP API (v2) event: ``@traced_handler`` vs opentelemetry-instrumentation-aws-lambda, each minus the
    bare handler. Target: hopscope's overhead <= 1.0x OpenTelemetry's.
(b) a 10-record SQS batch through ``process_batch`` vs the same spans (same names, kinds, attributes, links,
    context made current per record) created through the raw OpenTelemetry API. Target: <= 1.5x.
(c) a cold ``import hopscope.instrumentation`` vs importing ``opentelemetry.sdk.trace`` plus the OTLP/HTTP
    exporter, each in a fresh interpreter minus an empty one. Target: <= 1.3x.
(d) (a) with one log line per invocation, exported: hopscope's ``configure(logs=...)`` (the SDK's
    LoggingHandler on the root logger, a flush of the LoggerProvider with the spans) vs the SDK's
    LoggingHandler on the same LoggerProvider beside the OpenTelemetry instrumentation, flushed after each
    invocation (that instrumentation flushes only the tracer and meter providers), each minus the bare
    handler logging the same line to a logger that exports nothing. Target: <= 1.0x, as (a).

Spans go to an in-memory exporter through the BatchSpanProcessor that ``configure(span_exporter=...)``
builds, log records to an in-memory one through the BatchLogRecordProcessor of ``configure(log_exporter=
...)``; the OpenTelemetry instrumentation gets the same providers, and both flush them at the end of every
invocation, as in production. The variants run interleaved, in rounds,
and each figure is the median over rounds, so that machine noise hits all of them alike.

    .venv/bin/python bench/overhead.py [--rounds 15] [--invocations 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "lambda-events"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Context:
    """The attributes of the Lambda runtime's context object that both instrumentations read."""

    function_name = "orders-api"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:orders-api"
    client_context = None

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_event() -> dict[str, Any]:
    event = json.loads((FIXTURES / "powertools__apiGatewayProxyV2Event.json").read_text())
    event["headers"]["traceparent"] = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    return event  # type: ignore[no-any-return]


def sqs_batch() -> dict[str, Any]:
    template = json.loads((FIXTURES / "powertools__sqsEvent.json").read_text())["Records"][0]
    records = []
    for index in range(10):
        record = json.loads(json.dumps(template))
        record["messageId"] = str(uuid.uuid4())
        record["attributes"]["SentTimestamp"] = str(int(time.time() * 1000) - 50)
        record["messageAttributes"] = {
            "traceparent": {"stringValue": f"00-{TRACE_ID}-{index + 1:016x}-01", "dataType": "String"},
            "baggage": {"stringValue": f"hopscope.correlation_id=order-{index}", "dataType": "String"},
        }
        records.append(record)
    return {"Records": records}


def time_per_call(function: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        function()
    return (time.perf_counter_ns() - start) / calls / 1000  # microseconds


def raw_batch(tracer: trace.Tracer, event: dict[str, Any], record_handler: Callable[[Any], Any]) -> None:
    """The baseline of (b): what process_batch records, written directly against the OpenTelemetry API."""
    for record in event["Records"]:
        now_ns = time.time_ns()
        carrier = {k: v["stringValue"] for k, v in record["messageAttributes"].items()}
        producer = extract(carrier)
        correlation_id = carrier["baggage"].split("=", 1)[1]
        attributes = {
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "hopscope.correlation_id": correlation_id,
            "messaging.message.conversation_id": correlation_id,
            "messaging.system": "aws_sqs",
            "messaging.destination.name": record["eventSourceARN"].rsplit(":", 1)[1],
            "messaging.message.id": record["messageId"],
            "hopscope.receive_count": int(record["attributes"]["ApproximateReceiveCount"]),
            "hopscope.queue_wait_ms": now_ns / 1e6 - float(record["attributes"]["SentTimestamp"]),
        }
        link = Link(trace.get_current_span(producer).get_span_context(), attributes)
        span = tracer.start_span(
            "process my-queue", None, SpanKind.CONSUMER, attributes, [link], start_time=now_ns
        )
        token = otel_context.attach(trace.set_span_in_context(span, producer))
        try:
            record_handler(record)
        finally:
            otel_context.detach(token)
            span.end()


def import_seconds(statement: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def logging_handler(log: logging.Logger) -> Callable[[Any, Any], Any]:
    """The handler of (d): the bare body plus one log line with a structured field."""
    import overhead_handlers

    def handler(event: Any, context: Any) -> Any:
        log.info("order %s charged", "o-1", extra={"amount_cents": 1250})
        return overhead_handlers.RESPONSE

    return handler


def quiet_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A logger at INFO that does not reach the root logger's handlers (hopscope's exporting one)."""
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--import-runs", type=int, default=15)
    args = parser.parse_args(argv)

    exporter = InMemorySpanExporter()
    os.environ["_HANDLER"] = "overhead_handlers.for_opentelemetry"
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "orders-api")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import overhead_handlers
    from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider

    from hopscope.instrumentation import configure, process_batch, traced_handler

    # A real MeterProvider (no readers): the instrumentor flushes it on every invocation, as in production.
    # One pipeline for both: hopscope's (a BatchSpanProcessor into the in-memory exporter), which the
    # OpenTelemetry instrumentation is given as its tracer provider. Both flush it on every invocation.
    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogs
    except ImportError:  # its name before SDK 1.39
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemoryLogs
    import warnings

    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggingHandler

    log_exporter = InMemoryLogs()
    provider = configure(span_exporter=exporter, log_exporter=log_exporter)
    logger_provider: Any = _logs.get_logger_provider()
    AwsLambdaInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider())
    hopscope_handler = traced_handler(overhead_handlers.for_hopscope)
    otel_handler = overhead_handlers.for_opentelemetry
    bare_handler = overhead_handlers.bare
    # (d): hopscope's logger reaches the root logger, where configure() put its handler; the others do not.
    hopscope_log = logging.getLogger("bench.hopscope")
    hopscope_log.setLevel(logging.INFO)
    with warnings.catch_warnings():  # the SDK marks its handler deprecated; it is still what users attach
        warnings.simplefilter("ignore", DeprecationWarning)
        otel_log = quiet_logger("bench.opentelemetry", LoggingHandler(logger_provider=logger_provider))
    bare_logging = logging_handler(quiet_logger("bench.bare", logging.NullHandler()))
    hopscope_logging = traced_handler(logging_handler(hopscope_log))
    otel_logging = logging_handler(otel_log)
    event, batch, tracer = http_event(), sqs_batch(), trace.get_tracer("bench")
    ctx = Context()

    def noop(record: Any) -> None:
        return None

    variants: dict[str, Callable[[], Any]] = {
        "bare handler": lambda: bare_handler(event, ctx),
        "opentelemetry aws-lambda": lambda: otel_handler(event, ctx),
        "hopscope traced_handler": lambda: hopscope_handler(event, ctx),
        # Each batch ends with a flush, as the invocation around it would (and the queue never overflows).
        "raw OpenTelemetry API batch": lambda: (raw_batch(tracer, batch, noop), provider.force_flush()),
        "hopscope process_batch": lambda: (process_batch(batch, noop), provider.force_flush()),
        "bare handler + 1 log line": lambda: bare_logging(event, ctx),
        # The line is logged before the instrumented handler (whose body is fixed), so it has no span.
        "opentelemetry + 1 log line": lambda: (
            otel_logging(None, None),
            otel_handler(event, ctx),
            logger_provider.force_flush(),
        ),
        "hopscope + 1 log line": lambda: hopscope_logging(event, ctx),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for function in variants.values():  # warm up
        time_per_call(function, 200)
    for _ in range(args.rounds):
        for name, function in variants.items():
            samples[name].append(time_per_call(function, args.invocations))
            exporter.clear()
            log_exporter.clear()
    median = {name: statistics.median(values) for name, values in samples.items()}
    bare = median["bare handler"]
    otel_overhead = median["opentelemetry aws-lambda"] - bare
    hopscope_overhead = median["hopscope traced_handler"] - bare
    print(f"{'variant':32} {'µs per call (median of rounds)':>32}")
    for name, value in median.items():
        print(f"{name:32} {value:32.1f}")
    ratio_a = hopscope_overhead / otel_overhead
    ratio_b = median["hopscope process_batch"] / median["raw OpenTelemetry API batch"]
    bare_logging_us = median["bare handler + 1 log line"]
    otel_logging_overhead = median["opentelemetry + 1 log line"] - bare_logging_us
    hopscope_logging_overhead = median["hopscope + 1 log line"] - bare_logging_us
    ratio_d = hopscope_logging_overhead / otel_logging_overhead

    empty = import_seconds("pass", args.import_runs)
    sdk = import_seconds(
        "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter",
        args.import_runs,
    )
    ours = import_seconds("import hopscope.instrumentation", args.import_runs)
    ratio_c = (ours - empty) / (sdk - empty)
    verdict = {True: "PASS", False: "MISS"}
    hop_batch, raw = median["hopscope process_batch"], median["raw OpenTelemetry API batch"]
    print()
    print(
        f"(a) HTTP API v2 overhead: hopscope {hopscope_overhead:.1f} µs vs OpenTelemetry"
        f" {otel_overhead:.1f} µs"
        f" -> ratio {ratio_a:.2f} (target <= 1.0) {verdict[ratio_a <= 1.0]}"
    )
    print(
        f"(b) 10-record SQS batch: process_batch {hop_batch:.1f} µs vs raw API {raw:.1f} µs"
        f" -> ratio {ratio_b:.2f} (target <= 1.5) {verdict[ratio_b <= 1.5]}"
    )
    print(
        f"(c) cold import: hopscope.instrumentation {1000 * (ours - empty):.1f} ms"
        f" vs SDK + OTLP/HTTP exporter"
        f" {1000 * (sdk - empty):.1f} ms (interpreter start {1000 * empty:.1f} ms subtracted)"
        f" -> ratio {ratio_c:.2f} (target <= 1.3) {verdict[ratio_c <= 1.3]}"
    )
    print(
        f"(d) HTTP API v2 + 1 exported log line, overhead: hopscope {hopscope_logging_overhead:.1f} µs vs"
        f" OpenTelemetry {otel_logging_overhead:.1f} µs -> ratio {ratio_d:.2f} (target <= 1.0)"
        f" {verdict[ratio_d <= 1.0]}; the line costs hopscope"
        f" {median['hopscope + 1 log line'] - median['hopscope traced_handler']:.1f} µs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
