"""Stand-ins for what surrounds the worker's per-partition code: the Faust
table (a dict and a changelog name) and a reader of what the pipeline
queued for Kafka."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from agents.pipeline import Pipeline
from state.model import DAY_MS
from stream import topics
from stream.settings import Settings
from tests.support.factories import T0
from tests.support.fixed_rules import fixed_rules

CHANGELOG = "tierstream-users-changelog"


class FakeTable:
    """The users table's surface the pipeline uses: its local store (a
    plain dict), the hook it calls after recovery, its changelog's name."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.on_active_partitions = None
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: CHANGELOG)


class Outbox:
    """What the pipeline queued for Kafka, per topic: each read drains the
    pipeline's queue into this record of everything it has queued so far
    (a `publish` in between takes what it sends off the queue first)."""

    def __init__(self, pipeline) -> None:
        self.p = pipeline
        self.seen: list = []

    def all(self) -> list:
        outputs, changelog = self.p.drain()
        self.seen += outputs + changelog
        return self.seen

    def clear(self) -> None:
        self.all()
        self.seen = []

    def raw(self, topic):
        return [r for r in self.all() if r.topic == topic]

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
    """A pipeline over a fake table, fixed-threshold rules, owning partitions
    0 and 1; and an Outbox reading what it queues."""
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
