"""The agent adapter with in-memory stand-ins for topics and the table.

Integration tests run the same code against the real broker and Redis;
these pin the adapter's decisions (DLQ, re-keying, redelivery, sweeps) fast.
"""

from types import SimpleNamespace

import orjson

from agents.pipeline import Pipeline
from state.model import DAY_MS
from state.rules import load_rules
from stream.settings import Settings
from tests.factories import T0, raw


class FakeTopic:
    def __init__(self, name):
        self.name, self.sent = name, []

    def send_soon(self, *, key, value, **_):
        self.sent.append((key, value))

    def records(self):
        return [orjson.loads(v) for _, v in self.sent]


class FakeTable:
    def __init__(self):
        self.data, self.changelog = {}, []
        self.on_active_partitions = None

    def send_changelog(self, partition, key, value):
        self.changelog.append((partition, key))


def make(clock="event", wall=T0 + 1000 * DAY_MS):
    streams = SimpleNamespace(
        events=FakeTopic("events"), tier_changes=FakeTopic("tc"), churn_alerts=FakeTopic("ca"),
        dead_letters=FakeTopic("dlq"), users=FakeTable(),
    )
    settings = Settings(clock=clock, max_future_seconds=10**9)
    p = Pipeline(streams, settings, load_rules(), membership=None, wall_clock_ms=lambda: wall)
    p.on_active_partitions({0, 1})
    return p, streams


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
    p, s = make(clock="event")
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
