"""Bearer-token authentication for every request, when the collector is started with a token."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from hopscope.collector import otlp_codec
from hopscope.collector.otlp_codec import Encoding
from hopscope.collector.receiver import status_response


class BearerAuthMiddleware:
    """Answers 401 (with a google.rpc.Status body) unless ``Authorization: Bearer <token>`` matches."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("authorization", "").encode()
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        encoding = Encoding.from_content_type(headers.get("content-type")) or Encoding.JSON
        message = "missing bearer token" if not given else "wrong bearer token"
        response = status_response(401, otlp_codec.STATUS_UNAUTHENTICATED, message, encoding)
        response.headers["WWW-Authenticate"] = 'Bearer realm="hopscope"'
        await response(scope, receive, send)
