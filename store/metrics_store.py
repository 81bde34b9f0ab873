"""The operator metrics in Redis: applied once per step, read by the API.

Key layout (prefix P):
  P m:<grain>:<label>          hash  a period's cells (state.kpis); `late:<cell>`
                               holds the part booked by late events
  P m:c:<by>:<grain>:<label>   hash  a cohort: active users per later period
  P m:acq:<grain>:<label>      hash  an acquisition cohort, per channel (state.acquisition)
  P m:months                   set   months with cells (members are summed over them)
  P m:wm                       hash  partition -> watermark its facts were applied up to
  P m:partitions               string how many partitions the events topic has
  P m:open                     zset  periods with cells not yet published closed, by end time
  P m:from0:<p>                string set when partition p's facts were applied from offset 0:
                               a Redis that comes back empty has none, and is rebuilt
  P m:spend                    hash  cost statements in force: `<period>|<channel>` -> cents
  P m:spend_at                 hash  the same keys -> the statement's offset in tierstream.costs
  P m:from0:costs              string set when the costs topic was read from offset 0
  P user:<id>  field `mv`      the user's last step whose facts are applied

Idempotence: a step is applied only if its version is above the user's `mv`,
in the same script call that applies its cells, so redelivered facts (the
aggregator's own restarts) and re-derived ones (the worker's) count once.
One call applies a whole facts record (a chunk of one partition's steps, up to
CHUNK_ARGS arguments) atomically: a reader never sees half of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from state.calendar import Calendar, label
from state.kpis import Step
from state.metrics_report import cohort_table, kpi_row, period_key, prefix_keys

# ARGV: prefix, partition, watermark, then per step: user, version, ncells,
# nlate, cell, value, ... (ncells pairs, then nlate pairs).
# Returns the keys touched (for the aggregator to track open periods); the
# late cells applied go to the partition's correction outbox.
_APPLY = """
local p, part, wm = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- A Redis emptied since the aggregator last looked has no `from0` marker:
-- apply nothing (a step applied now would set the user's `mv` and hide
-- that user's earlier steps from the rebuild that reads from offset 0).
if redis.call('EXISTS', p .. 'm:from0:' .. part) == 0 then return false end
-- Increments are summed here first and written once per (hash, field):
-- the steps of a batch share their periods, so this is far fewer writes.
local acc, months, touched = {}, {}, {}
local function targets(cell)
  local bar = string.find(cell, '|', 1, true)
  local key, name = string.sub(cell, 1, bar - 1), string.sub(cell, bar + 1)
  if string.sub(key, 1, 2) == 'a:' then
    local d, w, m = string.match(key, '^a:([^,]+),([^,]+),([^,]+)$')
    return {'day:' .. d, 'week:' .. w, 'month:' .. m}, name, m
  end
  if string.sub(key, 1, 2) == 'q:' then
    local w, m = string.match(key, '^q:([^,]+),([^,]+)$')
    return {'acq:week:' .. w, 'acq:month:' .. m}, name, nil
  end
  return {key}, name, nil
end
local function bump(cell, value, is_late)
  local keys, name, m = targets(cell)
  if m then months[m] = true end
  for _, k in ipairs(keys) do
    local h = acc[k]
    if not h then h = {}; acc[k] = h end
    h[name] = (h[name] or 0) + value
    if is_late then h['late:' .. name] = (h['late:' .. name] or 0) + value end
    touched[k] = true
  end
end
local i = 4
while i <= #ARGV do
  local user, v, n, nl = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  local ukey = p .. 'user:' .. user
  local mv = tonumber(redis.call('HGET', ukey, 'mv') or '-1')
  if v > mv then
    for j = 0, n - 1 do bump(ARGV[i + 2 * j], tonumber(ARGV[i + 2 * j + 1]), false) end
    for j = n, n + nl - 1 do
      bump(ARGV[i + 2 * j], tonumber(ARGV[i + 2 * j + 1]), true)
      -- Outbox of corrections to publish: written with the cells, so an
      -- aggregator killed before publishing them still publishes them.
      redis.call('RPUSH', p .. 'm:outbox:' .. part,
                 user .. '\t' .. v .. '\t' .. ARGV[i + 2 * j] .. '\t' .. ARGV[i + 2 * j + 1])
    end
    redis.call('HSET', ukey, 'mv', v)
  else
    -- Applied before, by an aggregator that may have died before it
    -- tracked the periods touched: they are returned again, so a period
    -- first touched by that step still gets its closed record.
    for j = 0, n + nl - 1 do
      for _, k in ipairs((targets(ARGV[i + 2 * j]))) do touched[k] = true end
    end
  end
  i = i + 2 * (n + nl)
end
for k, h in pairs(acc) do
  for name, value in pairs(h) do
    if value ~= 0 then redis.call('HINCRBY', p .. 'm:' .. k, name, value) end
  end
end
local keys = {}
for k, _ in pairs(touched) do keys[#keys + 1] = k end
for m, _ in pairs(months) do redis.call('SADD', p .. 'm:months', m) end
local old = tonumber(redis.call('HGET', p .. 'm:wm', part) or '-1')
if wm > old then redis.call('HSET', p .. 'm:wm', part, wm) end
return keys
"""
# Trim the outbox's oldest ARGV[1] entries if they still start with ARGV[2]
# and end with ARGV[3] (another aggregator may have trimmed them already).
_TRIM = """
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) == ARGV[2] and redis.call('LINDEX', KEYS[1], n - 1) == ARGV[3] then
  redis.call('LTRIM', KEYS[1], n, -1)
  return 1
end
return 0
"""
# Cost statements: ARGV prefix, then (field, offset, cents) triples. A
# statement replaces its key's only if it comes later in the topic: a
# redelivered older one (an aggregator's restart) never undoes a correction.
_SPEND = """
local p = ARGV[1]
for i = 2, #ARGV, 3 do
  local at = tonumber(redis.call('HGET', p .. 'm:spend_at', ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > at then
    redis.call('HSET', p .. 'm:spend_at', ARGV[i], ARGV[i + 1])
    redis.call('HSET', p .. 'm:spend', ARGV[i], ARGV[i + 2])
  end
end
return 1
"""
CHUNK_ARGS = 20_000  # script arguments per call: bounds how long Redis is busy with one call


class MetricsReset(Exception):
    """Redis lost a partition's metrics (no `from0` marker): nothing of the
    call was applied; its facts must be read again from offset 0."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"the metrics of partition {partition} are gone from redis")
        self.partition = partition


class MetricsStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._p = prefix
        self._apply = redis.register_script(_APPLY)
        self._trim = redis.register_script(_TRIM)
        self._spend = redis.register_script(_SPEND)

    def key(self, suffix: str) -> str:
        return f"{self._p}m:{suffix}"

    async def apply(self, partition: int, watermark: int, steps: Sequence[Step]) -> set[str]:
        """Apply the facts of `steps` (each once) and advance the partition's
        watermark. Returns the period and cohort keys touched. Raises
        MetricsReset, applying nothing more, once the partition's `from0`
        marker is gone (mark_from_start first)."""
        touched: set[str] = set()
        args: list[Any] = []
        calls = []
        for step in steps:
            late_cells = step.late or {}
            args += (step.user_id, step.version, len(step.facts), len(late_cells))
            for cells in (step.facts, late_cells):
                for cell, value in cells.items():
                    args += (cell, value)
            if len(args) > CHUNK_ARGS:
                calls.append(args)
                args = []
        calls.append(args)
        # One call per chunk, in order; the watermark goes with the last, so
        # a period is never seen closed before all its facts are in.
        for n, chunk in enumerate(calls):
            wm = watermark if n == len(calls) - 1 else -1
            keys = await self._apply(args=[self._p, partition, wm, *chunk])
            if keys is None:
                raise MetricsReset(partition)
            touched.update(k.decode() for k in keys)
        return touched

    async def apply_costs(self, statements: Sequence[tuple[str, int, int]]) -> None:
        """(key, offset, cents) of cost statements, in any order: each key
        keeps the statement latest in the topic."""
        for start in range(0, len(statements), CHUNK_ARGS // 3):
            args: list[Any] = [self._p]
            for key, offset, cents in statements[start:start + CHUNK_ARGS // 3]:
                args += (key, offset, cents)
            await self._spend(args=args)

    async def spend(self) -> dict[str, int]:
        """Every statement in force: `<period>|<channel>` -> cents."""
        return {k.decode(): int(v) for k, v in (await self._redis.hgetall(self.key("spend"))).items()}

    async def corrections(self, partition: int, limit: int = 1000) -> list[tuple[str, int, str, int]]:
        """The oldest late cells of the partition not yet published, whole
        steps only: a step's cells are one record per period, with one id,
        so a step cut in two would publish two different records under the
        same id (a reader deduplicating by id would drop half)."""
        raw = await self._redis.lrange(self.key(f"outbox:{partition}"), 0, limit)
        out = []
        for entry in raw:
            user, version, cell, value = entry.decode().split("\t")
            out.append((user, int(version), cell, int(value)))
        if len(out) > limit:  # more than asked for: end at a step's last cell
            last = out[limit][:2]
            end = limit
            while end > 0 and out[end - 1][:2] == last:
                end -= 1
            if end == 0:  # one step longer than the limit: read it whole
                raw = await self._redis.lrange(self.key(f"outbox:{partition}"), 0, -1)
                whole = [e.decode().split("\t") for e in raw]
                end = next((i for i, e in enumerate(whole) if (e[0], int(e[1])) != last), len(whole))
                out = [(u, int(v), c, int(x)) for u, v, c, x in whole[:end]]
            out = out[:end]
        return out

    async def corrections_published(self, partition: int, entries: Sequence[tuple[str, int, str, int]]) -> None:
        """Drop the published entries, if they are still the oldest: during
        a rebalance two aggregators may publish the same entries (the same
        ids: a duplicate), but trimming twice would drop entries that
        neither published."""
        if entries:
            first, last = ("\t".join(map(str, e)) for e in (entries[0], entries[-1]))
            await self._trim(keys=[self.key(f"outbox:{partition}")], args=[len(entries), first, last])

    async def set_partitions(self, partitions: int) -> None:
        await self._redis.set(self.key("partitions"), partitions)

    async def closed_until(self) -> int | None:
        """Event time up to which every partition's facts are applied: the
        periods ending by then are closed (only late events change them)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self.key("partitions"))
        pipe.hvals(self.key("wm"))
        count, marks = await pipe.execute()
        if count is None or len(marks) < int(count):
            return None
        return min(int(m) for m in marks)

    async def hashes(self, suffixes: Iterable[str]) -> dict[str, dict[str, int]]:
        suffixes = list(dict.fromkeys(suffixes))
        pipe = self._redis.pipeline(transaction=False)
        for s in suffixes:
            pipe.hgetall(self.key(s))
        out = {}
        for s, h in zip(suffixes, await pipe.execute()):
            if h:
                out[s] = {k.decode(): int(v) for k, v in h.items()}
        return out

    async def months(self) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(self.key("months")))

    # -- the aggregator's bookkeeping -----------------------------------

    async def track_open(self, ends: dict[str, int]) -> None:
        """Remember periods not yet published as closed (a period published
        already stays published: its later changes are corrections)."""
        if not ends:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, end in ends.items():
            pipe.sismember(self.key("published"), key)
        published = await pipe.execute()
        fresh = {k: e for (k, e), done in zip(ends.items(), published) if not done}
        if fresh:
            await self._redis.zadd(self.key("open"), fresh, nx=True)

    async def closable(self, until_ms: int) -> list[str]:
        return [k.decode() for k in await self._redis.zrangebyscore(self.key("open"), "-inf", until_ms)]

    async def mark_published(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.sadd(self.key("published"), *keys)
        pipe.zrem(self.key("open"), *keys)
        await pipe.execute()

    async def is_published(self, key: str) -> bool:
        return bool(await self._redis.sismember(self.key("published"), key))

    async def missing_from_start(self, partitions: Iterable[int]) -> set[int]:
        partitions = list(partitions)
        if not partitions:
            return set()
        marks = await self._redis.mget([self.key(f"from0:{p}") for p in partitions])
        return {p for p, m in zip(partitions, marks) if m is None}

    async def costs_from_start(self) -> bool:
        return bool(await self._redis.exists(self.key("from0:costs")))

    async def mark_costs_from_start(self) -> None:
        await self._redis.set(self.key("from0:costs"), 1)

    async def mark_from_start(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            await self._redis.set(self.key(f"from0:{p}"), 1)

    async def latest_ms(self) -> int | None:
        """The furthest watermark any partition's facts reached."""
        marks = await self._redis.hvals(self.key("wm"))
        return max((int(m) for m in marks), default=None)

    # -- figures ---------------------------------------------------------

    async def kpis(self, grain: str, indices: Sequence[int], tiers: list[str], stages: list[str],
                   calendar: Calendar, corrected: bool = True, settle_ms: int = 0) -> list[dict[str, Any]]:
        """The KPI rows of the given periods (state.metrics_report.kpi_row)."""
        months = await self.months()
        wanted: list[str] = []
        for i in indices:
            wanted += [period_key(grain, i), *prefix_keys(grain, i, months), *prefix_keys(grain, i - 1, months)]
        cells = await self.hashes(wanted)
        closed = await self.closed_until()
        return [kpi_row(grain, i, cells, months, tiers, stages, calendar, closed, corrected, settle_ms)
                for i in indices]

    async def cohorts(self, by: str, grain: str, cohorts: Sequence[int], periods: int,
                      latest: int | None = None) -> list[dict[str, Any]]:
        wanted = [period_key(grain, c) for c in cohorts] + [f"c:{by}:{grain}:{label(grain, c)}" for c in cohorts]
        return cohort_table(by, grain, list(cohorts), await self.hashes(wanted), periods, latest)
