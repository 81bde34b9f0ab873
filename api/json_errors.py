"""JSON bodies for the errors aiohttp answers before any handler runs.

A request aiohttp cannot parse (an over-long request line or header, a bad
method) never reaches the application or its middlewares: aiohttp's
`RequestHandler.handle_error` answers it with a text body. The API promises
JSON for every error, so this module, and only this one, overrides that
internal; tests/unit/test_api.py fails loudly if aiohttp changes the shape
it relies on (the method's signature, the runner building a `Server`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web, web_protocol, web_server


class _JsonErrorRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        # aiohttp's own: logs, and raises if a response was already started.
        super().handle_error(request, status, exc, message)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
        detail = message or phrase
        if status == 500:
            detail = "internal error (logged by the API)"  # never leak a traceback
        resp = web.Response(status=status, body=orjson.dumps({"error": detail}), content_type="application/json")
        resp.force_close()
        return resp


class _JsonErrorServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests in JSON."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        return _JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation, loop=server._loop,
                                **server._kwargs)
