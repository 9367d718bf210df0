"""Bearer-token authentication for every request, when the collector is started with a token."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from hopscope.collector.ingest.bearer import bearer_token_matches
from hopscope.collector.ingest.http_receiver import status_response
from hopscope.collector.otlp import codec as otlp_codec
from hopscope.collector.otlp.codec import Encoding

# Paths answered without a token: load balancers probe them. They show details only with the token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
# The scope key where the middleware leaves whether the request carried the token.
AUTHENTICATED = "hopscope.authenticated"


def is_authenticated(scope: Scope) -> bool:
    """Whether the request may see details: it carried the token, or the collector has none."""
    return bool(scope.get(AUTHENTICATED, True))


class BearerAuthMiddleware:
    """Answers 401 (with a google.rpc.Status body) unless ``Authorization: Bearer <token>`` matches.

    The paths of :data:`PUBLIC_PATHS` pass either way, marked with :func:`is_authenticated`.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The raw bytes: starlette's Headers would decode them as latin-1.
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        authenticated = bearer_token_matches(given, self._token)
        scope[AUTHENTICATED] = authenticated
        if authenticated or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        encoding = Encoding.from_content_type(headers.get("content-type")) or Encoding.JSON
        message = "missing bearer token" if not given else "wrong bearer token"
        response = status_response(401, otlp_codec.STATUS_UNAUTHENTICATED, message, encoding)
        response.headers["WWW-Authenticate"] = 'Bearer realm="hopscope"'
        await response(scope, receive, send)
