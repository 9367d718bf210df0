"""Traced Lambda handlers and boto3 publishers (the light part that ships inside Lambda packages).

Two lines trace a function end to end::

    from hopscope.instrumentation import instrument_boto3, traced_handler

    instrument_boto3()  # producer spans and context on every SQS, SNS, EventBridge and Lambda call

    @traced_handler
    def handler(event, context): ...

Depends on the OpenTelemetry API, SDK, OTLP/HTTP exporter and botocore instrumentation only; never on the
collector or the dashboard. boto3 and the SDK are imported when first needed, not here.
"""

from hopscope.instrumentation.aws_publishers import instrument_boto3, uninstrument_boto3
from hopscope.instrumentation.batch import BatchItemFailure, PartialBatchResponse, process_batch
from hopscope.instrumentation.config import configure, flush
from hopscope.instrumentation.correlation import get_correlation_id, set_correlation_id
from hopscope.instrumentation.handler import traced_handler
from hopscope.instrumentation.log_correlation import (
    CorrelationLogFilter,
    instrument_logging,
    instrument_powertools_logger,
    uninstrument_logging,
)
from hopscope.instrumentation.records import eventbridge_payload, record_payload

__all__ = [
    "BatchItemFailure",
    "CorrelationLogFilter",
    "PartialBatchResponse",
    "configure",
    "eventbridge_payload",
    "flush",
    "get_correlation_id",
    "instrument_boto3",
    "instrument_logging",
    "instrument_powertools_logger",
    "process_batch",
    "record_payload",
    "set_correlation_id",
    "traced_handler",
    "uninstrument_boto3",
    "uninstrument_logging",
]
