"""The correlation id: a business-level id (an order id, a request id) that follows a message end to end.

It lives in W3C baggage, so it crosses every hop that carries trace context, and hopscope copies it onto
every span it creates as ``hopscope.correlation_id``, where the collector indexes it for search.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import baggage, context, trace

from hopscope.instrumentation.conventions import CORRELATION_BAGGAGE_KEY, CORRELATION_ID

MAX_CORRELATION_ID_CHARS = 256


def get_correlation_id() -> str | None:
    """The correlation id of the message being handled, or None outside any flow."""
    value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY)
    return str(value) if value else None


def set_correlation_id(value: str) -> None:
    """Make ``value`` the correlation id of everything that follows in this context.

    Messages sent afterwards carry it (in baggage) and the current span records it. Inside a traced
    handler the change ends with the invocation (or the record, in ``process_batch``).
    """
    text = normalize(value)
    if text is None:
        raise ValueError("a correlation id must be a non-empty string")
    context.attach(baggage.set_baggage(CORRELATION_BAGGAGE_KEY, text))
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(CORRELATION_ID, text)


def normalize(value: object) -> str | None:
    """A usable correlation id from whatever an event holds there: a non-empty string or number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    if not text:
        return None
    return text[:MAX_CORRELATION_ID_CHARS]


def new_correlation_id() -> str:
    """A fresh id for a flow that enters here without one."""
    return str(uuid.uuid4())


def from_baggage(ctx: context.Context) -> str | None:
    """The correlation id that arrived in an extracted context's baggage."""
    return normalize(baggage.get_baggage(CORRELATION_BAGGAGE_KEY, ctx))


def from_headers(headers: Mapping[str, str], header: str) -> str | None:
    """The correlation id of a header given in any letter case."""
    wanted = header.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            return normalize(value)
    return None


def with_correlation_id(ctx: context.Context, value: str | None) -> context.Context:
    """``ctx`` with the correlation id in its baggage (unchanged when ``value`` is None)."""
    if value is None:
        return ctx
    return baggage.set_baggage(CORRELATION_BAGGAGE_KEY, value, ctx)


@contextmanager
def attached(ctx: context.Context) -> Iterator[None]:
    """Make ``ctx`` current for the block, and undo it, and any change made inside, on every exit path."""
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)
