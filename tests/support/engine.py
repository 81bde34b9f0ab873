"""The engine driven directly, without the adapter: events as dicts (parsed
by the contract, as ingest would), wall-clock ticks, and what it decided
read off its effects. For the per-partition tests (watermarks, held
events, sweeps, recovery); tests/unit/test_pipeline.py covers the adapter."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from agents.routing import ROUTES
from engine.clock import clock_for
from engine.coordinator import Coordinator
from engine.partition import PartitionEngine, Taken, TooOld
from state.kpis import Step
from state.model import DAY_MS, UserState
from state.rules import Rules
from state.steps import Decision, UserParked
from stream.contract import Rejection, parse_event
from state.campaigns import load_campaigns
from stream import topics
from stream.settings import Settings
from tests.support.factories import T0
from tests.support.fixed_rules import fixed_rules

DEFAULTS = Settings()


class EngineRun:
    """One process's engine over a plain dict of users, owning `partitions`."""

    def __init__(self, rules: Rules, *, clock: str = "replay", wall: int = T0 + 1000 * DAY_MS,
                 lateness_ms: int = DEFAULTS.allowed_lateness_ms, partitions: set[int] = frozenset({0, 1}),
                 max_event_age_days: int = DEFAULTS.max_event_age_days, users: dict[str, UserState] | None = None,
                 committed: dict[int, int] | None = None) -> None:
        self.wall = wall
        self.users: dict[str, UserState] = {} if users is None else users
        self.clock = clock_for(clock, lambda: self.wall)
        self.coordinator = Coordinator(rules, self.clock, self.users, lateness_ms=lateness_ms,
                                       max_event_age_days=max_event_age_days)
        self.coordinator.on_active_partitions(set(partitions), committed)
        self.coordinator.catch_up_all(set(partitions), self.wall)
        self._offsets: dict[int, int] = defaultdict(int)
        # (user, decision) in the order decided, and the states committed
        self.decided: list[tuple[str, Decision]] = []
        self.committed: list[tuple[int, str, bytes]] = []
        self.later: list = []  # engine.effects.TakenLater: outcomes of deferred events
        # partition -> its metric steps (state.kpis), in order
        self.steps: dict[int, list[Step]] = defaultdict(list)
        self._collect()

    def partition(self, p: int) -> PartitionEngine:
        return self.coordinator.engine(p)

    def event(self, body: dict, partition: int = 0, offset: int | None = None) -> Taken | TooOld | Rejection:
        """One event as ingest hands it over (the contract's checks first)."""
        parsed = parse_event(orjson.dumps(body), now_ms=self.wall, max_bytes=1 << 20, max_future_ms=10**12)
        if isinstance(parsed, Rejection):
            return parsed
        if offset is None:
            offset = self._offsets[partition]
        self._offsets[partition] = max(self._offsets[partition], offset + 1)
        taken = self.partition(partition).take(parsed.user_id, parsed, offset, self.wall)
        self._collect()
        return taken

    def tick(self, wall: int) -> None:
        self.wall = wall
        self.coordinator.tick(wall)
        self._collect()

    def resume(self) -> None:
        """Partitions that waited for cut points go on (as the population reader's round does)."""
        self.coordinator.resume(self.wall)
        self._collect()

    def sweep(self, partition: int, watermark: int) -> None:
        self.partition(partition).sweep(watermark)
        self._collect()

    def swept_to(self, partition: int) -> int | None:
        return self.partition(partition).swept_to

    def _collect(self) -> None:
        for facts in self.coordinator.seal_facts():
            self.steps[facts.partition] += facts.steps
        effects = self.coordinator.effects
        for c in effects.committed:
            self.committed.append((c.partition, c.user_id, c.state))
            self.decided += [(c.user_id, d) for d in c.decisions]
        self.later += effects.later
        effects.committed.clear()
        effects.reported.clear()
        effects.assessed.clear()
        effects.later.clear()

    def records(self, topic: str) -> list[dict[str, Any]]:
        """The decisions bound for `topic`, as published (agents.routing)."""
        out = []
        for _, d in self.decided:
            if isinstance(d, UserParked):
                continue
            route = ROUTES[type(d)]
            if route.topic == topic:
                out.append(route.record(d))
        return out

    def per_user(self, *topics: str) -> dict[bytes, list[tuple[str, dict]]]:
        """(topic, record) per user, in the order decided."""
        out: dict[bytes, list[tuple[str, dict]]] = defaultdict(list)
        for user_id, d in self.decided:
            if isinstance(d, UserParked):
                continue
            route = ROUTES[type(d)]
            if route.topic in topics:
                out[user_id.encode()].append((route.topic, route.record(d)))
        return out


def feed(bodies: list[dict], lateness: int = 2 * DAY_MS, rules: Rules | None = None):
    """`bodies` into partition 0, in order, with fixed-threshold rules; the
    run (its users in `.users`) and the tier changes and alerts per user."""
    run = EngineRun(rules or fixed_rules(), lateness_ms=lateness)
    for offset, body in enumerate(bodies):
        run.event(body, partition=0, offset=offset)
    return run, run.per_user(topics.TIER_CHANGES, topics.CHURN_ALERTS)


def with_campaigns() -> EngineRun:
    """An engine run with fixed-threshold rules and the example campaigns."""
    rules = fixed_rules()
    return EngineRun(rules.with_campaigns(load_campaigns(None, rules.tier_names)))
