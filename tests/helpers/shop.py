"""A small serverless shop for the dashboard's fixture database: each function runs in its own process, as
Lambda functions do, with its own service name, and exports its spans to a real collector.

    python tests/helpers/shop.py ROLE   (orders-api | billing | shipping), with HOPSCOPE_ENDPOINT set
    (the collector) and AWS_ENDPOINT_URL (a moto server).

orders-api takes HTTP API orders and publishes them to the SNS topic order-events; billing (envelope
delivery) charges them; shipping (raw delivery) fails order o-3 every time, so that moto moves it to
shipping-dlq after 2 receives.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.helpers
from hopscope.instrumentation import (
    configure,
    flush,
    instrument_boto3,
    process_batch,
    record_payload,
    traced_handler,
)
from tests.helpers.lambda_shapes import LambdaContext, fixture, sqs_event

ORDERS = ["o-1", "o-2", "o-3", "o-4", "o-5"]
FAILING_ORDER = "o-3"


def create_resources(sqs: Any, sns: Any) -> None:
    """The topic, the two queues and shipping's dead-letter queue (maxReceiveCount 2)."""
    topic = sns.create_topic(Name="order-events")["TopicArn"]
    dlq = sqs.create_queue(QueueName="shipping-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    for name, attributes, raw in (
        ("billing", {"VisibilityTimeout": "1"}, "false"),
        ("shipping", {"VisibilityTimeout": "1", "RedrivePolicy": policy}, "true"),
    ):
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": raw})


def orders_api(sns: Any) -> None:
    topic = sns.create_topic(Name="order-events")["TopicArn"]

    @traced_handler(correlation_id_path="body.order_id")
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        order = json.loads(event["body"])
        sns.publish(TopicArn=topic, Message=json.dumps(order))
        return {"statusCode": 201, "body": json.dumps({"order_id": order["order_id"]})}

    for order_id in ORDERS:
        event = fixture("powertools__apiGatewayProxyV2Event.json")
        event["routeKey"] = "POST /orders"
        event["requestContext"]["http"]["method"] = "POST"
        event["body"] = json.dumps({"order_id": order_id, "total": 10 * len(order_id)})
        handler(event, LambdaContext(function_name="orders-api"))


def consumer(sqs: Any, queue: str) -> None:
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    @traced_handler
    def handler(event: dict[str, Any], context: Any) -> Any:
        def record_handler(record: dict[str, Any]) -> None:
            order = record_payload(record)
            if queue == "shipping" and order["order_id"] == FAILING_ORDER:
                raise RuntimeError("carrier rejected the address")
            time.sleep(0.01)

        return process_batch(event, record_handler)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the queue is empty: done, or moved to the DLQ
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}:
            return
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=1,
        ).get("Messages", [])
        if not messages:
            continue
        response = handler(sqs_event(messages, arn), LambdaContext(function_name=queue))
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    raise SystemExit(f"{queue} did not drain in 30 s")


def main(role: str) -> int:
    configure(service_name=role)
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    if role == "orders-api":
        # only the publisher: a real consumer's polling is Lambda's, not the function's (no spans for it)
        instrument_boto3()
    if role == "setup":
        create_resources(sqs, sns)
    elif role == "orders-api":
        orders_api(sns)
    else:
        consumer(sqs, role)
    flush(10_000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
