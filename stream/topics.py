"""Every topic name in one place: the external contract (see README)."""

EVENTS = "tierstream.events"
TIER_CHANGES = "tierstream.tier-changes"
CHURN_ALERTS = "tierstream.churn-alerts"
DEAD_LETTERS = "tierstream.events.dlq"

OUTPUTS = (TIER_CHANGES, CHURN_ALERTS, DEAD_LETTERS)

# The users table's changelog is internal: Faust names it
# "<app_id>-users-changelog".
USERS_TABLE = "users"
