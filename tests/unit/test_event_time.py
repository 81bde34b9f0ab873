"""Event time: arrival order within the allowed lateness changes nothing;
later than that, figures are still corrected and changes are flagged.

The partition engine is driven directly (tests.support.engine): watermarks,
held events and sweeps all take part, no adapter in between."""

import random
from collections import defaultdict

import orjson
from hypothesis import given, settings, strategies as st

from state.model import DAY_MS
from stream import topics
from tests.support.engine import EngineRun, feed
from tests.support.factories import T0
from tests.support.fixed_rules import fixed_rules

LATENESS = 2 * DAY_MS
FIGURES = ("first_seen_ms", "last_seen_ms", "last_active_ms", "last_order_ms", "lifetime_orders",
           "lifetime_revenue_cents", "lifetime_refunds_cents", "buckets")


def history(rnd: random.Random, users: int, events: int, days: int = 720) -> list[dict]:
    out = []
    for i in range(events):
        kind = rnd.choice(["order", "order", "login", "view", "refund", "add_to_cart"])
        body = {"event_id": f"e{i}", "user_id": f"u{rnd.randrange(users)}", "type": kind,
                "ts": T0 + rnd.randrange(days * DAY_MS)}
        if kind in ("order", "refund"):
            body["amount"] = round(rnd.uniform(1, 300), 2)
        out.append(body)
    return sorted(out, key=lambda b: b["ts"])


def jitter(bodies: list[dict], rnd: random.Random, within: int) -> list[dict]:
    """Out of order, but never by more than `within` of event time."""
    return sorted(bodies, key=lambda b: b["ts"] + rnd.randrange(within))


@given(st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_out_of_order_within_lateness_publishes_exactly_what_in_order_does(seed):
    rnd = random.Random(seed)
    bodies = history(rnd, users=30, events=400)
    p1, sorted_run = feed(bodies)
    p2, shuffled_run = feed(jitter(bodies, rnd, LATENESS))
    assert shuffled_run == sorted_run  # same ids, same payloads, per user in order
    for user, state in p1.users.items():
        other = p2.users[user]
        assert {f: getattr(other, f) for f in FIGURES} == {f: getattr(state, f) for f in FIGURES}
        assert (other.tier, other.stage, other.version, other.held) == (state.tier, state.stage, state.version, state.held)
    assert not any(c["correction"] for run in sorted_run.values() for _, c in run)


def test_an_event_later_than_the_lateness_corrects_figures_and_is_flagged():
    bodies = [
        {"event_id": "a", "user_id": "late", "type": "order", "ts": T0, "amount": 10},
        {"event_id": "b", "user_id": "clock", "type": "login", "ts": T0 + 10 * DAY_MS},
        # three big orders, arriving 5 days after their time (lateness is 2 days)
        *({"event_id": f"x{i}", "user_id": "late", "type": "order", "ts": T0 + (4 + i) * DAY_MS // 2,
           "amount": 900} for i in range(4)),
    ]
    p, per_user = feed(bodies)
    state = p.users["late"]
    assert state.lifetime_orders == 5 and state.lifetime_revenue_cents == 361_000  # corrected
    changes = [c for t, c in per_user[b"late"] if t == topics.TIER_CHANGES]
    corrections = [c for c in changes if c["correction"]]
    assert corrections and all(c["at_ms"] == T0 + 8 * DAY_MS for c in corrections)  # the watermark then
    assert corrections[-1]["to_tier"] == "high_value"


def test_held_events_wait_for_the_watermark_and_are_released_in_time_order():
    bodies = [
        {"event_id": "1", "user_id": "u", "type": "order", "ts": T0 + DAY_MS, "amount": 50},
        {"event_id": "2", "user_id": "u", "type": "signup", "ts": T0},
    ]
    p, per_user = feed(bodies)
    assert per_user == {}  # nothing is final yet: the watermark is behind both
    assert [h[0] for h in p.users["u"].held] == [T0, T0 + DAY_MS]
    p.event({"event_id": "3", "user_id": "other", "type": "login", "ts": T0 + 4 * DAY_MS}, partition=0)
    changes = [c for _, c in feed_changes(p, b"u")]
    assert [c["at_ms"] for c in changes] == [T0, T0 + DAY_MS]  # signup first, then the order


def feed_changes(run, key):
    return [(t, c) for t, c in run.per_user(topics.TIER_CHANGES)[key]]


def test_the_worked_example_in_docs_time_md():
    def body(i, user, kind, day, amount=None):
        b = {"event_id": f"w{i}", "user_id": user, "type": kind, "ts": T0 + int(day * DAY_MS)}
        return b | ({"amount": amount} if amount is not None else {})

    p = EngineRun(fixed_rules(), lateness_ms=DAY_MS)
    changes = lambda: [c for _, c in feed_changes(p, b"ann")]  # noqa: E731
    p.event(body(1, "ann", "signup", 0), partition=0)
    assert changes() == [] and len(p.users["ann"].held) == 1
    p.event(body(2, "bob", "login", 2), partition=0)
    assert [(c["to_tier"], c["to_stage"], c["at_ms"]) for c in changes()] == [("low_value", "new", T0)]
    p.event(body(3, "ann", "order", 1.5, 450), partition=0)
    assert len(changes()) == 1 and len(p.users["ann"].held) == 1
    p.event(body(4, "bob", "login", 3), partition=0)
    assert changes()[-1]["to_tier"] == "potential" and changes()[-1]["at_ms"] == T0 + int(1.5 * DAY_MS)
    p.event(body(5, "ann", "order", 0.5, 90), partition=0)
    assert p.users["ann"].lifetime_orders == 2 and len(changes()) == 2  # corrected, nothing changed
    for i, day in enumerate(range(4, 41)):
        p.event(body(10 + i, "bob", "login", day), partition=0)
    alerts = [a for a in p.records(topics.CHURN_ALERTS) if a["user_id"] == "ann"]
    assert [(a["level"], a["at_ms"], a["days_inactive"]) for a in alerts] == [
        ("at_risk", T0 + int(31.5 * DAY_MS), 30)
    ]
