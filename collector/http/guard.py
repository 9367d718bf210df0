"""Limits below the ASGI app: what uvicorn's HTTP protocol does not bound by itself.

uvicorn (0.55, httptools) reads request headers without a size limit or a time limit, never times out a
connection that sends nothing, waits forever for a body that stops arriving, and answers its own
connection limit with a plain-text 503 without ``Retry-After``. :class:`GuardedHttpToolsProtocol` is
uvicorn's own httptools protocol with those four holes closed, at the protocol level, before any
request reaches the app (and so before authentication):

- **header size**: more than ``max_header_bytes`` received before the headers end, or more than
  ``max_header_fields`` fields, is answered 431 at once; the parser never holds more than the limit plus
  one read.
- **header-read timeout**: a request's headers must be complete ``header_timeout`` seconds after the
  connection opens (a connection that sends nothing included) or after the first byte of a later request
  on a kept-alive connection; else the connection is closed.
- **body stall**: a request whose body stops arriving for ``body_idle_timeout`` seconds while the app
  waits for it is closed (the app sees the client disconnect).
- **connection limit**: past ``max_connections`` open connections (or requests in flight), a request is
  answered 503 with ``Retry-After`` and ``Connection: close``.

The idle keep-alive timeout is uvicorn's own (``timeout_keep_alive``). Every answer given here carries a
``google.rpc.Status`` body, as every error of the collector does.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
from google.rpc import code_pb2
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from hopscope.collector.http.limits import HttpLimits
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import Encoding

log = logging.getLogger("hopscope.collector")

# Seconds a refused connection still reads (and discards) what the client sends after the answer, so that
# the client reads the answer instead of a connection reset (nginx's lingering close).
LINGER_SECONDS = 2.0
# File descriptors kept for everything but client connections (the store, its readers, gRPC, logs).
RESERVED_FILE_DESCRIPTORS = 256
RETRY_AFTER_SECONDS = 1


@dataclass
class ConnectionStats:
    """Counters of what the guard refused or closed, shared by every connection of one server."""

    open: int = 0
    closed_idle: int = 0  # headers not complete in time, or a body that stopped arriving
    refused_busy: int = 0  # 503: over the connection limit
    refused_headers: int = 0  # 431: headers over the limit
    _last_busy_log: float = float("-inf")


class _HeadersTooLargeError(Exception):
    """Raised from the parser's callbacks; the parser stops and the request is answered 431."""


