"""Events in -> tier changes, alerts, Redis membership and API answers out,
against the embedded broker, a real Redis, a worker and the API process."""

import asyncio

import aiohttp
import orjson
import pytest

from tests.integration.harness import produce, read_topic, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.broker_dependent('the whole path on the broker production runs: client and broker must agree on every protocol version (KIP-896)')]


async def changes_for(cluster, user_id):
    return [r for r in await read_topic(cluster.servers.broker, "tierstream.tier-changes") if r["user_id"] == user_id]


async def alerts_for(cluster, user_id):
    return [r for r in await read_topic(cluster.servers.broker, "tierstream.churn-alerts") if r["user_id"] == user_id]


async def api_get(cluster, path):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{cluster.api_port}{path}") as resp:
            return resp.status, orjson.loads(await resp.read())


async def test_five_large_orders_in_a_week_make_a_user_high_value(ready, redis, era):
    user = era.user("whale")
    events = [era.event("whale", "signup", 0)] + [era.event("whale", "order", d, 450.0) for d in range(1, 6)]
    await produce(ready.servers.broker, events)

    async def high_value():
        return [c for c in await changes_for(ready, user) if c["to_tier"] == "high_value"]

    change = (await wait_until(high_value, what="a high_value tier change"))[0]
    assert change["from_tier"] == "mid_value" and change["frequency"] == 5 and change["monetary"] == 2250.0
    assert change["rfm"] == {"r": 5, "f": 4, "m": 5}

    async def api_says_high_value():
        status, body = await api_get(ready, f"/v1/users/{user}")
        return body if status == 200 and body["tier"] == "high_value" else None

    body = await wait_until(api_says_high_value, what="the API to serve the new tier")
    assert body["lifetime_orders"] == 5 and body["ltv"] == 2250.0 and body["stage"] == "new"
    assert await redis.zscore("tierstream:tier:high_value", user) == 0
    assert await redis.zscore("tierstream:tier:mid_value", user) is None  # moved, not copied

    status, counts = await api_get(ready, "/v1/segments")
    assert status == 200 and counts["tiers"]["high_value"] >= 1 and counts["stages"]["new"] >= 1


async def test_a_quiet_user_goes_at_risk_then_churned_without_sending_anything(ready, era):
    user = era.user("quiet")
    await produce(ready.servers.broker, [era.event("quiet", "signup", 0), era.event("quiet", "order", 1, 60.0)])
    # Only other users speak from now on; event time moves for everyone.
    for day in (20, 40, 70, 100):
        await produce(ready.servers.broker, era.clock_events(day))

    async def both_alerts():
        alerts = await alerts_for(ready, user)
        return alerts if {a["level"] for a in alerts} == {"at_risk", "churned"} else None

    alerts = await wait_until(both_alerts, what="at_risk and churned alerts")
    await asyncio.sleep(1.0)
    alerts = await alerts_for(ready, user)
    assert sorted(a["level"] for a in alerts) == ["at_risk", "churned"]  # one each, no repeats
    by_level = {a["level"]: a for a in alerts}
    assert by_level["at_risk"]["days_inactive"] == 30 and by_level["churned"]["days_inactive"] == 60
    assert by_level["churned"]["ltv"] == 60.0
    stages = [c["to_stage"] for c in await changes_for(ready, user)]
    assert stages[-2:] == ["at_risk", "churned"]


async def test_bad_input_goes_to_the_dlq_while_good_events_keep_flowing(ready, era):
    good = era.user("good")
    bad = [
        b"{broken json",
        orjson.dumps(era.event("bad1", "teleport", 1)),
        orjson.dumps(era.event("bad2", "order", 1, -10.0)),
        orjson.dumps({**era.event("bad3", "login", 1), "ts": 1_000}),
        orjson.dumps({**era.event("bad4", "login", 1), "properties": {"blob": "x" * 20_000}}),
    ]
    mixed = [era.event("good", "signup", 0)]
    for b in bad:
        mixed += [b, era.event("good", "view", 0.5)]
    mixed.append(era.event("good", "order", 1, 30.0))
    await produce(ready.servers.broker, mixed, key=lambda r: good.encode() if isinstance(r, bytes) else r["user_id"].encode())

    async def dead_letters():
        mine = [d for d in await read_topic(ready.servers.broker, "tierstream.events.dlq") if d.get("key") == good]
        return mine if len(mine) == len(bad) else None

    dlq = await wait_until(dead_letters, what="five dead letters")
    assert sorted(d["reason"] for d in dlq) == sorted(
        ["invalid_json", "unknown_type", "invalid_event", "absurd_timestamp", "oversized"]
    )
    for d in dlq:
        assert d["topic"] == "tierstream.events" and d["offset"] >= 0 and d["error"]
        assert d.get("payload") or d.get("payload_b64")

    async def good_user_ordered():
        status, body = await api_get(ready, f"/v1/users/{good}")
        return body if status == 200 and body["lifetime_orders"] == 1 else None

    body = await wait_until(good_user_ordered, what="the good user's order")
    assert body["tier"] == "potential"


