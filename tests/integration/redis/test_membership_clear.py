"""`rebuild-cache` clears membership only: the operator metrics and each
user's `mv` belong to the aggregators, which may be rebuilding them from
their facts at that very moment (a real Redis)."""

from __future__ import annotations


from state.kpis import Step
from store.membership import MembershipUpdate, MembershipWriter
from store.metrics_store import MetricsStore

PREFIX = "cleartest:"


async def test_clear_removes_membership_and_keeps_the_metrics_and_their_bookkeeping(own_redis):
    redis = own_redis
    writer, metrics = MembershipWriter(redis, PREFIX), MetricsStore(redis, PREFIX)
    await writer.declare_segments(["high_value", "low_value"], ["new", "active"])
    await writer.write([MembershipUpdate("ann", 3, "high_value", "active", b'{"user_id":"ann"}'),
                        MembershipUpdate("bob", 1, "low_value", "new", b'{"user_id":"bob"}')])
    await writer.mark_synced({0, 1})
    await metrics.set_partitions(2)
    await metrics.mark_from_start([0, 1])
    await metrics.apply(0, 86_400_000, [Step("ann", 3, {"day:2020-01-01|orders": 1})])
    metric_keys = {k async for k in redis.scan_iter(match=PREFIX + "m:*")}
    cells = {k: await redis.type(k) for k in metric_keys}
    assert len(metric_keys) >= 3 and await redis.hget(PREFIX + "user:ann", "mv") == b"3"

    await writer.clear()

    left = {k async for k in redis.scan_iter(match=PREFIX + "*")}
    assert {k for k in left if not k.startswith((PREFIX + "m:").encode())} == {(PREFIX + "user:ann").encode()}
    assert {k: await redis.type(k) for k in left if k in metric_keys} == cells  # the metrics, untouched
    assert await redis.hgetall(PREFIX + "user:ann") == {b"mv": b"3"}  # only the aggregator's field
    assert await metrics.missing_from_start([0, 1]) == set()  # no rebuild from offset 0 triggered

    # The rebuild then writes membership as if nothing had been there.
    await writer.write([MembershipUpdate("ann", 3, "high_value", "active", b'{"user_id":"ann"}')])
    assert await redis.hmget(PREFIX + "user:ann", "v", "tier", "mv") == [b"3", b"high_value", b"3"]
