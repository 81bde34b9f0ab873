"""Campaigns through the partition engine: a trigger assigns an arm (the
same for a user in every run), the window closes in event time with an
outcome, silent users included, and a bad campaigns file names the line."""

import collections

import orjson
import pytest

from state.campaigns import arm_of, load_campaigns, parse_campaigns
from state.metrics_report import fold
from state.model import DAY_MS
from state.rules import RulesError
from stream import topics
from tests.support.factories import raw
from tests.support.engine import with_campaigns
from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()
CAMPAIGNS = load_campaigns(None, RULES.tier_names)


def records(p, topic):
    return p.records(topic)


def test_a_churn_alert_assigns_win_back_and_the_silent_user_gets_not_converted_when_the_window_closes():
    p = with_campaigns()
    users = [f"w{i}" for i in range(200)]
    for u in users:
        p.event(raw(u, "order", 0, amount=50))
    # Time passes through a clock user only: the others never send anything again.
    p.event(raw("clock", "view", 31))
    actions = [a for a in records(p, topics.ACTIONS) if a["campaign"] == "win_back"]
    assert {a["user_id"] for a in actions} == set(users)  # every at_risk alert with LTV >= 1
    arms = collections.Counter(a["arm"] for a in actions)
    assert 20 <= arms["control"] <= 60  # holdout 20% of 200
    assert all(a["arm"] == arm_of("win_back", a["user_id"], 0.2) for a in actions)
    assert all(a["trigger"] == "alert:at_risk" and a["tier"] and a["ltv"] == 50.0 for a in actions)
    assert not [o for o in records(p, topics.CAMPAIGN_OUTCOMES) if o["campaign"] == "win_back"]
    p.event(raw("clock", "view", 62))  # the 30-day window has closed
    outcomes = [o for o in records(p, topics.CAMPAIGN_OUTCOMES) if o["campaign"] == "win_back"]
    assert sorted(o["action_id"] for o in outcomes) == sorted(a["action_id"] for a in actions)
    assert not any(o["converted"] for o in outcomes) and all(o["revenue"] == 0 for o in outcomes)


def test_an_order_in_the_window_converts_with_its_revenue_and_the_results_cells_count_it():
    p = with_campaigns()
    p.event(raw("ann", "order", 0, amount=50))
    p.event(raw("clock", "view", 31))
    [action] = [a for a in records(p, topics.ACTIONS) if a["campaign"] == "win_back"]
    p.event(raw("ann", "order", 40, amount=25))
    p.event(raw("ann", "order", 45, amount=5))
    p.event(raw("clock", "view", 80))
    [outcome] = [o for o in records(p, topics.CAMPAIGN_OUTCOMES) if o["action_id"] == action["action_id"]]
    assert outcome["converted"] and outcome["revenue"] == 30.0 and outcome["arm"] == action["arm"]
    cells = {}
    for steps in p.steps.values():
        for s in steps:
            fold(cells, s)
    arm = action["arm"]
    assert cells["campaign:win_back"][f"assigned:{arm}"] == 1
    assert cells["campaign:win_back"][f"converted:{arm}"] == 1
    assert cells["campaign:win_back"][f"revenue:{arm}"] == 3000


def test_cooldown_and_not_contacted_limit_assignments():
    p = with_campaigns()
    for day in (0, 31, 70, 101):  # active, at_risk, back, at_risk again within the 60-day cooldown
        p.event(raw("bo", "order", day, amount=20))
        p.event(raw("clock", "view", day + 31))
    wins = [a for a in records(p, topics.ACTIONS) if a["campaign"] == "win_back" and a["user_id"] == "bo"]
    days = [(a["at_ms"] - wins[0]["at_ms"]) / DAY_MS for a in wins]
    assert all(b - a >= 60 for a, b in zip(days, days[1:]))


def test_arms_are_stable_and_hold_out_the_configured_share():
    arms = collections.Counter(arm_of("vip_welcome", f"user-{i}", 0.1) for i in range(20_000))
    assert 0.09 <= arms["control"] / 20_000 <= 0.11
    assert arm_of("vip_welcome", "user-7", 0.1) == arm_of("vip_welcome", "user-7", 0.1)


@pytest.mark.parametrize("text, says", [
    ('[[campaigns]]\nname = "x"\ntrigger = { enter_tier = "gold" }\ngoal = { order_within_days = 7 }\n', "unknown tier"),
    ('[[campaigns]]\nname = "x"\ntrigger = {}\ngoal = { order_within_days = 7 }\n', "exactly one"),
    ('[[campaigns]]\nname = "x"\ntrigger = { alert = "at_risk" }\nholdout = 1.5\ngoal = { order_within_days = 7 }\n',
     "line 4: campaigns.0.holdout"),
    ('[[campaigns]]\nname = "x"\ntrigger = { alert = "at_risk" }\n', "goal"),
])
def test_a_bad_campaigns_file_names_file_line_and_key(text, says):
    with pytest.raises(RulesError) as err:
        parse_campaigns(text, "camp.toml", RULES.tier_names)
    assert "camp.toml" in str(err.value) and says in str(err.value)