async def test_api_pages_members_and_explains_errors(ready, era):
    users = [era.user(f"m{i:02d}") for i in range(5)]
    await produce(ready.servers.broker, [era.event(f"m{i:02d}", "signup", 0) for i in range(5)])

    async def all_in():
        docs = [await api_get(ready, f"/v1/users/{u}") for u in users]
        return all(s == 200 for s, _ in docs)

    await wait_until(all_in, what="five users in Redis")
    seen, cursor = [], None
    while True:
        q = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api_get(ready, f"/v1/segments/low_value/members?{q}")
        assert status == 200 and len(page["members"]) <= 2
        seen += page["members"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(users) <= set(seen) and len(seen) == len(set(seen)) and seen == sorted(seen)

    assert (await api_get(ready, "/v1/users/nobody-at-all"))[0] == 404
    status, body = await api_get(ready, "/v1/segments/platinum/members")
    assert status == 404 and "platinum" in body["error"]
    status, body = await api_get(ready, "/v1/segments/low_value/members?limit=0")
    assert status == 400 and "limit" in body["error"]
    # The worker reports every second how far each partition's decisions
    # trail its input: with fixed thresholds, never (no cut points to wait for).
    async def every_partition_reported():
        status, body = await api_get(ready, "/healthz")
        return body if status == 200 and len(body["partitions"]) == 4 else None

    health = await wait_until(every_partition_reported, what="every partition's progress in /healthz")
    assert health["status"] == "ok" and health["decisions_behind_seconds"] == 0.0
    assert all(p["behind_seconds"] == 0.0 for p in health["partitions"].values())


async def test_an_older_update_never_overwrites_a_newer_one(ready, redis):
    from store.membership import MembershipUpdate, MembershipWriter

    writer = MembershipWriter(redis, "racetest:")  # its own prefix: not the worker's data
    new = MembershipUpdate("race-user", 7, "high_value", "active", b'{"v":7}')
    old = MembershipUpdate("race-user", 6, "low_value", "at_risk", b'{"v":6}')
    assert await writer.write([new]) == 1
    assert await writer.write([old]) == 0
    assert await redis.hget("racetest:user:race-user", "doc") == b'{"v":7}'
    assert await redis.zscore("racetest:tier:high_value", "race-user") == 0
    assert await redis.zscore("racetest:tier:low_value", "race-user") is None
    assert await writer.clear() == 4  # user, two sets, the segment list


async def test_a_1995_history_with_extra_fields_replays_without_a_dead_letter(ready, redis, tmp_path):
    """Issue #13: real feeds are old and carry fields the contract does not
    name; neither may cost an event."""
    users = [f"y1995-{i}" for i in range(20)]
    path = tmp_path / "1995.jsonl"
    with path.open("wb") as f:
        for i, user in enumerate(users):
            for day, kind in ((1, "signup"), (3 + i % 5, "order")):
                body = {"event_id": f"{user}-{day}", "user_id": user, "type": kind,
                        "ts": f"1995-03-{day:02d}T10:00:00Z", "store": "web"}
                if kind == "order":
                    body |= {"amount": 19.5, "quantity": 2}
                f.write(orjson.dumps(body) + b"\n")
    ready.cli("replay", str(path), "--no-progress")

    async def all_applied():
        docs = [await redis.hget(f"tierstream:user:{u}", "doc") for u in users]
        return all(d and orjson.loads(d)["lifetime_orders"] == 1 for d in docs)

    await wait_until(all_applied, what="the 1995 users in Redis")
    dead = [d for d in await read_topic(ready.servers.broker, "tierstream.events.dlq")
            if (d.get("key") or "").startswith("y1995-")]
    assert dead == []
