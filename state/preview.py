"""What a rules change would do, before it is made (pure).

Every user is evaluated twice at the same event time, from the same state:
under the rules in force and under the new ones. The difference is the
change's alone (time passing is the same on both sides). Nothing is
published and no state changes: `evaluate` reads the state and returns an
assessment. `tierstream rules preview` reads the users' states and prints
what comes out of here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from state import campaigns
from state.evaluate import evaluate
from state.model import UserState
from state.rules import STAGES, Rules


@dataclass(slots=True)
class Preview:
    at_ms: int
    users: int = 0
    old_tiers: Counter = field(default_factory=Counter)
    new_tiers: Counter = field(default_factory=Counter)
    old_stages: Counter = field(default_factory=Counter)
    new_stages: Counter = field(default_factory=Counter)
    flows: Counter = field(default_factory=Counter)  # (old tier, new tier) -> users, moves and stays
    stage_flows: Counter = field(default_factory=Counter)
    triggered: Counter = field(default_factory=Counter)  # campaign -> users whose move triggers it
    eligible: Counter = field(default_factory=Counter)  # campaign -> of those, eligible now

    @property
    def moved(self) -> int:
        return sum(n for (a, b), n in self.flows.items() if a != b)

    def doc(self, old: Rules, new: Rules) -> dict[str, Any]:
        tiers = list(dict.fromkeys([*old.tier_names, *new.tier_names]))
        return {
            "at_ms": self.at_ms,
            "users": self.users,
            "old_version": old.version,
            "new_version": new.version,
            "tiers": {t: {"old": self.old_tiers[t], "new": self.new_tiers[t]} for t in tiers},
            "stages": {s: {"old": self.old_stages[s], "new": self.new_stages[s]} for s in STAGES},
            "tier_moves": self.moved,
            "stage_moves": sum(n for (a, b), n in self.stage_flows.items() if a != b),
            "flows": [{"from": a, "to": b, "users": n} for (a, b), n in sorted(self.flows.items())],
            "matrix": {a: {b: n for (x, b), n in sorted(self.flows.items()) if x == a}
                       for a in sorted({a for a, _ in self.flows})},
            "campaigns": {c.name: {"triggered": self.triggered[c.name], "eligible": self.eligible[c.name]}
                          for c in new.campaigns},
        }


def preview(states: Iterable[tuple[str, UserState]], at_ms: int, old: Rules, new: Rules) -> Preview:
    """Users nothing was applied to yet are left out (they have no tier on
    either side). A campaign counts a user whose move under the new rules
    (from the tier and stage the old ones give now) meets its trigger, and
    of those, who would be eligible now."""
    out = Preview(at_ms)
    for user_id, state in states:
        if not state.has_applied:
            continue
        a = evaluate(state, at_ms, old, user_id)
        b = evaluate(state, at_ms, new, user_id)
        out.users += 1
        out.old_tiers[a.tier] += 1
        out.new_tiers[b.tier] += 1
        out.old_stages[a.stage] += 1
        out.new_stages[b.stage] += 1
        out.flows[(a.tier, b.tier)] += 1
        out.stage_flows[(a.stage, b.stage)] += 1
        if (a.tier, a.stage) == (b.tier, b.stage):
            continue
        channel = state.acquisition[0] if state.acquisition is not None else ""
        for c in new.campaigns:
            if campaigns.triggered(c, a.tier, b.tier, a.stage, b.stage, None):
                out.triggered[c.name] += 1
                if campaigns.eligible(c, state.camp or campaigns.new_memory(), at_ms, b.ltv_cents, channel):
                    out.eligible[c.name] += 1
    return out
