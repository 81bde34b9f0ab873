"""`tierstream rules preview` (state.preview): what a rules change would do,
against a batch evaluation written from the rules' definitions over each
user's raw events (not the compiled plan state.evaluate runs)."""

from collections import Counter, defaultdict

import pytest

from bench import workload
from state.config import ConfigDocument
from state.model import DAY_MS
from state.preview import preview
from state.rules import fixed_threshold_rules_text
from tests.support.engine import feed

OLD_TEXT = fixed_threshold_rules_text()
# "High value from 3 orders in the window, not 5; dormant after 120 days, not 180."
NEW_TEXT = (OLD_TEXT.replace("frequency_orders = [10, 5, 3, 2]", "frequency_orders = [10, 3, 2, 1]")
            .replace('name = "dormant"\ndays_since_order_min = 180', 'name = "dormant"\ndays_since_order_min = 120'))
OLD = ConfigDocument(OLD_TEXT, None).rules()
NEW = ConfigDocument(NEW_TEXT, None).rules()


def batch_tier(events: list[dict], at_ms: int, rules) -> str:
    """A tier by the rules' definitions, from the user's events alone."""
    orders = [e for e in events if e["type"] == "order" and e["ts"] <= at_ms]
    first_seen = min(e["ts"] for e in events)
    last_order = max((e["ts"] for e in orders), default=None)
    recency = (at_ms - (last_order if last_order is not None else first_seen)) // DAY_MS
    bucket = rules.window.bucket_days * DAY_MS
    oldest = at_ms // bucket - rules.window.buckets + 1
    in_window = [e for e in events if e["type"] in ("order", "refund") and e["ts"] // bucket >= oldest]
    frequency = sum(1 for e in in_window if e["type"] == "order")
    monetary = sum(round(e["amount"] * 100) * (1 if e["type"] == "order" else -1) for e in in_window)
    net = sum(round(e["amount"] * 100) * (1 if e["type"] == "order" else -1)
              for e in events if e["type"] in ("order", "refund"))
    s = rules.scores

    def score(value, limits, at_most):
        for i, limit in enumerate(limits):
            if (value <= limit) if at_most else (value >= limit):
                return 5 - i
        return 1

    r = score(recency, s.recency_days, True) if last_order is not None else 1
    f = score(frequency, s.frequency_orders, False) if frequency > 0 else 1
    m = score(monetary / 100, s.monetary, False) if monetary > 0 else 1
    figures = {"r": r, "f": f, "m": m, "rfm_sum": r + f + m, "orders": frequency, "lifetime_orders": len(orders),
               "days_since_order": recency, "ltv": max(0, net) / 100}
    for tier in rules.tiers:
        for group in tier.groups:
            ok = True
            for name, value in group.model_dump(exclude_none=True, exclude={"name", "any_of"}).items():
                figure, _, bound = name.rpartition("_")
                ok &= figures[figure] >= value if bound == "min" else figures[figure] <= value
            if ok:
                return tier.name
    raise AssertionError("the last tier matches everyone")


@pytest.fixture(scope="module")
def shop():
    history = workload.history(users=2000, events=20_000, days=730, seed=4)
    bodies = sorted(history, key=lambda b: (b["ts"], b["event_id"]))
    end = bodies[-1]["ts"]
    clock = {"event_id": "clock", "user_id": "zz-clock", "type": "view", "ts": end + 2 * DAY_MS}
    run, _ = feed(bodies + [clock], lateness=DAY_MS, rules=OLD)
    by_user = defaultdict(list)
    for b in bodies:
        by_user[b["user_id"]].append(b)
    return run.users, by_user, end + DAY_MS  # the watermark: the clock's time minus the lateness


def test_preview_counts_and_flows_equal_a_batch_evaluation(shop):
    users, by_user, at = shop
    states = [(u, s) for u, s in users.items() if u in by_user]
    before = {u: (s.version, s.tier, s.stage) for u, s in states}
    p = preview(states, at, OLD, NEW)
    doc = p.doc(OLD, NEW)
    old = {u: batch_tier(evs, at, OLD) for u, evs in by_user.items()}
    new = {u: batch_tier(evs, at, NEW) for u, evs in by_user.items()}
    assert doc["users"] == len(by_user) == 2000
    assert {t: c["old"] for t, c in doc["tiers"].items()} == {t: Counter(old.values())[t] for t in OLD.tier_names}
    assert {t: c["new"] for t, c in doc["tiers"].items()} == {t: Counter(new.values())[t] for t in NEW.tier_names}
    assert Counter({(f["from"], f["to"]): f["users"] for f in doc["flows"]}) == Counter(
        (old[u], new[u]) for u in by_user)
    # The old side is the membership in force: the worker's own decisions.
    assert Counter(s.tier for _, s in states) == Counter(old.values())
    # Not vacuous: the change moves users both ways it should, and only those.
    assert p.flows[("low_value", "high_value")] + p.flows[("mid_value", "high_value")] > 10
    assert p.flows[("low_value", "dormant")] + p.flows[("mid_value", "dormant")] > 10
    assert all(b != "high_value" or a in ("high_value", "low_value", "mid_value", "potential") for a, b in p.flows)
    # Nothing changed: a preview publishes nothing and touches no state.
    assert {u: (s.version, s.tier, s.stage) for u, s in states} == before


def test_campaign_triggers_are_counted_for_the_users_who_would_move(shop):
    from state.campaigns import load_campaigns

    users, by_user, at = shop
    old = OLD.with_campaigns(load_campaigns(None, OLD.tier_names))
    new = NEW.with_campaigns(load_campaigns(None, NEW.tier_names))
    p = preview([(u, s) for u, s in users.items() if u in by_user], at, old, new)
    doc = p.doc(old, new)
    # vip_welcome triggers on entering high_value: every user who would move into it.
    entering = sum(n for (a, b), n in p.flows.items() if b == "high_value" and a != "high_value")
    assert doc["campaigns"]["vip_welcome"]["triggered"] == entering > 0
    assert 0 < doc["campaigns"]["vip_welcome"]["eligible"] <= entering
