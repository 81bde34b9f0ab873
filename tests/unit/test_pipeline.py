"""The pipeline (ingest, engine, publisher) with in-memory stand-ins for
topics and the table.

Integration tests run the same code against the real broker and Redis;
these pin the adapter's decisions (DLQ, re-keying, redelivery, sweeps, the
publishing order) fast. The engine's own tests (tests/unit/test_engine.py)
drive it without the adapter.
"""

from types import SimpleNamespace

import orjson

from agents.pipeline import Pipeline
from state.model import DAY_MS
from stream import topics
from stream.settings import Settings
from tests.support.factories import T0, raw
from tests.support.fakes import CHANGELOG, FakeTable, Outbox, make, msg
from tests.support.fixed_rules import fixed_rules


def test_bad_events_go_to_the_dlq_and_good_ones_keep_flowing():
    p, s = make()
    p.on_message(msg(b"\xff\xfe garbage", key=b"k"))
    p.on_message(msg(raw("u1", "order", 1, amount=-5)))
    p.on_message(msg(raw("u1", "order", 1, amount=5)))
    dlq = s.dead_letters.records()
    assert [d["reason"] for d in dlq] == ["invalid_json", "invalid_event"]
    assert dlq[0]["payload_b64"] and dlq[0]["offset"] >= 0 and dlq[0]["topic"] == "tierstream.events"
    assert s.tier_changes.records()[-1]["to_tier"] == "potential"


def test_a_crash_in_processing_is_a_dead_letter_not_a_stopped_stream(monkeypatch):
    p, s = make()
    import engine.partition as mod
    monkeypatch.setattr(mod, "on_event", lambda *a: 1 / 0)
    p.on_message(msg(raw("u1", "login", 1)))
    assert s.dead_letters.records()[0]["reason"] == "processing_error"


def test_events_keyed_wrongly_are_rekeyed_not_applied():
    p, s = make()
    p.on_message(msg(raw("u1", "login", 1), key=b"someone-else"))
    assert s.events.sent[0][0] == b"u1" and not s.users.data


async def test_publish_sends_one_batch_per_partition_keyed_like_kafka():
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    p, s = make()
    twin, _ = make()  # the same input: what p queued, read without taking it off p's queue
    for i in range(20):
        for pipeline in (p, twin):
            pipeline.on_message(msg(raw(f"u{i}", "order", 1, amount=5), partition=1, offset=i))
    outputs, changelog = twin.drain()
    expected = {(r.topic, r.key): r.partition for r in outputs + changelog}
    sent = []

    class Producer:
        def create_batch(self):
            return AIOKafkaProducer.create_batch.__get__(real)()

        async def partitions_for(self, topic):
            return {0, 1, 2, 3}

        async def send_batch(self, batch, topic, partition):
            sent.append((topic, partition, batch.record_count()))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    real = AIOKafkaProducer()  # only its batch builder is used: no connection
    await p.publish(Producer())
    assert p.drain() == ([], [])
    # every changelog record on the user's own partition, in one batch
    assert (CHANGELOG, 1, 20) in sent
    # outputs spread by key exactly as Kafka's default partitioner does
    per_partition = {}
    for (topic, key), part in expected.items():
        if topic == topics.TIER_CHANGES:
            kp = DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3])
            per_partition[kp] = per_partition.get(kp, 0) + 1
    assert {(t, part, n) for t, part, n in sent if t == topics.TIER_CHANGES} == {
        (topics.TIER_CHANGES, part, n) for part, n in per_partition.items()
    }


class HeldProducer:
    """A producer whose acknowledgements the test releases by hand."""

    def __init__(self, fail: bool = False):
        import asyncio

        from aiokafka import AIOKafkaProducer

        self.real = AIOKafkaProducer()  # only its batch builder is used: no connection
        self.sent: list[tuple[str, int]] = []
        self.acks: list = []
        self.fail = fail
        self.loop = asyncio.get_running_loop()

    def create_batch(self):
        return self.real.create_batch()

    async def partitions_for(self, topic):
        return {0, 1, 2, 3}

    async def send_batch(self, batch, topic, partition):
        self.sent.append((topic, partition))
        fut = self.loop.create_future()
        self.acks.append(fut)
        return fut

    def release(self):
        for fut in self.acks:
            if not fut.done():
                fut.set_exception(RuntimeError("broker said no")) if self.fail else fut.set_result(None)


async def test_changelog_records_reach_the_producer_only_after_the_decisions_are_acknowledged():
    """Issue #9: a durable state must always have its decisions durable
    behind it, or a crash in between loses them for good."""
    import asyncio

    p, s = make()
    p.on_message(msg(raw("ann", "order", 1, amount=5), partition=1))
    assert [c.decisions for c in p.engine.effects.committed] != [[]]  # a decision and a state to write
    producer = HeldProducer()
    publishing = asyncio.create_task(p.publish(producer))
    await asyncio.sleep(0.05)
    assert producer.sent and all(topic != CHANGELOG for topic, _ in producer.sent)
    producer.release()
    await publishing
    assert producer.sent[-1] == (CHANGELOG, 1)


