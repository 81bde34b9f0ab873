"""A worker restart recovers every user's state from the changelog (even on
Tansu, whose ListOffsets under-reports the end) and re-emits nothing.

It replaces the session's worker; the new one serves the tests that come
after it as the old one did (its recovery setting is put back for any later
start), so the order of test files does not matter."""

import asyncio
import random

import orjson
import pytest
from faust.types import TP

from state.model import apply
from stream.contract import parse_event
from stream.faust_ext.recovery import true_end_offsets
from tests.integration.harness import BROKER, PARTITIONS, produce, read_topic, wait_until
from tests.support.fixed_rules import fixed_rules

pytestmark = [pytest.mark.integration,
              pytest.mark.broker_dependent("recovery reads the changelog to its end, which the brokers report differently (bulk read on Tansu, Faust's own path on Kafka)")]
RULES = fixed_rules()
FIGURES = ("first_seen_ms", "last_seen_ms", "last_active_ms", "last_order_ms", "last_campaign_ms",
           "lifetime_orders", "lifetime_revenue_cents", "lifetime_refunds_cents")


def history(era, users: int, rnd: random.Random) -> list[dict]:
    events = []
    for u in range(users):
        name = f"u{u:05d}"
        events.append(era.event(name, "signup", rnd.random()))
        for _ in range(rnd.randint(1, 8)):
            kind = rnd.choice(["order", "order", "view", "login", "refund", "campaign_touch", "add_to_cart"])
            amount = round(rnd.uniform(1, 400), 2) if kind in ("order", "refund") else None
            events.append(era.event(name, kind, rnd.uniform(1, 20), amount))
    rnd.shuffle(events)  # out of order within each user too: figures must not care
    return events


def expected_figures(events: list[dict]) -> dict[str, dict]:
    states: dict = {}
    for body in events:
        e = parse_event(orjson.dumps(body), now_ms=2**62, max_bytes=1 << 20, max_future_ms=0)
        states[e.user_id] = apply(states.get(e.user_id), e, bucket_days=RULES.window.bucket_days,
                                  window_buckets=RULES.window.buckets, recent_ids=RULES.dedup.recent_event_ids)
    return {u: {f: getattr(s, f) for f in FIGURES} for u, s in states.items()}


async def test_restart_recovers_every_user_and_re_emits_nothing(ready, redis, era):
    cluster = ready
    rnd = random.Random(7)
    events = history(era, users=4000, rnd=rnd)
    expected = expected_figures(events)
    await produce(cluster.servers.broker, events)

    async def all_applied():
        pipe = redis.pipeline(transaction=False)
        users = sorted(expected)
        for u in users:
            pipe.hget(f"tierstream:user:{u}", "doc")
        docs = await pipe.execute()
        ok = sum(1 for u, d in zip(users, docs) if d and orjson.loads(d)["lifetime_orders"] == expected[u]["lifetime_orders"]
                 and orjson.loads(d)["version"] >= len([1 for e in events if e["user_id"] == u]))
        return ok == len(users)

    await wait_until(all_applied, timeout=180, what=f"{len(events)} events applied")
    docs = {u: orjson.loads(await redis.hget(f"tierstream:user:{u}", "doc")) for u in expected}
    outputs_before = {
        t: len(await read_topic(cluster.servers.broker, t))
        for t in ("tierstream.tier-changes", "tierstream.churn-alerts")
    }

    cluster.recovery_dump.unlink(missing_ok=True)
    cluster.stop_worker()
    # The scenario must exercise the broker quirk, or it proves nothing.
    changelog = {TP("tierstream-users-changelog", p) for p in range(PARTITIONS)}
    true_ends = await true_end_offsets(cluster.servers.kafka, changelog)
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=cluster.servers.broker, group_id=None)
    await c.start()
    listed = await c.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in changelog])
    await c.stop()
    under_reported = sum(true_ends[TP(tp.topic, tp.partition)] - end for tp, end in listed.items())
    print(f"changelog: ListOffsets under-reports the end by {under_reported} records in all")
    if BROKER == "tansu":
        assert under_reported > 0, "the changelog ended on single-record batches: this run cannot show the quirk"
    else:
        # Apache Kafka lists the true end: the defence must change nothing,
        # and Faust's own recovery path is enough there.
        assert under_reported == 0
        cluster.extra_env["TIERSTREAM_RECOVERY"] = "faust"

    try:
        cluster.start_worker()
    finally:
        cluster.extra_env.pop("TIERSTREAM_RECOVERY", None)

    async def recovered():
        return cluster.recovery_dump.exists()

    await wait_until(recovered, timeout=120, what="the new worker to recover")
    dumped = {}
    for line in cluster.recovery_dump.read_bytes().splitlines():
        row = orjson.loads(line)
        dumped[row["user_id"]] = row["state"]

    # The paths meant to run did: whole-batch consumption before the
    # restart; after it, the bulk changelog read on Tansu, Faust's on Kafka.
    logs = sorted(cluster.servers.workdir.glob("worker-*.log"))
    assert "fetched batches go to their handler whole" in logs[-2].read_text()
    assert ("bulk recovery:" in logs[-1].read_text()) == (BROKER == "tansu")

    from stream.codecs import decode_state

    recovered_states = {u: decode_state(orjson.dumps(s)) for u, s in dumped.items() if u in expected}
    assert recovered_states.keys() == expected.keys(), "every user must come back"
    mismatches = [
        u for u, s in recovered_states.items()
        if {f: getattr(s, f) for f in FIGURES} != expected[u] or s.version != docs[u]["version"]
        or s.tier != docs[u]["tier"] or s.stage != docs[u]["stage"]
    ]
    assert mismatches == [], f"{len(mismatches)} users recovered wrong, e.g. {mismatches[:3]}"

    # Nothing already processed is published again.
    await asyncio.sleep(3)
    outputs_after = {
        t: len(await read_topic(cluster.servers.broker, t))
        for t in ("tierstream.tier-changes", "tierstream.churn-alerts")
    }
    assert outputs_after == outputs_before

    # And the new worker carries on from the recovered state.
    user = sorted(expected)[0]
    await produce(cluster.servers.broker, [era.event(user.split("-", 1)[1], "order", 21, 10.0)])

    async def continued():
        doc = orjson.loads(await redis.hget(f"tierstream:user:{user}", "doc"))
        return doc["lifetime_orders"] == expected[user]["lifetime_orders"] + 1

    await wait_until(continued, what="the restarted worker to apply a new event")
