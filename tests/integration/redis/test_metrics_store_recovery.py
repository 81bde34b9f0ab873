"""The metrics store's answers to the aggregator's failures (a real Redis).

- A Redis emptied under the aggregator (restarted without its data, or
  flushed by hand) is rebuilt from the facts topic's start. A step applied
  after the emptying but before the rebuild would set its user's `mv` and
  make the rebuild skip that user's earlier steps for good, so the apply
  script refuses to write anything to a partition without its `from0`
  marker.
- An aggregator killed after applying facts but before tracking the
  periods they touched: the facts come again, are skipped, and the periods
  are still returned, or a period touched only by them never gets its
  closed record."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from state.kpis import Step
from store.metrics_store import MetricsReset, MetricsStore

PREFIX = "resettest:"


@pytest.fixture
async def redis(own_redis):
    return own_redis


def order(version: int) -> Step:
    return Step("ann", version, {f"day:2020-01-0{version}|orders": 1})


async def test_facts_arriving_after_redis_was_emptied_wait_for_the_rebuild(redis):
    store = MetricsStore(redis, PREFIX)
    await store.mark_from_start([0])
    await store.apply(0, 1, [order(1), order(2), order(3)])
    await redis.flushdb()

    # The next facts, fetched before the emptying, applied after it.
    with pytest.raises(MetricsReset) as refused:
        await store.apply(0, 2, [order(4)])
    assert refused.value.partition == 0
    assert [k async for k in redis.scan_iter(match=PREFIX + "*")] == []  # nothing written, not even `mv`

    # The rebuild: every step from the first again.
    assert await store.missing_from_start([0]) == {0}
    await store.mark_from_start([0])
    await store.apply(0, 1, [order(1), order(2), order(3)])
    await store.apply(0, 2, [order(4)])
    cells = await store.hashes(f"day:2020-01-0{d}" for d in range(1, 5))
    assert cells == {f"day:2020-01-0{d}": {"orders": 1} for d in range(1, 5)}
    assert await redis.hget(PREFIX + "user:ann", "mv") == b"4"


async def test_facts_applied_before_still_name_the_periods_they_touch(redis):
    store = MetricsStore(redis, PREFIX)
    await store.mark_from_start([0])
    late = Step("bob", 2, {"day:2020-01-06|orders": 1}, {"day:2020-01-05|orders": 1})
    first = await store.apply(0, 1, [order(1), order(2), late])
    assert first == {"day:2020-01-01", "day:2020-01-02", "day:2020-01-05", "day:2020-01-06"}
    again = await store.apply(0, 1, [order(1), order(2), late])  # redelivered after a crash
    assert again == first
    assert await store.hashes(["day:2020-01-01", "day:2020-01-05"]) == {  # counted once
        "day:2020-01-01": {"orders": 1}, "day:2020-01-05": {"orders": 1, "late:orders": 1}}
    assert len(await store.corrections(0)) == 1


async def test_corrections_are_read_in_whole_steps(redis):
    """A step's late cells become one record per period with one id: read
    in two parts, they would become two different records under that id."""
    store = MetricsStore(redis, PREFIX)
    await store.mark_from_start([0])

    def late(user: str, version: int, cells: int) -> Step:
        return Step(user, version, {}, {f"day:2020-01-0{d}|orders": 1 for d in range(1, cells + 1)})

    await store.apply(0, -1, [late("ann", 1, 2), late("bob", 1, 3), late("cid", 1, 6)])
    first = await store.corrections(0, limit=4)
    assert [(u, v) for u, v, _, _ in first] == [("ann", 1)] * 2  # bob's three would not all fit
    await store.corrections_published(0, first)
    await store.corrections_published(0, first)  # a second aggregator's: trims nothing more
    second = await store.corrections(0, limit=4)
    assert [(u, v) for u, v, _, _ in second] == [("bob", 1)] * 3
    await store.corrections_published(0, second)
    third = await store.corrections(0, limit=4)  # one step longer than the limit: read whole
    assert [(u, v) for u, v, _, _ in third] == [("cid", 1)] * 6
    await store.corrections_published(0, third)
    assert await store.corrections(0, limit=4) == []
