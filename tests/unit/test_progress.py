"""`advance` always makes progress, whatever state and rules it is given.

Each pass of `advance` either releases a held event or fires a due time and
leaves the next one strictly later; a state that would not is parked with a
`UserParked` decision naming the user. The property test builds states
under one rule set (with or without campaigns, quantile cuts, the churn
model) and advances them under another, as a tool run with other rules
than the workers' does: the loop must end, and no honest state is parked.

Regression: `tierstream snapshot` after `tierstream dev` (whose worker runs
the example campaigns, while the user's shell has none) spun for ever on
the first user with an open win-back window (issue #21).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

import state.steps as engine
from cli.snapshot import membership_as_of, snapshot_rows
from state.campaigns import load_campaigns
from state.churn_model import Fitted, Params
from state.steps import CampaignOutcome, UserParked, advance, on_event
from state.model import DAY_MS, EventType, UserEvent
from state.quantiles import Cut, Cuts, ThresholdBook
from state.rules import Rules, fixed_threshold_rules, parse_rules, population_rules_text
from tests.support.factories import T0

FIXED = fixed_threshold_rules()
POPULATION = parse_rules(population_rules_text(), "the shipped defaults")
EXAMPLE_CAMPAIGNS = load_campaigns(None, FIXED.tier_names)


def _book(rnd: random.Random, rules: Rules, start_ms: int, days: int) -> ThresholdBook:
    """Cut points and churn fits settled at random boundaries, as a
    population's reports would settle them."""
    book = ThresholdBook(rules.cadence_ms)
    day = start_ms // DAY_MS * DAY_MS
    for boundary in range(day, day + days * DAY_MS, rnd.choice([1, 7, 30]) * DAY_MS):
        r = tuple(sorted(rnd.sample(range(1, 400), 4)))
        f = tuple(sorted((Cut(rnd.randint(1, 6), rnd.random()) for _ in range(4)), key=lambda c: (c.bin, c.share)))
        m = tuple(sorted((Cut(rnd.randint(60, 200), rnd.random()) for _ in range(4)), key=lambda c: (c.bin, c.share)))
        churn = Fitted(boundary, 1000, Params(r=rnd.uniform(0.1, 2), alpha=rnd.uniform(1, 30), a=rnd.uniform(0.05, 2),
                                              b=rnd.uniform(0.5, 20))) if rnd.random() < 0.8 else None
        book.settle(boundary, Cuts(boundary, boundary + rules.cadence_ms, {"r": 100, "f": 100, "m": 100}, r, f, m,
                                   churn))
    return book


def _rules(rnd: random.Random, kind: str, start_ms: int, days: int) -> Rules:
    if kind == "fixed":
        return FIXED
    if kind == "fixed+campaigns":
        return FIXED.with_campaigns(EXAMPLE_CAMPAIGNS)
    rules = POPULATION.with_thresholds(_book(rnd, POPULATION, start_ms, days))
    return rules.with_campaigns(EXAMPLE_CAMPAIGNS) if kind == "population+campaigns" else rules


KINDS = ["fixed", "fixed+campaigns", "population", "population+campaigns"]


def _history(rnd: random.Random, days: int) -> list[UserEvent]:
    kinds = [EventType.ORDER] * 3 + [EventType.REFUND, EventType.LOGIN, EventType.VIEW, EventType.SIGNUP]
    out = []
    for i in range(rnd.randint(1, 25)):
        kind = rnd.choice(kinds)
        amount = rnd.randrange(100, 300_000) if kind in (EventType.ORDER, EventType.REFUND) else 0
        out.append(UserEvent(f"e{i}", "u", kind, T0 + rnd.randrange(days * DAY_MS), amount))
    return out


def _advance_counting(user_id, state, until, rules):
    """`advance`, with a count of its passes: each one must release an event
    or move the due time strictly forward."""
    passes = 0
    real_reassess = engine.reassess

    def reassess(*args, **kwargs):
        nonlocal passes
        passes += 1
        assert passes < 100_000, "advance did not terminate"
        return real_reassess(*args, **kwargs)

    engine.reassess = reassess
    try:
        return advance(user_id, state, until, rules)
    finally:
        engine.reassess = real_reassess


