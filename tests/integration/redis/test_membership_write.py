"""A membership write of more users than one round trip holds (the first
flush after Redis was away, or a healing, can hold every user the worker
owns): split into round trips of ROUND_TRIP users, every user written
once, the count Redis took right (a real Redis)."""

from __future__ import annotations

from store.membership import ROUND_TRIP, MembershipUpdate, MembershipWriter

PREFIX = "writetest:"


def updates(n: int, version: int, doc: bytes = b"{}") -> list[MembershipUpdate]:
    return [MembershipUpdate(f"u{i}", version, "high_value" if i % 2 else "low_value", "active", doc)
            for i in range(n)]


async def test_a_write_bigger_than_a_round_trip_is_split_and_loses_nobody(own_redis):
    redis = own_redis
    writer = MembershipWriter(redis, PREFIX)
    await writer.declare_segments(["high_value", "low_value"], ["active"])
    executed = []
    pipeline = redis.pipeline

    def counting(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a, **k):
            executed.append(len(pipe.command_stack))
            return await execute(*a, **k)

        pipe.execute = counted
        return pipe

    redis.pipeline = counting
    n = 2 * ROUND_TRIP + 123
    assert await writer.write(updates(n, version=1)) == n
    assert len(executed) == 3  # two full round trips and the rest
    assert await redis.zcard(PREFIX + "tier:high_value") + await redis.zcard(PREFIX + "tier:low_value") == n
    assert await redis.hget(PREFIX + f"user:u{n - 1}", "v") == b"1"
    assert await writer.write(updates(n, version=1)) == 0  # not newer: Redis takes none of them
    # Healing a Redis ahead of the changelog: any other version is written over.
    assert await writer.write(updates(n, version=0), force=True) == n
    assert await redis.hget(PREFIX + f"user:u{n - 1}", "v") == b"0"
    assert await writer.write([]) == 0
