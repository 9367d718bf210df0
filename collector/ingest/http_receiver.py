"""``POST /v1/traces`` and ``POST /v1/logs``: the OTLP/HTTP receivers, as the OTLP specification says.

A 200 is sent only after the accepted spans (or log records) are committed to the store. One class serves
both signals (``ingest/signals.py`` names what differs), so logs get the same limits, memory budget, error
answers and partial success as traces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hopscope.collector.ingest.body import BodyReader, BudgetExhaustedError, InflightBudget
from hopscope.collector.ingest.forward import Forwarder
from hopscope.collector.ingest.signals import TRACES, Signal, Sink
from hopscope.collector.ingest.validation import Validation
from hopscope.collector.ingest.writer import QueueFullError, SpanWriter, WriterClosedError
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import BodyTooLargeError, Encoding, OtlpDecodeError
from hopscope.collector.store.limits import SpanLimits

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
_T = TypeVar("_T")
# Bodies above this are decoded, limited, validated and prepared off the event loop, so that /healthz and
# small requests stay fast while a large one is worked on (a 6 MB protobuf body takes about 250 ms).
_INLINE_BODY_BYTES = 64 * 1024


class SpansNotStoredError(RuntimeError):
    """The store failed to commit a request's spans (or log records); the client should retry."""


