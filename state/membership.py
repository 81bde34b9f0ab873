"""Segment membership in Redis: the writer the worker uses, the reader the API uses.

Key layout (prefix P, default "tierstream:"):
  P user:<id>       hash  v (version), tier, stage, doc (the API's JSON)
  P tier:<name>     zset  member ids, all scored 0 so they page in id order
  P stage:<name>    zset  member ids
  P segments        set   "tier:<name>" / "stage:<name>": declared by the rules, or ever used

One Lua script moves a user between sets and updates the record in one
atomic step, and refuses any update whose version is not newer than the
stored one: a delayed write from an old owner can never win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

# ARGV: prefix, then 5 values per user (id, version, tier, stage, doc).
# One call carries a whole batch: far fewer round trips and packed commands
# than one EVALSHA per user, and each user's update is still atomic.
_UPSERT_MANY = """
local p = ARGV[1]
local applied = 0
for i = 2, #ARGV, 5 do
  local id, v, tier, stage, doc = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ukey = p .. 'user:' .. id
  local cur = redis.call('HMGET', ukey, 'v', 'tier', 'stage')
  if not (cur[1] and tonumber(cur[1]) >= tonumber(v)) then
    redis.call('HSET', ukey, 'v', v, 'tier', tier, 'stage', stage, 'doc', doc)
    local kinds = {{'tier', cur[2], tier}, {'stage', cur[3], stage}}
    for _, k in ipairs(kinds) do
      if k[2] ~= k[3] then
        if k[2] then redis.call('ZREM', p .. k[1] .. ':' .. k[2], id) end
        redis.call('ZADD', p .. k[1] .. ':' .. k[3], 0, id)
        redis.call('SADD', p .. 'segments', k[1] .. ':' .. k[3])
      end
    end
    applied = applied + 1
  end
end
return applied
"""
CHUNK = 500  # users per script call: bounds how long Redis is busy with one call


@dataclass(slots=True, frozen=True)
class MembershipUpdate:
    user_id: str
    version: int
    tier: str
    stage: str
    doc: bytes  # JSON served as is by GET /v1/users/{id}


class MembershipWriter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._upsert_many = redis.register_script(_UPSERT_MANY)

    async def write(self, updates: Iterable[MembershipUpdate]) -> int:
        """Apply updates in one round trip; returns how many were newer than Redis."""
        pipe = self._redis.pipeline(transaction=False)
        args: list = [self._prefix]
        calls = 0
        for u in updates:
            args += (u.user_id, u.version, u.tier, u.stage, u.doc)
            if len(args) > CHUNK * 5:
                await self._upsert_many(args=args, client=pipe)
                args, calls = [self._prefix], calls + 1
        if len(args) > 1:
            await self._upsert_many(args=args, client=pipe)
            calls += 1
        if not calls:
            return 0
        return sum(await pipe.execute())

    async def declare_segments(self, tiers: Iterable[str], stages: Iterable[str]) -> None:
        """List every segment the rules can produce, so counts show empty ones as 0."""
        names = [f"tier:{t}" for t in tiers] + [f"stage:{s}" for s in stages]
        await self._redis.sadd(self._prefix + "segments", *names)

    async def clear(self) -> int:
        """Delete every key under the prefix (used before a rebuild)."""
        deleted = 0
        async for keys in _batched(self._redis.scan_iter(match=self._prefix + "*", count=1000), 1000):
            deleted += await self._redis.unlink(*keys)
        return deleted


async def _batched(aiter, size):  # type: ignore[no-untyped-def]
    batch = []
    async for item in aiter:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class UnknownSegment(LookupError):
    pass


class MembershipReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def user(self, user_id: str) -> bytes | None:
        return await self._redis.hget(self._prefix + "user:" + user_id, "doc")

    async def segment_names(self) -> list[str]:
        names = await self._redis.smembers(self._prefix + "segments")
        return sorted(n.decode() for n in names)

    async def counts(self) -> dict[str, dict[str, int]]:
        names = await self.segment_names()
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.zcard(self._prefix + name)
        sizes = await pipe.execute()
        out: dict[str, dict[str, int]] = {"tiers": {}, "stages": {}}
        for name, size in zip(names, sizes, strict=True):
            kind, _, segment = name.partition(":")
            out["tiers" if kind == "tier" else "stages"][segment] = size
        return out

    async def resolve(self, name: str) -> str:
        """'high_value' -> 'tier:high_value'; 'tier:x'/'stage:x' are taken as they are."""
        names = await self.segment_names()
        if name in names:
            return name
        matches = [n for n in names if n.partition(":")[2] == name]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UnknownSegment(f"no segment named {name!r}; known: {', '.join(names) or 'none yet'}")
        raise UnknownSegment(f"{name!r} is ambiguous; use one of {', '.join(matches)}")

    async def members(self, segment: str, limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        """A page of member ids in id order after `cursor` (the last id of the previous page)."""
        start = "(" + cursor if cursor else "-"
        ids = await self._redis.zrangebylex(self._prefix + segment, start, "+", start=0, num=limit + 1)
        page = [i.decode() for i in ids[:limit]]
        return page, (page[-1] if len(ids) > limit else None)


def doc_json(record: dict) -> bytes:
    return orjson.dumps(record)
