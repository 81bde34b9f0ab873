"""Due times are never late: a silent user moved only by the due-time sweeps
is, at any event time T, exactly where a fresh evaluation at T puts them.

`test_nothing_changes_before_the_due_time` checks next_due on a state just
evaluated; this one follows a state across many sweeps, which is how the
worker uses it (issue #9: an evicted-late bucket made the next exit vanish).
"""

import random
from datetime import UTC, datetime

from hypothesis import given, settings, strategies as st

from state.steps import advance
from state.evaluate import evaluate
from state.model import DAY_MS, EventType, UserEvent
from tests.support.factories import T0, ev
from state.rules import parse_rules
from tests.support.one_user import RULES, run
from tests.support.rule_texts import ENGAGED_RULES, FRACTIONAL, OR_RULES

# Rules with OR groups, one of them time-driven (days since the last order).
ENGAGED = parse_rules(ENGAGED_RULES)  # E falls as actions leave the window
WITH_OR = parse_rules(OR_RULES.replace("{ m_max = 2 }", "{ m_max = 2 }, { days_since_order_min = 45.5, f_max = 3 }"))


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def history(rnd: random.Random, rules=None) -> list[UserEvent]:
    """Mostly orders over ~16 months: buckets leave the window while the
    user is still recent enough for F and M to matter, which is where due
    times bite. (Seeded random rather than hypothesis's own lists: those
    shrink towards a few events, and the bug needs a dense history.)"""
    kinds = [EventType.ORDER] * 3 + [EventType.REFUND, EventType.LOGIN, EventType.VIEW, EventType.ADD_TO_CART]
    biggest = 200_000
    if rules is ENGAGED:  # browsing-heavy, small orders: where E decides the tier
        kinds = [EventType.LOGIN, EventType.VIEW, EventType.ADD_TO_CART] * 3 + [EventType.ORDER]
        biggest = 5_000
    out = []
    for i in range(rnd.randint(3, 40)):
        kind = rnd.choice(kinds)
        amount = rnd.randrange(100, biggest) if kind in (EventType.ORDER, EventType.REFUND) else 0
        out.append(UserEvent(f"e{i}", "u", kind, T0 + rnd.randrange(480 * DAY_MS), amount))
    return out


@given(st.integers(0, 2**32), st.sampled_from([RULES, FRACTIONAL, WITH_OR, ENGAGED]))
@settings(max_examples=300, deadline=None)
def test_sweeps_reach_what_a_fresh_evaluation_says(seed, rules):
    _sweeps_match_fresh_evaluations(seed, rules)


def _sweeps_match_fresh_evaluations(seed, rules):
    rnd = random.Random(seed)
    state, _ = run(history(rnd, rules), rules)
    t = state.evaluated_ms
    for _ in range(30):
        t += rnd.randrange(1, 20 * DAY_MS)
        advance("u", state, t, rules)  # what the sweeps do: fire due times up to t
        fresh = evaluate(state, t, rules)
        assert (state.tier, state.stage) == (fresh.tier, fresh.stage), f"stale at {t}: due was {state.due_ms}"


def test_the_issue_example_reaches_low_value_without_another_event():
    """The user from issue #9: orders in Oct 2023 and mid-2024, a cart on
    2024-07-15, then silence. By 2024-12-30 the Oct 2023 orders have left the
    window and a fresh evaluation says low_value; the sweeps must get there."""
    day0 = _ms("2023-10-15")
    orders = [("2023-10-15", 295.70), ("2023-10-22", 116.02), ("2024-06-22", 66.93),
              ("2024-06-24", 231.63), ("2024-07-12", 155.78)]
    events = [ev("u", "order", (_ms(d) - day0) / DAY_MS, amount) for d, amount in orders]
    events.append(ev("u", "add_to_cart", (_ms("2024-07-15") - day0) / DAY_MS))
    # factories' ev() counts days from its own T0; shift to the real dates.
    shift = day0 - T0
    events = [type(e)(e.event_id, e.user_id, e.type, e.ts_ms + shift, e.amount_cents) for e in events]
    state, _ = run(events)
    until = _ms("2024-12-30")
    # Sweep day by day, as a worker's ticks would.
    for t in range(state.evaluated_ms + DAY_MS, until + 1, DAY_MS):
        advance("u", state, t, RULES)
    assert evaluate(state, until, RULES).tier == "low_value"
    assert state.tier == "low_value", f"still {state.tier}, next due {state.due_ms}"


def _quantile_recency_rules():
    """Quantile recency alone (no churn model), and one set of cuts in force
    from the history's start on: recency limits of 2, 5, 9 and 14 days."""
    from state.quantiles import Cuts, ThresholdBook
    from state.rules import fixed_threshold_rules_text

    rules = parse_rules(fixed_threshold_rules_text().replace("\nquantiles = []\n", '\nquantiles = ["r"]\n'))
    book = ThresholdBook(rules.cadence_ms)
    start = T0 - 2 * rules.cadence_ms
    book.settle(start, Cuts(start, start + rules.cadence_ms, {"r": 100}, (2, 5, 9, 14), None, None))
    return rules.with_thresholds(book)


QUANTILE_R = _quantile_recency_rules()


@given(st.integers(0, 2**32))
@settings(max_examples=150, deadline=None)
def test_sweeps_reach_what_a_fresh_evaluation_says_under_quantile_recency_cuts(seed):
    # The cuts' recency limits are not the rules' fixed ones: next_due must
    # wake a buyer when their days since the last order pass one (entering a
    # period schedules those crossings too, but an evaluation later in the
    # period sets the due time from next_due alone).
    _sweeps_match_fresh_evaluations(seed, QUANTILE_R)


def test_a_recency_limit_that_keeps_the_tier_wakes_nobody():
    """A one-order customer is `potential` at R 5 and at R 4: passing the
    7-day limit (R 5 -> 4) changes nothing a rule tests, so the due time is
    the next moment that does (the 30-day limit, R 4 -> 3, or the stage's
    30 days), not day 8. The state notes R 4 and 5 as keeping the tier (the
    engine's period boundaries read that)."""
    from state.evaluate import next_due

    state, _ = run([ev("u", "order", 0, 40)])
    assert state.tier == "potential"
    now = state.evaluated_ms
    due = next_due(state, now, RULES)
    assert due is not None and due >= state.last_order_ms + 30 * DAY_MS
    assert state.r_same >> 5 & 1 and state.r_same >> 4 & 1 and not state.r_same >> 3 & 1
    # what the skipped crossing would have found: the same tier
    assert evaluate(state, state.last_order_ms + 8 * DAY_MS, RULES).tier == "potential"
