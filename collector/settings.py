"""The collector's settings: one frozen object built by the CLI (or by tests) and passed down."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hopscope.collector.store.limits import SpanLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
DEFAULT_DB = Path("hopscope.db")
# The OpenTelemetry Collector's OTLP receiver defaults to 20 MiB; a 512-span batch is about 0.3 MiB.
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
# Spans accepted but not yet committed. Past this the receiver answers 503 + Retry-After.
DEFAULT_MAX_PENDING_SPANS = 40_000
# Bytes of memory held at once by requests in flight: bodies and what decoding them costs (ingest/body.py).
DEFAULT_MAX_INFLIGHT_BYTES = 96 * 1024 * 1024
# Bytes of batches waiting to be forwarded, per --forward upstream; past it new batches are dropped.
DEFAULT_FORWARD_QUEUE_BYTES = 64 * 1024 * 1024
# A failed forward is retried after this, doubling up to the maximum (Retry-After is honoured up to it).
DEFAULT_FORWARD_INITIAL_BACKOFF_SECONDS = 0.5
DEFAULT_FORWARD_MAX_BACKOFF_SECONDS = 30.0

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d`` or ``2w``; ValueError names the accepted forms."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: use a positive number with s, m, h, d or w, e.g. 7d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_forward_url(text: str) -> str:
    """An upstream OTLP/HTTP traces URL; one without a path gets ``/v1/traces``, as OTLP exporters do."""
    try:
        parts = urlsplit(text.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"invalid forward URL {text!r}: use http(s)://host[:port][/path]")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")
    return urlunsplit(parts)


# How often --sqs polls queue depth.
DEFAULT_SQS_INTERVAL_SECONDS = 15


@dataclass(frozen=True)
class SqsSettings:
    """Where and how often the collector polls SQS (``--sqs``); credentials follow boto3's own chain."""

    endpoint_url: str | None = None
    region: str | None = None
    queue_prefix: str | None = None
    interval_seconds: float = DEFAULT_SQS_INTERVAL_SECONDS


@dataclass(frozen=True)
class CollectorSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # OTLP/gRPC on the same host (ingest/grpc_receiver.py); None serves OTLP/HTTP only, 0 picks a free port.
    grpc_port: int | None = None
    db: Path = DEFAULT_DB
    # A --store URL (store/url.py); None stores in ``db`` (SQLite).
    store_url: str | None = None
    # False: no OTLP receiver; the collector only stitches what others write to the store (--no-receiver).
    receiver: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Attributes, events, links and value lengths kept per span (store/limits.py).
    span_limits: SpanLimits = field(default_factory=SpanLimits)
    auth_token: str | None = None
    retention_seconds: int | None = None
    # Stitch in a process of its own beside the writer (ingest/stitcher.py) where the store allows it.
    stitch_process: bool = True
    max_pending_spans: int = DEFAULT_MAX_PENDING_SPANS
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    # Upstream OTLP/HTTP traces URLs that every accepted batch is re-sent to (see ingest/forward.py).
    forward_urls: tuple[str, ...] = ()
    forward_queue_bytes: int = DEFAULT_FORWARD_QUEUE_BYTES
    forward_initial_backoff_seconds: float = DEFAULT_FORWARD_INITIAL_BACKOFF_SECONDS
    forward_max_backoff_seconds: float = DEFAULT_FORWARD_MAX_BACKOFF_SECONDS
    # Queue depth and dead-letter queues; None leaves SQS alone.
    sqs: SqsSettings | None = None
