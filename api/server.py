"""HTTP read API over the Redis membership cache (aiohttp: already in the
dependency tree through Faust, asyncio-native, fast enough for p99 < 5 ms).

It reads Redis only, never a worker, so it scales on its own.
"""

from __future__ import annotations

import orjson
import uvloop
from aiohttp import web
from redis.asyncio import Redis

from state.membership import MembershipReader, UnknownSegment

MAX_PAGE = 1000
READER = web.AppKey("reader", MembershipReader)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def get_user(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    doc = await request.app[READER].user(user_id)
    if doc is None:
        return _error(404, f"unknown user {user_id!r}: no event of theirs has been processed yet")
    return web.Response(body=doc, content_type="application/json")


async def get_segments(request: web.Request) -> web.Response:
    return _json(await request.app[READER].counts())


async def get_members(request: web.Request) -> web.Response:
    reader = request.app[READER]
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        return _error(400, f"limit must be an integer from 1 to {MAX_PAGE}, got {raw_limit!r}")
    try:
        segment = await reader.resolve(request.match_info["name"])
    except UnknownSegment as exc:
        return _error(404, str(exc))
    ids, cursor = await reader.members(segment, int(raw_limit), request.query.get("cursor") or None)
    return _json({"segment": segment, "members": ids, "next_cursor": cursor})


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[READER].ping()
    except Exception as exc:  # report, don't crash: this is what health checks are for
        return _error(503, f"redis unreachable: {exc}")
    return _json({"status": "ok"})


def build_api(redis_url: str, prefix: str) -> web.Application:
    app = web.Application()
    redis = Redis.from_url(redis_url, max_connections=64)
    app[READER] = MembershipReader(redis, prefix)
    app.router.add_get("/v1/users/{user_id}", get_user)
    app.router.add_get("/v1/segments", get_segments)
    app.router.add_get("/v1/segments/{name}/members", get_members)
    app.router.add_get("/healthz", healthz)

    async def close_redis(_: web.Application) -> None:
        await redis.aclose()

    app.on_cleanup.append(close_redis)
    return app


def run_api(redis_url: str, prefix: str, host: str, port: int) -> None:
    # uvloop: the request path is all event-loop work (accept, parse, one
    # Redis round trip, write); libuv's loop roughly halves its cost.
    web.run_app(
        build_api(redis_url, prefix), host=host, port=port, print=None, access_log=None,
        loop=uvloop.new_event_loop(),
    )
