"""What differs between OTLP traces and OTLP logs on the write path; everything else is shared.

Both signals go through the same receivers (HTTP and gRPC), memory budget, writer thread (one group commit
for spans and log records alike), limits and forwarding; a ``Signal`` names the few steps that differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hopscope.collector.ingest.forward import Forwarder
from hopscope.collector.ingest.validation import Validation, drop_invalid_log_records, drop_invalid_spans
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import Encoding
from hopscope.collector.store.base import LogSink, Prepared, SpanSink
from hopscope.collector.store.limits import SpanLimits, apply_count_limits


class Sink(SpanSink, LogSink, Protocol):
    """A store that takes both signals (both stores do)."""


@dataclass(frozen=True)
class Signal:
    path: str  # the OTLP/HTTP path
    grpc_service: str  # the OTLP/gRPC service whose Export takes it
    items: str  # what a request holds, for messages
    decode: Callable[[bytes, Encoding], Any]  # OtlpDecodeError for a bad body
    validate: Callable[[Any], Validation]  # drops what cannot be stored, in place
    prepare: Callable[[Sink, Any, SpanLimits], Prepared]  # limits applied, rows made
    encode_response: Callable[[int, str, Encoding], bytes]
    offer: Callable[[Forwarder, bytes, int], None]  # a committed body to --forward upstreams


def _prepare_spans(store: Sink, request: Any, limits: SpanLimits) -> Prepared:
    # Over-limit items go, counted in each span's dropped_* counts (values: in the store's prepare).
    apply_count_limits(request, limits)
    return store.prepare(request, limits)


def _prepare_logs(store: Sink, request: Any, limits: SpanLimits) -> Prepared:
    return store.prepare_logs(request, limits)


TRACES = Signal(
    path="/v1/traces",
    grpc_service="opentelemetry.proto.collector.trace.v1.TraceService",
    items="spans",
    decode=otlp_codec.decode_request,
    validate=drop_invalid_spans,
    prepare=_prepare_spans,
    encode_response=otlp_codec.encode_response,
    offer=Forwarder.offer,
)
LOGS = Signal(
    path="/v1/logs",
    grpc_service="opentelemetry.proto.collector.logs.v1.LogsService",
    items="log records",
    decode=otlp_codec.decode_logs_request,
    validate=drop_invalid_log_records,
    prepare=_prepare_logs,
    encode_response=otlp_codec.encode_logs_response,
    offer=Forwarder.offer_logs,
)
