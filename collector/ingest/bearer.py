"""The bearer-token check that the HTTP middleware (collector/auth.py) and the gRPC receiver both apply."""

from __future__ import annotations

import hmac


def bearer_token_matches(authorization: bytes, token: str) -> bool:
    """True when an ``Authorization`` value is ``Bearer <token>``.

    The scheme is case-insensitive and may be followed by more than one space (RFC 7235); the token is
    compared as UTF-8 bytes in constant time, so a non-ASCII token works when the client sends it as UTF-8.
    """
    scheme, _, credentials = authorization.strip().partition(b" ")
    given = credentials.lstrip(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given, token.encode("utf-8"))
