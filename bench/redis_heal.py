"""What healing Redis costs a worker after recovery: the version comparison
over every user it owns, and rewriting those that differ, at N users.

    python -m bench.redis_heal --users 1000000

Fills a fresh Redis with N membership records as a worker would, then
times (1) `differing` when Redis already agrees (a clean restart: the
common case), (2) the same when 1% of users are a version behind, plus
rewriting them, and (3) a Redis that came back empty: everyone rewritten.
Against it, the baseline in the same run: the initial fill itself, i.e. a
blind rewrite of everyone, which healing avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from cli.embedded import EmbeddedServers
from store.membership import MembershipUpdate, MembershipWriter
from stream.connection import RedisAccess

DOC = orjson.dumps({"tier": "mid_value", "stage": "active", "recency_days": 12, "frequency": 4, "monetary": 312.5,
                    "rfm": {"r": 4, "f": 3, "m": 2}, "lifetime_orders": 9, "ltv": 911.2, "aov": 101.2,
                    "evaluated_at": "2026-01-01T00:00:00Z", "version": 7})


def updates(n: int, version: int = 7) -> list[MembershipUpdate]:
    tiers = ("high_value", "potential", "mid_value", "low_value", "dormant")
    return [MembershipUpdate(f"user-{i:07d}", version, tiers[i % 5], "active", DOC) for i in range(n)]


async def timed(what: str, coro):  # type: ignore[no-untyped-def]
    """(seconds, result) of awaiting `coro`, printed as it finishes."""
    started = time.perf_counter()
    result = await coro
    seconds = time.perf_counter() - started
    print(f"{what:<48} {seconds:7.2f} s   ({result if isinstance(result, int) else len(result)} users)")
    return seconds, result


async def main(users: int) -> None:
    servers = EmbeddedServers().start()
    redis = RedisAccess.plain(servers.redis_url).client()
    writer = MembershipWriter(redis, "bench:")
    try:
        everyone = updates(users)
        versions = [(u.user_id, u.version) for u in everyone]

        async def write_all(batch: list[MembershipUpdate]) -> int:
            done = 0
            for i in range(0, len(batch), 20_000):  # the worker's flush size, roughly
                done += await writer.write(batch[i:i + 20_000], force=True)
            return done

        blind, _ = await timed("baseline: write every user (a blind rewrite)", write_all(everyone))
        agree, _ = await timed("heal, Redis agrees: compare versions", writer.differing(versions))
        behind = {u.user_id for u in everyone[:: 100]}
        ahead = [(u, v + 1 if u in behind else v) for u, v in versions]
        _, stale = await timed("heal, 1% a version behind: compare", writer.differing(ahead))
        await timed("  ... and rewrite them", write_all(
            [MembershipUpdate(u, 8, "low_value", "active", DOC) for u in stale]))
        await redis.flushdb(asynchronous=True)  # a synchronous flush of 1M keys outlasts the client timeout
        while await redis.dbsize():
            await asyncio.sleep(0.1)
        _, lost = await timed("heal, Redis came back empty: compare", writer.differing(versions))
        await timed("  ... and rewrite everyone", write_all(everyone))
        print(f"ratio: comparing when Redis agrees / blind rewrite = {agree / blind:.2f}")
        assert len(stale) == len(behind) and len(lost) == users
    finally:
        await redis.aclose()
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().users))
