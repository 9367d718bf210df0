"""configure(): the order of settings, the Lambda resource, the sampler, reuse, and a flush that never holds
a handler longer than its timeout. Each case runs in a fresh interpreter, since OpenTelemetry allows one
global TracerProvider per process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest

LAMBDA_ENV = {
    "AWS_REGION": "eu-west-1",
    "AWS_LAMBDA_FUNCTION_NAME": "billing",
    "AWS_LAMBDA_FUNCTION_VERSION": "7",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/28/[7]abc",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
}


def run_python(code: str, env: dict[str, str] | None = None) -> Any:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HOPSCOPE_", "AWS_", "_X_AMZN"))
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


ENDPOINT_OF_CONFIGURED = """
    import json
    from hopscope.instrumentation import configure
    provider = configure(%s)
    (processor,) = provider._active_span_processor._span_processors
    exporter = processor._batch_processor._exporter
    print(json.dumps(exporter._endpoint))
"""


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        ("", {}, "http://127.0.0.1:4318/v1/traces"),
        ("", {"HOPSCOPE_ENDPOINT": "http://h:1"}, "http://h:1/v1/traces"),
        (
            "",
            {"HOPSCOPE_ENDPOINT": "http://h:1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:2/"},
            "http://o:2/v1/traces",
        ),
        (
            "",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:2",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:3/x",
            },
            "http://t:3/x",
        ),
        (
            "endpoint='http://a:4'",
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:3/x"},
            "http://a:4/v1/traces",
        ),
    ],
)
def test_the_endpoint_is_argument_then_otel_then_hopscope_then_default(
    argument: str, env: dict[str, str], expected: str
) -> None:
    assert run_python(ENDPOINT_OF_CONFIGURED % argument, env) == expected


def test_the_resource_describes_the_lambda_function_and_the_service_name_follows_the_order() -> None:
    code = """
        import json
        from hopscope.instrumentation import configure
        print(json.dumps(dict(configure().resource.attributes)))
    """
    attributes = run_python(code, LAMBDA_ENV)
    assert attributes["service.name"] == "billing"
    assert {k: attributes[k] for k in ("cloud.provider", "cloud.region", "faas.name", "faas.version")} == {
        "cloud.provider": "aws",
        "cloud.region": "eu-west-1",
        "faas.name": "billing",
        "faas.version": "7",
    }
    assert attributes["faas.instance"] == "2026/11/28/[7]abc"
    assert attributes["faas.max_memory"] == 512 * 1024 * 1024
    assert run_python(code, {**LAMBDA_ENV, "HOPSCOPE_SERVICE_NAME": "h"})["service.name"] == "h"
    assert (
        run_python(code, {**LAMBDA_ENV, "HOPSCOPE_SERVICE_NAME": "h", "OTEL_SERVICE_NAME": "o"})[
            "service.name"
        ]
        == "o"
    )


def test_the_sampler_follows_otel_traces_sampler() -> None:
    code = """
        import json
        from hopscope.instrumentation import configure
        print(json.dumps(configure().sampler.get_description()))
    """
    assert run_python(code, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}) == (
        "TraceIdRatioBased{0.25}"
    )


def test_configure_is_idempotent_and_reuses_the_applications_provider() -> None:
    code = """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from hopscope.instrumentation import configure
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        first, second = configure(), configure(service_name="other")
        print(json.dumps([first is mine, second is mine, len(mine._active_span_processor._span_processors)]))
    """
    assert run_python(code) == [True, True, 0]
    again = """
        import json
        from hopscope.instrumentation import configure
        a = configure(); b = configure()
        print(json.dumps([a is b, len(a._active_span_processor._span_processors)]))
    """
    assert run_python(again) == [True, 1]


@pytest.fixture
def silent_collector() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a collector that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in held:
        connection.close()


UNREACHABLE = """
    import json, time
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from hopscope.instrumentation import configure, traced_handler
    if %r:  # the application's own provider, with an exporter that waits up to 10 s
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="%s/v1/traces", timeout=10)))
        trace.set_tracer_provider(provider)
        configure(flush_timeout_ms=%d)  # flushed on the flusher thread: hopscope cannot bound this exporter
    else:
        configure(endpoint="%s", flush_timeout_ms=%d)  # hopscope's exporter: bounded, flushed in the caller

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200, "body": "ok"}

    times, results = [], []
    for _ in range(3):
        start = time.perf_counter()
        results.append(handler({"x": 1}, None))
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "results": results}), flush=True)
    import os
    os._exit(0)  # skip the exit-time flush, which waits out the exporter's own timeout
