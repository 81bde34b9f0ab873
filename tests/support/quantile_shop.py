"""A shop whose orders are 100x smaller than the fixed thresholds expect,
and the pipeline run over it with quantile scores, owning every partition
with its own population reports looped back: the reference the quantile
tests compare live runs with."""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from agents.pipeline import Pipeline
from agents.population import PopulationReader
from bench.workload import history
from state.model import DAY_MS
from state.config import ConfigDocument
from state.rules import population_rules_text
from stream import topics
from stream.codecs import decode_state
from stream.settings import Settings
from tests.support.fakes import FakeTable

# The default rules with quantile R, F and M, and the churn model (fitted
# weekly), on.
QUANTILE_RULES = population_rules_text()


def quantile_rules():
    """The population rules as a worker started with them as its only file
    runs them: the same version (state.config) in every decision."""
    rules = ConfigDocument(QUANTILE_RULES, None).rules()
    assert rules.scores.quantiles == ["r", "f", "m"] and rules.scores.churn_model
    return rules


def small_ticket_shop(users: int = 3000, events: int = 30_000, days: int = 150, seed: int = 7,
                      start_ms: int | None = None) -> list[dict]:
    """The workload's spend levels are 25-400 currency units per order; this
    shop's are 100x smaller (0.25-4), far under the fixed monetary
    thresholds (100-2,000), which would score nearly everyone M = 1."""
    bodies = history(users=users, events=events, days=days, seed=seed,
                     **({"start_ms": start_ms} if start_ms is not None else {}))
    # The workload piles events that would run past its end onto its last
    # moments; keep the steady part.
    end = min(b["ts"] for b in bodies) + (days - 10) * DAY_MS
    bodies = [b for b in bodies if b["ts"] < end]
    for b in bodies:
        if "amount" in b:
            b["amount"] = round(b["amount"] / 100, 2) or 0.01
    return sorted(bodies, key=lambda b: (b["ts"], b["event_id"]))


def kafka_partition(user_id: str, partitions: int) -> int:
    """Where a producer keyed by user id puts the event (Kafka's default
    partitioner): decisions near the end of a history depend on how far
    each partition's watermark got, so the reference splits users alike."""
    return DefaultPartitioner()(user_id.encode(), list(range(partitions)), list(range(partitions)))


def tier_changes(outputs) -> dict[str, dict]:
    return {d["change_id"]: d for r in outputs if r.topic == topics.TIER_CHANGES for d in [orjson.loads(r.value)]}


@dataclass(frozen=True)
class Crash:
    """A simulated SIGKILL after step `at` of a run (a step: one message, or
    one chunk): the outputs of every step before it reached Kafka; the
    changelog records of the last `changelog_lag` steps did not (the
    pipeline writes them only after their outputs are acknowledged); and
    the input is committed only up to `commit_lag` steps before that."""
    at: int
    changelog_lag: int = 1
    commit_lag: int = 0


@dataclass(frozen=True)
class Rollout:
    """`tierstream rules apply` during a run: before step `step`, a proposal
    of `rules` (in force from `at_ms`, or as soon as every partition can)."""
    step: int
    rules: Any
    at_ms: int | None = None

    @property
    def key(self) -> str:
        return f"{self.rules.version}@0"


def run_shop(bodies, chunk=None, partitions=4, seed=0, idle_rule=True, rules=None, crash: Crash | None = None,
             lateness_ms: int | None = None, rollout: Rollout | None = None, switch_chunk: int | None = None,
             on_step=None):
    """The pipeline over `bodies`, owning every partition, its own reports
    looped back. `chunk`: messages are taken partition by partition, `chunk`
    at a time in random order, so partitions drift apart in event time (as
    with two workers at different speeds); None: in event-time order.
    `crash`: the first process dies as it says, and a second one recovers
    what was durable (the changelog, the committed input, the population
    reports published) and reads the input again from the committed
    offsets; the outputs returned are those that reached Kafka, from both.
    `lateness_ms`: the allowed lateness (default: the setting's).
    `rollout`: a rules roll-out proposed part-way (a crash after it: the
    second process reads the proposal and the reports on it again);
    `switch_chunk`: users its sweep re-assesses per step. `on_step(p)`:
    called after each step (no crash runs)."""
    rules = rules if rules is not None else quantile_rules()
    settings = Settings(clock="replay", max_future_seconds=10**9, partitions=partitions,
                        **({"allowed_lateness_ms": lateness_ms} if lateness_ms is not None else {}),
                        # None: a roll-out re-assesses a partition's users in one step (the worker: in chunks)
                        rollout_chunk_users=switch_chunk or 1 << 40)
    per_partition = [[] for _ in range(partitions)]
    for body in bodies:
        per_partition[kafka_partition(body["user_id"], partitions)].append(body)
    queues = [list(enumerate(q)) for q in per_partition]
    rnd = random.Random(seed)
    p, reader = _worker(settings, rules, {}, [], None, rollout if rollout is not None and rollout.step <= 0 else None,
                        enable=rollout is not None)
    steps = _drive(p, reader, queues, rnd, chunk, idle_rule, stop_after=crash.at if crash is not None else None,
                   rollout=rollout, on_step=on_step if crash is None else None)
    if crash is None:
        return p, [r for step in steps for r in step.outputs]
    durable = steps[:crash.at]
    outputs = [r for step in durable for r in step.outputs]
    with_changelog = durable[:max(0, crash.at - crash.changelog_lag)]
    store = {r.key.decode(): decode_state(r.value) for step in with_changelog for r in step.changelog}
    committed = {i: 0 for i in range(partitions)}
    for step in with_changelog[:max(0, len(with_changelog) - crash.commit_lag)]:
        for partition, offset in step.taken:
            committed[partition] = offset + 1
        for partition, limit in step.limits.items():  # deferred events: not committed past the first
            committed[partition] = min(committed[partition], limit)
    reports = [orjson.loads(r.value) for r in outputs if r.topic == topics.POPULATION]
    proposed = rollout if rollout is not None and rollout.step < crash.at else None
    p, reader = _worker(settings, rules, store, reports, committed, proposed, enable=rollout is not None)
    outputs += p.drain()[0]
    queues = [list(enumerate(q))[committed[i]:] for i, q in enumerate(per_partition)]
    later = None if rollout is None or proposed is not None else Rollout(rollout.step - crash.at, rollout.rules,
                                                                         rollout.at_ms)
    steps = _drive(p, reader, queues, rnd, chunk, idle_rule, rollout=later)
    return p, outputs + [r for step in steps for r in step.outputs]


