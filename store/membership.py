"""Segment membership in Redis: the writer the worker uses, the reader the API uses.

Key layout (prefix P, default "tierstream:"):
  P user:<id>       hash  v (version), tier, stage, doc (the API's JSON)
  P tier:<name>     zset  member ids, all scored 0 so they page in id order
  P stage:<name>    zset  member ids
  P segments        set   "tier:<name>" / "stage:<name>": declared by the rules, or ever used
  P synced:<p>      string  set by the worker owning partition p once Redis agrees with
                    its state; a Redis that comes back empty has none (see `missing_markers`)
  P progress        hash  partition -> {"behind_ms", "at_ms"}: how far each partition's
                    decisions trail its latest event time, written every second by its owner

One Lua script moves a user between sets and updates the record in one
atomic step, and refuses any update whose version is not newer than the
stored one: a delayed write from an old owner can never win. Healing after
a crash (`differing`, then `write(..., force=True)`) compares versions
first and rewrites only the users whose stored version is not the state's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

# ARGV: prefix, mode, then 5 values per user (id, version, tier, stage, doc).
# One call carries a whole batch: far fewer round trips and packed commands
# than one EVALSHA per user, and each user's update is still atomic.
# Mode 'newer' writes only over an older version (the normal path); mode
# 'differs' writes over any other version: healing, by the partition's
# owner, of a Redis that got ahead of the changelog before a crash.
_UPSERT_MANY = """
local p, force = ARGV[1], ARGV[2] == 'differs'
local applied = 0
for i = 3, #ARGV, 5 do
  local id, v, tier, stage, doc = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ukey = p .. 'user:' .. id
  local cur = redis.call('HMGET', ukey, 'v', 'tier', 'stage')
  local stored = cur[1] and tonumber(cur[1])
  if (not stored) or (force and stored ~= tonumber(v)) or stored < tonumber(v) then
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
# ARGV: prefix, then (id, version) pairs; returns the ids whose stored
# version is not that one (or who are missing).
_DIFFERING = """
local p = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  local stored = redis.call('HGET', p .. 'user:' .. ARGV[i], 'v')
  if not stored or tonumber(stored) ~= tonumber(ARGV[i + 1]) then out[#out + 1] = ARGV[i] end
end
return out
"""
CHUNK = 500  # users per script call: bounds how long Redis is busy with one call
# Users per round trip: bounds what one write holds in memory (documents and
# packed commands); a flush after Redis was away, or a healing, can hold
# every user the worker owns.
ROUND_TRIP = 20 * CHUNK


# The fields of a user's hash that membership writes (see the module doc).
MEMBERSHIP_FIELDS = ("v", "tier", "stage", "doc")


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
        self._differing = redis.register_script(_DIFFERING)

    async def write(self, updates: Iterable[MembershipUpdate], force: bool = False) -> int:
        """Apply updates, a round trip per ROUND_TRIP users; returns how many
        Redis took: those newer than what it holds or, with `force`, those
        that differ from it."""
        pipe = self._redis.pipeline(transaction=False)
        head = [self._prefix, "differs" if force else "newer"]
        args: list = list(head)
        calls = taken = 0
        for u in updates:
            args += (u.user_id, u.version, u.tier, u.stage, u.doc)
            if len(args) > CHUNK * 5:
                await self._upsert_many(args=args, client=pipe)
                args, calls = list(head), calls + 1
                if calls * CHUNK >= ROUND_TRIP:
                    taken, calls = taken + sum(await pipe.execute()), 0
        if len(args) > len(head):
            await self._upsert_many(args=args, client=pipe)
            calls += 1
        if calls:
            taken += sum(await pipe.execute())
        return taken

    async def differing(self, versions: Iterable[tuple[str, int]], chunk: int = 2000) -> list[str]:
        """The users whose version in Redis is not the given one, or who are
        missing: one HGET per user inside Redis, ids and versions on the
        wire, no documents."""
        out: list[str] = []
        args: list = [self._prefix]
        for user_id, version in versions:
            args += (user_id, version)
            if len(args) > chunk * 2:
                out += [i.decode() for i in await self._differing(args=args)]
                args = [self._prefix]
        if len(args) > 1:
            out += [i.decode() for i in await self._differing(args=args)]
        return out

    async def missing_markers(self, partitions: Iterable[int]) -> set[int]:
        """The partitions whose 'synced' marker is gone: a Redis restarted
        empty (or flushed) has lost their users too."""
        parts = sorted(partitions)
        if not parts:
            return set()
        found = await self._redis.mget([f"{self._prefix}synced:{p}" for p in parts])
        return {p for p, value in zip(parts, found, strict=True) if value is None}

    async def write_progress(self, behind: dict[int, int], at_ms: int) -> None:
        if behind:
            await self._redis.hset(self._prefix + "progress", mapping={
                str(p): orjson.dumps({"behind_ms": ms, "at_ms": at_ms}) for p, ms in behind.items()})

    async def mark_synced(self, partitions: Iterable[int]) -> None:
        parts = list(partitions)
        if parts:
            await self._redis.mset({f"{self._prefix}synced:{p}": b"1" for p in parts})

    async def declare_segments(self, tiers: Iterable[str], stages: Iterable[str]) -> None:
        """List every segment the rules can produce, so counts show empty ones as 0."""
        names = [f"tier:{t}" for t in tiers] + [f"stage:{s}" for s in stages]
        await self._redis.sadd(self._prefix + "segments", *names)

    async def write_config(self, summary: bytes) -> None:
        """The configuration in force (state.config), for the API to serve."""
        await self._redis.set(self._prefix + "config", summary)

    async def clear(self) -> int:
        """Delete the membership under the prefix (before a rebuild): every
        key but the operator metrics' (`m:*`), and of each user's hash only
        its membership fields. The metrics and each user's `mv` belong to
        the workers' aggregators, which may be applying facts right now
        (rebuilding a Redis that came back empty, say): deleting part of
        them under their feet would count steps twice or not at all.
        Returns how many keys were deleted or trimmed."""
        metrics, users = (self._prefix + "m:").encode(), (self._prefix + "user:").encode()
        touched = 0
        async for keys in _batched(self._redis.scan_iter(match=self._prefix + "*", count=1000), 1000):
            drop = [k for k in keys if not k.startswith((metrics, users))]
            trim = [k for k in keys if k.startswith(users)]
            if drop:
                touched += await self._redis.unlink(*drop)
            if trim:
                pipe = self._redis.pipeline(transaction=False)
                for k in trim:
                    pipe.hdel(k, *MEMBERSHIP_FIELDS)
                touched += sum(1 for n in await pipe.execute() if n)
        return touched


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

    async def progress(self) -> dict[int, dict]:
        """Each partition's latest progress report (MembershipWriter.write_progress)."""
        raw = await self._redis.hgetall(self._prefix + "progress")
        return {int(p): orjson.loads(v) for p, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    async def thresholds(self) -> bytes | None:
        """The latest quantile cut points, as the workers wrote them (agents.population)."""
        return await self._redis.get(self._prefix + "scores:thresholds")

    async def config(self) -> bytes | None:
        """The configuration in force, as the workers wrote it (state.config)."""
        return await self._redis.get(self._prefix + "config")

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
