"""Trace context in and out of the places AWS lets it travel: HTTP headers, message attributes, SNS
envelopes, EventBridge details and X-Ray headers.

W3C trace context and baggage always win; an X-Ray header is only a fallback. A malformed value never
raises: it is ignored with one warning, and the span starts a new trace.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.aws.aws_xray_propagator import AwsXRayPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hopscope.instrumentation.conventions import (
    BAGGAGE,
    CONTEXT_KEYS,
    EVENTBRIDGE_DETAIL_KEY,
    TRACEPARENT,
    TRACESTATE,
    XRAY_HEADER,
)

logger = logging.getLogger("hopscope.instrumentation")

_TRACE_CONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()
_XRAY = AwsXRayPropagator()


def has_parent(ctx: context.Context) -> bool:
    """Whether ``ctx`` holds a valid (remote) span to continue."""
    return trace.get_current_span(ctx).get_span_context().is_valid


def extract_w3c(carrier: Mapping[str, str], where: str) -> context.Context:
    """The context that ``carrier`` (lower-case keys) holds: a parent span, baggage, both or neither."""
    ctx = context.Context()
    if not carrier:
        return ctx
    if BAGGAGE in carrier:
        ctx = _BAGGAGE.extract(carrier, ctx)
    if TRACEPARENT in carrier:
        ctx = _TRACE_CONTEXT.extract(carrier, ctx)
        if not has_parent(ctx):
            logger.warning(
                "hopscope: ignoring a malformed traceparent %.80r in %s; a new trace starts",
                carrier[TRACEPARENT],
                where,
            )
    return ctx


def extract_xray(header: str | None, where: str, ctx: context.Context | None = None) -> context.Context:
    """``ctx`` with the parent span of an X-Ray header, when the header is valid and sampled.

    An unsampled header is the normal state of Lambda's passive X-Ray mode: following it would make a
    parent-based sampler drop every span, so it is ignored.
    """
    base = ctx if ctx is not None else context.Context()
    if not header:
        return base
    extracted = _XRAY.extract({XRAY_HEADER: header}, base)
    span_context = trace.get_current_span(extracted).get_span_context()
    if not span_context.is_valid:
        logger.warning("hopscope: ignoring a malformed X-Ray header %.80r in %s", header, where)
        return base
    if not span_context.trace_flags.sampled:
        return base
    return extracted


def http_carrier(headers: Any, multi_value_headers: Any = None) -> dict[str, str]:
    """Lower-case header names to values, from ``headers`` and ALB/API Gateway ``multiValueHeaders``."""
    carrier: dict[str, str] = {}
    if isinstance(multi_value_headers, Mapping):
        for name, values in multi_value_headers.items():
            if isinstance(name, str) and isinstance(values, list) and values:
                carrier[name.lower()] = (
                    ",".join(str(v) for v in values) if name.lower() == BAGGAGE else str(values[0])
                )
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if isinstance(name, str) and isinstance(value, str):
                carrier.setdefault(name.lower(), value)
    return carrier


def _decode_binary(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _context_attributes(attributes: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(lower-case name, attribute) of the message attributes that carry trace context."""
    if not isinstance(attributes, Mapping):
        return
    for name, attribute in attributes.items():
        if isinstance(name, str) and name.lower() in CONTEXT_KEYS and isinstance(attribute, Mapping):
            yield name.lower(), attribute


def sqs_attribute_carrier(attributes: Any) -> dict[str, str]:
    """The context keys of SQS message attributes, in a Lambda record's shape or boto3's.

    Lambda: ``{"traceparent": {"stringValue": ..., "dataType": "String"}}`` (``binaryValue`` base64);
    boto3 ReceiveMessage: ``{"traceparent": {"StringValue": ..., "DataType": "String"}}``.
    """
    carrier: dict[str, str] = {}
    for name, attribute in _context_attributes(attributes):
        data_type = str(attribute.get("dataType") or attribute.get("DataType") or "String")
        if data_type.startswith("Binary"):
            value = _decode_binary(attribute.get("binaryValue", attribute.get("BinaryValue")))
        else:
            raw = attribute.get("stringValue", attribute.get("StringValue"))
            value = raw if isinstance(raw, str) else None
        if value is not None:
            carrier[name] = value
    return carrier


def sns_attribute_carrier(attributes: Any) -> dict[str, str]:
    """The context keys of SNS message attributes: ``{"traceparent": {"Type": "String", "Value": ...}}``."""
    carrier: dict[str, str] = {}
    for name, attribute in _context_attributes(attributes):
        raw = attribute.get("Value")
        value = _decode_binary(raw) if str(attribute.get("Type", "String")).startswith("Binary") else raw
        if isinstance(value, str):
            carrier[name] = value
    return carrier


def eventbridge_carrier(detail: Any) -> dict[str, str]:
    """The context keys that hopscope's publisher put in an EventBridge event's detail."""
    if not isinstance(detail, Mapping):
        return {}
    holder = detail.get(EVENTBRIDGE_DETAIL_KEY)
    if not isinstance(holder, Mapping):
        return {}
    return {
        k.lower(): v
        for k, v in holder.items()
        if isinstance(k, str) and k.lower() in CONTEXT_KEYS and isinstance(v, str)
    }


def context_headers(ctx: context.Context | None = None) -> dict[str, str]:
    """traceparent, tracestate (left out when empty) and baggage of ``ctx`` (default: the current one)."""
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier, ctx)
    _BAGGAGE.inject(carrier, ctx)
    if not carrier.get(TRACESTATE):
        carrier.pop(TRACESTATE, None)
    return carrier


def xray_header(ctx: context.Context | None = None) -> str | None:
    """The X-Ray trace header of ``ctx``'s span (``Root=...;Parent=...;Sampled=...``), or None."""
    carrier: dict[str, str] = {}
    _XRAY.inject(carrier, ctx)
    return carrier.get(XRAY_HEADER)
