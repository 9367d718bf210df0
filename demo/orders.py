"""The demo's "orders" system: five Lambda handlers traced with hopscope's public API, nothing else.

    orders_api  POST /orders -> SNS order-events
    billing     SQS billing (SNS envelope delivery), batches of up to 10, now and then slow
    shipping    SQS shipping (raw delivery), fails some orders; shipped ones go to the EventBridge bus
    audit       subscribed to order-events directly (SNS -> Lambda)
    notifier    EventBridge rule on the orders bus -> SQS notifications

They read the AWS endpoint and credentials from the environment, as boto3 does in Lambda, and log through
Python ``logging``: with log export on (the demo turns it on), each line reaches the collector in its span.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
from typing import Any

import boto3

from hopscope.instrumentation import get_correlation_id, process_batch, record_payload, traced_handler

log = logging.getLogger("orders")

REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
ACCOUNT = "123456789012"  # moto's default account
TOPIC_ARN = os.environ.get("ORDER_EVENTS_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:order-events")
EVENT_BUS = "orders"


@functools.cache
def _client(service: str) -> Any:
    """One client per service and process, created on first use (as a Lambda's module-level client)."""
    return boto3.client(service)


class TransientError(Exception):
    """A failure that a retry may not see: the message is redelivered."""


class PermanentError(Exception):
    """A failure that every retry sees: after 3 receives the message moves to shipping-dlq."""


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def _valid_order(body: Any) -> dict[str, Any] | None:
    """The order in an HTTP body, or None when it is not an order."""
    try:
        order = json.loads(body or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
        return None
    if not isinstance(order.get("items"), list) or not isinstance(order.get("total"), (int, float)):
        return None
    return order


@traced_handler(correlation_id_path="body.order_id")
def orders_api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """POST /orders: accept an order and announce it on the order-events topic."""
    order = _valid_order(event.get("body"))
    if order is None:
        return _response(400, {"error": "expected {order_id, items, total}"})
    log.info("order %s accepted: %d items, %.2f", order["order_id"], len(order["items"]), order["total"])
    _client("sns").publish(TopicArn=TOPIC_ARN, Message=json.dumps(order), Subject="OrderPlaced")
    return _response(201, {"order_id": order["order_id"]})


def _charge(record: dict[str, Any]) -> None:
    order = record_payload(record)  # the order inside the SNS envelope
    time.sleep(random.uniform(0.08, 0.12))  # the payment provider: ~9 orders/s, so bursts queue up
    if random.random() < 0.05:
        time.sleep(random.uniform(0.05, 0.3))  # and now and then it is slow
    log.info("charged %s: %.2f", order["order_id"], order["total"])


@traced_handler
def billing(event: dict[str, Any], context: Any) -> Any:
    """Charge each order of a batch; a failed record is redelivered alone."""
    return process_batch(event, _charge, correlation_id_path="order_id")


def _ship(record: dict[str, Any]) -> None:
    order = record_payload(record)  # raw delivery: the body is the order itself
    receives = record.get("attributes", {}).get("ApproximateReceiveCount", "1")
    if order["order_id"].endswith("7"):
        log.error("no carrier delivers to the address of %s (receive %s of 3)", order["order_id"], receives)
        raise PermanentError(f"no carrier delivers to the address of {order['order_id']}")
    if random.random() < 0.15:
        log.warning("carrier API timed out for %s; SQS will deliver it again", order["order_id"])
        raise TransientError("carrier API timed out")
    log.info("shipping %s with demo-express", order["order_id"], extra={"carrier": "demo-express"})
    detail = {"order_id": order["order_id"], "items": len(order["items"]), "carrier": "demo-express"}
    _client("events").put_events(
        Entries=[
            {
                "EventBusName": EVENT_BUS,
                "Source": "orders.shipping",
                "DetailType": "OrderShipped",
                "Detail": json.dumps(detail),
            }
        ]
    )


@traced_handler
def shipping(event: dict[str, Any], context: Any) -> Any:
    """Ship each order and announce it on the orders bus; failures come back by redelivery."""
    return process_batch(event, _ship, correlation_id_path="order_id")


@traced_handler(correlation_id_path="order_id")
def audit(event: dict[str, Any], context: Any) -> None:
    """Keep a record of every order event (SNS invokes it with one notification at a time)."""
    order = record_payload(event["Records"][0])
    log.info("audit: order %s placed (correlation id %s)", order["order_id"], get_correlation_id())


def _notify(record: dict[str, Any]) -> None:
    shipped = record_payload(record)  # the EventBridge event's detail
    log.info("notify: order %s shipped with %s", shipped["order_id"], shipped["carrier"])


@traced_handler
def notifier(event: dict[str, Any], context: Any) -> Any:
    """Tell the customer their order shipped."""
    return process_batch(event, _notify, correlation_id_path="order_id")