async def test_decisions_kafka_refused_stop_the_worker_and_their_states_stay_unwritten():
    import asyncio

    import pytest

    from agents.publisher import PublishFailed

    p, _ = make()
    p.on_message(msg(raw("bob", "order", 1, amount=5), partition=0))
    producer = HeldProducer(fail=True)
    publishing = asyncio.create_task(p.publish(producer))
    await asyncio.sleep(0.05)
    producer.release()
    with pytest.raises(PublishFailed):
        await publishing
    assert all(topic != CHANGELOG for topic, _ in producer.sent)


def _iso_ms(text):
    from datetime import datetime
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_an_epoch_zero_event_for_a_known_customer_is_a_dead_letter_not_a_new_first_seen():
    """The classic producer bug (an unset clock): a 1970 login aimed at a
    customer of a 2026 history would re-date their first-seen time (cohort,
    `new`, D1/D7/D30). It goes to the DLQ with its reason instead."""
    p, s = make()
    p.on_message(msg(raw("u1", "signup", 1)))
    p.on_message(msg(raw("u1", "order", 30, amount=50)))
    first_seen = p.store["u1"].first_seen_ms
    for ts in ("1970-01-02T00:00:00Z", _iso_ms("1970-01-02T00:00:00+00:00")):
        body = {"event_id": f"bad-{ts}", "user_id": "u1", "type": "login", "ts": ts}
        p.on_message(msg(body))
    dlq = s.dead_letters.records()
    # An integer that small was already refused as epoch seconds by the contract.
    assert [d["reason"] for d in dlq] == ["implausibly_old", "absurd_timestamp"]
    assert "TIERSTREAM_MAX_EVENT_AGE_DAYS" in dlq[0]["error"] and dlq[0]["key"] == "u1"
    assert p.store["u1"].first_seen_ms == first_seen


def test_the_age_rule_can_be_turned_off():
    streams = SimpleNamespace(users=FakeTable())
    settings = Settings(clock="replay", max_future_seconds=10**9, max_event_age_days=0)
    p = Pipeline(streams, settings, fixed_rules(), membership=None, wall_clock_ms=lambda: T0 + 1000 * DAY_MS)
    p.on_active_partitions({0, 1})
    p.on_message(msg(raw("u1", "signup", 1)))
    p.on_message(msg({"event_id": "z", "user_id": "u1", "type": "login", "ts": "1970-01-02T00:00:00Z"}))
    assert Outbox(p).dead_letters.records() == []
    assert p.store["u1"].first_seen_ms == _iso_ms("1970-01-02T00:00:00+00:00")


async def test_deferred_events_taken_are_not_committed_past_until_their_changelog_is_with_the_producer():
    """Faust picks a commit's offsets, then flushes the producer. Events a
    partition deferred (waiting for cut points) and took when the cuts
    settled are published by whoever publishes next: while that publish
    waits for its decisions' acknowledgements, their changelog records are
    not with the producer, so the commit must stop before them; and stays
    there if the publish fails (the restart takes them again)."""
    import asyncio

    from state.rules import parse_rules, population_rules_text

    for fail in (False, True):
        streams = SimpleNamespace(users=FakeTable())
        settings = Settings(clock="replay", max_future_seconds=10**9, allowed_lateness_ms=0)
        p = Pipeline(streams, settings, parse_rules(population_rules_text()), membership=None,
                     wall_clock_ms=lambda: T0 + 1000 * DAY_MS)
        p.engine.loop_back(2)
        p.on_active_partitions({0, 1})
        p.on_message(msg(raw("a", "order", 0.5, amount=20), partition=0, offset=0))
        p.on_message(msg(raw("b", "order", 0.5, amount=20), partition=1, offset=0))
        p.resume()
        p.on_message(msg(raw("a", "login", 2.5), partition=0, offset=1))  # partition 0 waits for day 1's cuts
        p.on_message(msg(raw("c", "signup", 2.6), partition=0, offset=2))
        assert p.engine.commit_limit(0) == 2  # deferred
        p.on_message(msg(raw("b", "login", 2.5), partition=1, offset=1))  # the cuts settle ...
        p.resume()  # ... and partition 0 takes its deferred signup
        assert "c" in p.engine.users and p.engine.commit_limit(0) == 2
        producer = HeldProducer(fail=fail)
        publishing = asyncio.create_task(p.publish(producer))
        await asyncio.sleep(0.05)
        assert producer.sent and all(topic != CHANGELOG for topic, _ in producer.sent)
        assert p.engine.commit_limit(0) == 2  # a commit chosen now stops before the signup
        producer.release()
        if fail:
            try:
                await publishing
            except Exception:
                pass
            assert p.engine.commit_limit(0) == 2  # never committed past: taken again after the restart
        else:
            await publishing
            assert (CHANGELOG, 0) in producer.sent and p.engine.commit_limit(0) is None
