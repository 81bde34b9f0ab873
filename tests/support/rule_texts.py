"""Rule sets several tests share: OR groups, the engagement score, and
fractional day thresholds (state.rules)."""

from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()

# A tier may list several condition groups (any_of).
OR_RULES = """
[[tiers]]
name = "high_value"
r_min = 4
f_min = 4
m_min = 4

[[tiers]]
# The reference definition: low value = M <= 2, or (R <= 2 and F <= 2).
name = "low_value"
any_of = [{ m_max = 2 }, { r_max = 2, f_max = 2 }]

[[tiers]]
name = "mid_value"
"""

# Engagement: an optional fourth score from logins, views and carts.
ENGAGED_RULES = """
[scores]
engagement_actions = [20, 10, 5, 2]

[[tiers]]
name = "high_value"
r_min = 4
m_min = 4

[[tiers]]
# Browses a lot, buys little: worth a nudge.
name = "engaged_browser"
e_min = 4
m_max = 2

[[tiers]]
name = "low_value"
"""

# Thresholds that fall between whole days.
FRACTIONAL = RULES.model_copy(update={
    "scores": RULES.scores.model_copy(update={"recency_days": [6.5, 29.2, 90.0, 179.9]}),
    "stages": RULES.stages.model_copy(update={"at_risk_days": 29.5, "churned_days": 59.25, "new_days": 13.7}),
})
