"""`evaluate(state, now, rules)`: figures, RFM scores, tier and stage at `now`.

Pure: `now` is an argument (event time), never read from a clock.
`next_due` says when the passage of time alone could change the answer, so
the caller can wake a silent user exactly then instead of scanning everyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from state.churn_model import NEVER_MS, alive_crossing_ms, alive_probability, first_order_of
from state.churn_model import expected_orders as churn_expected_orders
from state.model import DAY_MS, NEVER, UserState
from state.quantiles import Cuts, tiebreak
from state.rules import Rules

ALL_R = 0b111110  # UserState.r_same when no tier tests R: every score keeps the tier


# Not frozen: a frozen dataclass sets every field through object.__setattr__,
# ~3x slower to build, and one is built for every evaluation (several per
# event). Nothing mutates an Assessment once made.
@dataclass(slots=True)
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
    actions: int = 0  # logins, views and carts in the window
    e: int | None = None  # engagement score 1-5; None when the rules define none
    cuts: Cuts | None = None  # the population's cut points used, with quantile scores
    # The churn model (state.churn_model), once fitted, for buyers: P(alive)
    # and the orders expected in the rules' churn_horizon_days.
    p_alive: float | None = None
    # P(alive) before rounding, which rules compare; NaN without one.
    p_alive_exact: float = math.nan
    # The expected orders' inputs (fit, orders, first and last order, now):
    # worked out when first read, as most evaluations are never shown.
    expected_inputs: tuple | None = None
    _expected: float | None = None
    # Where the user came from (UserState.acquisition), for the records.
    acquisition: list | None = None

    @property
    def expected_orders(self) -> float | None:
        if self.expected_inputs is not None:
            self._expected = churn_expected_orders(*self.expected_inputs)
            self.expected_inputs = None
        return self._expected

    @property
    def rfm_sum(self) -> int:
        return self.r + self.f + self.m


def _score_at_most(value: float, thresholds: tuple[float, ...]) -> int:
    """5 for value <= thresholds[0], 4 for <= thresholds[1], ..., else 1."""
    for i, limit in enumerate(thresholds):
        if value <= limit:
            return 5 - i
    return 1


def _score_at_least(value: float, thresholds: tuple[float, ...]) -> int:
    for i, limit in enumerate(thresholds):
        if value >= limit:
            return 5 - i
    return 1


def _window_figures(state: UserState, now_ms: int, plan: _Plan) -> tuple[int, int]:
    """(orders, net cents) in the rolling window ending at `now_ms`."""
    oldest = now_ms // plan.bucket_ms - plan.window_buckets + 1
    orders = cents = 0
    for index, (n, c) in state.buckets.items():
        if index >= oldest:
            orders += n
            cents += c
    return orders, cents


def window_figures(state: UserState, now_ms: int, rules: Rules) -> tuple[int, int]:
    """(orders, net cents) in the rolling window ending at `now_ms`."""
    return _window_figures(state, now_ms, _plan(rules))


def _days(since_ms: int, now_ms: int) -> int:
    return max(0, now_ms - since_ms) // DAY_MS


# The figures a tier condition can test, in the order `evaluate` lays them out.
_FIGURES = ("r", "f", "m", "rfm_sum", "frequency", "lifetime_orders", "recency_days", "ltv", "e", "p_alive",
            "channel")
# (rule field, figure, True for a minimum)
_CONDITIONS = (
    ("r_min", "r", True), ("r_max", "r", False),
    ("f_min", "f", True), ("f_max", "f", False),
    ("m_min", "m", True), ("m_max", "m", False),
    ("e_min", "e", True), ("e_max", "e", False),
    ("rfm_sum_min", "rfm_sum", True), ("rfm_sum_max", "rfm_sum", False),
    ("orders_min", "frequency", True), ("orders_max", "frequency", False),
    ("lifetime_orders_min", "lifetime_orders", True), ("lifetime_orders_max", "lifetime_orders", False),
    ("days_since_order_min", "recency_days", True), ("days_since_order_max", "recency_days", False),
    ("ltv_min", "ltv", True), ("ltv_max", "ltv", False),
    ("p_alive_min", "p_alive", True), ("p_alive_max", "p_alive", False),
    # A set test written as a maximum: {the user's channel} <= the channels listed.
    ("channels", "channel", False),
)
_CHANNEL_SETS: dict[str, frozenset[str]] = {}  # channel -> {channel}, made once per channel


def _channel_set(state: UserState) -> frozenset[str]:
    channel = state.acquisition[0] if state.acquisition is not None else ""
    found = _CHANNEL_SETS.get(channel)
    if found is None:
        found = _CHANNEL_SETS[channel] = frozenset((channel,))
    return found


@dataclass(slots=True, frozen=True)
class _Plan:
    """The rules, flattened once for the hot path: this runs for every user
    at every step, so the pydantic models are walked once, not per call."""

    bucket_ms: int
    window_buckets: int
    recency_days: tuple[float, ...]
    frequency_orders: tuple[float, ...]
    monetary: tuple[float, ...]
    engagement: tuple[float, ...] | None  # None: no E score
    wake_for_activity: bool  # a rule tests E, so activity leaving the window matters
    quantiles: tuple[str, ...]  # dimensions scored by the population's cut points
    split_ties: bool  # whether a tie bin's customers are split by their tiebreak (else it never matters)
    churn_model: bool
    p_alive_limits: tuple[float, ...]  # P(alive) values tiers or the churn_risk alert test (crossings wake)
    uses_channels: bool  # a tier tests the acquisition channel
    # per tier: (name, groups); a group is ((figure index, limit, is_min), ...),
    # only the conditions it sets; the tier holds if any group does
    tiers: tuple[tuple[str, tuple[tuple[tuple[int, float, bool], ...], ...]], ...]
    new_days: float
    at_risk_days: float
    churned_days: float
    reactivated_days: float
    reads_r: bool  # a tier tests R or the RFM sum
    # next_due's threshold offsets per anchor (see _due_offsets)
    due_offsets: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


_plans: dict[int, tuple[Rules, _Plan]] = {}


def _plan(rules: Rules) -> _Plan:
    hit = _plans.get(id(rules))
    if hit is None or hit[0] is not rules:
        tiers = tuple(
            (t.name, tuple(tuple((_FIGURES.index(fig), frozenset(getattr(g, f)) if f == "channels" else getattr(g, f),
                                  is_min)
                                 for f, fig, is_min in _CONDITIONS if getattr(g, f) is not None)
                           for g in t.groups))
            for t in rules.tiers
        )
        s = rules.stages
        plan = _Plan(
            bucket_ms=rules.window.bucket_days * DAY_MS,
            window_buckets=rules.window.buckets,
            recency_days=tuple(rules.scores.recency_days),
            frequency_orders=tuple(rules.scores.frequency_orders),
            monetary=tuple(rules.scores.monetary),
            engagement=tuple(rules.scores.engagement_actions) if rules.scores.engagement_actions else None,
            wake_for_activity=rules.uses_engagement,
            quantiles=tuple(rules.scores.quantiles),
            split_ties=rules.scores.split_ties,
            churn_model=rules.scores.churn_model,
            p_alive_limits=rules.p_alive_limits,
            uses_channels=any(g.channels is not None for t in rules.tiers for g in t.groups),
            tiers=tiers,
            new_days=s.new_days, at_risk_days=s.at_risk_days,
            churned_days=s.churned_days, reactivated_days=s.reactivated_days,
            reads_r=any(index in (0, 3) for _, groups in tiers for g in groups for index, _, _ in g),
            due_offsets=_due_offsets(rules),
        )
        hit = _plans[id(rules)] = (rules, plan)
    return hit[1]


def _figures(plan: _Plan, state: UserState, r: int, f: int, m: int, frequency: int, orders: int, recency_days: int,
             ltv_cents: int, e: int | None, alive: float) -> tuple:
    """What tier conditions test, laid out as _FIGURES."""
    return (r, f, m, r + f + m, frequency, orders, recency_days, ltv_cents / 100, e or 0, alive,
            _channel_set(state) if plan.uses_channels else None)


def _tier_with_r(plan: _Plan, state: UserState, a: Assessment, r: int) -> str:
    """The tier `a` would have with R = `r` and every other figure as it is."""
    return _tier(plan, _figures(plan, state, r, a.f, a.m, a.frequency, a.lifetime_orders, a.recency_days,
                                a.ltv_cents, a.e, a.p_alive_exact))


def _tier(plan: _Plan, values: tuple[float, ...]) -> str:
    for name, groups in plan.tiers:
        for conditions in groups:
            for index, limit, is_min in conditions:
                value = values[index]
                # Written so that NaN (no P(alive)) fails both kinds.
                if not (value >= limit) if is_min else not (value <= limit):
                    break
            else:
                return name
    raise AssertionError("the last tier has no conditions")  # guaranteed by Rules


def _stage(state: UserState, now_ms: int, days_inactive: int, plan: _Plan) -> str:
    if days_inactive >= plan.churned_days:
        return "churned"
    if days_inactive >= plan.at_risk_days:
        return "at_risk"
    # Coming back from churn is worth its own stage for a while.
    if state.stage == "churned":
        return "reactivated"
    if state.stage == "reactivated" and state.stage_since_ms is not None:
        if _days(state.stage_since_ms, now_ms) < plan.reactivated_days:
            return "reactivated"
    if _days(state.first_seen_ms, now_ms) < plan.new_days and state.stage in (None, "new"):
        return "new"
    return "active"


def evaluate(state: UserState, now_ms: int, rules: Rules, user_id: str = "") -> Assessment:
    """`user_id` breaks ties between customers in the bin a quantile cut
    falls in (state.quantiles); it matters only with quantile scores."""
    plan = _plan(rules)
    first_seen = state.first_seen_ms
    last_order = state.last_order_ms
    last_active = state.last_active_ms
    recency_days = max(0, now_ms - (first_seen if last_order is None else last_order)) // DAY_MS
    days_inactive = max(0, now_ms - (first_seen if last_active is None else last_active)) // DAY_MS
    frequency, monetary_cents = _window_figures(state, now_ms, plan)
    from_population = plan.quantiles or plan.churn_model
    cuts = rules.thresholds.at(now_ms) if from_population and rules.thresholds is not None else None
    # Each score from the fixed thresholds unless the cuts in force score it
    # (below): with quantile scores, working both out was a fifth of this.
    by_cuts = cuts is not None and bool(plan.quantiles)
    r = 1 if last_order is None else cuts.score_r(recency_days) if by_cuts and cuts.r is not None else \
        _score_at_most(recency_days, plan.recency_days)
    f = m = 1
    tb = 0.0  # any value in [0, 1) scores alike unless ties are split: a cut's share is then 1
    if plan.split_ties and by_cuts and (cuts.f is not None or cuts.m is not None):
        tb = tiebreak(user_id)
    if by_cuts and cuts.f is not None:
        f = cuts.score_f(frequency, tb)
    elif frequency > 0:
        f = _score_at_least(frequency, plan.frequency_orders)
    if by_cuts and cuts.m is not None:
        m = cuts.score_m(monetary_cents, tb)
    elif monetary_cents > 0:
        m = _score_at_least(monetary_cents / 100, plan.monetary)
    p_alive = expected_inputs = None
    alive = math.nan  # what P(alive) conditions compare: not rounded, NaN fails them
    if cuts is not None and cuts.churn is not None and last_order is not None:
        first_order = first_order_of(state)
        assert first_order is not None
        alive = alive_probability(cuts.churn, state.lifetime_orders, first_order, last_order, now_ms)
        expected_inputs = (cuts.churn, state.lifetime_orders, first_order, last_order, now_ms)
        p_alive = round(alive, 4)
    revenue, orders = state.lifetime_revenue_cents, state.lifetime_orders
    ltv_cents = max(0, revenue - state.lifetime_refunds_cents)
    aov_cents = revenue // orders if orders else 0
    actions, e = 0, None
    if plan.engagement is not None:
        oldest = now_ms // plan.bucket_ms - plan.window_buckets + 1
        actions = sum(n for index, n in state.activity.items() if index >= oldest)
        e = _score_at_least(actions, plan.engagement) if actions > 0 else 1
    tier = _tier(plan, _figures(plan, state, r, f, m, frequency, orders, recency_days, ltv_cents, e, alive))
    stage = _stage(state, now_ms, days_inactive, plan)
    return Assessment(tier, stage, now_ms, recency_days, days_inactive, frequency, monetary_cents,
                      r, f, m, orders, ltv_cents, aov_cents, actions, e, cuts, p_alive, alive, expected_inputs, None,
                      state.acquisition)


def alive_at(state: UserState, t_ms: int, rules: Rules) -> float:
    """The buyer's P(alive) at `t_ms` under the fit in force then, with
    their orders as they stand (so for `t_ms` after the last order); NaN
    without a fit or an order."""
    if rules.thresholds is None or state.last_order_ms is None:
        return math.nan
    cuts = rules.thresholds.at(t_ms)
    first_order = first_order_of(state)
    if cuts is None or cuts.churn is None or first_order is None:
        return math.nan
    return alive_probability(cuts.churn, state.lifetime_orders, first_order, state.last_order_ms, t_ms)


def _due_offsets(rules: Rules) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Offsets (ms) after each anchor at which some threshold flips:
    (after the last order, after the last activity, after first seen, after
    the stage began). Day counts are whole days (floored): "days >= N"
    first holds at ceil(N) days, "days <= N" first fails at floor(N) + 1.
    The R score's limits are not here: `next_due` takes them from the cuts
    or thresholds in force, and only where crossing one moves the tier."""

    def at(days: float) -> int:
        return math.ceil(days) * DAY_MS

    def past(days: float) -> int:
        return (math.floor(days) + 1) * DAY_MS

    order = set()
    for group in (g for tier in rules.tiers for g in tier.groups):
        if group.days_since_order_min is not None:
            order.add(at(group.days_since_order_min))
        if group.days_since_order_max is not None:
            order.add(past(group.days_since_order_max))
    s = rules.stages
    return (
        tuple(sorted(order)),
        tuple(sorted({at(s.at_risk_days), at(s.churned_days)})),
        (at(s.new_days),),
        (at(s.reactivated_days),),
    )


