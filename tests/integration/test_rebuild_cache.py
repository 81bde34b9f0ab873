"""`tierstream rebuild-cache` restores Redis membership from the users table."""

import pytest
from redis.asyncio import Redis

from state.model import DAY_MS
from stream.codecs import iso
from tests.integration.harness import Cluster, new_servers, produce, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.broker_dependent('reads every output topic to its end, which the brokers report differently')]


@pytest.fixture
def ready():
    """A cluster of its own: the aggregator rebuilds the metrics from the
    whole facts topic, and on the session's cluster that topic holds every
    earlier test's facts too (minutes on a loaded two-core machine)."""
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_APP_ID": "rebuild-cache"})
    try:
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop_worker()
        servers.stop()


@pytest.fixture
async def redis(ready):
    client = Redis.from_url(ready.servers.redis_url)
    yield client
    await client.aclose()


async def test_rebuild_cache_restores_every_record_and_set(ready, redis, era):
    events = []
    for i in range(30):
        events.append(era.event(f"r{i}", "signup", 0))
        events += [era.event(f"r{i}", "order", 1 + d, 100.0 * (i % 7)) for d in range(i % 6)]
    await produce(ready.servers.broker, events)
    last = era.user("r29")

    async def settled():
        doc = await redis.hget(f"tierstream:user:{last}", "doc")
        return doc and b'"lifetime_orders":5' in doc

    await wait_until(settled, timeout=90, what="the last user's orders (the worker joining first)")

    async def snapshot(metrics=False):
        # The workers' "synced:<p>" markers are their own bookkeeping (a
        # worker re-sets them when it notices them gone), not membership.
        # The operator metrics (m:*, and each user's `mv`) are not
        # membership either: the workers' aggregators rebuild them from
        # their facts topic, checked apart below.
        # The live feed (a stream) and each user's latest changes are a view
        # of records already published, not of the users table: a rebuild
        # clears them and new decisions fill them again.
        keys = sorted([k async for k in redis.scan_iter(match="tierstream:*")
                       # Written by the running worker, not rebuilt: its markers, its
                       # feed, and its progress report (every second).
                       if not k.startswith((b"tierstream:synced:", b"tierstream:feed", b"tierstream:changes:",
                                            b"tierstream:progress"))
                       and k.startswith(b"tierstream:m:") == metrics])
        out = {}
        for k in keys:
            kind = await redis.type(k)
            if kind == b"hash":
                out[k] = {f: v for f, v in (await redis.hgetall(k)).items() if f != b"mv"}
            elif kind == b"zset":
                out[k] = await redis.zrange(k, 0, -1)
            elif kind == b"string":
                out[k] = await redis.get(k)
            elif kind == b"list":
                out[k] = await redis.lrange(k, 0, -1)
            else:
                out[k] = sorted(await redis.smembers(k))
        return out

    async def metric_cells():
        # The period and cohort cells (the aggregator's bookkeeping aside).
        return {k: v for k, v in (await snapshot(metrics=True)).items()
                if k.split(b":")[2] in (b"day", b"week", b"month", b"c", b"campaign")}

    days = {f"tierstream:m:day:{iso(era.base_ms + d * DAY_MS)[:10]}".encode() for d in range(1, 7)}

    first_day = f"tierstream:m:day:{iso(era.base_ms)[:10]}".encode()
    last_seen: list = [None]

    async def all_counted():
        # Every order and every signup counted, and nothing moving for a
        # poll: the orders alone were once counted while some signups'
        # facts were still on their way, and the rebuild (rightly) found
        # more than that "before".
        cells = await metric_cells()
        done = (sum(int(cells.get(k, {}).get(b"orders", 0)) for k in days) == 75
                and int(cells.get(first_day, {}).get(b"signups", 0)) == 30)
        stable = done and cells == last_seen[0]
        last_seen[0] = cells
        return cells if stable else None

    metrics_before = await wait_until(all_counted, what="the metrics to count every order and signup")
    before = await snapshot()
    await redis.flushdb()
    output = ready.cli("rebuild-cache")
    assert "rebuilt membership of" in output
    after = await snapshot()
    assert after.keys() == before.keys()
    assert after == before

    differing = {}

    async def metrics_rebuilt():
        cells = await metric_cells()
        differing.clear()
        differing.update({k: (cells.get(k), metrics_before.get(k)) for k in cells.keys() | metrics_before.keys()
                          if cells.get(k) != metrics_before.get(k)})
        return not differing

    # It reads the facts topic from its start.
    try:
        await wait_until(metrics_rebuilt, timeout=120, what="the aggregator to rebuild the metrics from their facts")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; cells (now, before): {dict(list(differing.items())[:5])}") from None
