"""Refuse requests for other host names while bound to a loopback address (DNS rebinding).

A web page can make a browser resolve its own host name to 127.0.0.1 and then send requests to a
collector on the developer's machine, with that name in ``Host``. Only names that cannot be rebound are
accepted: ``localhost`` and IP literals of loopback addresses, with any port (a forwarded port keeps
working). Bound to any other address, the collector is meant to be reached by name: no check.
"""

from __future__ import annotations

from google.rpc import code_pb2
from starlette.types import ASGIApp, Receive, Scope, Send

from hopscope.collector.ingest.http_receiver import status_response
from hopscope.collector.loopback import is_loopback_host


def _host_name(host_header: str) -> str:
    """The name of a ``Host`` value without its port: ``[::1]:4318`` -> ``::1``, ``a:80`` -> ``a``."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


class LoopbackHostMiddleware:
    """Answers 421 with a google.rpc.Status body when ``Host`` names anything but a loopback host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((value for name, value in scope["headers"] if name == b"host"), None)
            # A request without Host (HTTP/1.0) cannot come from a browser, which always sends one.
            if host is not None and not is_loopback_host(_host_name(host.decode("latin-1"))):
                message = (
                    "this collector listens on a loopback address and answers only requests for localhost "
                    "or a loopback IP address (Host header refused, as DNS rebinding protection)"
                )
                await status_response(421, code_pb2.PERMISSION_DENIED, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)
