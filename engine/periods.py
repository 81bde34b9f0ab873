"""A partition's side of quantile scores and the churn model (state.quantiles,
state.churn_model): the cadence periods it enters one by one, its report on
each boundary, and at each boundary the customers the new cuts re-score
and the wake-ups that the cuts' recency limits and a new fit cause. Also
where a recovered partition restarts among the periods.

A part of engine.partition.PartitionEngine, kept apart so that the
engine's own module stays about events, the watermark and sweeps; these
methods use the engine's users, rules, index, book and re-assessment.
Pure, as the engine: no I/O.
"""

from __future__ import annotations

from typing import Any, Callable

from state.churn_model import Fitted, SummaryKey, buyer_summary, refit_wake
from state.evaluate import Assessment, window_figures
from state.model import DAY_MS, UserState
from state.quantiles import (
    Cuts, PopulationIndex, boundary_at_or_before, empty_doc, f_bin, m_bin, r_day, snapshot_doc,
)
from state.rules import Rules
from state.steps import reassess, wake_at


class PeriodSteps:
    """Mixed into PartitionEngine; the attributes below are its own."""

    # Provided by PartitionEngine:
    partition: int
    rules: Rules
    users: Any
    book: Any
    index: Any
    ledger: Any
    clock: Any
    population: PopulationIndex
    entered: int | None
    reported: int | None
    waiting: int | None
    recovering: int | None
    lateness_ms: int
    max_event_ms: int | None
    followed: int | None
    switches: Any
    churn_fit_ms: int | None
    _report: Callable[..., Any]

    def _rebuild_population(self, users: list[tuple[str, UserState]]) -> None:
        """The index from the recovered states, and the partition restarting
        at the period of its latest evaluation (its reports and
        re-assessments there are repeated; the first report on a boundary
        is the one that counts, and a re-assessment that finds nothing
        changes nothing). A partition with recovered states but no
        evaluation yet (it waited for its first cuts) restarts where it
        first reported: its first report went out before any of its states
        was written, and a new one, from a later event, would say it had no
        customers through periods it has not reported on."""
        assert self.book is not None
        cadence = self.rules.cadence_ms
        self.population = PopulationIndex()
        self.recovering = self.entered = self.reported = self.waiting = None
        latest: int | None = None
        first: int | None = None  # the earliest event time in the recovered states
        for user_id, state in users:
            seen = min(state.first_seen_ms, state.held[0][0]) if state.held else state.first_seen_ms
            first = seen if first is None else min(first, seen)
            if state.evaluated_ms is not None:
                frequency, cents = window_figures(state, state.evaluated_ms, self.rules)
                self.population.update(user_id, (r_day(state.last_order_ms), f_bin(frequency), m_bin(cents)))
                if self.rules.scores.churn_model:
                    self.population.update_summary(user_id, buyer_summary(state))
                latest = state.evaluated_ms if latest is None else max(latest, state.evaluated_ms)
        if latest is not None:
            restart = boundary_at_or_before(latest, cadence) - cadence
            self.entered = self.reported = restart
            # The partition evaluates in the period of `restart` from now
            # on, and behind it (users due earlier): with the cuts settled
            # up to restart - cadence, which the process that evaluated it
            # had. This one's reader may not have read them again yet.
            if not self.book.settled(restart - cadence):
                self.recovering = restart - cadence
        elif first is not None:
            self.reported = boundary_at_or_before(first - self.lateness_ms, cadence)

    def _first_report(self, wall: int) -> None:
        """The partition's first watermark: it had no customer before."""
        raw = self.raw_watermark(wall)
        self.reported = boundary_at_or_before(raw, self.rules.cadence_ms)
        self._report(self.partition, empty_doc(self.partition, raw))

    def _enter_periods(self, raw: int) -> None:
        assert self.book is not None
        cadence = self.rules.cadence_ms
        if self.reported is None:
            if self.max_event_ms is None and self.followed is None and not self.clock.live:
                return  # replay clock, no event yet and not idle long enough to follow: no watermark to report
            self._first_report(self.clock.now_ms())
        assert self.reported is not None
        while True:
            boundary = self.reported if self.entered is None else self.entered + cadence
            if boundary > raw:
                self.waiting = None
                return
            self.sweep(boundary - 1)
            if self.reported < boundary:
                self._report(self.partition, snapshot_doc(self.partition, boundary, self.population,
                                                          self.churn_fit_ms))
                self.reported = boundary
            if not self.book.settled(boundary - cadence):
                self.waiting = boundary
                return
            if self.switches and self.switches[0][0] == boundary and not self._switch():
                return  # every user re-assessed with the new cuts and rules, then the period entered
            self._enter(boundary)
            self.entered = boundary

    def _track(self, user_id: str, state: UserState, a: Assessment, applied: bool = True) -> None:
        """The user's place in the population after an evaluation. `applied`:
        whether events were applied since the last; without, their orders (the
        churn model's summary) are as they were, and only the window may have
        moved."""
        self.population.update(user_id, (r_day(state.last_order_ms), f_bin(a.frequency), m_bin(a.monetary_cents)))
        if applied and self.rules.scores.churn_model:
            self.population.update_summary(user_id, buyer_summary(state))

    def _enter(self, boundary: int) -> None:
        """Switch to the cuts in force from `boundary`: re-assess the
        customers whose score they may move, and wake those whose recency
        crosses a cut during the period."""
        assert self.book is not None
        before, after = self.book.at(boundary - 1), self.book.at(boundary)
        if after is not before:
            by_f_or_m, by_r = moved_by(self.population, before, after, boundary, self.rules)
            for user_id in sorted(by_f_or_m | by_r):
                state = self.users.get(user_id)
                if user_id not in by_f_or_m and state is not None and self._keeps_tier_at(state, after, boundary):
                    continue
                self._reassess_at(user_id, boundary)
        limits = self.rules.p_alive_limits
        if limits and after is not None and after.churn is not None and (
                before is None or before.churn != after.churn):
            self._wake_for_refit(boundary, before.churn if before is not None else None, after.churn)
        if after is not None and after.r is not None:
            day = boundary // DAY_MS
            span = self.rules.cadence_ms // DAY_MS
            for limit in after.r:
                bit = 1 << after.score_r(limit + 1)  # the R score just past this limit
                for user_id in self.population.users("r", day - limit - 1, day + span - limit):
                    state = self.users[user_id]
                    crossing = state.last_order_ms + (limit + 1) * DAY_MS
                    # A crossing the user's last evaluation found to keep
                    # the tier wakes nobody (UserState.r_same, r_until).
                    if boundary <= crossing < boundary + self.rules.cadence_ms and not (
                            crossing < state.r_until and state.r_same & bit):
                        self._wake_by(user_id, state, crossing)

    @staticmethod
    def _keeps_tier_at(state: UserState, cuts: Cuts, boundary: int) -> bool:
        """Whether the user's last evaluation found the R score that `cuts`
        give them at `boundary` to keep their tier (UserState.r_same, which
        holds before r_until), with nothing else due by then. Only for a user
        whose other scores the cuts leave as they were."""
        if cuts.r is None or state.last_order_ms is None or boundary >= state.r_until or (
                state.due_ms is not None and state.due_ms <= boundary):
            return False
        return bool(state.r_same >> cuts.score_r((boundary - state.last_order_ms) // DAY_MS) & 1)

    def _wake_for_refit(self, boundary: int, before: Fitted | None, after: Fitted) -> None:
        """A new churn-model fit moves every buyer's P(alive), and so the
        moments it passes the limits tiers test: wake, no later than needed,
        each buyer whose side of a limit may differ at the boundary or who
        may cross one before their own due time (state.churn_model.refit_wake).
        One pass over the partition's buyers per fit (weekly in event time by
        default), computed once per distinct summary, not per user."""
        by_summary: dict[SummaryKey, list[str]] = {}
        for user_id, key in self.population.summary_of.items():
            by_summary.setdefault(key, []).append(user_id)
        for key, users in by_summary.items():
            wake = refit_wake(before, after, key, self.rules.p_alive_limits, boundary)
            for user_id in users:
                state = self.users[user_id]
                # The moments P(alive) crosses a limit have moved: a due time
                # from now on is no longer R's alone (UserState.r_until).
                state.r_until = min(state.r_until, boundary)
                if wake is not None:
                    self._wake_by(user_id, state, wake)

    def _wake_by(self, user_id: str, state: UserState, at: int) -> None:
        """Bring the user's due time forward to `at`, unless they were
        evaluated at or after it. After a recovery a partition re-enters the
        periods of its latest evaluations, and some users' recovered states
        (written past the committed input) are already evaluated beyond them,
        with the cuts and fit in force then: waking such a user at `at`
        would evaluate them in the past with figures from later (a decision
        a run without the crash never made)."""
        if state.evaluated_ms is not None and at <= state.evaluated_ms:
            return
        if state.due_ms is None or at < state.due_ms:
            state.due_ms = at
            self.index.schedule(self.partition, wake_at(state), user_id)

    def _reassess_at(self, user_id: str, boundary: int, reason: str | None = None) -> None:
        state = self.users.get(user_id)
        if state is None or not state.has_applied:
            return
        at = max(boundary, state.evaluated_ms or boundary)
        before = self.ledger.before(state) if self.ledger is not None else None
        assessment, found = reassess(user_id, state, at, self.rules, reason=reason)
        if self.ledger is not None and found:
            assert before is not None
            self.ledger.record(user_id, state, before, None, at, decisions=found)
            self._book()
        if self.book is not None:
            self._track(user_id, state, assessment, applied=False)
        if found or reason is not None:
            # A roll-out's re-assessment is written even when it finds
            # nothing: the recovered state then says it was done (`_switch`).
            self._commit(user_id, state, found, assessment, previous_due=None)
        else:
            self.index.schedule(self.partition, wake_at(state), user_id)


def moved_by(index: PopulationIndex, before: Cuts | None, after: Cuts | None, boundary: int,
             rules: Rules) -> tuple[set[str], set[str]]:
    """The customers whose score may differ between two sets of cuts at
    `boundary`: those on different sides of a cut's old and new place, or
    everyone scored on a dimension that switches between fixed thresholds
    and cuts (once, when the first cuts come). Two sets: those whose F or M
    may differ, and those whose R may."""
    found: set[str] = set()
    by_r: set[str] = set()
    everyone = -(1 << 62), 1 << 62
    for dim in ("f", "m"):
        old, new = getattr(before, dim, None), getattr(after, dim, None)
        if old is None and new is None:
            continue
        if old is None or new is None:
            found.update(index.users(dim, *everyone))
            continue
        for a, b in zip(old, new, strict=True):
            if a != b:
                found.update(index.moved(dim, a, b))
    old_r = getattr(before, "r", None)
    new_r = getattr(after, "r", None)
    if old_r != new_r:
        day = boundary // DAY_MS
        fixed = tuple(int(x) for x in rules.scores.recency_days)
        for a, b in zip(old_r or fixed, new_r or fixed, strict=True):
            if a != b:  # recency (day - r_day at the boundary, exactly) in (min, max]: scored differently
                by_r.update(index.users("r", day - max(a, b), day - min(a, b) - 1))
    return found, by_r