@given(st.integers(0, 2**32), st.sampled_from(KINDS), st.sampled_from(KINDS))
@settings(max_examples=200, deadline=None)
def test_advance_ends_and_parks_no_honest_state_whatever_rules_it_is_given(seed, written_under, advanced_under):
    rnd = random.Random(seed)
    days = 500
    built = _rules(rnd, written_under, T0, days + 400)
    other = _rules(rnd, advanced_under, T0, days + 400)
    events = sorted(_history(rnd, days), key=lambda e: e.ts_ms)
    state, wm = None, 0
    for event in events:  # as the worker would: in arrival order, the watermark trailing
        before, wm = wm, max(wm, event.ts_ms - rnd.choice([0, DAY_MS]))
        result = on_event(state, event, before, wm, built)
        state = result.state
        assert not [d for d in result.decisions if isinstance(d, UserParked)]
    # Another process (a snapshot, a cache rebuild) with other rules brings the
    # user on, in steps or at once.
    t = max(e.ts_ms for e in events)
    for _ in range(rnd.randint(1, 4)):
        t += rnd.randrange(1, 300 * DAY_MS)
        before_due = state.due_ms
        _, decisions = _advance_counting("u", state, t, other)
        assert not [d for d in decisions if isinstance(d, UserParked)], decisions
        # Nothing is left due by t: the loop ended because it was done.
        assert state.due_ms is None or state.due_ms > t or (state.held and state.held[0][0] > t), (before_due, t)


def _dev_user():
    """A user the dev worker (example campaigns) assigned to win_back: an
    open window that only a step under those campaigns would close."""
    rules = FIXED.with_campaigns(EXAMPLE_CAMPAIGNS)
    events = [UserEvent("o1", "u1", EventType.ORDER, T0, 25_000), UserEvent("o2", "u1", EventType.ORDER,
                                                                            T0 + DAY_MS, 30_000)]
    state, wm = None, 0
    for event in events:
        state = on_event(state, event, wm, event.ts_ms, rules).state
        wm = event.ts_ms
    # Silent long enough to reach at_risk (win_back's trigger) but not past the window's end.
    advance("u1", state, T0 + 40 * DAY_MS, rules)
    assert state.camp and state.camp[2], "the example campaigns should have assigned win_back by now"
    return state


def test_a_snapshot_without_the_workers_campaigns_returns_and_closes_their_windows():
    state = _dev_user()
    window_end = min(o[3] for o in state.camp[2])
    parked: list[UserParked] = []
    row = membership_as_of("u1", state, window_end + 400 * DAY_MS, FIXED, parked)
    assert row is not None and parked == []
    assert not state.camp[2], "the window closed though the snapshot's rules name no campaign"
    assert state.due_ms is None or state.due_ms > window_end + 400 * DAY_MS


def test_the_worker_measures_a_window_to_its_end_after_its_campaign_is_removed():
    state = _dev_user()
    [open_window] = state.camp[2]
    _, decisions = advance("u1", state, open_window[3] + DAY_MS, FIXED)
    outcomes = [d for d in decisions if isinstance(d, CampaignOutcome)]
    assert [(o.campaign, o.action_id) for o in outcomes] == [(open_window[0], open_window[6])]


def test_a_state_whose_due_time_would_not_move_is_parked_and_named(monkeypatch):
    state = _dev_user()
    stuck_at = state.due_ms
    # A bug in the due-time arithmetic: it keeps saying "now".
    monkeypatch.setattr(engine, "next_due", lambda _state, now_ms, _rules, _a=None: now_ms)
    monkeypatch.setattr(engine.campaigns, "earliest_window_end", lambda _camp: None)
    _, decisions = advance("u1", state, stuck_at + 10 * DAY_MS, FIXED)
    [parked] = [d for d in decisions if isinstance(d, UserParked)]
    assert parked.user_id == "u1" and parked.at_ms == stuck_at and "u1" in parked.reason
    assert state.due_ms is None  # parked: only the user's next event wakes them


def test_snapshot_rows_report_parked_users(monkeypatch):
    state = _dev_user()
    monkeypatch.setattr(engine, "next_due", lambda _state, now_ms, _rules, _a=None: now_ms)
    monkeypatch.setattr(engine.campaigns, "earliest_window_end", lambda _camp: None)
    parked: list[UserParked] = []
    rows = snapshot_rows({"u1": state}, state.due_ms + DAY_MS, FIXED, parked)
    assert [r["user_id"] for r in rows] == ["u1"] and [p.user_id for p in parked] == ["u1"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_property_generator_reaches_every_rule_set(kind):
    """The property test's rule sets are what they say (a guard on the test)."""
    rules = _rules(random.Random(1), kind, T0, 30)
    assert bool(rules.campaigns) == kind.endswith("campaigns")
    assert (rules.thresholds is not None) == kind.startswith("population")
