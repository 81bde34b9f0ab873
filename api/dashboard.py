"""The operators' dashboard: static files shipped inside the package,
served by the read API at `/`. The page draws everything from the same
JSON endpoints (aggregates only, never member lists) and the live feed, so
it needs no worker and no build step, and works offline."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")


# The files shipped, by name: a request can name nothing else, so no path
# handling (and aiohttp's static handler answers a missing file with a
# non-JSON 404 that no middleware sees).
ASSETS = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.name != "index.html"}
NO_CACHE = {"Cache-Control": "no-cache"}  # after an upgrade, the page and its scripts must agree


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def asset(request: web.Request) -> web.FileResponse:
    path = ASSETS.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text=f"no dashboard file {request.match_info['name']!r}")
    return web.FileResponse(path, headers=NO_CACHE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
