"""The live feed as server-sent events, and a user's latest changes.

One task per API process tails the Redis stream (store.live_feed) and fans
each entry out to every connected client: a blocking XREAD per browser tab
would hold a pooled Redis connection each. A client too slow to keep up
(its queue full) is disconnected; its browser reconnects with
Last-Event-ID and resumes from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiohttp import web

from store.live_feed import FeedReader

log = logging.getLogger(__name__)

BACKLOG = 20  # entries a new client gets first, so the feed is not empty
QUEUE = 1000  # entries a client may fall behind before it is dropped
HEARTBEAT_SECONDS = 15.0  # keeps proxies from closing an idle stream
BLOCK_MS = 500  # under the API's 1 s Redis socket timeout


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE)
        self.dropped = False  # fell QUEUE entries behind: ends, the browser reconnects and resumes


class FeedHub:
    def __init__(self, reader: FeedReader) -> None:
        self.reader = reader
        self.clients: set[Subscription] = set()
        self._task: asyncio.Task | None = None

    async def subscribe(self) -> Subscription:
        """From now on the client gets every entry newer than the hub's
        position, which is never past the stream's newest entry now: so a
        backlog read after this call leaves no gap."""
        sub = Subscription()
        self.clients.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._tail(await _newest_id(self.reader)))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.clients.discard(sub)

    async def _tail(self, last_id: str) -> None:
        while self.clients:
            try:
                entries = await self.reader.after(last_id, BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: clients keep their stream, we retry
                log.warning("live feed: reading Redis failed (%r); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
                continue
            for entry in entries:
                last_id = entry[0]
                for sub in list(self.clients):
                    try:
                        sub.queue.put_nowait(entry)
                    except asyncio.QueueFull:
                        self.clients.discard(sub)
                        sub.dropped = True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


HUB = web.AppKey("feed_hub", FeedHub)


def _event(entry: tuple[str, str, bytes]) -> bytes:
    stream_id, kind, record = entry
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (stream_id.encode(), kind.encode(), record)


async def get_feed(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `tier_change` and `churn_alert`, each with its
    published record as data. With Last-Event-ID (a reconnecting browser
    sends it) the stream resumes after that entry; else it starts with the
    last BACKLOG entries."""
    hub = request.app[HUB]
    resume = request.headers.get("Last-Event-ID") or request.query.get("after")
    if resume is not None and not _is_stream_id(resume):
        return web.Response(body=orjson.dumps({"error": f"Last-Event-ID {resume!r} is not a feed entry id"}),
                            status=400, content_type="application/json")
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    sub = await hub.subscribe()
    try:
        # Before prepare(): Redis unreachable still answers 503 JSON.
        backlog = await (hub.reader.after(resume, None, QUEUE) if resume else hub.reader.latest(BACKLOG))
        sent_after = backlog[-1][0] if backlog else (resume or "0-0")
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        for entry in backlog:
            await response.write(_event(entry))
        while not (sub.dropped and sub.queue.empty()):
            try:
                entry = await asyncio.wait_for(sub.queue.get(), timeout=HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if _id_key(entry[0]) <= _id_key(sent_after):
                continue  # already sent with the backlog
            await response.write(_event(entry))
            sent_after = entry[0]
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
    return response


async def _newest_id(reader: FeedReader) -> str:
    last = await reader.latest(1)
    return last[0][0] if last else "0-0"


def _is_stream_id(text: str) -> bool:
    ms, dash, seq = text.partition("-")
    return ms.isascii() and ms.isdigit() and (not dash or (seq.isascii() and seq.isdigit())) and len(text) < 42


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def get_user_changes(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    changes = await request.app[HUB].reader.user_changes(user_id)
    return web.Response(body=orjson.dumps({"user_id": user_id, "changes": changes}),
                        content_type="application/json")
