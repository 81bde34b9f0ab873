"""The live feed and the dashboard's serving, over a real Redis and real
sockets: each published change reaches the stream and its user's list once;
the server-sent events give the backlog, then new entries, and resume after
Last-Event-ID; the token guards data but not the static files; the assets
load nothing from elsewhere."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from agents.outbox import Record
from agents.redis_sync import RedisSync
from api.dashboard import STATIC
from store.live_feed import FeedItem, FeedWriter
from stream.settings import Settings
from tests.support.servers import serving

PREFIX = "feedtest:"
TOKEN = "t0ken"


def change(n: int, user: str = "u1") -> FeedItem:
    record = {"change_id": f"c{n}", "user_id": user, "from_tier": "low_value", "to_tier": f"tier{n}",
              "from_stage": "new", "to_stage": "active", "at": "2024-01-01T00:00:00.000Z", "at_ms": n}
    return FeedItem("tier_change", user, orjson.dumps(record))


def alert(n: int, user: str = "u1") -> FeedItem:
    record = {"alert_id": f"a{n}", "user_id": user, "level": "at_risk", "days_inactive": 30, "tier": "x",
              "ltv": 1.0, "at": "2024-01-01T00:00:00.000Z", "at_ms": n}
    return FeedItem("churn_alert", user, orjson.dumps(record))


@pytest.fixture(scope="module")
async def api(tmp_path_factory):
    async with serving(tmp_path_factory, PREFIX, token=TOKEN) as (session, redis, app, port):
        yield session, redis, FeedWriter(redis, PREFIX, keep_per_user=3)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def events(resp, n: int) -> list[tuple[str, str, dict]]:
    """The next n server-sent events: (id, event, data)."""
    out: list[tuple[str, str, dict]] = []
    fields: dict[str, str] = {}
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if not line:
            if "data" in fields:
                out.append((fields["id"], fields["event"], orjson.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return out


async def test_each_change_reaches_its_users_list_once_newest_first(api):
    session, redis, writer = api
    await writer.write([change(1), change(2), alert(3)])
    await writer.write([change(2), change(4), change(5, user="u2")])  # c2 again: re-derived after a crash
    async with session.get("/v1/changes/u1", headers=AUTH) as resp:
        doc = await resp.json()
    assert [c["id"] for c in doc["changes"]] == ["c4", "a3", "c2"]  # 3 kept, c1 trimmed, c2 once
    assert doc["changes"][0] == {"kind": "tier_change", "id": "c4", "at_ms": 4, "from_tier": "low_value",
                                 "to_tier": "tier4", "from_stage": "new", "to_stage": "active"}
    assert doc["changes"][1] == {"kind": "churn_alert", "id": "a3", "at_ms": 3, "level": "at_risk"}
    assert await redis.xlen(PREFIX + "feed") == 6  # the stream is a view: duplicates are the reader's to drop


async def test_server_sent_events_give_the_backlog_then_new_entries_and_resume(api):
    session, _, writer = api
    async with session.get("/v1/feed", headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        backlog = await events(resp, 6)
        assert [e[2].get("change_id") or e[2].get("alert_id") for e in backlog] == ["c1", "c2", "a3", "c2", "c4", "c5"]
        assert backlog[2][1] == "churn_alert" and backlog[0][1] == "tier_change"
        await writer.write([change(6)])
        [new] = await events(resp, 1)
        assert new[2]["change_id"] == "c6" and new[0] > backlog[-1][0]
    await writer.write([change(7), change(8)])
    # A reconnecting browser sends the last id it saw: only what came after.
    async with session.get("/v1/feed", headers={**AUTH, "Last-Event-ID": new[0]}) as resp:
        resumed = await events(resp, 2)
    assert [e[2]["change_id"] for e in resumed] == ["c7", "c8"]
    async with session.get("/v1/feed", headers={**AUTH, "Last-Event-ID": "yesterday"}) as resp:
        assert resp.status == 400 and "yesterday" in (await resp.json())["error"]


async def test_the_token_guards_data_and_the_page_but_not_static_files(api):
    session, _, _ = api
    for path in ("/", "/v1/segments", "/v1/feed", "/v1/changes/u1", "/openapi.json", "/metrics"):
        async with session.get(path) as resp:
            assert resp.status == 401 and "TIERSTREAM_API_TOKEN" in (await resp.json())["error"], path
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with session.get("/v1/segments", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401 and "wrong token" in (await resp.json())["error"]
    async with session.get("/v1/segments", headers=AUTH) as resp:
        assert resp.status == 200
    async with session.get(f"/?access_token={TOKEN}") as resp:
        assert resp.status == 200 and "<title>tierstream</title>" in await resp.text()
    for path in ("/healthz", "/static/dashboard.js", "/static/charts.js", "/static/dashboard.css"):
        async with session.get(path) as resp:
            assert resp.status == 200, path
    async with session.get("/static/nothing.js") as resp:
        assert resp.status == 404 and "error" in await resp.json()


def test_the_dashboard_loads_nothing_from_elsewhere():
    """Offline: no CDN, no font service; the only URL is SVG's namespace."""
    for path in STATIC.iterdir():
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", path.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)


class _FailingFeed:
    def __init__(self) -> None:
        self.fail = True
        self.written: list[FeedItem] = []

    async def write(self, items):
        if self.fail:
            raise ConnectionError("redis down")
        self.written += list(items)


async def test_published_changes_wait_for_redis_and_none_is_lost():
    sync = RedisSync(Settings(), engine=None, membership=None, feed=_FailingFeed())  # the feed's part only
    records = [Record("tierstream.tier-changes", b"u1", change(1).record), Record("tierstream.events.dlq", b"x", b"{}"),
               Record("tierstream.churn-alerts", b"u1", alert(2).record)]
    sync.published(records)
    assert await sync.flush_feed() == 0 and len(sync.feed_pending) == 2
    sync.published([Record("tierstream.tier-changes", b"u2", change(3, "u2").record)])
    sync.feed.fail = False
    assert await sync.flush_feed() == 3
    assert [i.record for i in sync.feed.written] == [change(1).record, alert(2).record, change(3, "u2").record]
    assert [i.kind for i in sync.feed.written] == ["tier_change", "churn_alert", "tier_change"]
