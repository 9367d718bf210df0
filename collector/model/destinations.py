"""A messaging destination's name and system, whatever form a span gives them.

hopscope's instrumentation writes ``messaging.system`` and ``messaging.destination.name`` as the current
semantic conventions say. Vanilla OpenTelemetry does not, and says the same thing several ways:
``opentelemetry-instrumentation-botocore`` 0.66b1 writes an SQS call as ``messaging.system=aws.sqs``,
``messaging.destination=<queue>``, ``messaging.url``/``aws.queue_url=<queue URL>`` and an SNS publish as
``messaging.system=aws.sns`` with ``messaging.destination.name=<topic ARN>``; its Lambda instrumentation
writes ``aws_sqs`` and the queue's name. The service graph, the flow detail and the message index all name a
destination with these functions, so one queue is one node and one message key whatever wrote the span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from hopscope.instrumentation.conventions import (
    DESTINATION_NAME,
    MESSAGING_SYSTEM,
    SYSTEM_DYNAMODB,
    SYSTEM_EVENTBRIDGE,
    SYSTEM_KINESIS,
    SYSTEM_SNS,
    SYSTEM_SQS,
)

# Where a destination is named, best first: the current name, the older (semantic conventions < 1.17)
# ``messaging.destination``, then URLs and ARNs the name is read from, then a template ("orders-{id}").
DESTINATION_KEYS_IN_ORDER: Final = (
    DESTINATION_NAME,
    "messaging.destination",
    "aws.sqs.queue.url",  # semantic conventions' name (hopscope's publishers write it)
    "aws.sqs.queue_url",
    "aws.queue_url",  # botocore 0.66b1's ("TODO: update when semantic conventions exist")
    "messaging.url",
    "aws.sns.topic.arn",  # semantic conventions' name (botocore 0.66b1 writes it)
    "aws.sns.topic_arn",
    "messaging.destination.template",
)
# Every attribute key destination_name reads: a span with none of them names no destination.
DESTINATION_KEYS: Final = frozenset(DESTINATION_KEYS_IN_ORDER)

# The ARN service of each system that has destinations: an ARN names its system when the span does not.
ARN_SYSTEMS: Final[Mapping[str, str]] = {
    "sqs": SYSTEM_SQS,
    "sns": SYSTEM_SNS,
    "events": SYSTEM_EVENTBRIDGE,
    "kinesis": SYSTEM_KINESIS,
    "dynamodb": SYSTEM_DYNAMODB,
}
# messaging.system values that name the same system as hopscope's spelling (instrumentation/conventions.py,
# the semantic conventions' registered values aws_sqs and aws.sns): aws.sqs (botocore 0.66b1), aws_sns (the
# older registered value), AmazonSQS (the X-Ray/Java SDK service name), ... Looked up lower-cased; also
# botocore's rpc.service (SQS, SNS, EventBridge) when a span has no messaging.system.
SYSTEM_ALIASES: Final[Mapping[str, str]] = {
    spelling: system
    for short, system in {**ARN_SYSTEMS, "eventbridge": SYSTEM_EVENTBRIDGE}.items()
    for spelling in (short, f"aws.{short}", f"aws_{short}", f"aws:{short}", f"aws-{short}", f"amazon{short}")
}
# arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE (the resource may hold ':' and '/'). The patterns are re2's
# dialect too: the ClickHouse graph (store/clickhouse/graph.py) matches them in SQL.
ARN_PATTERN: Final = r"arn:[^:]*:([^:]+):[^:]*:[^:]*:(.+)"
# An SQS queue URL: https://sqs.<region>.amazonaws.com/<account>/<name>, moto's or LocalStack's
# http://localhost:4566/<account>/<name> (or .../queue/<region>/<account>/<name>); the name is the last part.
QUEUE_URL_PATTERN: Final = r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]+/(?:[^?#]*/)?[^/?#]+/([^/?#]+)/?(?:[?#].*)?"
# The prefixes and infix that make a URL an SQS queue's when no messaging.system says so.
SQS_URL_PREFIXES: Final = ("https://sqs.", "http://sqs.")
SQS_URL_INFIX: Final = ".queue.amazonaws.com/"
SQS_URL_SYSTEM: Final = SYSTEM_SQS
_ARN: Final = re.compile(ARN_PATTERN)
_QUEUE_URL: Final = re.compile(QUEUE_URL_PATTERN)
_RPC_SERVICE: Final = "rpc.service"


def messaging_system(attributes: Mapping[str, object]) -> str | None:
    """The span's ``messaging.system`` in hopscope's spelling (``aws.sqs`` and ``AmazonSQS`` are ``aws_sqs``,
    ``aws_sns`` is ``aws.sns``), so both spellings make one graph node; a system hopscope does not know passes
    through unchanged. When ``messaging.system`` is missing: the system of an ARN or SQS queue URL in the
    destination attributes. None when neither says."""
    value = attributes.get(MESSAGING_SYSTEM)
    if value is not None and value != "":
        text = str(value)
        return _canonical(text, text)
    for key in DESTINATION_KEYS_IN_ORDER:
        named = attributes.get(key)
        if named is not None and named != "":
            system = _system_of(str(named))
            if system is not None:
                return system
    return None


def destination_name(attributes: Mapping[str, object]) -> str | None:
    """The destination's name (a queue's, topic's or bus's) from the first destination attribute that is set
    (in ``DESTINATION_KEYS_IN_ORDER``): an ARN gives its resource's name, an SQS queue URL its last path
    segment, and a plain name passes through unchanged. None when no attribute names one."""
    for key in DESTINATION_KEYS_IN_ORDER:
        value = attributes.get(key)
        if value is not None and value != "":
            return name_of(str(value))
    return None


def name_of(value: str) -> str:
    """A destination's name from an ARN, a queue URL or a name: ``arn:aws:sns:eu-west-1:123:orders`` ->
    ``orders``, ``arn:aws:events:...:event-bus/shop`` -> ``shop``, ``https://sqs.eu-west-1.amazonaws.com/
    123456789012/jobs.fifo`` -> ``jobs.fifo``; anything else unchanged. Never empty for a non-empty value."""
    if not value.startswith("arn:") and "://" not in value:
        return value  # the common case, a plain name: no pattern can match it
    arn = _ARN.fullmatch(value)
    if arn is not None:
        service, resource = arn.groups()
        if service == "sns":  # a topic, or a subscription's topic:<uuid>
            return resource.split(":", 1)[0] or resource
        if "/" in resource:  # event-bus/<name>, stream/<name>, table/<name>/...
            return resource.split("/")[1] or resource
        if ":" in resource:  # function:<name>[:alias]
            return resource.split(":")[1] or resource
        return resource
    url = _QUEUE_URL.fullmatch(value)
    if url is not None:
        return url.group(1)
    return value


def destination_node(attributes: Mapping[str, object], default_system: str) -> str | None:
    """The service graph's node of the destination, ``"{system}:{name}"``; None when the span names no
    destination. The system is :func:`messaging_system`'s, else the one botocore's ``rpc.service`` names
    (an AWS SDK call that names a queue but no messaging.system), else ``default_system``."""
    name = destination_name(attributes)
    if name is None:
        return None
    system = messaging_system(attributes)
    if system is None:
        service = str(attributes.get(_RPC_SERVICE, ""))
        system = _canonical(service, default_system)
    return f"{system}:{name}"


def _canonical(system: str, otherwise: str) -> str:
    """hopscope's spelling of a system's name, ``otherwise`` for one it does not know. ASCII letters only
    are lower-cased (as ClickHouse's ``lower``): every alias is ASCII."""
    return SYSTEM_ALIASES.get(system.lower(), otherwise) if system.isascii() else otherwise


def _system_of(value: str) -> str | None:
    arn = _ARN.fullmatch(value)
    if arn is not None:
        return ARN_SYSTEMS.get(arn.group(1))
    if value.startswith(SQS_URL_PREFIXES) or SQS_URL_INFIX in value:
        return SQS_URL_SYSTEM
    return None
