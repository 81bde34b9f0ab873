"""Acquisition facts: what each step of a user adds to their channel's cohort.

A user is *acquired* on the day of their first event (normally the signup),
into the week and the month of that day: their acquisition cohorts. Their
channel (and campaign) is what the earliest event carrying one said
(`UserState.acquisition`); until one does, the user is unattributed (the
empty channel ""). docs/metrics.md, "Acquisition", defines every figure.

Cells (state.kpis's facts; a `q:<week>,<month>` key updates both cohort
hashes `acq:week:<week>` and `acq:month:<month>`), the channel last in the
field so that any printable channel name fits:
  n|<channel>          customers acquired
  b|<channel>          of them, customers who have ordered
  r<age>|<channel>     net revenue (orders - refunds, cents) booked <age>
                       days after the acquisition day (0: that day; ages
                       of AGE_CAP days or more are booked at AGE_CAP)
  t=<tier>|<channel>   of them, in the tier now (the sum of their moves)

A late earlier event can change the channel (the earliest wins): the user's
whole contribution moves from the old channel to the new, which is why each
user remembers what they contributed (`AcqMemory`): bounded, one entry per
day with money within AGE_CAP days of acquisition.
"""

from __future__ import annotations

from functools import lru_cache

from state.calendar import Calendar, label, month_of_day, week_of_day
from state.model import AcqMemory, EventType, UserEvent, UserState

AGE_CAP = 730  # days: revenue curves and payback are followed this long after acquisition
UNATTRIBUTED = ""  # the channel of a user no event has placed


@lru_cache(maxsize=4096)
def cohort_prefix(day: int) -> str:
    """The fact key of the cohorts of an acquisition day."""
    return f"q:{label('week', week_of_day(day))},{label('month', month_of_day(day))}"


def channel_of(state: UserState) -> str:
    return state.acquisition[0] if state.acquisition is not None else UNATTRIBUTED


def _contribution(mem: AcqMemory, tier: str | None) -> dict[str, int]:
    out = {"n": 1}
    if mem.bought:
        out["b"] = 1
    for age, cents in mem.ages:
        out[f"r{age}"] = cents
    if tier is not None:
        out[f"t={tier}"] = 1
    return out


def _add(facts: dict[str, int], cell: str, value: int) -> None:
    if value:
        facts[cell] = facts.get(cell, 0) + value


def book(calendar: Calendar, born_ms: int, mem: AcqMemory, state: UserState, tier_before: str | None,
         event: UserEvent | None, new: bool, facts: dict[str, int]) -> None:
    """One step of an acquired user: `event` applied (if any) and the tier
    moved from `tier_before` to `state.tier`. `new`: the step that acquired
    them (nothing booked yet)."""
    channel = channel_of(state)
    moved = new or channel != mem.channel
    money_event = event is not None and event.type in (EventType.ORDER, EventType.REFUND) and event.amount_cents
    first_order = event is not None and event.type is EventType.ORDER and not mem.bought  # even of 0
    if not (moved or money_event or first_order or tier_before != state.tier):
        return  # most steps (a view, a login, a time-driven re-evaluation): nothing to book
    prefix = cohort_prefix(calendar.day(born_ms))
    if moved and not new:
        # The earliest channel changed (a late earlier event, or the first
        # to say one): everything booked under the old channel moves.
        for name, value in _contribution(mem, tier_before).items():
            _add(facts, f"{prefix}|{name}|{mem.channel}", -value)
    mem.channel = channel
    money = 0
    if money_event:
        assert event is not None
        money = event.amount_cents if event.type is EventType.ORDER else -event.amount_cents
        age = min(AGE_CAP, max(0, calendar.day(event.ts_ms) - calendar.day(born_ms)))
        _credit(mem, age, money)
    if first_order:
        mem.bought = True
    if moved:
        for name, value in _contribution(mem, state.tier).items():
            _add(facts, f"{prefix}|{name}|{channel}", value)
        return
    if money:
        _add(facts, f"{prefix}|r{age}|{channel}", money)
    if first_order:
        _add(facts, f"{prefix}|b|{channel}", 1)
    if tier_before != state.tier:
        if tier_before is not None:
            _add(facts, f"{prefix}|t={tier_before}|{channel}", -1)
        if state.tier is not None:
            _add(facts, f"{prefix}|t={state.tier}|{channel}", 1)


def _credit(mem: AcqMemory, age: int, cents: int) -> None:
    for entry in mem.ages:
        if entry[0] == age:
            entry[1] += cents
            if not entry[1]:
                mem.ages.remove(entry)
            return
    mem.ages.append([age, cents])
    mem.ages.sort()
