"""One partition of users: its watermark, its held events and due times,
its sweeps, and (quantile scores) its way through the cadence periods
(engine.periods; a rules roll-out's side: engine.rollout).

Pure: events, wall-clock readings and settled cut points in; effects out
(engine.effects). The users live in a mapping the adapter provides (the
Faust table's local store: every partition's users, keyed by user id);
this object only ever reads and writes its own partition's.

Event time (docs/time.md): the partition's raw watermark is the latest
event time it has seen (live: or the wall clock), less the allowed
lateness. With quantile scores it is held at the end of a cadence period
until the cut points of the next are settled (state.quantiles: every
partition reports its population at the boundary, and the cuts are
computed from all the reports). That hold is the only thing that crosses
partitions, through the threshold book the coordinator keeps.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from enum import Enum
from typing import Any

from engine.clock import Clock
from engine.effects import Effects, Facts
from engine.periods import PeriodSteps
from engine.rollout import RolloutSteps
from state.calendar import Calendar
from state.due_index import DueIndex
from state.evaluate import Assessment
from state.kpis import Ledger, Step
from state.model import DAY_MS, UserEvent, UserState
from state.quantiles import PopulationIndex, ThresholdBook
from state.rules import Rules
from state.steps import Decision, advance, implausibly_old, on_event, wake_at

log = logging.getLogger(__name__)


class Taken(Enum):
    """What became of an event handed to the engine."""

    APPLIED = "applied"
    REDELIVERED = "redelivered"  # its offset was applied before (a restart's re-read)
    DUPLICATE = "duplicate"  # its event id was seen before: nothing changed
    # The partition waits for the cut points of its next period: the event
    # is taken once they are settled (its outcome then goes to the effects).
    DEFERRED = "deferred"


class TooOld(str):
    """An event refused as implausibly old (state.steps.implausibly_old): why."""


class PartitionEngine(PeriodSteps, RolloutSteps):
    def __init__(
        self,
        partition: int,
        rules: Rules,
        clock: Clock,
        users: MutableMapping[str, UserState],
        effects: Effects,
        *,
        lateness_ms: int,
        max_event_age_ms: int,
        book: ThresholdBook | None = None,
        report: Callable[[int, dict], None] | None = None,
        metrics: bool = True,
        on_point: Callable[[str], None] = lambda point: None,
    ) -> None:
        self.partition = partition
        self.rules = rules
        self.clock = clock
        self.users = users
        self.effects = effects
        self.lateness_ms = lateness_ms
        self.max_event_age_ms = max_event_age_ms
        self.book = book
        self._report = report or effects.report
        self.on_point = on_point  # crash points (agents.faults): the moments the crash tests kill at
        self.churn_fit_ms = rules.scores.churn_fit_days * DAY_MS if rules.scores.churn_model else None
        self.index = DueIndex()
        self.owned = False
        # Latest event time seen: the watermark's source. None: no event yet.
        self.max_event_ms: int | None = None
        # Replay clock, quantile scores: the event time this partition was
        # moved on to while idle, following the others (`follow`).
        self.followed: int | None = None
        self.population = PopulationIndex()
        self.reported: int | None = None  # the latest boundary it reported on
        self.entered: int | None = None  # the latest boundary whose period it evaluates in
        self.waiting: int | None = None  # the boundary it waits to enter (cuts not settled)
        # The boundary whose cuts it needs before anything else (recovered
        # into a period whose cuts this process has not read yet).
        self.recovering: int | None = None
        # Events that came while the partition waited for cut points, in
        # arrival order: (user, event, offset, source). Taken when the cuts
        # are settled (`take_deferred`); until then the input is not
        # committed past the first of them (`commit_limit`), so a crash
        # loses none.
        self.deferred: deque[tuple[str, UserEvent, int, Any]] = deque()
        self.deferred_latest_ms = 0  # the latest event time among them
        # Deferred events taken whose records (decisions, changelog) the
        # producer does not hold yet: the first offset taken since the
        # publisher last sealed, and the sealed ones on their way. Faust
        # computes a commit's offsets, then flushes the producer: without
        # these a commit while a publish waits for its acks could pass
        # events whose state no changelog record holds yet.
        self.taken_unsent: int | None = None
        self.sending: list[int] = []
        # Operator metrics: each step's facts, and the watermark the
        # partition was swept to (up to when its facts are complete).
        self.ledger = Ledger(Calendar(rules.metrics.timezone), rules.metrics.conversion_days) if metrics else None
        self.facts: list[Step] | None = None  # None: nothing booked since the last record
        self.swept_to: int | None = None
        self.facts_sent_wm: int | None = None
        self.init_rollouts()

    # -- ownership -------------------------------------------------------

    def own(self, placed: bool = True) -> None:
        """Assigned (again): its due index starts empty, to be refilled by
        `recover`. `placed`: False while the process has yet to read the
        roll-outs proposed before (`place`)."""
        self.index.reset({self.partition})
        self.owned = True
        self.followed = None
        self.deferred.clear()
        self.deferred_latest_ms = 0
        self.placed = placed
        self.hold = None
        self.reassessing = None
        if not placed:
            self.switches.clear()  # `place` says again which are to come

    def disown(self) -> None:
        """Revoked: stop sweeping at once (another worker may own it now)."""
        self.release()
        self.recovering = None
        self.followed = None

    def release(self) -> None:
        """No longer among the partitions this worker actively owns (what it
        deferred is read again by the next owner, from the committed input)."""
        self.index.reset(set())
        self.owned = False
        self.reassessing = None
        self.deferred.clear()
        self.deferred_latest_ms = 0

    def recover(self, users: list[tuple[str, UserState]], committed: int | None) -> None:
        """After recovery, from the partition's recovered states: the due
        index, the watermark, and (quantile scores) the population and the
        period to restart in. `committed`: the group's committed input
        offset, when known."""
        for user_id, state in users:
            self.index.schedule(self.partition, wake_at(state), user_id)
            # Every event seen is in some user's state (applied or held), so
            # the watermark comes back from the states; but only from those
            # behind the committed input. A worker that died writing a
            # batch's changelog records left some of its users' records past
            # that point and not others': a watermark taken from those would
            # run ahead of the events re-read now (its sweep deciding, and
            # its facts closing periods, before them). Re-read events move
            # it on in order.
            if committed is not None and state.src_offset >= committed:
                continue
            seen = max(state.last_seen_ms, state.held[-1][0] if state.held else 0)
            self.max_event_ms = max(self.max_event_ms or 0, seen)
        if self.book is not None:
            self._rebuild_population(users)

    # -- events ----------------------------------------------------------

    def take(self, user_id: str, event: UserEvent, offset: int, wall: int, source: Any = None) -> Taken | TooOld:
        """One validated event for a user of this partition, read at `offset`.
        `source`: the adapter's message, handed back with the outcome of an
        event taken later (Effects.later).

        While the partition waits at a period's end for the next cuts, its
        watermark is held below the raw watermark, and an event would be
        judged on time or late against the held one: how long the wait
        lasts depends on the other partitions, so the same input could be
        judged differently in two runs. Events are deferred instead, and
        taken once the watermark is the partition's own again. The same
        holds while a rules roll-out is open (`hold`)."""
        if self.switches and self.raw_watermark(wall) >= self.switches[0][0]:
            self.catch_up(wall)  # a version comes into force before this event is judged
        if self.deferred or self._held(wall):
            self.deferred.append((user_id, event, offset, source))
            self.deferred_latest_ms = max(self.deferred_latest_ms, event.ts_ms)
            return Taken.DEFERRED
        return self._take(user_id, event, offset, wall)

    def _held(self, wall: int) -> bool:
        return (self.book is not None or self.hold is not None or bool(self.switches)) and \
            self.watermark(wall) < self.raw_watermark(wall)

    def take_deferred(self, wall: int) -> int:
        """Take the deferred events the partition may take now, in order;
        their outcomes go to the effects. Returns how many were taken."""
        taken = 0
        while self.deferred and self.ready() and not self._held(wall):
            user_id, event, offset, source = self.deferred.popleft()
            if self.taken_unsent is None:
                self.taken_unsent = offset
            self.effects.taken_later(self.partition, source, user_id, self._take(user_id, event, offset, wall))
            taken += 1
        if not self.deferred:
            self.deferred_latest_ms = 0
        return taken

    def behind_ms(self, wall: int) -> int:
        """How far this partition's final decisions trail the latest event
        time it has read (deferred events included), beyond the allowed
        lateness: above 0 while it waits at a period's end for cut points,
        0 when every event read is decided on (a backfill's progress)."""
        latest = max(self.max_event_ms or 0, self.deferred_latest_ms) - self.lateness_ms
        return max(0, latest - self.watermark(wall)) if latest > 0 else 0

    def commit_limit(self) -> int | None:
        """The input offset a commit must not pass, if any: the first event
        deferred, or taken from the deferred ones with its records not yet
        with the producer."""
        limits = [self.deferred[0][2]] if self.deferred else []
        if self.taken_unsent is not None:
            limits.append(self.taken_unsent)
        return min(limits + self.sending) if limits or self.sending else None

    def _take(self, user_id: str, event: UserEvent, offset: int, wall: int) -> Taken | TooOld:
        state = self.users.get(user_id)
        if state is not None and state.src_partition == self.partition and offset <= state.src_offset:
            # Replayed after a restart: already applied. It moved the
            # watermark the first time, so it does again, in the same order.
            self._saw(event.ts_ms, wall)
            return Taken.REDELIVERED
        too_old = implausibly_old(state, event.ts_ms, self.watermark(wall), self.max_event_age_ms)
        if too_old is not None:
            return TooOld(too_old)
        before = self._see(event.ts_ms, wall)
        watermark_before, watermark = before[0], self.watermark(wall)
        previous_due = wake_at(state) if state is not None else None
        result = on_event(state, event, watermark_before, watermark, self.rules, self.ledger)
        self._book()
        if self.book is not None and result.assessment is not None:
            self._track(user_id, result.state, result.assessment)
        if not result.accepted:
            return Taken.DUPLICATE
        result.state.src_partition, result.state.src_offset = self.partition, offset
        self._commit(user_id, result.state, result.decisions, result.assessment, previous_due)
        self._catch_up_if_moved(wall, before)
        return Taken.APPLIED

    def _saw(self, ts_ms: int, wall: int) -> None:
        """An event's time seen again: the watermark moves as it did."""
        if ts_ms > (self.max_event_ms or 0):
            self._catch_up_if_moved(wall, self._see(ts_ms, wall))

    def _see(self, ts_ms: int, wall: int) -> tuple[int, int]:
        """An event time seen; returns the watermark and the raw watermark
        from before it."""
        before = self.watermark(wall), self.raw_watermark(wall)
        self.max_event_ms = max(self.max_event_ms or 0, ts_ms)
        if self.book is not None and self.reported is None:
            self._first_report(wall)
        return before

    def _catch_up_if_moved(self, wall: int, before: tuple[int, int]) -> None:
        """Sweep when the watermark moved (or, with quantile scores, the raw
        watermark: it may enter a period while the watermark waits)."""
        if self.watermark(wall) > before[0] or (
                (self.book is not None or self.switches) and self.raw_watermark(wall) > before[1]):
            self.catch_up(wall)

    # -- event time ------------------------------------------------------

    def raw_watermark(self, wall: int) -> int:
        """Latest event time seen (and, live, the wall clock), minus the
        allowed lateness."""
        latest = max(self.max_event_ms or 0, self.followed or 0)
        return self.clock.latest(latest, wall) - self.lateness_ms

    def watermark(self, wall: int) -> int:
        """Decisions are final up to here: the raw watermark, held back at
        the end of the current cadence period until the cuts of the next
        are settled (quantile scores only). Events past it wait in their
        users' states, as events within the allowed lateness do."""
        raw = self._reachable(wall)
        if self.switches:  # the old version decides nothing at or past the new one's start
            raw = min(raw, self.switches[0][0] - 1)
        if self.book is None:
            return raw
        if self.entered is not None:
            return min(raw, self.entered + self.book.cadence_ms - 1)
        return min(raw, self.reported - 1) if self.reported is not None else raw

    def catch_up(self, wall: int) -> int:
        """Sweep to the watermark, entering each cadence period on the way
        (state.quantiles: report, wait for the cuts, re-assess whom they move)."""
        if not self.ready():
            return 0
        raw = self._reachable(wall)
        if self.book is not None and self.owned:
            self._enter_periods(raw)  # switches versions on their boundaries
        while self.book is None and self.owned and self.switches and raw >= self.switches[0][0]:
            if self.reassessing is None:
                self.sweep(self.switches[0][0] - 1)
            if not self._switch():
                return 0  # users left to re-assess: the next call goes on
        return self.sweep(self.watermark(wall))

    def ready(self) -> bool:
        """Whether the partition may go on: not recovered into a period whose
        cuts this process has yet to read (`recovering`). Until then its
        input waits (the adapter holds it) and nothing of it is swept: any
        step now would evaluate with no cuts, or older ones than the process
        that died had for the same step."""
        if not self.placed:
            return False
        if self.recovering is None:
            return True
        assert self.book is not None
        if not self.book.settled(self.recovering):
            return False
        self.recovering = None
        return True

    def follow(self, boundary: int) -> bool:
        """Replay clock: an idle partition (caught up with its input, and
        nothing new for a while) is moved on to `boundary`, the furthest
        another partition reported on, as an event at that time (plus the
        allowed lateness) would move it: it reports, enters the periods and
        ages its users. Without this, a partition that has no more events
        (or never had any) would hold every other back for ever. Its own
        events, should any come later, count from where it got to. Returns
        whether it moved."""
        if self.book is None or not self.owned or self.deferred:
            return False  # deferred events of its own will move it
        target = boundary + self.lateness_ms
        if target <= max(self.max_event_ms or 0, self.followed or 0):
            return False
        self.followed = target
        self.catch_up(self.clock.now_ms())
        return True

    # -- time ------------------------------------------------------------

    def sweep(self, watermark: int) -> int:
        """Advance every user who needs attention by `watermark`."""
        if not self.owned:
            return 0
        touched = 0
        for _due, user_id in self.index.pop_due(self.partition, watermark, self._wake_of):
            state = self.users[user_id]
            held_before = len(state.held)
            assessment, decisions = advance(user_id, state, watermark, self.rules, self.ledger)
            self._book()
            if self.book is not None and assessment is not None:
                self._track(user_id, state, assessment, applied=len(state.held) != held_before)
            if decisions:
                self.on_point("sweep_decided")
            if decisions or len(state.held) != held_before:
                self._commit(user_id, state, decisions, assessment, previous_due=None)
            else:
                # Nothing changed, only the next due time moved. That is not
                # worth a changelog record: a recovered state with the older
                # due time wakes early, finds nothing, and moves on.
                self.index.schedule(self.partition, wake_at(state), user_id)
            touched += 1
        # Every reschedule leaves a stale entry; in replay mode nothing else
        # would ever clear them.
        self.index.maybe_compact(self.partition, self._wake_of)
        self.swept_to = watermark if self.swept_to is None else max(self.swept_to, watermark)
        return touched

    def _wake_of(self, user_id: str) -> int | None:
        state = self.users.get(user_id)
        return wake_at(state) if state is not None else None

    # -- effects ---------------------------------------------------------

    def _commit(self, user_id: str, state: UserState, decisions: list[Decision], assessment: Assessment | None,
                previous_due: int | None) -> None:
        self.users[user_id] = state
        self.effects.commit(self.partition, user_id, state, decisions, assessment)
        wake = wake_at(state)
        if wake != previous_due:
            self.index.schedule(self.partition, wake, user_id)

    def _book(self) -> None:
        if self.ledger is not None and self.ledger.steps:
            if self.facts is None:
                self.facts = []
            self.facts.extend(self.ledger.drain())

    def seal_facts(self) -> Facts | None:
        """The partition's metric facts since the last call, when it has new
        steps or its watermark moved."""
        if self.ledger is None:
            return None
        if self.facts is None and (self.swept_to is None or self.facts_sent_wm == self.swept_to):
            return None
        wm = self.swept_to if self.swept_to is not None else -1
        steps, self.facts = self.facts or [], None
        self.facts_sent_wm = wm
        return Facts(self.partition, wm, steps)

