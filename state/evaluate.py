"""`evaluate(state, now, rules)`: figures, RFM scores, tier and stage at `now`.

Pure: `now` is an argument (event time), never read from a clock.
`next_due` says when the passage of time alone could change the answer, so
the caller can wake a silent user exactly then instead of scanning everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.model import DAY_MS, UserState, bucket_of
from state.rules import Rules, TierRule


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


def _matches(rule: TierRule, a: Assessment, monetary: float, ltv: float) -> bool:
    checks = (
        (rule.r_min, a.r, True), (rule.r_max, a.r, False),
        (rule.f_min, a.f, True), (rule.f_max, a.f, False),
        (rule.m_min, a.m, True), (rule.m_max, a.m, False),
        (rule.rfm_sum_min, a.rfm_sum, True), (rule.rfm_sum_max, a.rfm_sum, False),
        (rule.orders_min, a.frequency, True), (rule.orders_max, a.frequency, False),
        (rule.lifetime_orders_min, a.lifetime_orders, True),
        (rule.lifetime_orders_max, a.lifetime_orders, False),
        (rule.days_since_order_min, a.recency_days, True),
        (rule.days_since_order_max, a.recency_days, False),
        (rule.ltv_min, ltv, True), (rule.ltv_max, ltv, False),
    )
    for limit, value, is_min in checks:
        if limit is None:
            continue
        if (value < limit) if is_min else (value > limit):
            return False
    return True


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
    draft = Assessment(
        tier="", stage="", at_ms=now_ms, recency_days=recency_days, days_inactive=days_inactive,
        frequency=frequency, monetary_cents=monetary_cents, r=r, f=f, m=m,
        lifetime_orders=state.lifetime_orders, ltv_cents=ltv_cents, aov_cents=aov_cents,
    )
    tier = next(t.name for t in rules.tiers if _matches(t, draft, monetary_cents / 100, ltv_cents / 100))
    stage = _stage(state, now_ms, days_inactive, rules)
    return Assessment(
        tier=tier, stage=stage, at_ms=now_ms, recency_days=recency_days, days_inactive=days_inactive,
        frequency=frequency, monetary_cents=monetary_cents, r=r, f=f, m=m,
        lifetime_orders=state.lifetime_orders, ltv_cents=ltv_cents, aov_cents=aov_cents,
    )


def next_due(state: UserState, now_ms: int, rules: Rules) -> int | None:
    """The earliest event time after `now_ms` at which time alone may change
    the user's tier or stage. Waking early is harmless (nothing changes, a
    new due time is set); waking late is not, so every threshold counts."""
    candidates: list[int] = []
    order_anchor = state.last_order_ms if state.last_order_ms is not None else state.first_seen_ms
    active_anchor = state.last_active_ms if state.last_active_ms is not None else state.first_seen_ms

    def after(anchor: int, days: float) -> None:
        # A day count becomes >= N at anchor + N days; "<= N" breaks one day later.
        base = anchor + int(days * DAY_MS)
        candidates.extend((base, base + DAY_MS))

    for days in rules.scores.recency_days:
        after(order_anchor, days)
    for tier in rules.tiers:
        for days in (tier.days_since_order_min, tier.days_since_order_max):
            if days is not None:
                after(order_anchor, days)
    s = rules.stages
    after(active_anchor, s.at_risk_days)
    after(active_anchor, s.churned_days)
    after(state.first_seen_ms, s.new_days)
    if state.stage_since_ms is not None:
        after(state.stage_since_ms, s.reactivated_days)
    if state.buckets:
        # The oldest bucket leaves the window when the window's start passes it.
        width = rules.window.bucket_days * DAY_MS
        candidates.append((min(state.buckets) + rules.window.buckets) * width)
    later = [c for c in candidates if c > now_ms]
    return min(later) if later else None
