"""The agent adapter with in-memory stand-ins for topics and the table.

Integration tests run the same code against the real broker and Redis;
these pin the adapter's decisions (DLQ, re-keying, redelivery, sweeps) fast.
"""

from types import SimpleNamespace

import orjson

from agents.pipeline import Pipeline
from state.model import DAY_MS
from stream import topics
from stream.settings import Settings
from tests.factories import T0, raw
from tests.fixed_rules import fixed_rules


CHANGELOG = "tierstream-users-changelog"


class FakeTable:
    def __init__(self):
        self.data = {}
        self.on_active_partitions = None
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: CHANGELOG)


class Outbox:
    """Read what the pipeline queued for Kafka, per topic."""

    def __init__(self, pipeline):
        self.p = pipeline

    def raw(self, topic):
        return [r for r in self.p.outbox if r.topic == topic]

    def records(self, topic):
        return [orjson.loads(r.value) for r in self.raw(topic)]

    @property
    def dead_letters(self):
        return SimpleNamespace(records=lambda: self.records(topics.DEAD_LETTERS))

    @property
    def tier_changes(self):
        return SimpleNamespace(records=lambda: self.records(topics.TIER_CHANGES))

    @property
    def churn_alerts(self):
        return SimpleNamespace(records=lambda: self.records(topics.CHURN_ALERTS))

    @property
    def users(self):
        return SimpleNamespace(data=self.p.store, changelog=[(r.partition, r.key) for r in self.raw(CHANGELOG)])

    @property
    def events(self):
        return SimpleNamespace(sent=[(r.key, r.value) for r in self.raw(topics.EVENTS)])


def make(clock="replay", wall=T0 + 1000 * DAY_MS):
    streams = SimpleNamespace(users=FakeTable())
    settings = Settings(clock=clock, max_future_seconds=10**9)
    p = Pipeline(streams, settings, fixed_rules(), membership=None, wall_clock_ms=lambda: wall)
    p.on_active_partitions({0, 1})
    return p, Outbox(p)


offsets = iter(range(10**9))


def msg(body, partition=0, key=..., offset=None):
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    if key is ...:
        key = body["user_id"].encode() if isinstance(body, dict) else None
    return SimpleNamespace(topic="tierstream.events", partition=partition,
                           offset=next(offsets) if offset is None else offset, key=key, value=value)


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
    import agents.pipeline as mod
    monkeypatch.setattr(mod, "on_event", lambda *a: 1 / 0)
    p.on_message(msg(raw("u1", "login", 1)))
    assert s.dead_letters.records()[0]["reason"] == "processing_error"


def test_events_keyed_wrongly_are_rekeyed_not_applied():
    p, s = make()
    p.on_message(msg(raw("u1", "login", 1), key=b"someone-else"))
    assert s.events.sent[0][0] == b"u1" and not s.users.data


def test_redelivered_offsets_are_skipped_but_new_offsets_apply():
    p, s = make()
    body = raw("u1", "login", 1)
    p.on_message(msg(body, offset=10))
    version = s.users.data["u1"].version
    p.on_message(msg(raw("u1", "login", 2), offset=10))  # redelivery after a restart
    assert s.users.data["u1"].version == version
    p.on_message(msg(body, offset=11))  # same event id again: a producer duplicate
    assert s.users.data["u1"].version == version


def test_silent_users_are_aged_by_other_users_events_in_event_time():
    p, s = make(clock="replay")
    p.on_message(msg(raw("quiet", "order", 0, amount=20), partition=1))
    p.on_message(msg(raw("busy", "login", 45), partition=1))
    p.on_message(msg(raw("busy", "login", 90), partition=1))
    alerts = [(a["user_id"], a["level"]) for a in s.churn_alerts.records()]
    assert ("quiet", "at_risk") in alerts and ("quiet", "churned") in alerts
    # changelog writes for the sweep go to the user's own partition
    assert all(part == 1 for part, _ in s.users.changelog)


def test_live_clock_ticks_age_users_without_any_event():
    wall = [T0]
    p, s = make(clock="live", wall=0)
    p.wall_clock_ms = lambda: wall[0]
    p.on_message(msg(raw("quiet", "login", 0), partition=0))
    wall[0] = T0 + 31 * DAY_MS
    p.tick()
    assert [a["level"] for a in s.churn_alerts.records()] == ["at_risk"]
    assert p.pending["quiet"].stage == "at_risk"


async def test_publish_sends_one_batch_per_partition_keyed_like_kafka():
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    p, s = make()
    for i in range(20):
        p.on_message(msg(raw(f"u{i}", "order", 1, amount=5), partition=1))
    expected = {(r.topic, r.key): r.partition for r in p.outbox}
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
    assert p.outbox == []
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


def test_revoked_partitions_are_not_swept():
    p, s = make(clock="live", wall=T0)
    p.on_message(msg(raw("quiet", "login", 0), partition=0))
    p.on_partitions_revoked({0})
    p.wall_clock_ms = lambda: T0 + 100 * DAY_MS
    p.tick()
    assert s.churn_alerts.records() == []