def next_due(state: UserState, now_ms: int, rules: Rules, a: Assessment | None = None) -> int | None:
    """The earliest event time after `now_ms` at which time alone may change
    the user's tier or stage from what they are at `now_ms` (`a`, the
    evaluation there; evaluated here if not given). Waking early is harmless
    (nothing changes, a new due time is set); waking late is not, so every
    threshold counts, except an R limit whose crossing keeps the tier.

    Also notes on the state which R scores were found to keep the tier
    (UserState.r_same), for the period boundaries' recency crossings."""
    plan = _plan(rules)
    order_offsets, active_offsets, new_offsets, stage_offsets = plan.due_offsets
    first_seen = state.first_seen_ms
    last_order = state.last_order_ms
    order_anchor = last_order if last_order is not None else first_seen
    active_anchor = state.last_active_ms if state.last_active_ms is not None else first_seen
    best = _first_after(order_anchor, order_offsets, now_ms, None)
    best = _first_after(active_anchor, active_offsets, now_ms, best)
    best = _first_after(first_seen, new_offsets, now_ms, best)
    if state.stage_since_ms is not None:
        best = _first_after(state.stage_since_ms, stage_offsets, now_ms, best)
    # A bucket leaves the window when the window's start passes it. Buckets
    # are evicted only on the user's next event, so some may already be out
    # of the window at `now`: the next exit is the earliest one still ahead,
    # not the oldest bucket's (issue #9: that one was in the past, and a
    # silent user's next real exit was never scheduled).
    span = plan.window_buckets
    exits = (*state.buckets, *state.activity) if plan.wake_for_activity else state.buckets
    for index in exits:
        t = (index + span) * plan.bucket_ms
        if t > now_ms and (best is None or t < best):
            best = t
    cuts = rules.thresholds.at(now_ms) if rules.thresholds is not None else None
    # P(alive) falls while a buyer is silent: wake when it passes a limit a
    # tier tests, under the fit in force now. A later fit moves that moment;
    # the pipeline re-schedules buyers when one comes into force
    # (state.churn_model.refit_wake).
    if plan.p_alive_limits and last_order is not None and cuts is not None:
        first_order = first_order_of(state)
        if cuts.churn is not None and first_order is not None:
            for limit in plan.p_alive_limits:
                t = alive_crossing_ms(cuts.churn, state.lifetime_orders, first_order, last_order, limit)
                if now_ms < t < NEVER_MS and (best is None or t < best):
                    best = t
    state.r_same = 0
    state.r_until = NEVER if best is None else best
    if last_order is None:
        return best  # R is 1 until the first order
    if not plan.reads_r:
        state.r_same = ALL_R
        return best
    # R falls a score each time the days since the last order pass a limit
    # (the cuts' in force now with quantile recency, else the thresholds).
    # Until `best` every other figure a tier tests stays on its side of its
    # limits, so a crossing before then matters only if the tier at the new
    # R differs: the first such crossing is the due time; the ones before it
    # are noted as keeping the tier. A boundary's new cuts and the crossings
    # in its period are the engine's (engine.partition: _enter), which reads
    # these notes. Most crossings keep the tier (a one-order customer stays
    # `potential` from R 5 to R 4, `low_value` from R 2 to R 1): each one
    # skipped is an evaluation saved.
    if a is None:
        a = evaluate(state, now_ms, rules)
    limits = cuts.r if cuts is not None and cuts.r is not None else plan.recency_days
    same = 1 << a.r
    for limit in limits:  # ascending: so are the crossings
        days = math.floor(limit) + 1
        t = last_order + days * DAY_MS
        if t <= now_ms:
            continue
        if best is not None and t >= best:
            break
        r = _score_at_most(days, limits)
        if _tier_with_r(plan, state, a, r) != a.tier:
            best = t
            break
        same |= 1 << r
    state.r_same = same
    return best


