"""One user's events through the pure core (state.steps), as their
partition would take them."""

from state.steps import on_event
from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()


def run(events, rules=RULES, lateness=0):
    """Feed one user's events as one partition would: the watermark is the
    latest event time seen minus the allowed lateness."""
    state, decisions, latest = None, [], 0
    for e in events:
        before = latest - lateness
        latest = max(latest, e.ts_ms)
        result = on_event(state, e, before, latest - lateness, rules)
        state = result.state
        decisions.extend(result.decisions)
    return state, decisions
