"""Trace context into the messages boto3 sends: SQS and SNS message attributes, EventBridge details and
Lambda's ClientContext.

Pure functions over request parameters. Each returns a new mapping when it adds something and the very
same one otherwise, copying only along the path it changes (never a message body), so the caller's dicts
are never touched. A key the caller set always wins, and each AWS limit is kept all-or-nothing: a message
gets every hopscope key or none, with one warning per process saying why.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context

from hopscope.instrumentation.carriers import context_headers, xray_header
from hopscope.instrumentation.conventions import (
    AWS_TRACE_HEADER,
    EVENTBRIDGE_DETAIL_KEY,
    MAX_CLIENT_CONTEXT_BYTES,
    MAX_EVENTBRIDGE_ENTRY_BYTES,
    MAX_MESSAGE_ATTRIBUTES,
)

logger = logging.getLogger("hopscope.instrumentation")

Params = Mapping[str, Any]

_EVENTBRIDGE_TIME_BYTES = 14  # what EventBridge counts for an entry's Time
_warned: set[str] = set()


def _warn_once(reason: str, message: str, *args: object) -> None:
    """A limit is a property of the application's messages: saying it once is enough, per message is noise."""
    if reason not in _warned:
        _warned.add(reason)
        logger.warning(message, *args)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _with_message_attributes(message: Params, headers: Mapping[str, str], service: str) -> Params | None:
    """``message`` with the headers the caller did not set as String attributes; None past the limit."""
    existing = message.get("MessageAttributes") or {}
    if not isinstance(existing, Mapping):
        return message  # botocore rejects it; not hopscope's business
    missing = {key: value for key, value in headers.items() if key not in existing}
    if not missing:
        return message
    if len(existing) + len(missing) > MAX_MESSAGE_ATTRIBUTES:
        _warn_once(
            f"attributes-{service}",
            "hopscope: %s messages with %d message attributes leave no room for the %d trace context "
            "attributes (%s allows %d); such messages carry none of them%s",
            service,
            len(existing),
            len(missing),
            service,
            MAX_MESSAGE_ATTRIBUTES,
            ", only the AWSTraceHeader system attribute" if service == "SQS" else "",
        )
        return None
    added = {key: {"DataType": "String", "StringValue": value} for key, value in missing.items()}
    return {**message, "MessageAttributes": {**existing, **added}}


def sqs_message(message: Params, ctx: Context) -> Params:
    """SendMessage params or a SendMessageBatch entry carrying ``ctx``: as W3C message attributes, or as
    the AWSTraceHeader system attribute (which does not count against the limit) when they do not fit."""
    injected = _with_message_attributes(message, context_headers(ctx), "SQS")
    if injected is not None:
        return injected
    header = xray_header(ctx)
    system = message.get("MessageSystemAttributes") or {}
    if header is None or not isinstance(system, Mapping) or AWS_TRACE_HEADER in system:
        return message
    trace_header = {AWS_TRACE_HEADER: {"DataType": "String", "StringValue": header}}
    return {**message, "MessageSystemAttributes": {**system, **trace_header}}


def sns_message(message: Params, ctx: Context) -> Params:
    """Publish params or a PublishBatch entry carrying ``ctx`` as W3C message attributes, when they fit."""
    injected = _with_message_attributes(message, context_headers(ctx), "SNS")
    return message if injected is None else injected


def _entry_bytes(entry: Params) -> int:
    """An entry's size as EventBridge counts it against its limit."""
    size = _EVENTBRIDGE_TIME_BYTES if entry.get("Time") is not None else 0
    texts = [entry.get(key) for key in ("Source", "DetailType", "Detail")] + list(
        entry.get("Resources") or []
    )
    return size + sum(len(text.encode("utf-8")) for text in texts if isinstance(text, str))


def _detail_with_context(entry: Params, headers: Mapping[str, str]) -> str | None:
    """The entry's Detail with the headers under ``_hopscope``; None when it is not a JSON object, already
    has that key, or would grow past the entry limit."""
    detail = entry.get("Detail")
    if not headers or not isinstance(detail, str):
        return None
    try:
        parsed = json.loads(detail)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or EVENTBRIDGE_DETAIL_KEY in parsed:
        return None
    text = _compact({**parsed, EVENTBRIDGE_DETAIL_KEY: dict(headers)})
    if _entry_bytes({**entry, "Detail": text}) > MAX_EVENTBRIDGE_ENTRY_BYTES:
        _warn_once(
            "eventbridge-size",
            "hopscope: EventBridge entries near the %d-byte limit get no trace context in their Detail",
            MAX_EVENTBRIDGE_ENTRY_BYTES,
        )
        return None
    return text


def eventbridge_entry(entry: Params, ctx: Context) -> Params:
    """A PutEvents entry carrying ``ctx``: W3C headers in its Detail object, X-Ray's in its TraceHeader."""
    updates: dict[str, str] = {}
    detail = _detail_with_context(entry, context_headers(ctx))
    if detail is not None:
        updates["Detail"] = detail
    header = xray_header(ctx)
    if header is not None and "TraceHeader" not in entry:
        updates["TraceHeader"] = header
    return {**entry, **updates} if updates else entry


def lambda_client_context(params: Params, ctx: Context) -> Params:
    """Invoke params carrying ``ctx`` in ClientContext's ``custom`` object, which the function's runtime
    hands over as ``context.client_context.custom``."""
    headers = context_headers(ctx)
    if not headers:
        return params
    raw = params.get("ClientContext")
    try:
        client_context = {} if raw is None else json.loads(base64.b64decode(raw, validate=True))
        custom = client_context.get("custom") or {}
        if not isinstance(custom, dict):
            raise TypeError("custom is not an object")
    except (ValueError, TypeError, AttributeError, binascii.Error):
        _warn_once(
            "client-context-invalid",
            "hopscope: a Lambda Invoke's ClientContext is not base64 of a JSON object; left unchanged",
        )
        return params
    missing = {key: value for key, value in headers.items() if key not in custom}
    if not missing:
        return params
    encoded = base64.b64encode(
        _compact({**client_context, "custom": {**custom, **missing}}).encode("utf-8")
    ).decode("ascii")
    if len(encoded) > MAX_CLIENT_CONTEXT_BYTES:
        _warn_once(
            "client-context-size",
            "hopscope: a Lambda Invoke's ClientContext would exceed %d bytes with the trace context; "
            "left unchanged",
            MAX_CLIENT_CONTEXT_BYTES,
        )
        return params
    return {**params, "ClientContext": encoded}
