"""Run the collector: bind, log one line, serve until SIGINT/SIGTERM, drain, exit 0."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import ipaddress
import logging
import math
import signal
import socket
from collections.abc import Callable, Generator

import uvicorn

from hopscope.collector.app import create_app
from hopscope.collector.http.guard import ConnectionStats, fit_open_file_limit, protocol_class
from hopscope.collector.http.limits import HttpLimits
from hopscope.collector.settings import CollectorSettings
from hopscope.collector.store.url import open_store

log = logging.getLogger("hopscope.collector")

# Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 2048


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGINT/SIGTERM after shutdown; a drained collector exits 0 instead.

    ``before_startup`` runs on uvicorn's event loop before the app's lifespan starts: OTLP/gRPC (grpc.aio)
    must be bound on the loop that serves it, and the start line names its port.
    """

    def __init__(self, config: uvicorn.Config, before_startup: Callable[[], None]) -> None:
        super().__init__(config)
        self._before_startup = before_startup

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._before_startup()
        await super().startup(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving so that a taken port fails at once with a clear message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listen now, not when uvicorn starts serving after the app's startup: from the "listening on"
        # line on, connections wait in the backlog instead of being refused.
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"hopscope collector: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def run(settings: CollectorSettings, limits: HttpLimits | None = None) -> None:
    """Serve until SIGINT/SIGTERM; ``limits`` bound connections, headers and timeouts (http/guard.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = limits or HttpLimits()
    limits = dataclasses.replace(limits, max_connections=fit_open_file_limit(limits.max_connections))
    connections = ConnectionStats()
    store = open_store(settings.store_url or str(settings.db))
    try:
        app = create_app(settings, store, connections=connections, max_connections=limits.max_connections)
        sock = bind(settings.host, settings.port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            # uvicorn's httptools protocol with header, timeout and connection limits (http/guard.py); the
            # connection limit is the guard's, whose 503 carries Retry-After, not uvicorn's limit_concurrency.
            http=protocol_class(limits, connections),
            timeout_keep_alive=math.ceil(limits.idle_timeout),
            timeout_graceful_shutdown=30,
        )

        def announce() -> None:
            """Bind OTLP/gRPC when asked (a taken port exits here, in one line), then log the start line."""
            grpc = f", OTLP/gRPC on {shown}:{app.state.grpc.bind()}" if app.state.grpc else ""
            auth = "bearer token required" if settings.auth_token else "no auth"
            if not settings.receiver:
                log.info(
                    "listening on http://%s:%d (query API only, --no-receiver), stitching flows of the spans "
                    "others write to %s",
                    shown,
                    port,
                    store.label,
                )
                return
            log.info(
                "listening on http://%s:%d (OTLP/HTTP POST /v1/traces%s, %s), storing spans in %s",
                shown,
                port,
                grpc,
                auth,
                store.label,
            )
            if not settings.auth_token and not ipaddress.ip_address(host).is_loopback:
                log.warning("reachable from other machines without --auth-token: anyone there can send spans")

        _Server(config, announce).run(sockets=[sock])
        log.info("stopped; %d spans and log records stored in this run", app.state.writer.spans_written)
    finally:
        store.close()
