"""Operator metrics as facts: what each step of a user adds to each period.

The engine takes a user one step at a time (an event applied, a due time
fired; state.steps). A `Ledger` turns each step into *facts*: increments
of named cells of a period ("day 2024-01-05: orders +1, revenue +2500").
Facts are tagged with the user and the state version the step produced.
Versions count the user's steps, so a step re-derived after a crash gets
the tag it had before, and the aggregator (store.metrics_store) applies each
tag once. That is how the figures count nothing twice and lose nothing:
facts are derived from the state transitions the worker commits, published
before the state they come from (agents.publisher), and made idempotent by
the tag, never by remembering ids.

Distinct-user figures (active users, buyers per day, week and month) need
to know whether the user was already counted in the period. Each user keeps
a bitmap of their last 64 periods per grain (`KpiMemory.marks`): bounded
memory per user, and exact for late events up to 63 periods back. All
per-period storage is aggregated: cells grow with periods x tiers x stages,
never with users.

Cells (docs/metrics.md defines each figure built from them):
- additive cells, one fact updating the day, its week and its month:
  new, signups, signup_conv, first_orders, orders, order_cents,
  refund_cents, cart_users, cart_conv, ret1/ret7/ret30 (at the cohort day),
  flow|<from>><to> and sflow|<from>><to> (tier and stage transitions; the
  members at a period's end are the flows summed up to then),
  ltv|t=<tier>, ltv|s=<stage> (also summed up to a period's end),
  orders|t=, order_cents|t=, refund_cents|t= (and |s=), late;
- distinct cells of one grain: active, buyers, repeat;
- cohort cells: cw (first-seen week x active week), cm (first-order month x
  active month);
- acquisition cells (state.acquisition): per acquisition week and month
  and channel, customers, buyers, net revenue by age, members per tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from state import acquisition
from state.calendar import Calendar, label, month_of_day, week_of_day
from state.model import DAY_MS, ACTIVITY_TYPES, AcqMemory, EventType, KpiMemory, UserEvent, UserState

HORIZON = 64  # periods remembered per grain: how late a late event can be and still be exact
_MASK = (1 << HORIZON) - 1
RETENTION_DAYS = (1, 7, 30)
RECENT_ORDERS = 16  # orders remembered for cart conversion (late carts)
# marks layout: (anchor, mask) pairs
ACT_D, ACT_W, ACT_M, BUY_D, BUY_W, BUY_M, CART_D = range(0, 14, 2)


@dataclass(slots=True)
class Step:
    """The facts of one step of one user."""

    user_id: str
    version: int
    facts: dict[str, int]
    # Cells of an event applied beyond the allowed lateness: they correct a
    # past period, and are kept apart so the correction shows as one.
    late: dict[str, int] | None = None


class Snapshot(NamedTuple):
    """A user's tier, stage and lifetime value before a step."""

    tier: str | None
    stage: str | None
    ltv: int


@lru_cache(maxsize=8192)
def _labels(day: int) -> str:
    """The day, its week and its month, as an additive cell's prefix."""
    return f"a:{label('day', day)},{label('week', week_of_day(day))},{label('month', month_of_day(day))}"


def _mark(marks: list[int], at: int, index: int) -> bool | None:
    """Set period `index` in the (anchor, mask) pair at `at`. True if it was
    not set, False if it was, None if it is older than the horizon."""
    anchor, mask = marks[at], marks[at + 1]
    if mask == 0:
        marks[at], marks[at + 1] = index, 1
        return True
    if index > anchor:
        shift = index - anchor
        mask = (mask << shift) & _MASK if shift < HORIZON else 0
        marks[at], marks[at + 1] = index, mask | 1
        return True
    bit = anchor - index
    if bit >= HORIZON:
        return None
    if mask >> bit & 1:
        return False
    marks[at + 1] = mask | (1 << bit)
    return True


def _marked(marks: list[int], at: int) -> list[int]:
    anchor, mask = marks[at], marks[at + 1]
    return [anchor - b for b in range(HORIZON) if mask >> b & 1]


