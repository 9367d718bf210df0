"""Lambda functions, each in its own process, instrumented the vanilla OpenTelemetry way or hopscope's, that
export through the real OTLP/HTTP exporter to a real collector and call AWS on a moto server.

    python tests/helpers/vanilla_lambda.py INSTRUMENTATION ROLE SERVICE EVENTS_FILE

INSTRUMENTATION is ``vanilla`` (the SDK with a BatchSpanProcessor over OTLPSpanExporter,
``BotocoreInstrumentor`` and ``AwsLambdaInstrumentor``, set up as the OpenTelemetry Lambda layer does: the
handler found by ``_HANDLER``) or ``hopscope`` (``configure()``, ``instrument_boto3()`` on the producer,
``@traced_handler`` and ``process_batch`` on the consumer). ROLE is ``producer`` (publishes each event's
order to the SNS topic ``$ORDER_TOPIC_ARN``) or ``consumer`` (takes the orders of an SQS event). The
process runs one invocation per event of EVENTS_FILE (a JSON list), as one warm Lambda environment does,
and prints one JSON document on stdout: the handlers' results and every span it ended (ids in hex), so a
test knows exactly which spans to look for in the collector.

What AwsLambdaInstrumentor 0.66b1 does with an SQS event (``opentelemetry/instrumentation/aws_lambda``): the
invocation span (SERVER, named by the function, ``faas.trigger=pubsub``) takes its parent from the event's
``headers`` only, so an SQS invocation starts a trace of its own; beneath it one CONSUMER span
``process {queue}`` holds one link per record whose ``messageAttributes`` carry a valid W3C context, read
from Lambda's event form (``{"traceparent": {"stringValue": ..., "dataType": "String"}}``), each link with
the attribute ``messaging.message.id`` = the record's ``messageId`` (the span itself has no message id), and
``messaging.batch.message_count`` when there are several records. SNS envelope bodies are not read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

REPOSITORY = Path(__file__).resolve().parents[2]
if str(REPOSITORY) not in sys.path:  # run as a script: the repository, for tests.helpers
    sys.path.insert(0, str(REPOSITORY))

Instrumentation = Literal["vanilla", "hopscope"]
Role = Literal["producer", "consumer"]
_MODULE = "tests.helpers.vanilla_lambda"
_HANDLERS: dict[Role, str] = {"producer": "publish_order", "consumer": "take_orders"}

# ---------------------------------------------------------------------------------------------------------
# The functions' own code: what a team writes, with no tracing in it.

_clients: dict[str, Any] = {}


def _sns() -> Any:
    if "sns" not in _clients:
        import boto3

        _clients["sns"] = boto3.client("sns")  # AWS_ENDPOINT_URL: the moto server
    return _clients["sns"]


def publish_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """POST /orders: announce the order on the order topic."""
    order = json.loads(event["body"])
    _sns().publish(TopicArn=os.environ["ORDER_TOPIC_ARN"], Message=json.dumps(order))
    return {"statusCode": 201, "body": json.dumps({"order_id": order["order_id"]})}


def take_orders(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An SQS batch of raw-delivered orders: the order ids it took, in record order."""
    return {"orders": [json.loads(record["body"])["order_id"] for record in event["Records"]]}


# ---------------------------------------------------------------------------------------------------------
# The process: instrumentation set up as each way documents it, then one invocation per event.


def _vanilla_handler(role: Role, service: str, memory: Any) -> tuple[Callable[..., Any], Callable[[], None]]:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # OTEL_EXPORTER_OTLP_ENDPOINT
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    os.environ["_HANDLER"] = f"{_MODULE}.{_HANDLERS[role]}"
    AwsLambdaInstrumentor().instrument(tracer_provider=provider)
    # the instrumentor wrapped the module's attribute: read it only now
    handler = getattr(import_module(_MODULE), _HANDLERS[role])
    assert hasattr(handler, "__wrapped__"), "AwsLambdaInstrumentor did not wrap the handler"

    def finish() -> None:
        assert provider.force_flush(10_000), "the vanilla provider did not flush"
        provider.shutdown()

    return handler, finish


def _hopscope_handler(
    role: Role, service: str, collector: str, memory: Any
) -> tuple[Callable[..., Any], Callable[[], None]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from hopscope.instrumentation import (
        configure,
        flush,
        instrument_boto3,
        process_batch,
        record_payload,
        traced_handler,
    )

    configure(service_name=service, endpoint=collector)
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]

    def finish() -> None:
        assert flush(10_000), "hopscope's provider did not flush"

    if role == "producer":
        instrument_boto3()
        return traced_handler(correlation_id_path="body.order_id")(publish_order), finish

    @traced_handler
    def consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
        taken: list[str] = []
        response = process_batch(
            event,
            lambda record: taken.append(record_payload(record)["order_id"]),
            correlation_id_path="order_id",
        )
        return {**response, "orders": taken}

    return consumer, finish


