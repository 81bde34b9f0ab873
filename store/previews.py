"""Rules previews kept in Redis (state.preview): `tierstream rules preview
--save` puts one there, and the API serves them (GET /v1/rules/previews), so
that whoever decides on a change sees the same figures as whoever ran it.

The API holds no user states (it reads Redis only), so it cannot evaluate a
preview itself; the command reads the states from the changelog.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

KEEP = 20  # previews kept; the oldest go


class PreviewStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def save(self, doc: dict) -> None:
        """One preview (state.preview doc with `saved_by`, `saved_at_ms`), under
        its new version: saving the same version again replaces it."""
        version = doc["new_version"]
        index = self._prefix + "previews"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._prefix + "preview:" + version, orjson.dumps(doc))
            pipe.zadd(index, {version: doc["saved_at_ms"]})
            await pipe.execute()
        stale = await self._redis.zrange(index, 0, -(KEEP + 1))
        if stale:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(index, *stale)
                pipe.delete(*(self._prefix + "preview:" + v.decode() for v in stale))
                await pipe.execute()

    async def latest(self) -> list[dict]:
        """The saved previews, newest first, each without its flow lists."""
        versions = await self._redis.zrevrange(self._prefix + "previews", 0, KEEP - 1)
        docs = await self._redis.mget([self._prefix + "preview:" + v.decode() for v in versions]) if versions else []
        out = []
        for raw in docs:
            if raw is None:
                continue
            d = orjson.loads(raw)
            out.append({k: d.get(k) for k in ("new_version", "old_version", "at_ms", "users", "tier_moves",
                                                "stage_moves", "saved_by", "saved_at_ms", "rules_source")})
        return out

    async def get(self, version: str) -> dict | None:
        raw = await self._redis.get(self._prefix + "preview:" + version)
        return orjson.loads(raw) if raw is not None else None