class Ledger:
    """Collects the facts of the steps the engine takes (pure: no I/O)."""

    def __init__(self, calendar: Calendar, conversion_days: int = 7, lateness_ms: int = 0) -> None:
        self.calendar = calendar
        self.conversion_ms = conversion_days * DAY_MS
        self.steps: list[Step] = []
        self.beyond_horizon = 0  # late events too old for the bitmaps: not counted as new activity

    def before(self, state: UserState) -> Snapshot:
        """Taken before a step, for `record` to see what the step changed."""
        return Snapshot(state.tier, state.stage, state.lifetime_revenue_cents - state.lifetime_refunds_cents)

    def record(self, user_id: str, state: UserState, before: Snapshot, event: UserEvent | None,
               at_ms: int, late: bool = False, decisions: list | None = None) -> None:
        """One step is done: `event` (if any) applied, then evaluated at
        `at_ms`. Updates the user's metric memory and books the facts."""
        facts: dict[str, int] = {}
        late_cells: dict[str, int] | None = None
        known = state.kpi is not None and state.kpi.acq is not None
        if event is not None:
            if late:
                late_cells = {}
                self._event_facts(state, event, late_cells, late)
            else:
                self._event_facts(state, event, facts, late)
        self._transition_facts(state, before, at_ms, facts)
        mem = state.kpi
        if mem is not None and mem.acq is not None:
            # Live figures, not a closed period's: booked as on time even
            # for a late event (a correction of the cohort's cells).
            acquisition.book(self.calendar, mem.born_ms, mem.acq, state, before.tier, event, not known, facts)
        if decisions:
            self._campaign_facts(decisions, facts)
        if facts or late_cells:
            self.steps.append(Step(user_id, state.version, facts, late_cells or None))

    def drain(self) -> list[Step]:
        steps, self.steps = self.steps, []
        return steps

    # -- one event -------------------------------------------------------

    def _event_facts(self, state: UserState, event: UserEvent, facts: dict[str, int], late: bool) -> None:
        ts = event.ts_ms
        mem = state.kpi
        cal = self.calendar
        if mem is None:
            # Metrics turned on for a user seen before count from now on;
            # only a user's very first event makes them new.
            born = min(state.first_seen_ms, ts)
            mem = state.kpi = KpiMemory(born_ms=born)
            if born == ts:
                _add(facts, _labels(cal.day(ts)) + "|new", 1)
                mem.acq = AcqMemory(acquisition.UNATTRIBUTED)  # acquired now: Ledger.record books it
        d, w, m = cal.periods(ts)
        day_cells = _labels(d)
        tier_tag, stage_tag = f"|t={state.tier}", f"|s={state.stage}"
        kind = event.type
        if late:
            _add(facts, day_cells + "|late", 1)

        if kind is EventType.SIGNUP:
            self._signup(mem, ts, facts)
        elif kind is EventType.ORDER:
            cents = event.amount_cents
            for suffix in ("", tier_tag, stage_tag):
                _add(facts, day_cells + "|orders" + suffix, 1)
                _add(facts, day_cells + "|order_cents" + suffix, cents)
            self._order(mem, ts, (d, w, m), facts)
        elif kind is EventType.REFUND:
            for suffix in ("", tier_tag, stage_tag):
                _add(facts, day_cells + "|refund_cents" + suffix, event.amount_cents)
        elif kind is EventType.ADD_TO_CART:
            self._cart(mem, ts, d, facts)

        if kind in ACTIVITY_TYPES:
            self._active(mem, (d, w, m), facts)

    def _active(self, mem: KpiMemory, periods: tuple[int, int, int], facts: dict[str, int]) -> None:
        d, w, m = periods
        for at, grain, index in ((ACT_D, "day", d), (ACT_W, "week", w), (ACT_M, "month", m)):
            new = _mark(mem.marks, at, index)
            if new is None:
                self.beyond_horizon += 1
                continue
            if not new:
                continue
            _add(facts, f"{grain}:{label(grain, index)}|active", 1)
            if grain == "day":
                born = self.calendar.day(mem.born_ms)
                if index - born in RETENTION_DAYS:
                    _add(facts, _labels(born) + f"|ret{index - born}", 1)
            else:
                self._cohorts(mem, grain, index, facts)

    def _cohorts(self, mem: KpiMemory, grain: str, index: int, facts: dict[str, int]) -> None:
        """The user is active in week or month `index` for the first time:
        book it in their first-seen cohort and, once they ordered, their
        first-order cohort."""
        of = week_of_day if grain == "week" else month_of_day
        born = of(self.calendar.day(mem.born_ms))
        if index >= born:
            _add(facts, f"c:first_seen:{grain}:{label(grain, born)}|{label(grain, index)}", 1)
        if mem.order_cohort_day is not None:
            cohort = of(mem.order_cohort_day)
            if index >= cohort:
                _add(facts, f"c:first_order:{grain}:{label(grain, cohort)}|{label(grain, index)}", 1)

    def _signup(self, mem: KpiMemory, ts: int, facts: dict[str, int]) -> None:
        if mem.signup_ms is not None and mem.signup_ms <= ts:
            return  # the first signup counts; a repeated one changes nothing
        old = self._signup_contribution(mem)
        mem.signup_ms = ts
        _diff(facts, old, self._signup_contribution(mem))

    def _signup_contribution(self, mem: KpiMemory) -> dict[str, int]:
        if mem.signup_ms is None:
            return {}
        cells = _labels(self.calendar.day(mem.signup_ms))
        out = {cells + "|signups": 1}
        first = mem.first_order_ms
        if first is not None and 0 <= first - mem.signup_ms <= self.conversion_ms:
            out[cells + "|signup_conv"] = 1
        return out

    def _order(self, mem: KpiMemory, ts: int, periods: tuple[int, int, int], facts: dict[str, int]) -> None:
        old_signup = self._signup_contribution(mem)
        old_second = mem.second_order_ms
        first, second = mem.first_order_ms, mem.second_order_ms
        if first is None or ts < first:
            first, second = ts, first
        elif second is None or ts < second:
            second = ts
        mem.first_order_ms, mem.second_order_ms = first, second
        d, w, m = periods
        if mem.order_cohort_day is None:
            mem.order_cohort_day = d
            _add(facts, _labels(d) + "|first_orders", 1)
            for at, grain, index in ((ACT_W, "week", w), (ACT_M, "month", m)):
                if _was_marked(mem.marks, at, index):
                    # Active this period before the first order: the cohort's
                    # own period was not booked then (it had no cohort yet).
                    _add(facts, f"c:first_order:{grain}:{label(grain, index)}|{label(grain, index)}", 1)
        newly: dict[str, int] = {}
        for at, grain, index in ((BUY_D, "day", d), (BUY_W, "week", w), (BUY_M, "month", m)):
            if _mark(mem.marks, at, index):
                newly[grain] = index
                _add(facts, f"{grain}:{label(grain, index)}|buyers", 1)
        _diff(facts, old_signup, self._signup_contribution(mem))
        self._repeat(mem, old_second, newly, facts)
        # Carts this order converts, then remember the order for late carts.
        still_open = []
        for cart_day, cart_ts in mem.open_carts:
            if cart_ts <= ts <= cart_ts + self.conversion_ms:
                _add(facts, _labels(cart_day) + "|cart_conv", 1)
            else:
                still_open.append([cart_day, cart_ts])
        mem.open_carts = still_open
        mem.recent_orders = sorted([*mem.recent_orders, ts])[-RECENT_ORDERS:]

    def _repeat(self, mem: KpiMemory, old_second: int | None, newly: dict[str, int],
                facts: dict[str, int]) -> None:
        """Repeat buyers: buyers of a period whose second order came before
        the period's end (so a closed period's figure never changes later)."""
        second = mem.second_order_ms
        if second is None:
            return
        end = self.calendar.end_ms
        if second == old_second:
            # Only the periods this order made the user a buyer in can change.
            for grain, index in newly.items():
                if second < end(grain, index):
                    _add(facts, f"{grain}:{label(grain, index)}|repeat", 1)
            return
        # The second order moved (it is new, or a late order came before it):
        # every remembered buyer period may change status.
        for at, grain in ((BUY_D, "day"), (BUY_W, "week"), (BUY_M, "month")):
            for index in _marked(mem.marks, at):
                was = newly.get(grain) != index and old_second is not None and old_second < end(grain, index)
                now = second < end(grain, index)
                if was != now:
                    _add(facts, f"{grain}:{label(grain, index)}|repeat", 1 if now else -1)

    def _cart(self, mem: KpiMemory, ts: int, day: int, facts: dict[str, int]) -> None:
        if not _mark(mem.marks, CART_D, day):
            return  # the day's first cart (as applied) is the one that counts
        _add(facts, _labels(day) + "|cart_users", 1)
        if any(ts <= o <= ts + self.conversion_ms for o in mem.recent_orders):
            _add(facts, _labels(day) + "|cart_conv", 1)
            return
        mem.open_carts.append([day, ts])
        # Carts whose window has passed (by the user's latest event) can no
        # longer convert in order; keep the list bounded.
        horizon = max(ts, mem.recent_orders[-1] if mem.recent_orders else ts) - self.conversion_ms - DAY_MS
        mem.open_carts = [c for c in mem.open_carts if c[1] >= horizon]

    # -- campaigns -------------------------------------------------------

    @staticmethod
    def _campaign_facts(decisions: list, facts: dict[str, int]) -> None:
        """Per campaign and arm: assigned, and for closed windows: closed,
        converted, revenue and its sum of squares (for the interval of
        revenue per user)."""
        for d in decisions:
            kind = type(d).__name__
            if kind == "CampaignAction":
                _add(facts, f"campaign:{d.campaign}|assigned:{d.arm}", 1)
            elif kind == "CampaignOutcome":
                key = f"campaign:{d.campaign}|"
                _add(facts, f"{key}closed:{d.arm}", 1)
                if d.converted:
                    _add(facts, f"{key}converted:{d.arm}", 1)
                if d.revenue_cents:
                    _add(facts, f"{key}revenue:{d.arm}", d.revenue_cents)
                    _add(facts, f"{key}revenue_sq:{d.arm}", d.revenue_cents * d.revenue_cents)

    # -- tier and stage --------------------------------------------------

    def _transition_facts(self, state: UserState, before: Snapshot, at_ms: int, facts: dict[str, int]) -> None:
        tier, stage = state.tier, state.stage
        ltv = state.lifetime_revenue_cents - state.lifetime_refunds_cents
        old_ltv = before.ltv
        if before.tier == tier and before.stage == stage and old_ltv == ltv:
            return
        cells = _labels(self.calendar.day(at_ms))
        get = facts.get
        # Flows are the only membership cells: a tier's (stage's) members at
        # a period's end are the flows into it minus the flows out of it up
        # to then. Zero LTV increments are left out (most users have none).
        out = []
        if before.tier != tier:
            out.append((f"{cells}|flow|{before.tier or '-'}>{tier}", 1))
        if before.stage != stage:
            out.append((f"{cells}|sflow|{before.stage or '-'}>{stage}", 1))
        for kind, old, new in (("t", before.tier, tier), ("s", before.stage, stage)):
            if old == new:
                if old is not None and ltv != old_ltv:
                    out.append((f"{cells}|ltv|{kind}={old}", ltv - old_ltv))
                continue
            if old is not None and old_ltv:
                out.append((f"{cells}|ltv|{kind}={old}", -old_ltv))
            if new is not None and ltv:
                out.append((f"{cells}|ltv|{kind}={new}", ltv))
        for cell, value in out:
            facts[cell] = get(cell, 0) + value


def _was_marked(marks: list[int], at: int, index: int) -> bool:
    anchor, mask = marks[at], marks[at + 1]
    bit = anchor - index
    return 0 <= bit < HORIZON and bool(mask >> bit & 1)


def _add(facts: dict[str, int], cell: str, value: int) -> None:
    facts[cell] = facts.get(cell, 0) + value


def _diff(facts: dict[str, int], old: dict[str, int], new: dict[str, int]) -> None:
    for cell in old.keys() | new.keys():
        delta = new.get(cell, 0) - old.get(cell, 0)
        if delta:
            _add(facts, cell, delta)
