import pytest

from state.rules import RulesError, load_rules, parse_rules, default_rules_text
from tests.support.rule_texts import ENGAGED_RULES, OR_RULES


def test_default_rules_load_and_cover_every_user():
    rules = load_rules()
    assert rules.tier_names == ["dormant", "high_value", "potential", "mid_value", "low_value"]
    assert rules.tiers[-1].is_catch_all
    assert rules.window.buckets == 13


def test_toml_syntax_error_names_the_line():
    text = default_rules_text().replace("days = 365", "days = = 365")
    line = text.splitlines().index("days = = 365") + 1
    with pytest.raises(RulesError, match=rf"rules.toml: not valid TOML: .*line {line}"):
        parse_rules(text, "rules.toml")


def test_tier_named_like_a_stage_is_rejected():
    text = default_rules_text().replace('name = "potential"', 'name = "new"')
    with pytest.raises(RulesError, match="also a lifecycle stage"):
        parse_rules(text)


def test_bad_value_names_the_key_and_its_line():
    text = default_rules_text()
    lines = text.splitlines()
    target = next(i for i, l in enumerate(lines) if l.startswith("churned_days"))
    lines[target] = "churned_days = -5"
    with pytest.raises(RulesError) as err:
        parse_rules("\n".join(lines), "rules.toml")
    assert f"line {target + 1}" in str(err.value)
    assert "stages.churned_days" in str(err.value)


def test_unknown_key_in_a_tier_is_rejected_with_its_line():
    text = default_rules_text().replace('name = "high_value"', 'name = "high_value"\nr_minimum = 3')
    with pytest.raises(RulesError) as err:
        parse_rules(text, "rules.toml")
    line = text.splitlines().index("r_minimum = 3") + 1
    assert f"line {line}" in str(err.value) and "tiers.1.r_minimum" in str(err.value)


def test_last_tier_must_catch_everyone():
    text = default_rules_text().replace('name = "low_value"', 'name = "low_value"\nr_min = 1')
    with pytest.raises(RulesError, match="last tier must have no conditions"):
        parse_rules(text)


def test_thresholds_must_be_ordered():
    text = default_rules_text().replace("recency_days = [7, 30, 90, 180]", "recency_days = [30, 7, 90, 180]")
    with pytest.raises(RulesError, match="recency_days must increase"):
        parse_rules(text)


def test_missing_file_says_which_setting(tmp_path):
    with pytest.raises(RulesError, match="TIERSTREAM_RULES"):
        load_rules(tmp_path / "nope.toml")


# -- OR: a tier may list several condition groups (issue #13) ---------------




def test_a_tier_matches_when_any_of_its_groups_holds():
    from state.evaluate import evaluate
    from state.model import DAY_MS, apply
    from tests.support.factories import T0, ev

    rules = parse_rules(OR_RULES)

    def tier(events, at_day):
        state = None
        for e in events:
            state = apply(state, e, bucket_days=30, window_buckets=13, recent_ids=16)
        return evaluate(state, T0 + at_day * DAY_MS, rules).tier

    small = [ev("a", "order", 1, 50)]  # M = 1: the first group
    assert tier(small, 2) == "low_value"
    old_big = [ev("b", "order", 1, 900), ev("b", "order", 2, 900)]  # M = 4; at day 150: R = 2, F = 2
    assert tier(old_big, 3) == "mid_value"  # recent: neither group holds
    assert tier(old_big, 150) == "low_value"  # the second group
    whale = [ev("c", "order", d, 450) for d in range(1, 6)]
    assert tier(whale, 6) == "high_value"  # first match wins


def test_inline_conditions_beside_any_of_are_refused():
    text = OR_RULES.replace("any_of = [", "r_min = 2\nany_of = [")
    with pytest.raises(RulesError, match="inside any_of"):
        parse_rules(text, "rules.toml")


def test_an_empty_any_of_group_is_refused():
    with pytest.raises(RulesError, match="match everyone"):
        parse_rules(OR_RULES.replace("{ m_max = 2 }", "{}"), "rules.toml")


def test_due_times_count_thresholds_inside_any_of():
    from state.evaluate import _due_offsets
    from state.model import DAY_MS

    rules = parse_rules(OR_RULES.replace("{ m_max = 2 }", "{ days_since_order_min = 45 }"))
    assert 45 * DAY_MS in _due_offsets(rules)[0]


# -- engagement: an optional fourth score from logins, views and carts -------




def test_the_engagement_score_counts_logins_views_and_carts_in_the_window():
    from state.evaluate import evaluate
    from state.model import DAY_MS, apply
    from tests.support.factories import T0, ev

    rules = parse_rules(ENGAGED_RULES)
    state = None
    for i in range(12):  # 12 actions: E = 4 (>= 10)
        state = apply(state, ev("u", ("login", "view", "add_to_cart")[i % 3], i), bucket_days=30,
                      window_buckets=13, recent_ids=16)
    state = apply(state, ev("u", "order", 13, 20), bucket_days=30, window_buckets=13, recent_ids=16)
    a = evaluate(state, T0 + 14 * DAY_MS, rules)
    assert (a.actions, a.e, a.m, a.tier) == (12, 4, 1, "engaged_browser")
    # A year and more later the actions have left the window: E falls to 1.
    assert evaluate(state, T0 + 420 * DAY_MS, rules).e == 1
    # Without engagement thresholds there is no E at all.
    assert evaluate(state, T0 + 14 * DAY_MS, load_rules()).e is None


def test_a_rule_on_engagement_needs_its_thresholds():
    with pytest.raises(RulesError, match="engagement_actions is not set"):
        parse_rules(ENGAGED_RULES.replace("engagement_actions = [20, 10, 5, 2]", ""), "rules.toml")


def test_state_records_written_before_activity_existed_still_decode():
    import orjson

    from state.model import apply
    from stream.codecs import decode_state, encode_state
    from tests.support.factories import ev

    state = apply(None, ev("u", "view", 1), bucket_days=30, window_buckets=13, recent_ids=16)
    assert decode_state(encode_state(state)) == state and state.activity
    old = orjson.dumps(orjson.loads(encode_state(state))[:-4])  # before `activity` (`kpi`, `camp`, `first_order_ms`)
    decoded = decode_state(old)
    assert decoded.activity == {} and decoded.buckets == state.buckets and decoded.version == state.version
    bought = apply(state, ev("u", "order", 2, amount=10), bucket_days=30, window_buckets=13, recent_ids=16)
    assert bought.first_order_ms is not None
    before_first_order_ms = orjson.dumps(orjson.loads(encode_state(bought))[:-1])
    assert decode_state(before_first_order_ms).first_order_ms is None
