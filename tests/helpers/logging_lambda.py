"""Two Lambda functions that log, each run in its own process: hopscope's ``@traced_handler`` with log
export on (``configure(logs=True)``), logging through Python ``logging`` and a Powertools ``Logger``,
exporting spans and log records over the real OTLP/HTTP exporters to a real collector, AWS on a moto server.

    python tests/helpers/logging_lambda.py ROLE SERVICE EVENTS_FILE

ROLE ``producer`` (POST /orders: two lines, then publishes the order to ``$ORDER_TOPIC_ARN``) or
``consumer`` (an SQS batch through ``process_batch``: a line per record, a Powertools line with a structured
key, and for an order ending in 9 an exception logged with ``log.exception`` before the record fails). The
process reports what vanilla_lambda.py reports (results and spans), read with its FunctionProcess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
if str(REPOSITORY) not in sys.path:  # run as a script: the repository, for tests.helpers
    sys.path.insert(0, str(REPOSITORY))

from tests.helpers.vanilla_lambda import FunctionProcess, _recorded  # noqa: E402


class CannotShipError(Exception):
    pass


def _functions(service: str) -> tuple[Any, Any]:
    import logging

    import boto3
    from aws_lambda_powertools import Logger

    from hopscope.instrumentation import (
        instrument_powertools_logger,
        process_batch,
        record_payload,
        traced_handler,
    )

    log = logging.getLogger("orders")
    log.setLevel(logging.INFO)
    powertools = Logger(service=service)
    instrument_powertools_logger(powertools)

    @traced_handler(correlation_id_path="body.order_id")
    def publish_order(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        log.info("order %s received", order["order_id"], extra={"order.total": order["total"]})
        powertools.info("publishing the order", extra={"topic": "orders"})
        boto3.client("sns").publish(TopicArn=os.environ["ORDER_TOPIC_ARN"], Message=json.dumps(order))
        return {"statusCode": 201, "body": json.dumps({"order_id": order["order_id"]})}

    def ship(record: dict[str, Any]) -> None:
        order = record_payload(record)
        log.info("shipping %s", order["order_id"])
        powertools.warning("carrier is slow", extra={"carrier": "demo-express"})
        if order["order_id"].endswith("9"):
            try:
                raise CannotShipError(f"no carrier for {order['order_id']}")
            except CannotShipError:
                log.exception("cannot ship %s", order["order_id"])
                raise

    @traced_handler
    def take_orders(event: dict[str, Any], context: Any) -> Any:
        return process_batch(event, ship, correlation_id_path="order_id")

    return publish_order, take_orders


def main(argv: list[str]) -> int:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from hopscope.instrumentation import configure, flush, instrument_boto3
    from tests.helpers.lambda_shapes import LambdaContext

    role, service, events_file = argv
    events = json.loads(Path(events_file).read_text())
    configure(service_name=service, endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"], logs=True)
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    instrument_boto3()
    publish_order, take_orders = _functions(service)
    handler = publish_order if role == "producer" else take_orders
    results = [handler(event, LambdaContext(function_name=service)) for event in events]
    assert flush(10_000), "spans and log records were not flushed"
    spans = [_recorded(span) for span in memory.get_finished_spans()]
    print(json.dumps({"results": results, "spans": spans}, default=list))
    return 0


def start_logging_function(
    role: str, service: str, events: list[dict[str, Any]], *, moto_url: str, collector_url: str, **env: str
) -> FunctionProcess:
    """Start one function's process; it invokes the handler once per event, then flushes."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(events, file)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "HOPSCOPE_", "AWS_", "_X_AMZN", "POWERTOOLS_"))
    }
    environment.update(
        {
            "PYTHONUNBUFFERED": "1",
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_LAMBDA_FUNCTION_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            **env,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, role, service, file.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=REPOSITORY,
    )
    return FunctionProcess(service, proc, Path(file.name))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
