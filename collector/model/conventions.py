"""Attribute names the collector reads to stitch flows: OpenTelemetry's, plus hopscope's own two.

hopscope's instrumentation writes ``hopscope.correlation_id`` on every span it makes and
``hopscope.receive_count`` (SQS ApproximateReceiveCount) on consumer spans; any other SDK can set them too.
The names themselves live in ``hopscope.instrumentation.conventions`` (one source for the writer and the
reader); this module adds the sets the collector groups them in.
"""

from __future__ import annotations

from hopscope.collector.model.destinations import DESTINATION_KEYS
from hopscope.instrumentation.conventions import (
    BATCH_MESSAGE_COUNT,
    CONVERSATION_ID,
    CORRELATION_ID,
    DESTINATION_NAME,
    MESSAGE_ID,
    MESSAGING_SYSTEM,
    RECEIVE_COUNT,
    RECORD_SPANS,
)

__all__ = [
    "BATCH_MESSAGE_COUNT",
    "CONVERSATION_ID",
    "CORRELATION_ATTRIBUTES",
    "CORRELATION_ID",
    "DESTINATION_NAME",
    "FLOW_ATTRIBUTES",
    "FLOW_ATTRIBUTE_PREFIXES",
    "MESSAGE_ID",
    "MESSAGING_SYSTEM",
    "RECEIVE_COUNT",
    "RECORD_SPANS",
]

CORRELATION_ATTRIBUTES = frozenset({CORRELATION_ID, CONVERSATION_ID})
# Destinations are named from any of their forms (model/destinations.py): a queue URL, an ARN, older keys.
FLOW_ATTRIBUTES = frozenset({MESSAGE_ID, RECEIVE_COUNT, *CORRELATION_ATTRIBUTES, *DESTINATION_KEYS})

# stitch/facts.py skips spans whose encoding holds none of these prefixes: keep them in step with the names
# (the destination keys outside them, aws.*, come with messaging.system on every span that writes them).
FLOW_ATTRIBUTE_PREFIXES = ("messaging.", "hopscope.")