def _recorded(span: Any) -> dict[str, Any]:
    """A finished SDK span as JSON: what the test needs to find it in the collector's answers."""
    return {
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
    }


def main(argv: list[str]) -> int:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.helpers.lambda_shapes import LambdaContext

    instrumentation, role, service, events_file = argv
    assert role in ("producer", "consumer"), role
    events = json.loads(Path(events_file).read_text())
    memory = InMemorySpanExporter()
    if instrumentation == "vanilla":
        handler, finish = _vanilla_handler(role, service, memory)  # type: ignore[arg-type]
    else:
        collector = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        handler, finish = _hopscope_handler(role, service, collector, memory)  # type: ignore[arg-type]
    results = [handler(event, LambdaContext(function_name=service)) for event in events]
    finish()
    spans = [_recorded(span) for span in memory.get_finished_spans()]
    print(json.dumps({"results": results, "spans": spans}, default=list))
    return 0


# ---------------------------------------------------------------------------------------------------------
# The test's side: start such processes, read what they report.


@dataclass(frozen=True)
class RecordedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class RecordedSpan:
    """A span one function process ended, as it reported it."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # SERVER, CONSUMER, PRODUCER, ...
    service: str
    attributes: dict[str, Any]
    links: tuple[RecordedLink, ...] = ()

    @property
    def ref(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)


@dataclass
class FunctionRun:
    """What one function process reported: each invocation's result and every span it ended."""

    results: list[Any]
    spans: list[RecordedSpan]

    def spans_of(self, kind: str, name: str | None = None) -> list[RecordedSpan]:
        return [s for s in self.spans if s.kind == kind and (name is None or s.name == name)]


@dataclass
class FunctionProcess:
    """One Lambda function's process, started; ``result()`` waits for it and parses its report."""

    service: str
    proc: subprocess.Popen[str]
    events_file: Path
    _run: FunctionRun | None = field(default=None, init=False)

    def result(self, timeout: float = 60) -> FunctionRun:
        if self._run is None:
            try:
                stdout, stderr = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                stdout, stderr = self.proc.communicate()
                raise AssertionError(f"{self.service} ran over {timeout} s:\n{stderr}") from None
            finally:
                self.events_file.unlink(missing_ok=True)
            assert self.proc.returncode == 0, f"{self.service} exited {self.proc.returncode}:\n{stderr}"
            report = json.loads(stdout.strip().splitlines()[-1])
            self._run = FunctionRun(
                results=report["results"],
                spans=[
                    RecordedSpan(
                        **{k: v for k, v in span.items() if k != "links"},
                        links=tuple(RecordedLink(**link) for link in span["links"]),
                    )
                    for span in report["spans"]
                ],
            )
        return self._run

    def kill(self) -> None:
        """Stop the process if it still runs (a test that failed before reading its result)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.events_file.unlink(missing_ok=True)


def start_function(
    instrumentation: Instrumentation,
    role: Role,
    service: str,
    events: list[dict[str, Any]],
    *,
    moto_url: str,
    collector_url: str,
    env: dict[str, str] | None = None,
) -> FunctionProcess:
    """Start one function's process (each function in its own, as on Lambda); it invokes the handler once
    per event. ``env`` adds variables, e.g. ``ORDER_TOPIC_ARN`` for the producer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(events, file)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "HOPSCOPE_", "AWS_", "_X_AMZN"))
    }
    environment.update(
        {
            "PYTHONUNBUFFERED": "1",
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": service,  # AwsLambdaInstrumentor instruments only "on Lambda"
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "OTEL_PROPAGATORS": "tracecontext,baggage",
            "OTEL_INSTRUMENTATION_AWS_LAMBDA_FLUSH_TIMEOUT": "10000",
            **(env or {}),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, instrumentation, role, service, file.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=REPOSITORY,
    )
    return FunctionProcess(service, proc, Path(file.name))


def wait_until_stored(http: Any, spans: Iterable[RecordedSpan], timeout: float = 20) -> None:
    """Until the collector answers every one of these spans in its trace (``http`` an httpx.Client)."""
    wanted: dict[str, set[str]] = {}
    for span in spans:
        wanted.setdefault(span.trace_id, set()).add(span.span_id)
    deadline = time.monotonic() + timeout
    for trace_id, span_ids in wanted.items():
        while True:
            answer = http.get(f"/api/traces/{trace_id}")
            stored: set[str] = set()
            if answer.status_code == 200:
                for resource in answer.json()["resourceSpans"]:
                    for scope in resource["scopeSpans"]:
                        stored.update(s["spanId"] for s in scope["spans"])
            if span_ids <= stored:
                break
            assert time.monotonic() < deadline, f"trace {trace_id}: spans {span_ids - stored} never arrived"
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
