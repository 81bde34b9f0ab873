"""The configuration in force, as the API sees it: the workers write it to
Redis (state.config, agents.redis_sync.RedisSync.declare_segments); the API serves it
at GET /v1/config and evaluates its pages (tiers, campaigns, time zone)
with it, so that the API never shows another rules version than the
workers run. Until a worker has written one, the API's own rules serve.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from state.config import ConfigDocument
from store.membership import MembershipReader
from store.previews import PreviewStore
from state.rules import Rules, RulesError

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0  # a new version reaches the API's pages within this


class RulesInForce:
    def __init__(self, reader: MembershipReader, fallback: Rules) -> None:
        self.reader = reader
        self.rules = fallback
        self.summary: dict | None = None  # the document in force, once a worker wrote one
        self._checked = 0.0

    async def current(self) -> Rules:
        now = time.monotonic()
        if now - self._checked >= REFRESH_SECONDS:
            self._checked = now
            await self._refresh()
        return self.rules

    async def _refresh(self) -> None:
        raw = await self.reader.config()
        if raw is None:
            return
        summary = orjson.loads(raw)
        if self.summary is not None and summary.get("version") == self.summary.get("version"):
            self.summary = summary  # the same rules; the history may have grown (a roll-out proposed, refused)
            return
        doc = ConfigDocument(summary["rules"], summary.get("campaigns"), summary.get("rules_source") or "<rules>",
                             summary.get("campaigns_source"))
        try:
            self.rules = doc.rules()
        except RulesError:  # written by a worker that validated it: a newer tierstream's, say
            log.exception("the configuration in force (version %s) does not parse here; keeping %s",
                          summary.get("version"), self.rules.version)
            return
        self.summary = summary
        log.info("rules version %s in force", doc.version)


CONFIG = web.AppKey("config", RulesInForce)


async def rules_in_force(request: web.Request) -> Rules:
    return await request.app[CONFIG].current()


async def get_config(request: web.Request) -> web.Response:
    holder = request.app[CONFIG]
    await holder.current()
    if holder.summary is None:
        return web.Response(
            body=orjson.dumps({"error": "no worker has published the configuration in force yet: start a worker "
                                        "(it publishes its TIERSTREAM_RULES and TIERSTREAM_CAMPAIGNS)"}),
            status=404, content_type="application/json")
    return web.Response(body=orjson.dumps({k: v for k, v in holder.summary.items() if k != "history"}),
                        content_type="application/json")


async def get_config_history(request: web.Request) -> web.Response:
    """Every version put in force, newest first, with what it changed."""
    holder = request.app[CONFIG]
    await holder.current()
    if holder.summary is None:
        return web.Response(body=orjson.dumps({"error": "no worker has published the configuration in force yet"}),
                            status=404, content_type="application/json")
    versions = holder.summary.get("history")
    if versions is None:  # written by a worker from before the history was kept
        versions = [{k: holder.summary[k] for k in ("version", "published_by", "published_at_ms", "rules_source",
                                                     "campaigns_source")} | {"changes": []}]
    return web.Response(body=orjson.dumps({"versions": versions}), content_type="application/json")


PREVIEWS = web.AppKey("previews", PreviewStore)


async def get_previews(request: web.Request) -> web.Response:
    """The rules previews saved with `tierstream rules preview --save`, newest first."""
    return web.Response(body=orjson.dumps({"previews": await request.app[PREVIEWS].latest()}),
                        content_type="application/json")


async def get_preview(request: web.Request) -> web.Response:
    version = request.match_info["version"]
    doc = await request.app[PREVIEWS].get(version)
    if doc is None:
        return web.Response(body=orjson.dumps({"error": f"no saved preview of version {version}: "
                                                        "`tierstream rules preview NEW.toml --save NAME` saves one"}),
                            status=404, content_type="application/json")
    return web.Response(body=orjson.dumps(doc), content_type="application/json")