"""


@pytest.mark.parametrize("kind", ["refused", "hanging", "hanging, the application's provider"])
def test_an_unreachable_collector_costs_at_most_the_flush_timeout(kind: str, silent_collector: int) -> None:
    adopted = "application" in kind
    if kind == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # closed again: connections are refused
    else:
        port = silent_collector
    timeout_ms = 300
    # The exporter's own timeout (10 s) and retries would hold an unbounded flush for many seconds.
    # OTEL_EXPORTER_OTLP_TIMEOUT only shortens the exit of the subprocess (its final flush), not the handler.
    url = f"http://127.0.0.1:{port}"
    outcome = run_python(
        UNREACHABLE % (adopted, url, timeout_ms, url, timeout_ms), {"OTEL_EXPORTER_OTLP_TIMEOUT": "2"}
    )
    assert outcome["results"] == [{"statusCode": 200, "body": "ok"}] * 3
    slack = 0.25  # the handler itself, span creation, a loaded CI machine
    assert max(outcome["times"]) <= timeout_ms / 1000 + slack, outcome["times"]


def test_log_records_name_their_trace_span_and_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry import trace

    from hopscope.instrumentation import instrument_logging, set_correlation_id, uninstrument_logging

    instrument_logging()
    try:
        with trace.get_tracer("test").start_as_current_span("work") as span, caplog.at_level(logging.INFO):
            set_correlation_id("order-9")
            logging.getLogger("app").info("charged")
        (record,) = [r for r in caplog.records if r.getMessage() == "charged"]
        assert record.trace_id == trace.format_trace_id(span.get_span_context().trace_id)  # type: ignore[attr-defined]
        assert record.span_id == trace.format_span_id(span.get_span_context().span_id)  # type: ignore[attr-defined]
        assert record.correlation_id == "order-9"  # type: ignore[attr-defined]
    finally:
        uninstrument_logging()
        from opentelemetry import context

        context.attach(context.Context())  # set_correlation_id changed this test's context: empty it


def test_a_powertools_logger_prints_the_ids_in_its_json() -> None:
    code = """
        import io, json, logging
        from aws_lambda_powertools import Logger
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from hopscope.instrumentation import instrument_powertools_logger, set_correlation_id
        trace.set_tracer_provider(TracerProvider())
        stream = io.StringIO()
        logger = Logger(service="billing", logger_handler=logging.StreamHandler(stream))
        instrument_powertools_logger(logger)
        with trace.get_tracer("t").start_as_current_span("s") as span:
            set_correlation_id("order-7")
            logger.info("charged")
        line = json.loads(stream.getvalue().splitlines()[-1])
        trace_id = format(span.get_span_context().trace_id, "032x")
        print(json.dumps([line["correlation_id"], line["trace_id"] == trace_id]))
    """
    assert run_python(code) == ["order-7", True]


def test_importing_the_instrumentation_stays_light() -> None:
    code = """
        import json, sys
        import hopscope.instrumentation
        heavy = ["boto3", "botocore", "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http",
                 "opentelemetry.instrumentation.botocore", "jmespath", "pandas", "streamlit",
                 "hopscope.collector"]
        print(json.dumps([m for m in heavy if m in sys.modules]))
    """
    assert run_python(code) == []
