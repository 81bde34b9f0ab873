import pytest

from state.rules import RulesError, load_rules, parse_rules, default_rules_text


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