def error_head_and_body(status: int, code: int, message: str) -> bytes:
    """A whole HTTP/1.1 error answer with a google.rpc.Status JSON body that closes the connection."""
    body = otlp_codec.encode_status(code, message, Encoding.JSON)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def busy_app(limit: int) -> ASGIApp:
    """The ASGI app that answers a request over the connection limit."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        content_type = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"")
        encoding = Encoding.from_content_type(content_type.decode("latin-1")) or Encoding.JSON
        message = f"collector busy: {limit} connections are open; retry later"
        body = otlp_codec.encode_status(code_pb2.UNAVAILABLE, message, encoding)
        headers = [
            (b"content-type", encoding.value.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return answer


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the limits of this module; see :func:`protocol_class`."""

    limits: HttpLimits = HttpLimits()
    stats: ConnectionStats = ConnectionStats()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._app = self.app
        self._busy = busy_app(self.limits.max_connections)
        self._header_deadline: float | None = None  # set while a request's headers are being read
        self._header_bytes = 0
        self._header_fields = 0
        self._parsed_header_bytes = 0  # request line and complete fields, as the parser hands them over
        self._header_error: str | None = None
        self._last_data = 0.0
        self._watch: asyncio.TimerHandle | None = None
        self._lingering = False

    # -- connection ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.stats.open += 1
        self._last_data = self.loop.time()
        self._header_deadline = self._last_data + self.limits.header_timeout
        self._watch_at(self._header_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # the answer is sent: discard the rest of what the client sends
            return
        self._last_data = self.loop.time()
        if self._header_deadline is not None:
            self._header_bytes += len(data)
        # uvicorn's data_received, except that a stop of ours is a 431 and not logged as an invalid request
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._header_error is not None:
                self._refuse_headers(self._header_error)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._lingering or self.transport.is_closing():
            return
        if self._header_deadline is not None and self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers(
                f"request headers are over the limit of {self.limits.max_header_bytes} bytes"
            )

    # -- parser callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:  # the first byte of a later request on a kept-alive connection
            self._header_deadline = self.loop.time() + self.limits.header_timeout
            self._watch_at(self._header_deadline)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_fields += 1
        if self._header_fields > self.limits.max_header_fields:
            self._header_error = f"more than {self.limits.max_header_fields} request header fields"
            raise _HeadersTooLargeError
        self._count_header_bytes(len(name) + len(value) + 4)  # name: value CRLF
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        """Headers that arrive in one read are only seen here, already parsed: count them too."""
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self.limits.max_header_bytes:
            self._header_error = f"request headers are over the limit of {self.limits.max_header_bytes} bytes"
            raise _HeadersTooLargeError

    def on_headers_complete(self) -> None:
        self._header_deadline = None
        self._header_bytes = 0
        self._header_fields = 0
        self._parsed_header_bytes = 0
        # The app for this request: the collector's, or the busy answer past the connection limit.
        limit = self.limits.max_connections
        if len(self.connections) > limit or len(self.tasks) >= limit:
            self.app = self._busy
            self._count_busy()
        else:
            self.app = self._app
        super().on_headers_complete()
        self._watch_at(self.loop.time() + self.limits.body_idle_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._watch is not None:  # the whole body is here: nothing left to watch
            self._watch.cancel()
            self._watch = None

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses: 400 with a google.rpc.Status body."""
        self._answer_and_close(error_head_and_body(400, code_pb2.INVALID_ARGUMENT, msg))

    # -- the watchdog -------------------------------------------------------------------------------------

    def _watch_at(self, when: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        """Close the connection if its headers are late or its body stalled; else look again later."""
        self._watch = None
        if self.transport is None or self.transport.is_closing() or self._lingering:
            return
        now = self.loop.time()
        if self._header_deadline is not None:
            if now >= self._header_deadline:
                self._close_idle()
            else:
                self._watch_at(self._header_deadline)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return  # nothing owed by the client; uvicorn's keep-alive timeout watches the idle time
        if self.flow.read_paused:  # the app is not reading: not the client's fault
            self._watch_at(now + self.limits.body_idle_timeout)
            return
        stalled_until = self._last_data + self.limits.body_idle_timeout
        if now >= stalled_until:
            self._close_idle()
        else:
            self._watch_at(stalled_until)

    def _close_idle(self) -> None:
        self.stats.closed_idle += 1
        self.transport.close()

    # -- answers ------------------------------------------------------------------------------------------

    def _refuse_headers(self, message: str) -> None:
        self.stats.refused_headers += 1
        if self.headers:  # the fields parsed so far of the refused request (no app has them)
            self.headers.clear()
        self._answer_and_close(error_head_and_body(431, code_pb2.INVALID_ARGUMENT, message))

    def _answer_and_close(self, answer: bytes) -> None:
        """Send a final answer, then read and discard for a moment before closing (a lingering close)."""
        self._header_deadline = None
        self._lingering = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self._watch is not None:
            self._watch.cancel()
        self._watch = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _count_busy(self) -> None:
        stats = self.stats
        stats.refused_busy += 1
        now = time.monotonic()
        if now - stats._last_busy_log >= 60:
            stats._last_busy_log = now
            log.warning(
                "%d connections are open (--max-connections): new requests get 503 + Retry-After "
                "(logged at most once a minute; /healthz counts them)",
                len(self.connections),
            )


def protocol_class(limits: HttpLimits, stats: ConnectionStats) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to one server's limits and counters."""
    return type("HopscopeHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "stats": stats})


def fit_open_file_limit(max_connections: int) -> int:
    """Raise the soft open-file limit so that ``max_connections`` fit; return how many connections fit.

    Past the open-file limit, accepting a connection fails before it could be answered 503, and the
    store could not open a file either; so the connection limit must stay below it.
    """
    if sys.platform == "win32":  # no RLIMIT_NOFILE there
        return max_connections
    import resource  # noqa: PLC0415 - POSIX only

    wanted = max_connections + RESERVED_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitting = max(1, soft - RESERVED_FILE_DESCRIPTORS)
    log.warning(
        "the open-file limit (%d) allows %d connections, not --max-connections %d: raise it with ulimit -n",
        soft,
        fitting,
        max_connections,
    )
    return fitting
