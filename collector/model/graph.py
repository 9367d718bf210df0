"""The service graph as the stores hand it to the query layer: nodes, edges, the hop rollups behind them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hopscope.collector.model.red import RedStats


@dataclass
class HopRollup:
    hop_count: int = 0
    error_count: int = 0
    durations: Counter[int] = field(default_factory=Counter)
    waits: Counter[int] = field(default_factory=Counter)
    max_receive_count: int = 0


@dataclass(frozen=True)
class GraphNode:
    id: str  # "service:billing", "aws_sqs:billing", "aws_sns:order-events", "external:DynamoDB"
    type: str  # service, queue, topic, bus, destination, external
    name: str


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    kind: str  # sync, publish, consume, subscription, external
    red: RedStats  # of the hops: for consume edges the consumer's processing, for sync edges the server's
    queue_wait_p50_ms: float | None
    queue_wait_p95_ms: float | None
    queue_wait_p99_ms: float | None
    max_receive_count: int


@dataclass(frozen=True)
class ServiceGraph:
    nodes: list[GraphNode]
    edges: list[GraphEdge]


_DESTINATION_TYPES = {
    "aws_sqs": "queue",
    "aws_sns": "topic",
    "aws.sns": "topic",  # the conventions' registered value (aws_sns is the older spelling)
    "aws.eventbridge": "bus",
    "aws_eventbridge": "bus",
}


def node_type(node: str) -> str:
    """service, queue, topic, bus, destination or external, from a node id."""
    prefix = node.split(":", 1)[0]
    if prefix in ("service", "external"):
        return prefix
    return _DESTINATION_TYPES.get(prefix, "destination")
