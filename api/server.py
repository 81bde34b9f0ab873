"""HTTP read API over the Redis membership cache (aiohttp: already in the
dependency tree through Faust, asyncio-native, fast enough for p99 < 5 ms).

It reads Redis only, never a worker, so it scales on its own. Every answer
is JSON, errors included: a middleware turns aiohttp's HTTP errors (unknown
route, wrong method) and anything unexpected into `{"error": ...}`, and
api.json_errors does the same for requests aiohttp cannot even parse.
While Redis is unreachable the API answers 503 within about a second.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from datetime import UTC, datetime
from collections.abc import Awaitable, Callable

import orjson
import uvloop
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api import dashboard, feed, metrics
from api.config import CONFIG, PREVIEWS, RulesInForce, get_config, get_config_history, get_preview, get_previews, rules_in_force
from store.previews import PreviewStore
from api.access import require_token
from api.json_errors import JsonErrorAppRunner
from api.metrics import BadQuery
from api.openapi import ROUTES, openapi_document
from store.live_feed import FeedReader
from store.membership import MembershipReader, UnknownSegment
from state.quantiles import thresholds_doc
from store.metrics_store import MetricsStore
from state.rules import Rules, load_rules
from stream.connection import RedisAccess

log = logging.getLogger(__name__)

MAX_PAGE = 1000
READER = web.AppKey("reader", MembershipReader)
# How long one Redis call may take before the API says 503: a health check
# or a load balancer should hear "unavailable" fast, not wait for a hang.
REDIS_TIMEOUT_SECONDS = 1.0
_ASCII_INT = re.compile(r"[0-9]{1,9}")  # str.isdigit() also accepts '²' and '٣'


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


async def get_thresholds(request: web.Request) -> web.Response:
    doc = await request.app[READER].thresholds()
    if doc is None:  # no worker has settled cut points yet (or the rules use fixed thresholds only)
        return _json(thresholds_doc(await rules_in_force(request), None))
    return web.Response(body=doc, content_type="application/json")


async def get_segments(request: web.Request) -> web.Response:
    return _json(await request.app[READER].counts())


async def get_members(request: web.Request) -> web.Response:
    reader = request.app[READER]
    raw_limit = request.query.get("limit", "100")
    if not _ASCII_INT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_PAGE:
        return _error(400, f"limit must be an integer from 1 to {MAX_PAGE}, got {raw_limit!r}")
    try:
        segment = await reader.resolve(request.match_info["name"])
    except UnknownSegment as exc:
        return _error(404, str(exc))
    ids, cursor = await reader.members(segment, int(raw_limit), request.query.get("cursor") or None)
    return _json({"segment": segment, "members": ids, "next_cursor": cursor})


async def healthz(request: web.Request) -> web.Response:
    reader = request.app[READER]
    await reader.ping()  # unreachable: the middleware answers 503
    progress = await reader.progress()
    partitions = {str(p): {"behind_seconds": r["behind_ms"] / 1000,
                           "reported_at": datetime.fromtimestamp(r["at_ms"] / 1000, UTC).isoformat()}
                  for p, r in progress.items()}
    behind = max((r["behind_ms"] for r in progress.values()), default=None)
    return _json({"status": "ok", "decisions_behind_seconds": None if behind is None else behind / 1000,
                  "partitions": partitions})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadQuery as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 404 and (not exc.text or exc.text.startswith("404:")):
            reason = f"no such endpoint: {request.method} {request.path}; see the README's read API"
        response = _error(exc.status, reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (RedisConnectionError, RedisTimeoutError) as exc:
        return _error(503, f"membership store (Redis) unreachable: {exc.__class__.__name__}; retry shortly")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path_qs)
        return _error(500, "internal error (logged by the API)")


async def get_prometheus(request: web.Request) -> web.Response:
    """Current tier and stage membership as Prometheus gauges, from Redis:
    one scrape of any API instance sees the whole population (a worker
    only sees the partitions it owns)."""
    counts = await request.app[READER].counts()
    lines = ["# HELP tierstream_segment_members Users currently in the tier or stage (from the Redis cache)",
             "# TYPE tierstream_segment_members gauge"]
    for kind, key in (("tier", "tiers"), ("stage", "stages")):
        for name, n in sorted(counts[key].items()):
            lines.append(f'tierstream_segment_members{{kind="{kind}",segment="{name}"}} {n}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


# OpenAPI path -> (aiohttp route, handler); api.openapi.ROUTES documents each.
HANDLERS: dict[str, tuple[str, Handler]] = {
    # `.+`: a user id may hold any character the contract accepts ('{', '/', ...).
    "/v1/users/{user_id}": ("/v1/users/{user_id:.+}", get_user),
    "/v1/segments": ("/v1/segments", get_segments),
    "/v1/segments/{name}/members": ("/v1/segments/{name}/members", get_members),
    "/v1/metrics/kpis": ("/v1/metrics/kpis", metrics.get_kpis),
    "/v1/metrics/flows": ("/v1/metrics/flows", metrics.get_flows),
    "/v1/metrics/cohorts": ("/v1/metrics/cohorts", metrics.get_cohorts),
    "/v1/metrics/acquisition": ("/v1/metrics/acquisition", metrics.get_acquisition),
    "/v1/campaigns": ("/v1/campaigns", metrics.get_campaigns),
    "/v1/campaigns/{name}": ("/v1/campaigns/{name}", metrics.get_campaign),
    "/v1/changes/{user_id}": ("/v1/changes/{user_id:.+}", feed.get_user_changes),
    "/v1/feed": ("/v1/feed", feed.get_feed),
    "/v1/scores/thresholds": ("/v1/scores/thresholds", get_thresholds),
    "/v1/config": ("/v1/config", get_config),
    "/v1/config/history": ("/v1/config/history", get_config_history),
    "/v1/rules/previews": ("/v1/rules/previews", get_previews),
    "/v1/rules/previews/{version}": ("/v1/rules/previews/{version}", get_preview),
    "/healthz": ("/healthz", healthz),
}


def build_api(redis_access: RedisAccess, prefix: str, rules: Rules | None = None, token: str | None = None) -> web.Application:
    # The token check runs inside json_errors, so its 401 is JSON like any error.
    app = web.Application(middlewares=[json_errors, *([require_token(token)] if token else [])])
    redis = redis_access.client(
        max_connections=64, socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0),
    )
    app[READER] = MembershipReader(redis, prefix)
    app[metrics.STORE] = MetricsStore(redis, prefix)
    app[CONFIG] = RulesInForce(app[READER], rules if rules is not None else load_rules())
    app[PREVIEWS] = PreviewStore(redis, prefix)
    app[feed.HUB] = feed.FeedHub(FeedReader(redis, prefix))
    for route in ROUTES:
        path, handler = HANDLERS[route.path]
        app.router.add_get(path, handler)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_prometheus)
    dashboard.add_routes(app)

    async def close_redis(_: web.Application) -> None:
        await app[feed.HUB].close()
        await redis.aclose()

    # Open event streams would hold a graceful shutdown for its whole timeout.
    app.on_shutdown.append(lambda a: a[feed.HUB].close())
    app.on_cleanup.append(close_redis)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    runner = JsonErrorAppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def run_api(redis: RedisAccess, prefix: str, host: str, port: int, rules: Rules | None = None,
            token: str | None = None) -> None:
    # uvloop: the request path is all event-loop work (accept, parse, one
    # Redis round trip, write); libuv's loop roughly halves its cost.
    uvloop.run(serve(build_api(redis, prefix, rules, token), host, port))
