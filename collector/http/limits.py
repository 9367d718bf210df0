"""The HTTP server's limits and their defaults; no dependencies, so that ``hopscope --help`` shows them.

http/guard.py enforces them; each default says why it is what it is.
"""

from __future__ import annotations

from dataclasses import dataclass

# Seconds a client has to send a request's headers (Go servers commonly use 10 s for ReadHeaderTimeout).
DEFAULT_HEADER_TIMEOUT_SECONDS = 10
# Seconds a kept-alive connection may stay idle between requests. Longer than the 5 s export interval of the
# OpenTelemetry SDKs' batch processors, so that an exporter's next request does not race the close, and
# longer than the 60 s idle timeout of the usual load balancers in front (nginx's default is 75 s as well).
DEFAULT_IDLE_TIMEOUT_SECONDS = 75
# Seconds a body may stop arriving while the app waits for it (an OTLP exporter gives up after 10 s).
DEFAULT_BODY_IDLE_TIMEOUT_SECONDS = 30
# Connections served at once; past it requests get 503 + Retry-After. An idle connection costs a few kB.
DEFAULT_MAX_CONNECTIONS = 2048
# Bytes of request line and headers (nginx allows 32 kB in its default buffers; a JWT fits many times).
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
# Header fields of one request (Apache's LimitRequestFields default).
DEFAULT_MAX_HEADER_FIELDS = 100


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP server's limits (``hopscope collector --max-connections ...``)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT_SECONDS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_fields: int = DEFAULT_MAX_HEADER_FIELDS