def test_rebalance_rebuilds_the_index_from_the_table():
    p, s = make(clock="live", wall=T0)
    p.on_message(msg(raw("quiet", "login", 0), partition=1))
    p.on_active_partitions({1})
    p.wall_clock_ms = lambda: T0 + 100 * DAY_MS
    p.tick()
    assert [a["level"] for a in s.churn_alerts.records()] == ["at_risk", "churned"]


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
    assert s.tier_changes.records() and s.users.changelog
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

    from agents.pipeline import PublishFailed

    p, _ = make()
    p.on_message(msg(raw("bob", "order", 1, amount=5), partition=0))
    producer = HeldProducer(fail=True)
    publishing = asyncio.create_task(p.publish(producer))
    await asyncio.sleep(0.05)
    producer.release()
    with pytest.raises(PublishFailed):
        await publishing
    assert all(topic != CHANGELOG for topic, _ in producer.sent)


def test_recovery_sweeps_users_the_recovered_watermark_has_passed():
    """A crash after a sweep's decisions were acked but before its changelog
    records were: the recovered state is behind the recovered watermark, and
    the same decisions come again at once, with the same ids."""
    p, s = make()
    p.on_message(msg(raw("quiet", "login", 0), partition=0))
    p.on_message(msg(raw("clock", "login", 100), partition=0))
    published = s.churn_alerts.records()
    assert [a["level"] for a in published] == ["at_risk", "churned"]
    # The recovered table: "clock" as after its event, "quiet" as before
    # the sweep that alerted (its changelog record was lost in the crash).
    from stream.codecs import decode_state, encode_state

    before_sweep, _ = make()
    before_sweep.on_message(msg(raw("quiet", "login", 0), partition=0))
    recovered, _ = make()
    recovered.store["clock"] = decode_state(encode_state(p.store["clock"]))
    recovered.store["quiet"] = decode_state(encode_state(before_sweep.store["quiet"]))
    recovered.outputs.clear()
    recovered.on_active_partitions({0})
    again = [orjson.loads(r.value) for r in recovered.outputs if r.topic == topics.CHURN_ALERTS]
    assert [a["alert_id"] for a in again] == [a["alert_id"] for a in published]


def test_a_recovered_watermark_counts_only_states_behind_the_committed_input():
    """The worker died writing a batch's changelog records: "clock"'s went
    out, "quiet"'s did not, and the batch's input was not committed. Its
    watermark must not come back from "clock" (that would sweep "quiet"
    ahead of the events about to be re-read); the re-read event moves it,
    in order, and the same decisions come, with the same ids."""
    from stream.codecs import decode_state, encode_state

    p, s = make()
    quiet_event, clock_event = msg(raw("quiet", "login", 0), partition=0), msg(raw("clock", "login", 100), partition=0)
    p.on_message(quiet_event)
    p.on_message(clock_event)
    published = [a["alert_id"] for a in s.churn_alerts.records()]
    assert len(published) == 2

    def recover(committed):
        before_sweep, _ = make()
        before_sweep.on_message(quiet_event)
        recovered, _ = make()
        recovered.store["clock"] = decode_state(encode_state(p.store["clock"]))
        recovered.store["quiet"] = decode_state(encode_state(before_sweep.store["quiet"]))
        recovered.outputs.clear()
        recovered.on_active_partitions({0}, committed)
        return recovered

    def alerts(pipeline):
        return [orjson.loads(r.value)["alert_id"] for r in pipeline.outputs if r.topic == topics.CHURN_ALERTS]

    ahead = recover({0: clock_event.offset})  # "clock"'s event is to be read again
    assert alerts(ahead) == []  # nothing swept ahead of it
    ahead.on_message(clock_event)  # redelivered: already applied, but it moves the clock
    assert alerts(ahead) == published
    behind = recover({0: clock_event.offset + 1})  # committed past it: the watermark comes back at once
    assert alerts(behind) == published


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


def test_a_1990s_history_in_order_and_a_new_customers_old_backfill_are_taken():
    p, s = make()
    start = _iso_ms("1991-03-01T00:00:00+00:00")
    for day in range(0, 3000, 97):  # eight years of one customer, in order
        p.on_message(msg({"event_id": f"o{day}", "user_id": "old", "type": "order", "ts": start + day * DAY_MS,
                          "amount": 20}))
    # Another customer's whole history, sent after, twelve years behind the
    # watermark: a per-customer backfill, not a bug (they have no first event yet).
    p.on_message(msg({"event_id": "n1", "user_id": "new", "type": "signup", "ts": start - 4000 * DAY_MS}))
    p.on_message(msg({"event_id": "n2", "user_id": "new", "type": "order", "ts": start - 3990 * DAY_MS,
                      "amount": 20}))
    assert s.dead_letters.records() == []
    assert p.store["old"].lifetime_orders + len(p.store["old"].held) == 31


def test_the_age_rule_can_be_turned_off():
    streams = SimpleNamespace(users=FakeTable())
    settings = Settings(clock="replay", max_future_seconds=10**9, max_event_age_days=0)
    p = Pipeline(streams, settings, fixed_rules(), membership=None, wall_clock_ms=lambda: T0 + 1000 * DAY_MS)
    p.on_active_partitions({0, 1})
    p.on_message(msg(raw("u1", "signup", 1)))
    p.on_message(msg({"event_id": "z", "user_id": "u1", "type": "login", "ts": "1970-01-02T00:00:00Z"}))
    assert Outbox(p).dead_letters.records() == []
    assert p.store["u1"].first_seen_ms == _iso_ms("1970-01-02T00:00:00+00:00")