def status_response(status: int, code: int, message: str, encoding: Encoding = Encoding.JSON) -> Response:
    """An error answer with a google.rpc.Status body in the request's encoding."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else None
    body = otlp_codec.encode_status(code, message, encoding)
    return Response(body, status_code=status, media_type=encoding.value, headers=headers)


class OtlpReceiver:
    """The endpoint of one signal; one instance per signal and app, sharing the writer and the budget."""

    def __init__(
        self,
        store: Sink,
        writer: SpanWriter,
        max_body_bytes: int,
        budget: InflightBudget,
        forwarder: Forwarder | None = None,
        *,
        span_limits: SpanLimits | None = None,
        signal: Signal = TRACES,
    ) -> None:
        self.signal = signal
        self._store = store
        self._writer = writer
        self._max_body_bytes = max_body_bytes
        self._budget = budget
        self._forwarder = forwarder
        self._span_limits = span_limits or SpanLimits()
        # One thread, as when bodies were decoded on the event loop: more would only fight the writer
        # thread for the GIL, and memory is bounded by the in-flight budget anyway.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hopscope-decode")

    def off_the_loop(self, work: Callable[..., _T], *args: Any) -> Awaitable[_T]:
        """Run CPU work (decoding, validating, preparing a large request) on the decoding thread."""
        return asyncio.get_running_loop().run_in_executor(self._decoder, work, *args)

    def close(self) -> None:
        self._decoder.shutdown(wait=False)

    async def export(self, request: Request) -> Response:
        encoding = Encoding.from_content_type(request.headers.get("content-type"))
        if encoding is None:
            return status_response(
                415,
                otlp_codec.STATUS_INVALID_ARGUMENT,
                "Content-Type must be application/x-protobuf or application/json",
            )
        content_encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if content_encoding not in ("identity", "gzip", ""):
            return status_response(
                415, otlp_codec.STATUS_INVALID_ARGUMENT, "Content-Encoding must be gzip or absent", encoding
            )
        if self._writer.saturated:  # refuse before spending time on the body
            return status_response(
                503, otlp_codec.STATUS_UNAVAILABLE, "collector busy: the write queue is full", encoding
            )
        reader = BodyReader(self._budget, self._max_body_bytes)
        try:
            return await self._receive(request, reader, encoding, gzipped=content_encoding == "gzip")
        except BodyTooLargeError as exc:
            return status_response(413, otlp_codec.STATUS_INVALID_ARGUMENT, str(exc), encoding)
        except OtlpDecodeError as exc:
            return status_response(400, otlp_codec.STATUS_INVALID_ARGUMENT, str(exc), encoding)
        except (BudgetExhaustedError, QueueFullError) as exc:
            return status_response(503, otlp_codec.STATUS_UNAVAILABLE, f"collector busy: {exc}", encoding)
        except WriterClosedError as exc:
            return status_response(503, otlp_codec.STATUS_UNAVAILABLE, str(exc), encoding)
        except ClientDisconnect:  # nobody is left to answer: one line, no traceback
            log.info("a client disconnected before sending its whole body; nothing of it was stored")
            return Response(status_code=400)
        finally:
            reader.release()

    async def _receive(
        self, request: Request, reader: BodyReader, encoding: Encoding, gzipped: bool
    ) -> Response:
        body = await reader.read(request)
        if gzipped:
            body = self._inflate(body, reader)
        reader.charge_holding(len(body), encoding)
        if len(body) > _INLINE_BODY_BYTES:
            committed = await self.off_the_loop(self._decode_and_accept, body, encoding)
        else:
            committed = self._decode_and_accept(body, encoding)
        del body
        try:
            validation = await committed
        except SpansNotStoredError as exc:
            return status_response(503, otlp_codec.STATUS_UNAVAILABLE, str(exc), encoding)
        payload = self.signal.encode_response(validation.rejected, validation.error_message, encoding)
        return Response(payload, media_type=encoding.value)

    def _decode_and_accept(self, body: bytes, encoding: Encoding) -> Awaitable[Validation]:
        export = self.signal.decode(body, encoding)
        # Forwarded as received when it is protobuf and every span is accepted, else re-serialized.
        forward_body = body if self._forwarder and encoding is Encoding.PROTOBUF else None
        return self.accept(export, forward_body)

    def decode_and_accept_protobuf(self, body: bytes) -> Awaitable[Validation]:
        """The OTLP/gRPC path: a serialized request of this signal, decoded and accepted."""
        return self._decode_and_accept(body, Encoding.PROTOBUF)

    def accept(self, export: Any, forward_body: bytes | None) -> Awaitable[Validation]:
        """Validate a decoded request and queue its valid items: the write path of every OTLP transport.

        Queueing happens now (QueueFullError and WriterClosedError are raised here), so the caller can drop
        the request before waiting; the returned awaitable resolves once the spans are committed (and
        offered to --forward upstreams: ``forward_body`` as received, or re-serialized when it is None or
        spans were dropped), or raises SpansNotStoredError.
        """
        validation = self.signal.validate(export)
        if not validation.accepted:
            return self._settled(validation, None, None)
        # --forward upstreams get the batch as it came, and apply limits of their own.
        if self._forwarder and (forward_body is None or validation.rejected):
            forward_body = export.SerializeToString()
        prepared = self.signal.prepare(self._store, export, self._span_limits)
        future = self._writer.submit(prepared, validation.accepted)
        return self._settled(validation, future, forward_body if self._forwarder else None)

    async def _settled(
        self, validation: Validation, future: Future[None] | None, forward_body: bytes | None
    ) -> Validation:
        if future is not None:
            try:
                await asyncio.wrap_future(future)
            except Exception as exc:
                # The writer logged this failure, once and with its traceback; once per request would flood.
                log.debug("%s were not stored: %s", self.signal.items, exc)
                raise SpansNotStoredError(f"{self.signal.items} were not stored: {exc}") from exc
        if self._forwarder and forward_body is not None:
            self.signal.offer(self._forwarder, forward_body, validation.accepted)
        return validation

    def _inflate(self, body: bytes, reader: BodyReader) -> bytes:
        """Inflate within both the body limit and what is left of the shared memory budget."""
        room = self._budget.limit - self._budget.used
        limit = min(self._max_body_bytes, room)
        try:
            inflated = otlp_codec.inflate_gzip(body, limit)
        except BodyTooLargeError:
            if limit < self._max_body_bytes:
                raise BudgetExhaustedError("not enough memory left to inflate the body now") from None
            raise
        reader.charge(len(inflated))
        return inflated
