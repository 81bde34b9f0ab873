"""Churn probability: the MBG/NBD buy-till-you-die model (pure; SciPy).

Why MBG/NBD (Batislam, Denizel & Filiztekin 2007): like BG/NBD it has a
closed-form likelihood (fast, deterministic fits), but a customer may also
drop out right after their first purchase. Plain BG/NBD gives every
one-time buyer P(alive) = 1 however long they have been gone, which makes
it useless for exactly the customers most at risk; Pareto/NBD does not
have that flaw either, but its likelihood needs Gaussian hypergeometric
functions in the fit, slower and numerically touchier.

The model, per customer:
- while alive, purchases follow a Poisson process of rate lambda ~ Gamma(r, alpha);
- after each purchase, the first included, the customer drops out with
  probability p ~ Beta(a, b).

A customer's summary is (x, t_x, T): repeat purchases, the time of the last
purchase and the time now, both measured from the first purchase (in days).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

from state.model import DAY_MS, UserState


@dataclass(frozen=True)
class Params:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


def log_likelihood(params: Params, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each customer's log-likelihood under MBG/NBD."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return a1 + a2 + a3 + np.logaddexp(a4, 0)


def fit(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None,
        start: Params = Params(1.0, 1.0, 1.0, 1.0)) -> Params:
    """Maximum likelihood from the customers' summaries (optionally weighted:
    a histogram of summaries fits as well as the customers themselves).
    Deterministic: the same summaries give the same parameters."""
    w = np.ones_like(x, dtype=float) if weights is None else weights

    def negative(log_params: np.ndarray) -> float:
        p = Params(*np.exp(log_params))
        return -float(np.sum(w * log_likelihood(p, x, t_x, T))) / float(np.sum(w))

    x0 = np.log([start.r, start.alpha, start.a, start.b])
    # L-BFGS-B on log parameters (all four are positive); gradients by
    # finite differences are plenty for four parameters.
    result = minimize(negative, x0, method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
    return Params(*(float(v) for v in np.exp(result.x)))


def p_alive(params: Params, x: np.ndarray | float, t_x: np.ndarray | float, T: np.ndarray | float) -> np.ndarray:
    """P(the customer is still active | their summary)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    return 1.0 / (1.0 + (a / (b + np.asarray(x))) * ((alpha + np.asarray(T)) / (alpha + np.asarray(t_x)))
                  ** (r + np.asarray(x)))


