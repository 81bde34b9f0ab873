"""`evaluate(state, now, rules)`: figures, RFM scores, tier and stage at `now`.

Pure: `now` is an argument (event time), never read from a clock.
`next_due` says when the passage of time alone could change the answer, so
the caller can wake a silent user exactly then instead of scanning everyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from state.model import DAY_MS, UserState, bucket_of
from state.rules import Rules


@dataclass(slots=True, frozen=True)
class Assessment:
    tier: str
    stage: str
    at_ms: int
    recency_days: int  # days since the last order (since first seen if none)
    days_inactive: int
    frequency: int  # orders in the window
    monetary_cents: int  # net revenue in the window
    r: int
    f: int
    m: int
    lifetime_orders: int
    ltv_cents: int
    aov_cents: int

    @property
    def rfm_sum(self) -> int:
        return self.r + self.f + self.m


def _score_at_most(value: float, thresholds: list[float]) -> int:
    """5 for value <= thresholds[0], 4 for <= thresholds[1], ..., else 1."""
    for i, limit in enumerate(thresholds):
        if value <= limit:
            return 5 - i
    return 1


def _score_at_least(value: float, thresholds: list[float]) -> int:
    for i, limit in enumerate(thresholds):
        if value >= limit:
            return 5 - i
    return 1


def window_figures(state: UserState, now_ms: int, rules: Rules) -> tuple[int, int]:
    """(orders, net cents) in the rolling window ending at `now_ms`."""
    oldest = bucket_of(now_ms, rules.window.bucket_days) - rules.window.buckets + 1
    orders = cents = 0
    for index, (n, c) in state.buckets.items():
        if index >= oldest:
            orders += n
            cents += c
    return orders, cents


def _days(since_ms: int, now_ms: int) -> int:
    return max(0, now_ms - since_ms) // DAY_MS


# (rule field, Assessment attribute or money figure, True for a minimum)
_CONDITIONS = (
    ("r_min", "r", True), ("r_max", "r", False),
    ("f_min", "f", True), ("f_max", "f", False),
    ("m_min", "m", True), ("m_max", "m", False),
    ("rfm_sum_min", "rfm_sum", True), ("rfm_sum_max", "rfm_sum", False),
    ("orders_min", "frequency", True), ("orders_max", "frequency", False),
    ("lifetime_orders_min", "lifetime_orders", True), ("lifetime_orders_max", "lifetime_orders", False),
    ("days_since_order_min", "recency_days", True), ("days_since_order_max", "recency_days", False),
    ("ltv_min", "ltv", True), ("ltv_max", "ltv", False),
)


Compiled = tuple[tuple[str, tuple[tuple[str, float, bool], ...]], ...]
_compiled_cache: dict[int, tuple[Rules, Compiled]] = {}


def _compiled(rules: Rules) -> Compiled:
    """Per tier, only the conditions it sets: this runs for every user at
    every step, so the rules are walked once, not per evaluation."""
    hit = _compiled_cache.get(id(rules))
    if hit is None or hit[0] is not rules:
        compiled = tuple(
            (t.name, tuple((attr, getattr(t, f), is_min) for f, attr, is_min in _CONDITIONS if getattr(t, f) is not None))
            for t in rules.tiers
        )
        hit = _compiled_cache[id(rules)] = (rules, compiled)
    return hit[1]


def _tier(rules: Rules, values: dict[str, float]) -> str:
    for name, conditions in _compiled(rules):
        for attr, limit, is_min in conditions:
            value = values[attr]
            if (value < limit) if is_min else (value > limit):
                break
        else:
            return name
    raise AssertionError("the last tier has no conditions")  # guaranteed by Rules


def _stage(state: UserState, now_ms: int, days_inactive: int, rules: Rules) -> str:
    s = rules.stages
    if days_inactive >= s.churned_days:
        return "churned"
    if days_inactive >= s.at_risk_days:
        return "at_risk"
    # Coming back from churn is worth its own stage for a while.
    if state.stage == "churned":
        return "reactivated"
    if state.stage == "reactivated" and state.stage_since_ms is not None:
        if _days(state.stage_since_ms, now_ms) < s.reactivated_days:
            return "reactivated"
    if _days(state.first_seen_ms, now_ms) < s.new_days and state.stage in (None, "new"):
        return "new"
    return "active"


def evaluate(state: UserState, now_ms: int, rules: Rules) -> Assessment:
    order_anchor = state.last_order_ms if state.last_order_ms is not None else state.first_seen_ms
    active_anchor = state.last_active_ms if state.last_active_ms is not None else state.first_seen_ms
    recency_days = _days(order_anchor, now_ms)
    days_inactive = _days(active_anchor, now_ms)
    frequency, monetary_cents = window_figures(state, now_ms, rules)
    sc = rules.scores
    r = _score_at_most(recency_days, sc.recency_days) if state.last_order_ms is not None else 1
    f = _score_at_least(frequency, sc.frequency_orders) if frequency > 0 else 1
    m = _score_at_least(monetary_cents / 100, sc.monetary) if monetary_cents > 0 else 1
    ltv_cents = max(0, state.lifetime_revenue_cents - state.lifetime_refunds_cents)
    aov_cents = state.lifetime_revenue_cents // state.lifetime_orders if state.lifetime_orders else 0
    values = {
        "r": r, "f": f, "m": m, "rfm_sum": r + f + m, "frequency": frequency,
        "lifetime_orders": state.lifetime_orders, "recency_days": recency_days, "ltv": ltv_cents / 100,
    }
    tier = _tier(rules, values)
    stage = _stage(state, now_ms, days_inactive, rules)
    return Assessment(
        tier=tier, stage=stage, at_ms=now_ms, recency_days=recency_days, days_inactive=days_inactive,
        frequency=frequency, monetary_cents=monetary_cents, r=r, f=f, m=m,
        lifetime_orders=state.lifetime_orders, ltv_cents=ltv_cents, aov_cents=aov_cents,
    )


_due_cache: dict[int, tuple[Rules, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]]] = {}


def _due_offsets(rules: Rules) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Offsets (ms) after each anchor at which some threshold flips:
    (after the last order, after the last activity, after first seen, after
    the stage began). Day counts are whole days (floored): "days >= N"
    first holds at ceil(N) days, "days <= N" first fails at floor(N) + 1."""
    hit = _due_cache.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]

    def at(days: float) -> int:
        return math.ceil(days) * DAY_MS

    def past(days: float) -> int:
        return (math.floor(days) + 1) * DAY_MS

    order = {past(d) for d in rules.scores.recency_days}
    for tier in rules.tiers:
        if tier.days_since_order_min is not None:
            order.add(at(tier.days_since_order_min))
        if tier.days_since_order_max is not None:
            order.add(past(tier.days_since_order_max))
    s = rules.stages
    offsets = (
        tuple(sorted(order)),
        tuple(sorted({at(s.at_risk_days), at(s.churned_days)})),
        (at(s.new_days),),
        (at(s.reactivated_days),),
    )
    _due_cache[id(rules)] = (rules, offsets)
    return offsets


def next_due(state: UserState, now_ms: int, rules: Rules) -> int | None:
    """The earliest event time after `now_ms` at which time alone may change
    the user's tier or stage. Waking early is harmless (nothing changes, a
    new due time is set); waking late is not, so every threshold counts."""
    order_offsets, active_offsets, new_offsets, stage_offsets = _due_offsets(rules)
    order_anchor = state.last_order_ms if state.last_order_ms is not None else state.first_seen_ms
    active_anchor = state.last_active_ms if state.last_active_ms is not None else state.first_seen_ms
    best: int | None = None
    anchored = [(order_anchor, order_offsets), (active_anchor, active_offsets), (state.first_seen_ms, new_offsets)]
    if state.stage_since_ms is not None:
        anchored.append((state.stage_since_ms, stage_offsets))
    for anchor, offsets in anchored:
        for offset in offsets:  # sorted: the first one past now is this anchor's earliest
            t = anchor + offset
            if t > now_ms:
                if best is None or t < best:
                    best = t
                break
    if state.buckets:
        # The oldest bucket leaves the window when the window's start passes it.
        t = (min(state.buckets) + rules.window.buckets) * rules.window.bucket_days * DAY_MS
        if t > now_ms and (best is None or t < best):
            best = t
    return best
