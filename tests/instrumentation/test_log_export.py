"""configure(logs=...): Python ``logging`` and Powertools ``Logger`` records exported over OTLP/HTTP with the
invocation's trace context, correlation id, level, logger name, exception and structured fields, flushed
with the spans at the end of each invocation within the one flush timeout.

Each case runs the real SDK and its real OTLP/HTTP exporters in a fresh interpreter (one global provider per
process) against a small OTLP receiver in a thread of the test, which decodes ExportLogsServiceRequest and
ExportTraceServiceRequest protobuf. The receiver stands in for the collector because the collector's
``/v1/logs`` was being built at the same time (issue 18); the end-to-end test against the collector belongs
with it.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hopscope.instrumentation.config import logs_endpoint


class Receiver:
    """What an OTLP/HTTP receiver got: the log records (with their scope and resource) and the spans."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []
        self.log_requests = 0
        self.authorization: set[tuple[str, str | None]] = set()  # (path, Authorization header)
        self.url = ""
        self.lock = threading.Lock()

    def take(self, path: str, body: bytes) -> None:
        with self.lock:
            if path == "/v1/logs":
                self.log_requests += 1
                request = ExportLogsServiceRequest.FromString(body)
                for resource_logs in request.resource_logs:
                    resource = _attributes(MessageToDict(resource_logs.resource))
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            self.logs.append(
                                {
                                    "scope": scope_logs.scope.name,
                                    "resource": resource,
                                    "trace_id": record.trace_id.hex(),
                                    "span_id": record.span_id.hex(),
                                    "severity_number": record.severity_number,
                                    "severity_text": record.severity_text,
                                    "body": record.body.string_value,
                                    "attributes": _attributes(MessageToDict(record)),
                                }
                            )
            elif path == "/v1/traces":
                request_spans = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request_spans.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            self.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "attributes": _attributes(MessageToDict(span)),
                                }
                            )


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    """OTLP attributes as plain values (kvlist and array values as dicts and lists)."""
    return {item["key"]: _value(item.get("value", {})) for item in message.get("attributes", [])}


