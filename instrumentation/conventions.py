"""Attribute names, carrier keys and limits shared by the handler side and the publisher side.

OpenTelemetry's semantic conventions where they have a name (messaging.*, faas.*, cloud.*, http.*, url.*,
aws.*); ``hopscope.*`` for what they lack. The collector reads ``hopscope.correlation_id`` and
``hopscope.receive_count`` by these exact names.
"""

from __future__ import annotations

from typing import Final

# hopscope's own attributes.
CORRELATION_ID: Final = "hopscope.correlation_id"
RECEIVE_COUNT: Final = "hopscope.receive_count"  # SQS ApproximateReceiveCount of the record
QUEUE_WAIT_MS: Final = (
    "hopscope.queue_wait_ms"  # processing start minus SentTimestamp (or SNS/EventBridge time)
)
PAYLOAD: Final = "hopscope.payload"
# On a batch's invocation span: process_batch made a span per record, so the collector counts the hops there.
RECORD_SPANS: Final = (
    "hopscope.batch.record_spans"  # the event (or record) as JSON, only with capture_payload=True
)

# OpenTelemetry's messaging names that the collector stitches flows by (this module is their one source).
# The id of one message, on producer and consumer spans and on links.
MESSAGE_ID: Final = "messaging.message.id"
CONVERSATION_ID: Final = "messaging.message.conversation_id"
DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_SYSTEM: Final = "messaging.system"
BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"

# The baggage entry that carries the correlation id from hop to hop.
CORRELATION_BAGGAGE_KEY: Final = "hopscope.correlation_id"
# The HTTP header a caller may send instead.
CORRELATION_HEADER: Final = "x-correlation-id"

# W3C trace context and baggage keys, used as HTTP headers and as message attribute names.
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
BAGGAGE: Final = "baggage"
CONTEXT_KEYS: Final = (TRACEPARENT, TRACESTATE, BAGGAGE)

# Where an EventBridge event's Detail carries the W3C headers (a JSON object of the three keys above).
EVENTBRIDGE_DETAIL_KEY: Final = "_hopscope"
# X-Ray's header: the SQS system attribute, the Lambda environment variable and EventBridge's TraceHeader.
XRAY_HEADER: Final = "X-Amzn-Trace-Id"
AWS_TRACE_HEADER: Final = "AWSTraceHeader"
XRAY_ENV: Final = "_X_AMZN_TRACE_ID"

# Service limits that injection respects.
MAX_MESSAGE_ATTRIBUTES: Final = 10  # SQS and SNS (SNS -> SQS delivery keeps at most 10)
MAX_EVENTBRIDGE_ENTRY_BYTES: Final = 256 * 1024
MAX_CLIENT_CONTEXT_BYTES: Final = 3583  # Lambda Invoke's ClientContext, base64-encoded

# messaging.system values: the conventions' registered names, and EventBridge's by the same pattern.
SYSTEM_SQS: Final = "aws_sqs"
SYSTEM_SNS: Final = "aws.sns"
SYSTEM_EVENTBRIDGE: Final = "aws.eventbridge"
SYSTEM_KINESIS: Final = "aws.kinesis"
SYSTEM_DYNAMODB: Final = "aws.dynamodb"
