"""`tierstream rebuild-cache` restores Redis membership from the users table."""

import pytest

from tests.integration.harness import produce, wait_until

pytestmark = pytest.mark.integration


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

    await wait_until(settled, what="the last user's orders")

    async def snapshot():
        # The workers' "synced:<p>" markers are their own bookkeeping (a
        # worker re-sets them when it notices them gone), not membership.
        keys = sorted([k async for k in redis.scan_iter(match="tierstream:*") if not k.startswith(b"tierstream:synced:")])
        out = {}
        for k in keys:
            kind = await redis.type(k)
            if kind == b"hash":
                out[k] = await redis.hgetall(k)
            elif kind == b"zset":
                out[k] = await redis.zrange(k, 0, -1)
            else:
                out[k] = sorted(await redis.smembers(k))
        return out

    before = await snapshot()
    await redis.flushdb()
    output = ready.cli("rebuild-cache")
    assert "rebuilt membership of" in output
    after = await snapshot()
    assert after.keys() == before.keys()
    assert after == before