def _value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return value["doubleValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "kvlistValue" in value:
        return {item["key"]: _value(item["value"]) for item in value["kvlistValue"].get("values", [])}
    if "arrayValue" in value:
        return [_value(item) for item in value["arrayValue"].get("values", [])]
    return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.authorization.add((self.path, self.headers.get("Authorization")))
            received.take(self.path, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


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


FUNCTION = """
    import json, logging, os, sys
    from aws_lambda_powertools import Logger
    from hopscope.instrumentation import (
        configure, instrument_logging, instrument_powertools_logger, traced_handler,
    )

    logging.getLogger().setLevel(logging.DEBUG)  # urllib3's connection lines too, which must not be exported
    instrument_logging()  # annotates every record (trace_id, span_id, correlation_id): no stray attributes
    early = Logger(service="payments")  # made before log export: its records reach the root handler too
    instrument_powertools_logger(early)
    CONFIGURE
    late = Logger(service="billing")  # made after: Powertools filters its records out of the root handlers
    instrument_powertools_logger(late)
    app = logging.getLogger("orders.app")

    @traced_handler(correlation_id_path="order_id")
    def handler(event, context):
        app.info("charged %s", event["order_id"], extra={"amount_cents": 1250, "order": {"sku": "a-1"}})
        early.info("authorised", extra={"card": "visa"})
        late.append_keys(tenant="acme")
        late.warning("invoiced", extra={"invoice": "inv-9"})
        try:
            raise ValueError("card declined")
        except ValueError:
            app.exception("payment failed")
        return {"ok": event["order_id"]}

    results = [handler({"order_id": order}, None) for order in ("o-1", "o-2")]
    print(json.dumps({"results": results, "logs_sdk": "opentelemetry.sdk._logs" in sys.modules}), flush=True)
    os._exit(0)  # skip the exit-time flush: what arrived was sent by the flush at the end of each invocation
"""


def run_function(configure: str, env: dict[str, str] | None = None) -> Any:
    return run_python(FUNCTION.replace("CONFIGURE", configure), env)


def test_every_record_arrives_once_with_the_invocation_context(receiver: Receiver) -> None:
    outcome = run_function(f"configure(service_name='checkout', endpoint={receiver.url!r}, logs=True)")
    assert outcome["results"] == [{"ok": "o-1"}, {"ok": "o-2"}]
    invocations = {s["attributes"]["hopscope.correlation_id"]: s for s in receiver.spans}
    assert set(invocations) == {"o-1", "o-2"}
    scopes = sorted({r["scope"] for r in receiver.logs})
    # Neither the exporter's urllib3 lines nor the SDK's own records were exported (root logs at DEBUG).
    assert scopes == ["billing", "orders.app", "payments"], scopes
    bodies = sorted(
        (r["attributes"]["hopscope.correlation_id"], r["scope"], r["body"]) for r in receiver.logs
    )
    assert bodies == sorted(
        (order, scope, body)
        for order in ("o-1", "o-2")
        for scope, body in [
            ("orders.app", f"charged {order}"),
            ("payments", "authorised"),
            ("billing", "invoiced"),
            ("orders.app", "payment failed"),
        ]
    ), "each record exactly once"
    for record in receiver.logs:
        span = invocations[record["attributes"]["hopscope.correlation_id"]]
        assert (record["trace_id"], record["span_id"]) == (span["trace_id"], span["span_id"])
        assert record["resource"]["service.name"] == "checkout"
        # hopscope's own annotation is in the record's fields, not repeated as attributes
        assert not {"trace_id", "span_id", "correlation_id"} & set(record["attributes"])
        assert record["attributes"]["code.function.name"] == "handler"

    def one(order: str, body: str) -> dict[str, Any]:
        (found,) = [
            r
            for r in receiver.logs
            if r["body"] == body and r["attributes"]["hopscope.correlation_id"] == order
        ]
        return found

    charged = one("o-1", "charged o-1")
    assert (charged["severity_number"], charged["severity_text"]) == (9, "INFO")
    assert charged["attributes"]["amount_cents"] == 1250
    assert charged["attributes"]["order"] == {"sku": "a-1"}
    failed = one("o-2", "payment failed")
    assert (failed["severity_number"], failed["severity_text"]) == (17, "ERROR")
    assert failed["attributes"]["exception.type"] == "ValueError"
    assert failed["attributes"]["exception.message"] == "card declined"
    stacktrace = failed["attributes"]["exception.stacktrace"]
    assert stacktrace.startswith("Traceback") and "in handler" in stacktrace, stacktrace
    assert one("o-1", "authorised")["attributes"]["card"] == "visa"
    invoiced = one("o-2", "invoiced")
    assert (invoiced["severity_number"], invoiced["severity_text"]) == (13, "WARN")
    assert invoiced["attributes"]["invoice"] == "inv-9"
    assert invoiced["attributes"]["tenant"] == "acme"  # append_keys: Powertools keeps them in its formatter
    assert invoiced["attributes"]["service"] == "billing"


def test_otel_logs_exporter_turns_export_on_and_the_default_is_off(receiver: Receiver) -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    off = run_function("configure()", endpoint)
    assert off["logs_sdk"] is False  # logs off: the logs SDK is not even imported
    assert len(receiver.spans) == 2
    assert receiver.logs == []
    assert (
        run_function("configure(logs=False)", {**endpoint, "OTEL_LOGS_EXPORTER": "otlp"})["logs_sdk"] is False
    )
    assert receiver.logs == []  # the argument wins
    # Not even configure(): the handler configures with the defaults, and the variable turns logs on.
    receiver.authorization.clear()
    run_function("", {**endpoint, "OTEL_LOGS_EXPORTER": "otlp", "HOPSCOPE_AUTH_TOKEN": "s3cret"})
    assert len(receiver.logs) == 8
    assert receiver.log_requests == 2  # one export per invocation, at its end
    assert receiver.authorization == {(p, "Bearer s3cret") for p in ("/v1/logs", "/v1/traces")}


def test_outside_an_invocation_a_powertools_correlation_id_is_the_one_correlation_id(
    receiver: Receiver,
) -> None:
    code = f"""
        import json, logging, os
        from aws_lambda_powertools import Logger
        from hopscope.instrumentation import configure, flush, instrument_logging
        from hopscope.instrumentation import instrument_powertools_logger
        instrument_logging()
        configure(endpoint={receiver.url!r}, logs=True)
        logging.getLogger().setLevel(logging.INFO)
        powertools = Logger(service="billing")
        instrument_powertools_logger(powertools)
        powertools.set_correlation_id("pt-7")
        powertools.info("outside")
        logging.getLogger("app").info("no flow")
        print(json.dumps(flush()), flush=True)
        os._exit(0)
    """
    assert run_python(code) is True
    by_body = {r["body"]: r for r in receiver.logs}
    assert set(by_body) == {"outside", "no flow"}
    outside = by_body["outside"]
    assert outside["attributes"]["hopscope.correlation_id"] == "pt-7"
    assert "correlation_id" not in outside["attributes"]
    assert (outside["trace_id"], outside["span_id"]) == ("", "")
    assert not {"hopscope.correlation_id", "correlation_id", "trace_id"} & set(
        by_body["no flow"]["attributes"]
    )


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        (None, {}, "http://127.0.0.1:4318/v1/logs"),
        (None, {"HOPSCOPE_ENDPOINT": "http://h:1"}, "http://h:1/v1/logs"),
        (
            None,
            {"HOPSCOPE_ENDPOINT": "http://h:1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:2/"},
            "http://o:2/v1/logs",
        ),
        (
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:2", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:3/x"},
            "http://l:3/x",
        ),
        ("http://a:4", {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:3/x"}, "http://a:4/v1/logs"),
        ("http://a:4/v1/traces", {}, "http://a:4/v1/logs"),
    ],
)
def test_the_logs_endpoint_follows_the_order_of_the_traces_endpoint(
    argument: str | None, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HOPSCOPE_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert logs_endpoint(argument) == expected


def test_configure_reuses_the_applications_logger_provider_and_is_idempotent() -> None:
    code = """
        import json, logging
        from opentelemetry import _logs
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from hopscope.instrumentation import configure
        mine = LoggerProvider()
        _logs.set_logger_provider(mine)
        configure(logs=True); configure(logs=True)
        root = [h for h in logging.getLogger().handlers if isinstance(h, LoggingHandler)]
        names = [type(p).__name__ for p in mine._multi_log_record_processor._log_record_processors]
        print(json.dumps([len(root), root[0]._logger_provider is mine, names]))
    """
    # No endpoint given: the application's exporters only (hopscope's marker notes records to flush)
    assert run_python(code) == [1, True, ["PendingMarker"]]


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


@pytest.mark.parametrize("later", [False, True], ids=["one configure", "logs turned on later"])
def test_spans_and_logs_share_one_flush_timeout_when_the_collector_hangs(
    silent_collector: int, later: bool
) -> None:
    # Turned on together, each exporter gets half the timeout and both flush on the calling thread; turned
    # on later, the span exporter has the whole timeout already and the logs go to the flusher thread.
    code = """
        import json, logging, os, time
        from hopscope.instrumentation import configure, traced_handler
        endpoint = "http://127.0.0.1:%d"
        if %r:
            configure(endpoint=endpoint, flush_timeout_ms=%d)
            configure(endpoint=endpoint, logs=True)
        else:
            configure(endpoint=endpoint, flush_timeout_ms=%d, logs=True)
        logging.getLogger().setLevel(logging.INFO)

        @traced_handler
        def handler(event, context):
            logging.getLogger("app").info("working")
            return "ok"

        times, results = [], []
        for _ in range(3):
            start = time.perf_counter()
            results.append(handler({"x": 1}, None))
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, "results": results}), flush=True)
        os._exit(0)
    """
    timeout_ms = 400
    outcome = run_python(
        code % (silent_collector, later, timeout_ms, timeout_ms), {"OTEL_EXPORTER_OTLP_TIMEOUT": "2"}
    )
    assert outcome["results"] == ["ok"] * 3
    # Spans and logs each wait out the exporter's timeout (the flush timeout): in a row that would be twice.
    slack = 0.25
    assert max(outcome["times"]) <= timeout_ms / 1000 + slack, outcome["times"]