@dataclass
class Step:
    taken: list[tuple[int, int]]  # (partition, offset) of the messages taken
    outputs: list
    changelog: list
    limits: dict[int, int]  # partition -> the offset a commit after this step must not pass


def _worker(settings, rules, store, reports, committed, proposed=None, enable=False):
    """A pipeline owning every partition, with the given recovered table;
    its reader gets to the population reports published before it only
    after the recovery (the real one reads them from the topic's start,
    while the worker recovers). `proposed`: a roll-out proposed before it
    started, read again with the reports on it; `enable`: roll-outs are
    read at all (the partitions wait to be placed)."""
    p = Pipeline(SimpleNamespace(users=FakeTable()), settings, rules, None)
    p.store.update(store)
    p.engine.loop_back(settings.partitions)
    if enable:
        p.engine.enable_rollouts(settings.partitions)
    p.on_active_partitions(set(range(settings.partitions)), committed)
    wall = p.clock.now_ms()
    if proposed is not None:
        p.engine.propose(proposed.key, proposed.rules, proposed.at_ms, wall)
    for doc in reports:
        if "rollout" in doc:
            p.engine.rollout_report(doc["rollout"], doc["p"], doc["watermark"], wall)
        else:
            p.engine.settle(p.engine.loopback.add(doc))
    if enable:
        p.engine.place_waiting(wall)
    p.resume()
    # The replay clock's idle rule, through the worker's own code; here a
    # partition is idle once its events are all taken.
    reader = PopulationReader(settings, p.engine, None, send_out=None)
    reader.reports = p.engine.loopback
    return p, reader


def _drive(p, reader, queues, rnd, chunk, idle_rule, stop_after=None, rollout=None, on_step=None) -> list[Step]:
    partitions = len(queues)
    steps = []
    p.waited = False
    while any(queues) and (stop_after is None or len(steps) < stop_after):
        if rollout is not None and len(steps) == rollout.step:
            p.engine.propose(rollout.key, rollout.rules, rollout.at_ms, p.clock.now_ms())
        live = [i for i, q in enumerate(queues) if q]
        part = live[0] if chunk is None else rnd.choice(live)
        if chunk is None:
            part = min(live, key=lambda i: queues[i][0][1]["ts"])
        take = 1 if chunk is None else chunk
        assert p.ready(part)  # the worker would hold its input (agents.wiring.until_ready)
        for offset, body in queues[part][:take]:
            p.on_message(SimpleNamespace(topic=topics.EVENTS, partition=part, offset=offset,
                                         key=body["user_id"].encode(), value=orjson.dumps(body)))
        taken = [(part, offset) for offset, _ in queues[part][:take]]
        del queues[part][:take]
        p.waited = p.waited or bool(p.engine.waiting)
        idle = {i for i, q in enumerate(queues) if not q}
        if idle and idle_rule:
            reader.follow_idle(idle)
        p.resume()
        steps.append(Step(taken, *p.drain(), _limits(p)))  # as publishing does, metric facts and all
        if on_step is not None:
            on_step(p)
    if stop_after is not None and len(steps) >= stop_after:
        return steps
    # The history's end: every partition is idle (and a roll-out's sweep goes on, as the worker's task does it).
    while (idle_rule and reader.follow_idle(set(range(partitions)))) or p.engine.switching:
        p.resume()
    p.resume()
    steps.append(Step([], *p.drain(), _limits(p)))
    return steps


def _limits(p) -> dict[int, int]:
    return {n: limit for n in p.engine.engines if (limit := p.engine.commit_limit(n)) is not None}
