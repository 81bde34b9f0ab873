"""The live feed in Redis: recent tier changes and churn alerts for the
dashboard, and each user's latest ones for the user lookup.

Key layout (prefix P, as in store.membership):
  P feed            stream  the latest published tier changes and churn alerts,
                    capped near FEED_LENGTH; fields `k` (tier_change | churn_alert)
                    and `r` (the record as published on its topic)
  P changes:<id>    list    the user's last `keep` changes and alerts, newest
                    first, compact: [id, at_ms, from_tier, to_tier, from_stage,
                    to_stage] or [id, at_ms, "alert", level]

The worker writes a record here only after Kafka acknowledged it, so the
dashboard never shows a decision that is not on its topic. The topics stay
the contract: this is a view. A decision re-derived after a crash carries
its old id; the user list skips an id it already holds, and the dashboard
drops ids it has shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from stream import topics

FEED_LENGTH = 1000  # stream entries kept (approximately: MAXLEN ~ trims whole nodes)
# The topics whose published records the feed shows, and what it calls each.
KINDS = {topics.TIER_CHANGES: "tier_change", topics.CHURN_ALERTS: "churn_alert"}

# ARGV: prefix, maxlen, keep, then 4 values per entry: kind, user id, id,
# compact JSON for the user's list; then, after a '' separator, the full
# records for the stream (kind, JSON) pairs. One call per flush.
_APPEND = """
local p, maxlen, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local i = 4
while ARGV[i] ~= '' do
  local ukey = p .. 'changes:' .. ARGV[i + 1]
  if keep > 0 then
    local seen = false
    for _, e in ipairs(redis.call('LRANGE', ukey, 0, keep - 1)) do
      if string.find(e, ARGV[i + 2], 1, true) == 3 then seen = true end
    end
    if not seen then
      redis.call('LPUSH', ukey, ARGV[i + 3])
      redis.call('LTRIM', ukey, 0, keep - 1)
    end
  end
  i = i + 4
end
i = i + 1
while i < #ARGV do
  redis.call('XADD', p .. 'feed', 'MAXLEN', '~', maxlen, '*', 'k', ARGV[i], 'r', ARGV[i + 1])
  i = i + 2
end
return 1
"""


@dataclass(slots=True, frozen=True)
class FeedItem:
    kind: str  # tier_change | churn_alert
    user_id: str
    record: bytes  # as published


def compact(kind: str, record: dict) -> bytes:
    """The user list's entry: the id first, so the script can find it."""
    if kind == "tier_change":
        return orjson.dumps([record["change_id"], record["at_ms"], record["from_tier"], record["to_tier"],
                             record["from_stage"], record["to_stage"]])
    return orjson.dumps([record["alert_id"], record["at_ms"], "alert", record["level"]])


def expand(entry: bytes) -> dict:
    """A user list entry as the API serves it."""
    e = orjson.loads(entry)
    if len(e) == 4 and e[2] == "alert":
        return {"kind": "churn_alert", "id": e[0], "at_ms": e[1], "level": e[3]}
    return {"kind": "tier_change", "id": e[0], "at_ms": e[1], "from_tier": e[2], "to_tier": e[3],
            "from_stage": e[4], "to_stage": e[5]}


class FeedWriter:
    def __init__(self, redis: Redis, prefix: str, keep_per_user: int = 3) -> None:
        self._prefix = prefix
        self._keep = keep_per_user
        self._append = redis.register_script(_APPEND)

    async def write(self, items: Iterable[FeedItem], stream_last: int = 200) -> int:
        """Every item goes to its user's list; the stream gets the last
        `stream_last` only: a catch-up of thousands per second would
        otherwise rewrite the whole stream each flush for nobody to read."""
        items = list(items)
        if not items:
            return 0
        args: list = [self._prefix, FEED_LENGTH, self._keep]
        for item in items:
            record = orjson.loads(item.record)
            args += (item.kind, item.user_id, record.get("change_id") or record.get("alert_id"),
                     compact(item.kind, record))
        args.append("")
        for item in items[-stream_last:]:
            args += (item.kind, item.record)
        await self._append(args=args)
        return len(items)


class FeedReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._key = prefix + "feed"
        self._prefix = prefix

    async def latest(self, count: int) -> list[tuple[str, str, bytes]]:
        """The last `count` entries, oldest first: (stream id, kind, record)."""
        entries = await self._redis.xrevrange(self._key, count=count)
        return [_entry(e) for e in reversed(entries)]

    async def after(self, last_id: str, block_ms: int | None, count: int = 500) -> list[tuple[str, str, bytes]]:
        """Entries after `last_id`, waiting up to `block_ms` for the first (None: not at all)."""
        found = await self._redis.xread({self._key: last_id}, count=count, block=block_ms)
        return [_entry(e) for _, entries in found for e in entries]

    async def user_changes(self, user_id: str) -> list[dict]:
        return [expand(e) for e in await self._redis.lrange(self._prefix + "changes:" + user_id, 0, -1)]


def _entry(e: tuple) -> tuple[str, str, bytes]:
    stream_id, fields = e
    return stream_id.decode(), fields[b"k"].decode(), fields[b"r"]
