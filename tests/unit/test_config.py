"""The configuration in force as one versioned document (state.config):
the version is a hash of the texts alone, the record round-trips and
refuses a forged version, and every decision carries the version of the
rules that made it."""

import pytest

from state.campaigns import example_campaigns_text
from state.config import ConfigDocument, Published, mismatch_message
from state.steps import ChurnAlert, TierChange, advance, on_event
from state.model import DAY_MS, EventType, UserEvent
from state.rules import RulesError, fixed_threshold_rules_text, parse_rules
from stream.codecs import churn_alert_record, tier_change_record
from tests.support.factories import T0

RULES = fixed_threshold_rules_text()


def test_the_version_is_a_hash_of_the_texts_alone():
    a = ConfigDocument(RULES, example_campaigns_text(), "a.toml", "c.toml")
    same = ConfigDocument(RULES, example_campaigns_text(), "/elsewhere/b.toml", "d.toml")
    other_rules = ConfigDocument(RULES.replace("at_risk_days = 30", "at_risk_days = 31"), example_campaigns_text())
    no_campaigns = ConfigDocument(RULES, None)
    empty_campaigns = ConfigDocument(RULES, "")
    assert a.version == same.version and len(a.version) == 12
    assert len({a.version, other_rules.version, no_campaigns.version, empty_campaigns.version}) == 4
    assert other_rules.rules_text != RULES  # the replace above changed something


def test_a_record_round_trips_and_a_forged_version_is_refused():
    published = Published(ConfigDocument(RULES, example_campaigns_text(), "r.toml", "c.toml"), "ops", 1234)
    back = Published.decode(published.encode())
    assert back == published and back.summary()["version"] == published.document.version
    forged = published.encode().replace(published.document.version.encode(), b"000000000000")
    with pytest.raises(ValueError, match="hash to"):
        Published.decode(forged)


def test_rules_from_a_document_carry_its_version_and_campaigns():
    doc = ConfigDocument(RULES, example_campaigns_text())
    rules = doc.rules()
    assert rules.version == doc.version and rules.campaigns
    assert rules.with_thresholds(None).version == doc.version  # copies keep it
    with pytest.raises(RulesError, match="not a rules key"):
        parse_rules('version = "x"\n' + RULES)


def test_every_tier_change_and_alert_says_which_version_decided_it():
    rules = ConfigDocument(RULES, None).rules()
    order = UserEvent("o1", "u", EventType.ORDER, T0, 50_000)
    result = on_event(None, order, 0, T0, rules)
    _, later = advance("u", result.state, T0 + 200 * DAY_MS, rules)
    decisions = result.decisions + later
    changes = [d for d in decisions if isinstance(d, TierChange)]
    alerts = [d for d in decisions if isinstance(d, ChurnAlert)]
    assert changes and alerts
    assert {tier_change_record(c)["rules_version"] for c in changes} == {rules.version}
    assert {churn_alert_record(a)["rules_version"] for a in alerts} == {rules.version}


def test_the_refusal_says_how_to_roll_out_a_change():
    local = ConfigDocument(RULES.replace("at_risk_days = 30", "at_risk_days = 31"), None, "new.toml")
    current = Published(ConfigDocument(RULES, None, "old.toml"), "worker on a", 0)
    text = mismatch_message(local, current)
    assert local.version in text and current.document.version in text
    assert "tierstream config publish" in text and "tierstream config show" in text and "docs/config.md" in text


def test_a_version_says_what_it_changed_key_by_key():
    from state.campaigns import example_campaigns_text
    from state.config import ConfigDocument, Published, changes, config_history
    from state.rules import fixed_threshold_rules_text

    a = ConfigDocument(fixed_threshold_rules_text(), example_campaigns_text())
    rules = (fixed_threshold_rules_text().replace("recency_days = [7, 30, 90, 180]", "recency_days = [7, 30, 60, 120]")
             .replace('[[tiers]]\nname = "dormant"', '[[tiers]]\nname = "vip"\nltv_min = 5000\n\n[[tiers]]\nname = "dormant"'))
    b = ConfigDocument(rules, example_campaigns_text().replace("holdout = 0.20", "holdout = 0.25"))
    assert changes(a, b) == [
        "campaigns.win_back.holdout: 0.2 -> 0.25",
        "scores.recency_days: [7, 30, 90, 180] -> [7, 30, 60, 120]",
        "tiers.vip: added",
        "tiers[order]: ['dormant', 'high_value', 'potential', 'mid_value', 'low_value'] -> "
        "['vip', 'dormant', 'high_value', 'potential', 'mid_value', 'low_value']",
    ]
    assert "tiers.vip: removed" in changes(b, a) and changes(a, a) == [] and changes(None, a) == []
    history = config_history([Published(a, "worker on h1", 1), Published(b, "ana", 2)])
    assert [(v["version"], v["published_by"], len(v["changes"])) for v in history] == [
        (b.version, "ana", 4), (a.version, "worker on h1", 0)]
