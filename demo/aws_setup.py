"""The demo's AWS resources on the moto server: the topic, the queues, the bus and how they are wired.

order-events (SNS) -> billing (SQS, envelope), shipping (SQS, raw; shipping-dlq after 3 receives),
                      audit-delivery (SQS, envelope: stands for audit's SNS -> Lambda subscription)
orders (EventBridge bus) -- rule order-shipped (source orders.shipping) --> notifications (SQS)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

from hopscope.demo.lambda_runtime import REGION

TOPIC = "order-events"
BUS = "orders"
RULE = "order-shipped"
AUDIT_DELIVERY = "audit-delivery"
MAX_RECEIVE_COUNT = 3
QUEUES = ("billing", "shipping", "shipping-dlq", "notifications", AUDIT_DELIVERY)


@dataclass(frozen=True)
class Resources:
    """What the event sources and functions need to find: queue URLs and ARNs, the topic."""

    topic_arn: str
    queue_urls: dict[str, str]
    queue_arns: dict[str, str]
    audit_subscription_arn: str


def client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the moto server with its throwaway credentials."""
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts any
    )


def _queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """Create the queue; its ARN."""
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return str(arn)


def create_resources(endpoint_url: str) -> Resources:
    """Create (or find, on a second run against the same server) every resource of the demo."""
    sqs, sns, events = (client(name, endpoint_url) for name in ("sqs", "sns", "events"))
    arns: dict[str, str] = {}
    arns["shipping-dlq"] = _queue(sqs, "shipping-dlq", {})
    redrive = json.dumps({"deadLetterTargetArn": arns["shipping-dlq"], "maxReceiveCount": MAX_RECEIVE_COUNT})
    queues = {
        "billing": {"VisibilityTimeout": "10"},
        # a short visibility timeout: a failed order comes back within the demo, 3 times, then DLQ
        "shipping": {"VisibilityTimeout": "2", "RedrivePolicy": redrive},
        "notifications": {"VisibilityTimeout": "10"},
        AUDIT_DELIVERY: {"VisibilityTimeout": "10"},
    }
    for name, attributes in queues.items():
        arns[name] = _queue(sqs, name, attributes)

    topic_arn = str(sns.create_topic(Name=TOPIC)["TopicArn"])
    subscribed = {
        sub["Endpoint"] for sub in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    }
    for name, raw in (("billing", "false"), ("shipping", "true"), (AUDIT_DELIVERY, "false")):
        if arns[name] not in subscribed:
            sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=arns[name],
                Attributes={"RawMessageDelivery": raw},
            )

    if BUS not in {bus["Name"] for bus in events.list_event_buses()["EventBuses"]}:
        events.create_event_bus(Name=BUS)
    events.put_rule(
        Name=RULE,
        EventBusName=BUS,
        EventPattern=json.dumps({"source": ["orders.shipping"], "detail-type": ["OrderShipped"]}),
    )
    events.put_targets(
        Rule=RULE, EventBusName=BUS, Targets=[{"Id": "notifications", "Arn": arns["notifications"]}]
    )
    return find_resources(endpoint_url)


def find_resources(endpoint_url: str) -> Resources:
    """The resources ``create_resources`` made, looked up (read-only) by a function's process."""
    sqs, sns = client("sqs", endpoint_url), client("sns", endpoint_url)
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    for name in QUEUES:
        urls[name] = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        attributes = sqs.get_queue_attributes(QueueUrl=urls[name], AttributeNames=["QueueArn"])
        arns[name] = str(attributes["Attributes"]["QueueArn"])
    topic_arn = next(
        str(topic["TopicArn"])
        for topic in sns.list_topics()["Topics"]
        if str(topic["TopicArn"]).endswith(f":{TOPIC}")
    )
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    audit = next(sub["SubscriptionArn"] for sub in subscriptions if sub["Endpoint"] == arns[AUDIT_DELIVERY])
    return Resources(topic_arn, urls, arns, str(audit))
