"""The optional bearer token (TIERSTREAM_API_TOKEN) in front of the read
API and the dashboard.

Browsers cannot set headers on an EventSource or on the first page load,
so `?access_token=` (RFC 6750, section 2.3) is accepted as well as the
Authorization header; the dashboard passes on the token it was opened with.
The dashboard's static files hold no data and stay open, and so does
/healthz, for load balancers.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

OPEN_PATHS = ("/healthz",)
OPEN_PREFIXES = ("/static/",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_token(token: str) -> Callable:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.query.get("access_token", "")
        if not hmac.compare_digest(given.strip().encode(), expected):
            why = "a wrong token" if given else "no token"
            return web.Response(
                body=orjson.dumps({"error": f"this API needs its token (TIERSTREAM_API_TOKEN): the request had {why}; "
                                            "send 'Authorization: Bearer <token>' or add ?access_token=<token>"}),
                status=401, content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="tierstream"'})
        return await handler(request)

    return check
