"""Attribute names the collector reads to stitch flows: OpenTelemetry's, plus hopscope's own two.

hopscope's instrumentation writes ``hopscope.correlation_id`` on every span it makes and
``hopscope.receive_count`` (SQS ApproximateReceiveCount) on consumer spans; any other SDK can set them too.
"""

from __future__ import annotations

# OpenTelemetry semantic conventions (messaging).
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
DESTINATION_NAME = "messaging.destination.name"
MESSAGING_SYSTEM = "messaging.system"
BATCH_MESSAGE_COUNT = "messaging.batch.message_count"

# hopscope's own.
CORRELATION_ID = "hopscope.correlation_id"
RECEIVE_COUNT = "hopscope.receive_count"
# On a batch consumer span: each record has a consumer span of its own, which counts the record's hop.
RECORD_SPANS = "hopscope.batch.record_spans"

CORRELATION_ATTRIBUTES = frozenset({CORRELATION_ID, CONVERSATION_ID})
FLOW_ATTRIBUTES = frozenset({MESSAGE_ID, DESTINATION_NAME, RECEIVE_COUNT, *CORRELATION_ATTRIBUTES})

# flow_facts skips spans whose encoding holds none of these prefixes: keep them in step with the names above.
FLOW_ATTRIBUTE_PREFIXES = ("messaging.", "hopscope.")