def expected_purchases(params: Params, horizon: float, x: np.ndarray | float, t_x: np.ndarray | float,
                       T: np.ndarray | float) -> np.ndarray:
    """Expected purchases in the next `horizon` days, given the summary."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = np.asarray(x, dtype=float), np.asarray(t_x, dtype=float), np.asarray(T, dtype=float)
    hyp = hyp2f1(r + x, b + x + 1, a + b + x, horizon / (alpha + T + horizon))
    first = (a + b + x) / (a - 1)
    second = 1 - hyp * ((alpha + T) / (alpha + T + horizon)) ** (r + x)
    return first * second / (1 + (a / (b + x)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def simulate(params: Params, customers: int, observe_days: float, horizon_days: float = 0.0,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Purchase histories drawn from the model: each customer's summary over
    `observe_days` after their first purchase, and their purchases in the
    `horizon_days` after that (the truth predictions are compared with)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1 / params.alpha, customers)
    p = rng.beta(params.a, params.b, customers)
    x = np.zeros(customers)
    t_x = np.zeros(customers)
    future = np.zeros(customers)
    end = observe_days + horizon_days
    for i in range(customers):
        t = 0.0
        alive = rng.random() > p[i]  # MBG: may drop out right after the first purchase
        while alive:
            t += rng.exponential(1 / lam[i])
            if t >= end:
                break
            if t < observe_days:
                x[i] += 1
                t_x[i] = t
            else:
                future[i] += 1
            alive = rng.random() > p[i]
    return {"x": x, "t_x": t_x, "T": np.full(customers, float(observe_days)), "future": future}


# -- live: the population's summaries, a fit per cadence, each customer's figures

MAX_LOG = 700.0  # exp() of more overflows a float
NEVER_MS = 2 ** 50  # about 35,000 years: a crossing later than this is taken as never
MAX_REPEATS = 999  # repeat purchases above this count as this many in the population's summaries (bins bound)
BINS_PER_DECADE = 20  # of (1 + days): bins about 12% wide, a day wide for the first weeks
MIN_CUSTOMERS = 100  # fewer buyers than this: no fit (the figures wait for more history)

SummaryKey = tuple[int, int, int]  # (repeat purchases, first order's day, last order's day)


def summary_key(orders: int, first_order_ms: int | None, last_order_ms: int | None) -> SummaryKey | None:
    """A customer's entry in their partition's summaries; None before
    their first order."""
    if orders <= 0 or first_order_ms is None or last_order_ms is None:
        return None
    return min(orders - 1, MAX_REPEATS), first_order_ms // DAY_MS, last_order_ms // DAY_MS


def _log_bin(days: int) -> int:
    return min(999, math.floor(BINS_PER_DECADE * math.log10(1 + days)))


def _bin_middle(b: int) -> float:
    return 10 ** ((b + 0.5) / BINS_PER_DECADE) - 1


def summary_bins(counts: Mapping[SummaryKey, int], boundary_ms: int) -> dict[int, int]:
    """The customers' (x, t_x, T) at a boundary as histogram bins: t_x and
    T in days, log-spaced (the model depends on their ratios), so the bins
    are bounded (about 70 × 70 × MAX_REPEATS for a century) however many
    customers, and mergeable across partitions by adding counts."""
    day = boundary_ms // DAY_MS
    out: dict[int, int] = {}
    for (x, first, last), n in counts.items():
        if n <= 0 or first >= day:
            continue
        b = (x * 1000 + _log_bin(last - first)) * 1000 + _log_bin(day - first)
        out[b] = out.get(b, 0) + n
    return out


def unbin(b: int) -> tuple[int, float, float]:
    """(x, t_x, T) in days at the middle of the bin; t_x is 0 for a
    customer without a repeat purchase, as the model defines it."""
    x, rest = divmod(b, 1_000_000)
    t_b, T_b = divmod(rest, 1000)
    T = _bin_middle(T_b)
    return x, (0.0 if x == 0 else min(_bin_middle(t_b), T)), T


def fit_bins(bins: Mapping[int, int], start: Params | None = None) -> Params | None:
    """Fit from the merged summaries (time unit: days). Deterministic:
    the bins are taken in sorted order, and every worker starts from the
    same previous parameters. None with too few customers or a failed fit."""
    keys = sorted(b for b, n in bins.items() if n > 0)
    weights = np.array([bins[b] for b in keys], dtype=float)
    if weights.sum() < MIN_CUSTOMERS:
        return None
    rows = np.array([unbin(b) for b in keys], dtype=float)
    if not (rows[:, 0] > 0).any():  # no repeat purchase yet: nothing to tell the rates by
        return None
    with np.errstate(all="ignore"):
        params = fit(rows[:, 0], rows[:, 1], rows[:, 2], weights, start or Params(1.0, 1.0, 1.0, 1.0))
    values = (params.r, params.alpha, params.a, params.b)
    if not all(math.isfinite(v) and 1e-6 < v < 1e6 for v in values):
        return None
    return params


@dataclass(frozen=True)
class Fitted:
    """Parameters fitted at a boundary (days as the time unit)."""

    as_of_ms: int
    customers: int
    params: Params
    horizon_days: int = 90  # of the expected orders (the rules' churn_horizon_days)

    def summary(self) -> dict:
        return {"as_of_ms": self.as_of_ms, "customers": self.customers, "time_unit": "day",
                "horizon_days": self.horizon_days, **{k: round(v, 6) for k, v in self.params.as_dict().items()}}


def customer_figures(fitted: Fitted, orders: int, first_order_ms: int, last_order_ms: int,
                     now_ms: int) -> tuple[float, float | None]:
    """(P(alive), expected orders in the fit's `horizon_days`) at `now_ms`,
    rounded to 4 places (the same in every worker). The expectation is None
    where the closed form has no value (a = 1 exactly)."""
    alive, expected = customer_figures_exact(fitted, orders, first_order_ms, last_order_ms, now_ms)
    return round(alive, 4), expected


def customer_figures_exact(fitted: Fitted, orders: int, first_order_ms: int, last_order_ms: int,
                           now_ms: int) -> tuple[float, float | None]:
    """`customer_figures` with P(alive) not rounded (what rule conditions
    compare)."""
    return (alive_probability(fitted, orders, first_order_ms, last_order_ms, now_ms),
            expected_orders(fitted, orders, first_order_ms, last_order_ms, now_ms))


def expected_orders(fitted: Fitted, orders: int, first_order_ms: int, last_order_ms: int,
                    now_ms: int) -> float | None:
    """The orders expected in the fit's `horizon_days` from `now_ms`, rounded
    to 4 places; None where the closed form has no value. Scalar maths (a
    hypergeometric function: the dearest figure of an evaluation, so
    state.evaluate asks for it only when a record or document shows it)."""
    p = fitted.params
    if p.a == 1:  # the closed form's one singular point
        return None
    x = orders - 1
    t_x = max(0, last_order_ms - first_order_ms) / DAY_MS if x > 0 else 0.0
    T = max(0, now_ms - first_order_ms) / DAY_MS
    odds = _odds_dead(p, x, t_x, T)
    h = fitted.horizon_days
    hyp = float(hyp2f1(p.r + x, p.b + x + 1, p.a + p.b + x, h / (p.alpha + T + h)))
    value = (p.a + p.b + x) / (p.a - 1) * (1 - hyp * ((p.alpha + T) / (p.alpha + T + h)) ** (p.r + x)) / (1 + odds)
    return round(value, 4) if math.isfinite(value) else None


def _odds_dead(p: Params, x: int, t_x: float, T: float) -> float:
    """(1 - P(alive)) / P(alive) for a summary, days as the unit. In logs:
    a frequent buyer long silent raises a ratio to a power in the
    thousands, past what a float holds (P(alive) is then 0 to 300 places)."""
    log_odds = math.log(p.a / (p.b + x)) + (p.r + x) * math.log((p.alpha + T) / (p.alpha + t_x))
    return math.exp(min(log_odds, MAX_LOG))


def alive_probability(fitted: Fitted, orders: int, first_order_ms: int, last_order_ms: int, now_ms: int) -> float:
    """P(alive) at `now_ms`, not rounded: what rule conditions compare
    (their crossing times below are exact for it)."""
    x = orders - 1
    t_x = max(0, last_order_ms - first_order_ms) / DAY_MS if x > 0 else 0.0
    return 1.0 / (1.0 + _odds_dead(fitted.params, x, t_x, max(0, now_ms - first_order_ms) / DAY_MS))


def _crossing_days(p: Params, x: int, t_x: float, limit: float) -> float:
    """Days after the first order at which P(alive) falls to `limit`: it
    only falls while a customer is silent, and P(alive) <= limit exactly
    when the odds of being gone reach 1/limit - 1, i.e.
    T = (alpha + t_x) * ((1/limit - 1)(b + x)/a)^(1/(r + x)) - alpha.
    Infinite when that is beyond what a float holds (a small r + x)."""
    log_factor = math.log((1 / limit - 1) * (p.b + x) / p.a) / (p.r + x)
    return math.inf if log_factor > MAX_LOG else (p.alpha + t_x) * math.exp(log_factor) - p.alpha


def alive_crossing_ms(fitted: Fitted, orders: int, first_order_ms: int, last_order_ms: int, limit: float) -> int:
    """A moment at which the buyer's P(alive) is just below `limit` under
    `fitted`, if they stay silent (it may be in the past): a hair past the
    exact one (a billionth of the time since the first order, at least a
    millisecond), far more than the floating-point error, so that a wake-up
    then always finds it crossed."""
    x = orders - 1
    t_x = max(0, last_order_ms - first_order_ms) / DAY_MS if x > 0 else 0.0
    exact = _crossing_days(fitted.params, x, t_x, limit) * DAY_MS
    if exact > NEVER_MS:
        return NEVER_MS  # tens of thousands of years away: never, for a wake-up
    return first_order_ms + math.ceil(exact + abs(exact) * 1e-9) + 1


def crossing_bounds(fitted: Fitted, key: SummaryKey, limit: float) -> tuple[int, int]:
    """Earliest and latest `alive_crossing_ms` of any buyer with summary
    `key`: the first and last order are known to the day, and the crossing
    is linear in both (so the extremes are at the day's ends). Summaries at
    MAX_REPEATS stand for any higher count: bounds then span all time."""
    x, first_day, last_day = key
    if x >= MAX_REPEATS:
        return -(2 ** 62), 2 ** 62
    found = [alive_crossing_ms(fitted, x + 1, first, max(first, last), limit)
             for first in (first_day * DAY_MS, (first_day + 1) * DAY_MS - 1)
             for last in (last_day * DAY_MS, (last_day + 1) * DAY_MS - 1)]
    lo, hi = min(found), max(found)
    return (lo - 1 if lo < NEVER_MS else NEVER_MS), (hi + 1 if hi < NEVER_MS else NEVER_MS)


def refit_wake(before: Fitted | None, after: Fitted, key: SummaryKey, limits: tuple[float, ...],
               boundary: int) -> int | None:
    """A new fit comes into force at `boundary`. When must a buyer with
    summary `key` be evaluated for P(alive) conditions at `limits` to stay
    current? At the boundary if, for some limit, they may be on different
    sides of it under the two fits there (P(alive) jumps with the fit);
    else at the earliest moment they may cross it later under the new fit;
    None if neither (the buyer's own due time covers the rest)."""
    if before is None:
        return boundary  # no P(alive) before the first fit: every condition on it may flip now
    wake: int | None = None
    for limit in limits:
        lo, hi = crossing_bounds(after, key, limit)
        old_lo, old_hi = crossing_bounds(before, key, limit)
        settled_below = hi <= boundary and old_hi <= boundary  # crossed under both
        settled_above = lo > boundary and old_lo > boundary  # not yet under either
        if not (settled_below or settled_above):
            return boundary
        if boundary < lo < NEVER_MS and (wake is None or lo < wake):
            wake = lo
    return wake


def first_order_of(state: UserState) -> int | None:
    """The first order's time; for a state written before it was kept,
    the first time seen stands in (at or before it)."""
    if state.lifetime_orders <= 0:
        return None
    return state.first_order_ms if state.first_order_ms is not None else state.first_seen_ms


def buyer_summary(state: UserState) -> SummaryKey | None:
    return summary_key(state.lifetime_orders, first_order_of(state), state.last_order_ms)
