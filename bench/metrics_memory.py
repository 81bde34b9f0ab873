"""The operator metrics' memory at 100k and 1M users, and their cost per
event in the pipeline with no I/O (metrics on against off, same run).

    python -m bench.metrics_memory --users 100000,1000000 [--events-per-user 4]

For each population: the pipeline (no Kafka, no Redis) takes the same
synthetic year with metrics off, then on; the facts are applied to a real
Redis by the same Lua script the aggregator uses. Reported:
- the per-period storage (Redis memory of the period and cohort hashes,
  which must not grow with users),
- the per-user cost: the state's extra bytes (the metric memory in each
  user's state) and the one `mv` field per user in Redis,
- the no-I/O throughput with and without metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

from redis.asyncio import Redis

from agents.pipeline import Pipeline
from bench import workload
from bench.offline_pipeline import PARTITIONS, _Table, drop, messages, metric_steps
from cli.embedded import EmbeddedServers
from store.metrics_store import MetricsStore
from state.rules import fixed_threshold_rules
from stream import topics
from stream.codecs import encode_state
from stream.settings import Settings
from stream.connection import RedisAccess


PREFIX = "memtest:"


def feed(users: int, events: int, metrics: bool) -> tuple[Pipeline, float]:
    records = messages(events, users)
    settings = Settings(clock="replay", max_future_seconds=10**9, operator_metrics=metrics)
    pipeline = Pipeline(SimpleNamespace(users=_Table()), settings, fixed_threshold_rules(), None)
    pipeline.on_active_partitions(set(range(PARTITIONS)))
    started = time.perf_counter()
    for start in range(0, len(records), settings.batch_max):
        for record in records[start : start + settings.batch_max]:
            pipeline.on_message(record)
        drop(pipeline)  # the records, the facts among them, built as a publish would
    return pipeline, events / (time.perf_counter() - started)


async def redis_bytes(redis: Redis, pattern: str) -> tuple[int, int]:
    keys = [k async for k in redis.scan_iter(match=pattern, count=5000)]
    pipe = redis.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    return len(keys), sum(await pipe.execute())


async def measure(users: int, per_user: int, servers: EmbeddedServers) -> dict:
    events = users * per_user
    off, off_eps = feed(users, events, metrics=False)
    state_off = statistics.fmean(len(encode_state(s)) for s in off.store.values())
    del off
    on, on_eps = feed(users, events, metrics=True)
    state_on = statistics.fmean(len(encode_state(s)) for s in on.store.values())
    del on
    # Once more, applying the facts to Redis as the aggregator would.
    redis = RedisAccess.plain(servers.redis_url).client()
    await redis.flushall()
    store = MetricsStore(redis, PREFIX)
    await store.mark_from_start(range(PARTITIONS))
    settings = Settings(clock="replay", max_future_seconds=10**9)
    pipeline = Pipeline(SimpleNamespace(users=_Table()), settings, fixed_threshold_rules(), None)
    pipeline.on_active_partitions(set(range(PARTITIONS)))
    for i, (k, v) in enumerate(workload.events(events, users, span_days=365)):
        pipeline.on_message(SimpleNamespace(topic=topics.EVENTS, partition=zlib.crc32(k) % PARTITIONS, offset=i,
                                            key=k, value=v))
        if len(pipeline.engine.engine(0).facts or ()) > 2000 or i == events - 1:
            for p, steps in metric_steps(pipeline).items():
                await store.apply(p, -1, steps)
    period_keys, period_bytes = await redis_bytes(redis, PREFIX + "m:*")
    user_keys, user_bytes = await redis_bytes(redis, PREFIX + "user:*")
    await redis.aclose()
    return {
        "users": users, "events": events,
        "no_io_eps_metrics_off": round(off_eps), "no_io_eps_metrics_on": round(on_eps),
        "ratio_on_vs_off": round(on_eps / off_eps, 3),
        "state_bytes_mean_off": round(state_off, 1), "state_bytes_mean_on": round(state_on, 1),
        "redis_period_and_cohort_keys": period_keys, "redis_period_and_cohort_bytes": period_bytes,
        "redis_mv_keys": user_keys, "redis_mv_bytes_per_user": round(user_bytes / max(1, user_keys), 1),
    }


async def main_async(populations: list[int], per_user: int) -> list[dict]:
    servers = EmbeddedServers().start(1)  # only its Redis is used
    try:
        rows = []
        for users in populations:
            row = await measure(users, per_user, servers)
            print(json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="100000,1000000")
    parser.add_argument("--events-per-user", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = asyncio.run(main_async([int(u) for u in args.users.split(",")], args.events_per_user))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
