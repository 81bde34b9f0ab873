"""From the engine's effects to Kafka records: each decision type's topic,
codec and counter in one table, and the other records the worker writes
(population reports, metric facts, dead letters)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agents import metrics
from agents.outbox import Record
from engine.effects import Committed, Facts, Reported
from state.steps import CampaignAction, CampaignOutcome, ChurnAlert, TierChange, UserParked
from stream import topics
from stream.codecs import action_record, churn_alert_record, dead_letter_record, outcome_record, tier_change_record
from stream.contract import Rejection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    topic: str
    record: Callable[[Any], dict]  # stream.codecs: the decision as its topic's JSON document
    counter: Callable[[Any], Any]  # the Prometheus counter a published one counts on


ROUTES: dict[type, Route] = {
    TierChange: Route(topics.TIER_CHANGES, tier_change_record, lambda d: metrics.TIER_CHANGES),
    ChurnAlert: Route(topics.CHURN_ALERTS, churn_alert_record, lambda d: metrics.ALERT_COUNTERS[d.level]),
    CampaignAction: Route(topics.ACTIONS, action_record, lambda d: metrics.CAMPAIGN_ACTIONS),
    CampaignOutcome: Route(topics.CAMPAIGN_OUTCOMES, outcome_record, lambda d: metrics.CAMPAIGN_OUTCOMES),
}

FACTS_RECORD_BYTES = 256 * 1024  # well under Kafka's default 1 MB message size


class Router:
    """Turns effects into records; counts what it routes (on `tally`)."""

    def __init__(self, changelog_topic: str, dlq_max_payload_bytes: int, tally: metrics.Tally) -> None:
        self.changelog_topic = changelog_topic
        self.dlq_max_payload_bytes = dlq_max_payload_bytes
        self.tally = tally

    def committed(self, c: Committed, outputs: list[Record], changelog: list[Record]) -> None:
        key = c.user_id.encode()
        changelog.append(Record(self.changelog_topic, key, c.state, c.partition, source=c.partition))
        for decision in c.decisions:
            if isinstance(decision, UserParked):
                outputs.append(self._parked(decision, c))
                continue
            route = ROUTES[type(decision)]
            outputs.append(Record(route.topic, key, orjson.dumps(route.record(decision)), source=c.partition))
            self.tally.add(route.counter(decision))

    def _parked(self, parked: UserParked, c: Committed) -> Record:
        """A user the core parked (their due time would not move on): a dead
        letter naming the user and why, with their state as the payload."""
        log.error("parked a user: %s", parked.reason)
        record = dead_letter_record(
            reason="no_progress", error=parked.reason, topic=self.changelog_topic, partition=c.partition,
            offset=c.src_offset, key=parked.user_id.encode(), payload=c.state,
            max_payload=self.dlq_max_payload_bytes,
        )
        metrics.DEAD_LETTERS.labels("no_progress").inc()
        return Record(topics.DEAD_LETTERS, parked.user_id.encode(), record, source=c.partition)

    @staticmethod
    def reported(r: Reported) -> Record:
        return Record(topics.POPULATION, str(r.partition).encode(), orjson.dumps(r.doc), source=r.partition)

    @staticmethod
    def facts(f: Facts) -> list[Record]:
        """One metric-facts record, or several: Kafka refuses records over
        its message size (1 MB by default), and a catch-up chunk can hold
        thousands of steps. Only the last carries the watermark, so a period
        is never seen closed before all of its facts are in."""
        steps = [(s.user_id, s.version, s.facts, s.late) for s in f.steps]
        parts = _bounded_json(steps, FACTS_RECORD_BYTES)
        out = []
        for n, part in enumerate(parts):
            mark = f.watermark if n == len(parts) - 1 else -1
            value = b'{"p":%d,"wm":%d,"steps":%s}' % (f.partition, mark, part)
            out.append(Record(topics.METRIC_FACTS, str(f.partition).encode(), value, f.partition,
                              source=f.partition))
        return out

    def dead_letter(self, message: Any, rejection: Rejection) -> Record:
        record = dead_letter_record(
            reason=rejection.reason, error=rejection.error, topic=message.topic, partition=message.partition,
            offset=message.offset, key=message.key, payload=message.value,
            max_payload=self.dlq_max_payload_bytes,
        )
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()
        return Record(topics.DEAD_LETTERS, message.key, record, source=message.partition)


def _bounded_json(steps: list, limit: int) -> list[bytes]:
    """`steps` as JSON arrays of at most `limit` bytes each (one step alone
    may exceed it; at least one array, possibly empty)."""
    encoded = orjson.dumps(steps)
    if len(encoded) <= limit or len(steps) <= 1:
        return [encoded]
    half = len(steps) // 2
    return _bounded_json(steps[:half], limit) + _bounded_json(steps[half:], limit)