def pass_r_crossing(state: UserState, t_ms: int, rules: Rules) -> bool:
    """A due time `t_ms` before `state.r_until`, where only R can have moved
    since the last evaluation: if the R score at `t_ms` (under the cuts in
    force then: they may have moved since) is one that evaluation found to
    keep the tier, the user passes it without an evaluation. The due time
    moves on to the next crossing not known to keep the tier, or to
    `r_until`. Returns False, changing nothing, when an evaluation is needed.
    A crossing scheduled under cuts that have since moved mostly lands here:
    its R score at the new cuts is still the one before it."""
    last_order = state.last_order_ms
    if last_order is None or t_ms >= state.r_until:
        return False
    plan = _plan(rules)
    cuts = rules.thresholds.at(t_ms) if rules.thresholds is not None else None
    limits = cuts.r if cuts is not None and cuts.r is not None else plan.recency_days
    same = state.r_same
    if not same >> _score_at_most((t_ms - last_order) // DAY_MS, limits) & 1:
        return False
    due = None if state.r_until >= NEVER else state.r_until
    for limit in limits:
        days = math.floor(limit) + 1
        t = last_order + days * DAY_MS
        if t <= t_ms:
            continue
        if t >= state.r_until:
            break
        if not same >> _score_at_most(days, limits) & 1:
            due = t
            break
    state.evaluated_ms = t_ms
    state.due_ms = due
    return True


def _first_after(anchor: int, offsets: tuple[int, ...], now_ms: int, best: int | None) -> int | None:
    """The earlier of `best` and this anchor's first threshold after now."""
    for offset in offsets:  # sorted: the first one past now is this anchor's earliest
        t = anchor + offset
        if t > now_ms:
            return t if best is None or t < best else best
    return best
