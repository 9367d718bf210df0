"""One demo function in its own process, as Lambda runs each function apart (its own service name).

    python -m hopscope.demo.function NAME --moto URL --collector URL [--rate R]

orders-api's process is the traffic generator: it calls the traced handler with HTTP API events. Every
other function's process is its event source. SIGTERM or SIGINT stops the loop; spans are flushed; exit 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

FUNCTIONS = ("orders-api", "billing", "shipping", "audit", "notifier")
QUEUE_OF = {"billing": "billing", "shipping": "shipping", "notifier": "notifications"}
BURST_EVERY_S = 15.0
BURST_SECONDS = 3.0
BURST_FACTOR = 3.0


def aws_environment(moto_url: str) -> dict[str, str]:
    """What boto3 reads in every demo process: the moto server and its throwaway credentials."""
    return {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def http_api_event(order: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload v2) event for ``POST /orders``."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "POST /orders",
        "rawPath": "/orders",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "orders.example.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "demo",
            "domainName": "orders.example.com",
            "http": {
                "method": "POST",
                "path": "/orders",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "hopscope-demo",
            },
            "requestId": f"demo-{time.time_ns()}",
            "routeKey": "POST /orders",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": json.dumps(order),
        "isBase64Encoded": False,
    }


def _order(number: int) -> dict[str, Any]:
    items = [
        {"sku": f"sku-{random.randint(1, 40):03d}", "quantity": random.randint(1, 3)}
        for _ in range(random.randint(1, 4))
    ]
    return {"order_id": f"o-{number:06d}", "items": items, "total": round(random.uniform(5, 250), 2)}


def rate_at(elapsed: float, rate: float) -> float:
    """Orders per second: ``rate``, and ``BURST_FACTOR`` times it for a few seconds every so often."""
    return rate * BURST_FACTOR if elapsed % BURST_EVERY_S >= BURST_EVERY_S - BURST_SECONDS else rate


def generate_traffic(rate: float, stop: threading.Event) -> None:
    """Call the orders API at ``rate`` orders/s (with bursts) until ``stop``; now and then a bad request."""
    from hopscope.demo.lambda_runtime import LambdaContext  # noqa: PLC0415 - after the environment is set
    from hopscope.demo.orders import orders_api  # noqa: PLC0415

    start = time.monotonic()
    next_at = start
    for number in itertools.count(1):
        if stop.is_set():
            return
        body = _order(number)
        event = http_api_event(body)
        if number % 50 == 0:
            event["body"] = "{not json"  # a client's bad request: a 400
        try:
            orders_api(event, LambdaContext(function_name="orders-api"))
        except Exception:
            logging.getLogger("hopscope.demo").warning("orders-api failed", exc_info=True)
        next_at = max(next_at + 1 / rate_at(next_at - start, rate), time.monotonic() - 1)
        stop.wait(max(0.0, next_at - time.monotonic()))


def _event_source(name: str, moto_url: str) -> Any:
    """The function's event source: its queue (or audit's SNS subscription), found on the moto server."""
    from hopscope.demo import orders  # noqa: PLC0415
    from hopscope.demo.aws_setup import client, find_resources  # noqa: PLC0415
    from hopscope.demo.event_source import QueueSource, SnsSource  # noqa: PLC0415

    resources = find_resources(moto_url)
    sqs = client("sqs", moto_url)  # the runner's own client; its calls are made with instrumentation off
    handler = getattr(orders, name)
    source: QueueSource | SnsSource
    if name == "audit":
        source = SnsSource(
            sqs, resources.queue_urls["audit-delivery"], resources.audit_subscription_arn, handler, name
        )
    else:
        queue = QUEUE_OF[name]
        batch_size = 5 if name == "shipping" else 10
        source = QueueSource(
            sqs, resources.queue_urls[queue], resources.queue_arns[queue], handler, name, batch_size
        )
    return source


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hopscope.demo.function")
    parser.add_argument("name", choices=FUNCTIONS)
    parser.add_argument("--moto", required=True, metavar="URL")
    parser.add_argument("--collector", required=True, metavar="URL")
    parser.add_argument("--rate", type=float, default=5.0, help="orders/s (orders-api only)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    os.environ.update(aws_environment(args.moto))
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = args.name

    from hopscope.instrumentation import configure, flush, instrument_boto3  # noqa: PLC0415

    # looked up before instrument_boto3(): these calls are the platform's, not the function's
    source = None if args.name == "orders-api" else _event_source(args.name, args.moto)
    configure(service_name=args.name, endpoint=args.collector, logs=True)  # log lines go to the flow too
    instrument_boto3()  # the functions' publishers: SNS Publish, EventBridge PutEvents
    try:
        if source is None:
            generate_traffic(args.rate, stop)
        else:
            from hopscope.demo.event_source import run_until  # noqa: PLC0415

            run_until(source, stop)
    finally:
        flush(5000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
