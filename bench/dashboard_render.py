"""The dashboard's first render with 1M users in Redis, against the same
page with 1k users, in one run.

    python -m bench.dashboard_render --users 1000000

Fills a fresh Redis with N membership records as a worker would, plus the
operator metrics of a synthetic year (the offline pipeline's facts, applied
by the metrics store), starts `tierstream api` on it, and loads the page in
headless Chromium five times at each size: first render = navigation start
to the moment every panel has drawn from the API's answers (the page's
`data-first-render-ms`). The API serves aggregates only (counts are ZCARDs,
metrics are per-period cells), so the page should not care how many users
there are: the ratio says whether that holds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from types import SimpleNamespace

from redis.asyncio import Redis

from agents.pipeline import Pipeline
from bench.offline_pipeline import PARTITIONS, _Table, messages, metric_steps
from bench.redis_heal import updates
from cli.embedded import redis_binary
from cli.processes import free_port, spawn, stop, wait_for_port
from state.campaigns import load_campaigns
from store.membership import MembershipWriter
from store.metrics_store import MetricsStore
from state.rules import fixed_threshold_rules
from stream.settings import Settings
from tests.support.browser import chromium, wait_for
from stream.connection import RedisAccess


PREFIX = "tierstream:"


async def fill_metrics(redis: Redis, events: int, users: int) -> None:
    rules = fixed_threshold_rules()
    rules = rules.with_campaigns(load_campaigns(None, rules.tier_names))
    pipeline = Pipeline(SimpleNamespace(users=_Table()), Settings(clock="replay", max_future_seconds=10**9), rules, None)
    pipeline.on_active_partitions(set(range(PARTITIONS)))
    for record in messages(events, users):
        pipeline.on_message(record)
    for p in range(PARTITIONS):
        engine = pipeline.engine.engine(p)
        engine.sweep(engine.watermark(0))
    steps = metric_steps(pipeline)
    store = MetricsStore(redis, PREFIX)
    await store.set_partitions(PARTITIONS)
    await store.mark_from_start(range(PARTITIONS))
    for p in range(PARTITIONS):
        await store.apply(p, pipeline.engine.engine(p).swept_to or 0, steps.get(p, []))


async def fill_users(redis: Redis, start: int, end: int) -> None:
    writer = MembershipWriter(redis, PREFIX)
    await writer.declare_segments(fixed_threshold_rules().tier_names, ["new", "active", "at_risk", "churned", "reactivated"])
    batch = updates(end)[start:]
    for i in range(0, len(batch), 20_000):
        await writer.write(batch[i:i + 20_000], force=True)


def first_renders(url: str, loads: int) -> list[int]:
    out = []
    with chromium() as browser:
        for _ in range(loads):
            browser.get(url)
            out.append(int(wait_for(browser, "document.body.dataset.firstRenderMs", what="the first render")))
    return out


async def main(users: int, loads: int) -> None:
    redis_port, api_port = free_port(), free_port()
    redis_proc = spawn([redis_binary(), "--port", str(redis_port), "--save", "", "--appendonly", "no"])
    wait_for_port(redis_port, redis_proc, what="redis-server")
    redis = RedisAccess.plain(f"redis://127.0.0.1:{redis_port}/0").client()
    env = {**os.environ, "TIERSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "TIERSTREAM_API_PORT": str(api_port), "TIERSTREAM_CAMPAIGNS": "example"}
    api = spawn([sys.executable, "-m", "cli.main", "api"], env=env)
    try:
        wait_for_port(api_port, api, what="tierstream api")
        await fill_metrics(redis, events=60_000, users=20_000)
        url = f"http://127.0.0.1:{api_port}/"
        results = {}
        for size, start in ((1_000, 0), (users, 1_000)):
            await fill_users(redis, start, size)
            times = await asyncio.to_thread(first_renders, url, loads)
            results[size] = statistics.median(times)
            print(f"{size:>9,} users in Redis: first render median {results[size]} ms  (loads: {times})")
        print(f"ratio: first render at {users:,} users / at 1,000 users = {results[users] / results[1_000]:.2f}")
    finally:
        await redis.aclose()
        stop(api)
        stop(redis_proc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.loads))
