"""What crosses partitions in one process: the engines of the partitions it
has owned, the threshold book every one of them reads (quantile scores),
and which of them may go on once cut points settle.

Pure, like the engines: the population reader (agents.population) feeds it
settled cuts, the adapter feeds it events and ticks, and both drain the
same `Effects`. With `loopback` (one process owning every partition, as in
tests and benchmarks) the reports it makes are settled here at once,
instead of going round the population topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping

from engine.clock import Clock
from engine.effects import Effects, Facts
from engine.partition import PartitionEngine
from state.model import DAY_MS, UserState
from state.quantiles import Cuts, PopulationReports, ThresholdBook, population_reports
from state.rollout import Outcome, RolloutBook
from state.rules import Rules

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, rules: Rules, clock: Clock, users: MutableMapping[str, UserState], *,
                 lateness_ms: int, max_event_age_days: int, metrics: bool = True,
                 on_point=lambda point: None) -> None:
        # Quantile scores (state.quantiles): the cut points every worker
        # agrees on, fed by the population topic (or `loopback`).
        self.book = ThresholdBook(rules.cadence_ms) if rules.scores.from_population else None
        if self.book is not None:
            rules = rules.with_thresholds(self.book)
        self.rules = rules
        self.clock = clock
        self.users = users
        self.effects = Effects()
        self.lateness_ms = lateness_ms
        self.max_event_age_ms = max_event_age_days * DAY_MS
        self.metrics = metrics
        self.on_point = on_point
        self.loopback: PopulationReports | None = None
        self.engines: dict[int, PartitionEngine] = {}
        # Rules roll-outs (state.rollout), where a reader feeds them
        # (`enable_rollouts`): the version every partition starts from, and
        # each proposal's rules by its key.
        self.rollouts: RolloutBook | None = None
        self.base = self.rules
        self.versions: dict[str, Rules] = {}
        self.rollout_loopback = False
        self.switch_chunk: int | None = None  # PartitionEngine.switch_chunk of every engine

    def loop_back(self, partitions: int) -> None:
        """Settle this process's own reports at once (it owns every partition)."""
        self.loopback = population_reports(partitions, self.rules)
        self.rollout_loopback = True

    def engine(self, partition: int) -> PartitionEngine:
        """The partition's engine, made on first use and kept: what a
        partition learnt of event time survives losing it and getting it back."""
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.engines[partition] = PartitionEngine(
                partition, self.rules, self.clock, self.users, self.effects, lateness_ms=self.lateness_ms,
                max_event_age_ms=self.max_event_age_ms, book=self.book, report=self._report,
                metrics=self.metrics, on_point=self.on_point)
            engine.switch_chunk = self.switch_chunk
        return engine

    # -- rules roll-outs (state.rollout) ------------------------------------

    def enable_rollouts(self, partitions: int) -> None:
        """A reader of the config and population topics will feed roll-outs:
        from now on a partition assigned waits until it is placed
        (`place_waiting`), that is until the reader has read what was
        proposed before."""
        self.rollouts = RolloutBook(partitions, self.book.cadence_ms if self.book is not None else None)

    def _bound(self, rules: Rules) -> Rules:
        return rules.with_thresholds(self.book) if self.book is not None else rules

    def rebase(self, rules: Rules) -> None:
        """A version published whole (`tierstream config publish`, every
        worker stopped): the partitions start from it, and roll-outs
        proposed before it no longer count."""
        assert self.rollouts is not None
        self.base = self._bound(rules)
        self.versions.clear()
        self.rollouts = RolloutBook(self.rollouts.partitions, self.rollouts.cadence_ms)

    def propose(self, key: str, rules: Rules, at_ms: int | None, wall: int) -> list[Outcome]:
        """A roll-out proposed (read from the config topic). When it is the
        open one, each placed partition reports its watermark on it and
        holds there until it settles. Returns the outcomes settled."""
        assert self.rollouts is not None
        self.versions[key] = self._bound(rules)
        return self._settled(self.rollouts.propose(key, rules.version or "", at_ms), wall)

    def rollout_report(self, key: str, partition: int, watermark: int, wall: int) -> list[Outcome]:
        """A partition's report on a roll-out (the population topic)."""
        assert self.rollouts is not None
        return self._settled(self.rollouts.report(key, partition, watermark), wall)

    def rollout_withdrawn(self, key: str, partitions: set[int], by: str, wall: int) -> list[Outcome]:
        """A withdrawal read in the report streams of `partitions` (state.rollout)."""
        assert self.rollouts is not None
        return self._settled(self.rollouts.withdraw(key, partitions, by), wall)

    def _settled(self, outcomes: list[Outcome], wall: int) -> list[Outcome]:
        """Apply what settled, then have the placed partitions report on the
        proposal open now, if any (in loopback, that may settle it too)."""
        assert self.rollouts is not None
        done: list[Outcome] = []
        while True:
            for outcome in outcomes:
                self._rollout_settled(outcome, wall)
            done += outcomes
            outcomes = []
            pending = self.rollouts.pending()
            if pending is not None:
                for p in self.owned():
                    if self.engines[p].placed and self.engines[p].hold is None:
                        outcomes += self._learn(self.engines[p], pending.key, wall)
            if not outcomes:
                return done

    def _learn(self, engine: PartitionEngine, key: str, wall: int) -> list[Outcome]:
        assert self.rollouts is not None
        reported = self.rollouts.reported(key, engine.partition)
        if reported is not None:  # reported before (this process, or the partition's previous owner)
            engine.hold = reported
            return []
        watermark = engine.learn(wall)
        self.effects.report(engine.partition, {"p": engine.partition, "rollout": key, "watermark": watermark})
        if self.rollout_loopback:
            return self.rollouts.report(key, engine.partition, watermark)
        return []

    def _rollout_settled(self, outcome: Outcome, wall: int) -> None:
        if outcome.accepted:
            log.info("rules version %s is in force from event time %d", outcome.version, outcome.from_ms)
        else:
            log.warning("rules version %s refused: %s", outcome.version, outcome.reason)
        rules = self.versions.get(outcome.key) if outcome.accepted else None
        for p in self.owned():
            if self.engines[p].placed:
                self.engines[p].settle(outcome.from_ms, rules)
                self.engines[p].catch_up(wall)
        self.resume(wall)

    def place_waiting(self, wall: int, only: set[int] | None = None) -> list[int]:
        """The reader has read every proposal made before now: place the
        partitions that wait (PartitionEngine.place). Each runs the version
        in force at the earliest point any of its users may still need (the
        earliest evaluation among them, or the recovered watermark if
        earlier) and comes to the later ones in order; a roll-out it
        reported on that is still open holds it where it reported."""
        assert self.rollouts is not None
        placed = []
        accepted = self.rollouts.accepted()
        pending = self.rollouts.pending()
        waiting = [p for p in self.owned() if not self.engines[p].placed and (only is None or p in only)]
        floors = {p: self.engines[p].watermark(wall) for p in waiting}
        for state in self.users.values():  # one pass over the users, whatever the partitions
            if state.src_partition in floors and state.has_applied and state.evaluated_ms is not None:
                floors[state.src_partition] = min(floors[state.src_partition], state.evaluated_ms)
        for p in waiting:
            engine = self.engines[p]
            floor = floors[p]
            rules, switches = self.base, []
            for o in accepted:
                assert o.from_ms is not None
                if o.from_ms <= floor:
                    rules = self.versions[o.key]
                else:
                    switches.append((o.from_ms, self.versions[o.key]))
            engine.place(rules, switches, None)
            if pending is not None:
                self._settled(self._learn(engine, pending.key, wall), wall)
            engine.catch_up(wall)
            placed.append(p)
        if placed:
            self.resume(wall)
        return placed

    def _report(self, partition: int, doc: dict) -> None:
        self.effects.report(partition, doc)
        if self.loopback is not None:
            self.settle(self.loopback.add(doc))

    # -- ownership -------------------------------------------------------

    def on_active_partitions(self, partitions: set[int], committed: dict[int, int] | None = None) -> int:
        """After recovery: the engines of `partitions` take their users from
        the recovered states; every other partition is no longer swept.
        Returns how many users the partitions own."""
        for p, engine in self.engines.items():
            if p not in partitions:
                engine.release()
        by_partition: dict[int, list[tuple[str, UserState]]] = {p: [] for p in partitions}
        for user_id, state in self.users.items():
            mine = by_partition.get(state.src_partition)
            if mine is not None:
                mine.append((user_id, state))
        for p in sorted(partitions):
            engine = self.engine(p)
            engine.own(placed=self.rollouts is None)
            engine.recover(by_partition[p], None if committed is None else committed.get(p, 0))
        return sum(len(users) for users in by_partition.values())

    def catch_up_all(self, partitions: set[int], wall: int) -> None:
        """After recovery: a crash may have come after a sweep's decisions
        were published but before its changelog records were: the recovered
        states are then behind the recovered watermark. Sweeping now derives
        the same decisions again (same ids), without waiting for the next event."""
        for p in sorted(partitions):
            self.engine(p).catch_up(wall)

    def on_partitions_revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            if p in self.engines:
                self.engines[p].disown()

    def owned(self) -> list[int]:
        return sorted(p for p, e in self.engines.items() if e.owned)

    def owns(self, partition: int) -> bool:
        engine = self.engines.get(partition)
        return engine is not None and engine.owned

    def ready(self, partition: int) -> bool:
        return self.engine(partition).ready()

    # -- time ------------------------------------------------------------

    def tick(self, wall: int) -> None:
        """Live clock: age silent users of every owned partition to `wall`."""
        for p in self.owned():
            self.engines[p].catch_up(wall)
            self.engines[p].take_deferred(wall)

    def settle(self, settled: list[tuple[int, Cuts | None]]) -> None:
        """Cut points every worker computed alike (from the population topic)."""
        assert self.book is not None
        for boundary, cuts in settled:
            self.book.settle(boundary, cuts)

    def resume(self, wall: int | None = None) -> None:
        """Let the partitions that waited for cuts go on."""
        wall = self.clock.now_ms() if wall is None else wall
        for p in sorted(self.engines):
            engine = self.engines[p]
            if engine.reassessing is not None and engine.owned:
                engine.catch_up(wall)  # a roll-out's re-assessment goes on (PartitionEngine.switch_chunk)
            if engine.recovering is not None and engine.ready():
                log.info("partition %d: the cut points it recovered into are read again; it goes on", p)
                engine.catch_up(wall)
        moved = True
        while moved:  # a partition going on may report what settles another's wait
            moved = False
            for p in sorted(self.engines):
                engine = self.engines[p]
                boundary = engine.waiting
                if boundary is not None and self.book is not None and self.book.settled(
                        boundary - self.book.cadence_ms):
                    engine.catch_up(wall)
                    moved = engine.waiting != boundary or moved
                if engine.deferred and engine.take_deferred(wall):
                    moved = True

    def follow(self, partition: int, boundary: int) -> bool:
        return self.engine(partition).follow(boundary)

    @property
    def switching(self) -> bool:
        """Whether a roll-out's re-assessment is under way in a partition (`resume` goes on with it)."""
        return any(e.reassessing is not None for e in self.engines.values() if e.owned)

    @property
    def waiting(self) -> dict[int, int]:
        """Partitions waiting for cuts: the boundary each waits to enter."""
        return {p: e.waiting for p, e in sorted(self.engines.items()) if e.waiting is not None}

    def commit_limit(self, partition: int) -> int | None:
        """The input offset a commit of `partition` must not pass (engine.partition: deferred events)."""
        engine = self.engines.get(partition)
        return engine.commit_limit() if engine is not None else None

    def seal_unsent(self) -> dict[int, int]:
        """Mark the deferred events taken so far as on their way to the
        producer (call as their records are drained); returns what `sent`
        releases once the producer holds those records."""
        sealed = {}
        for p, engine in self.engines.items():
            if engine.taken_unsent is not None:
                sealed[p] = engine.taken_unsent
                engine.sending.append(engine.taken_unsent)
                engine.taken_unsent = None
        return sealed

    def sent(self, sealed: dict[int, int]) -> None:
        """The records of `sealed` (seal_unsent) are with the producer: its
        flush, before any commit, waits for them."""
        for p, offset in sealed.items():
            engine = self.engines.get(p)
            if engine is not None and offset in engine.sending:
                engine.sending.remove(offset)

    def behind(self, wall: int) -> dict[int, int]:
        """Each owned partition's decisions_behind (PartitionEngine.behind_ms), in ms."""
        return {p: e.behind_ms(wall) for p, e in sorted(self.engines.items()) if e.owned}

    def due_count(self) -> int:
        return sum(len(e.index) for e in self.engines.values())

    # -- effects ---------------------------------------------------------

    def seal_facts(self) -> Iterator[Facts]:
        """Each partition's metric facts since the last call (engine order:
        by partition)."""
        for p in sorted(self.engines):
            facts = self.engines[p].seal_facts()
            if facts is not None:
                yield facts
