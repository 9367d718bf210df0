"""The least privilege hopscope needs on AWS: read-only monitoring, and the actions a redrive adds.

The README's policies are these lists (a test checks), and the collector's poller and the DLQ peek call
nothing outside ``READ_ONLY_ACTIONS`` (tests check that too).
"""

from __future__ import annotations

import json

READ_ONLY_ACTIONS: tuple[str, ...] = (
    "sqs:ListQueues",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
    "sqs:ListDeadLetterSourceQueues",
    "sqs:ReceiveMessage",  # the peek: receive, then visibility back to 0; never a delete
    "sqs:ChangeMessageVisibility",
    "cloudwatch:GetMetricData",  # ApproximateAgeOfOldestMessage
)

REDRIVE_ACTIONS: tuple[str, ...] = (
    "sqs:SendMessage",
    "sqs:DeleteMessage",
    "sqs:PurgeQueue",
    "sqs:StartMessageMoveTask",
    "sqs:ListMessageMoveTasks",
    "sqs:CancelMessageMoveTask",
)


def policy(actions: tuple[str, ...]) -> str:
    """An IAM policy document allowing ``actions`` on every resource (narrow ``Resource`` to your queues)."""
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
    }
    return json.dumps(document, indent=2)


def operation_action(service: str, operation: str) -> str:
    """The IAM action of a boto3 operation: ``("sqs", "ReceiveMessage")`` -> ``sqs:ReceiveMessage``."""
    prefix = {"SQS": "sqs", "CloudWatch": "cloudwatch"}.get(service, service.lower())
    batch = operation.removesuffix("Batch")  # ChangeMessageVisibilityBatch needs ChangeMessageVisibility
    return f"{prefix}:{batch}"
