"""MBG/NBD: the fit recovers known parameters from simulated histories, its
predictions track the simulated future, and one-time buyers are not
assumed alive forever (BG/NBD's flaw)."""

import numpy as np
import pytest

from state.churn_model import (Fitted, Params, SummaryKey, alive_crossing_ms, alive_probability, customer_figures,
                               expected_purchases, fit, log_likelihood, p_alive, refit_wake, simulate, summary_bins,
                               summary_key, NEVER_MS)
from state.model import DAY_MS
from state.quantiles import PopulationIndex, population_reports, snapshot_doc
from state.rules import load_rules

TRUTH = Params(r=0.25, alpha=4.0, a=0.8, b=2.5)  # a shop where a third of buyers never come back


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fit_recovers_each_parameter_within_10_percent(seed):
    d = simulate(TRUTH, customers=20_000, observe_days=365, horizon_days=180, seed=seed)
    got = fit(d["x"], d["t_x"], d["T"])
    for name, want in TRUTH.as_dict().items():
        assert abs(got.as_dict()[name] / want - 1) <= 0.10, (name, got)
    # Predicted purchases in the next 180 days track the simulated ones in
    # aggregate, and by group of past frequency.
    predicted = expected_purchases(got, 180, d["x"], d["t_x"], d["T"])
    assert abs(predicted.sum() / d["future"].sum() - 1) <= 0.05
    for lo, hi in ((0, 1), (1, 3), (3, 10)):
        group = (d["x"] >= lo) & (d["x"] < hi)
        assert abs(predicted[group].sum() / d["future"][group].sum() - 1) <= 0.15, (lo, hi)


def test_one_time_buyers_fade_and_the_fit_is_deterministic():
    # P(alive) of a customer with no repeat purchase falls as time passes.
    alive = p_alive(TRUTH, 0, 0, np.array([0, 30, 180, 365]))
    assert alive[0] < 1 and all(np.diff(alive) < 0)
    # The worked example of docs/scores.md: 2 repeat purchases, the last on
    # day 120, seen on day 365.
    assert round(float(p_alive(TRUTH, 2, 120, 365)), 3) == 0.326
    assert round(float(expected_purchases(TRUTH, 90, 2, 120, 365)), 3) == 0.171
    d = simulate(TRUTH, customers=2000, observe_days=365, seed=9)
    assert fit(d["x"], d["t_x"], d["T"]) == fit(d["x"], d["t_x"], d["T"])


def test_a_histogram_of_summaries_fits_like_the_customers():
    d = simulate(TRUTH, customers=5000, observe_days=365, seed=4)
    keys, counts = np.unique(np.stack([d["x"], np.round(d["t_x"]), d["T"]]), axis=1, return_counts=True)
    whole = fit(d["x"], np.round(d["t_x"]), d["T"])
    binned = fit(keys[0], keys[1], keys[2], weights=counts.astype(float))
    assert all(abs(whole.as_dict()[k] / binned.as_dict()[k] - 1) < 1e-3 for k in "r alpha a b".split())
    assert np.isfinite(log_likelihood(whole, d["x"], d["t_x"], d["T"])).all()


# -- live: from each partition's summaries to every customer's figures

def _cohorts(boundary_day: int, seed: int) -> list[tuple[str, SummaryKey]]:
    """12 monthly cohorts of 2,000 simulated buyers each, as the worker's
    index holds them at the boundary: (repeats, first and last order's day)."""
    out = []
    for k in range(12):
        observed = 365 - 30 * k
        d = simulate(TRUTH, customers=2000, observe_days=observed, seed=seed + k)
        first = boundary_day - observed
        for i in range(2000):
            out.append((f"c{k}-{i}", (int(d["x"][i]), first, first + int(d["t_x"][i]))))
    return out


def _fit_through_reports(buyers, partitions: int, boundary_ms: int):
    rules = load_rules().model_copy(update={"scores": load_rules().scores.model_copy(update={"churn_model": True})})
    indexes = [PopulationIndex() for _ in range(partitions)]
    for n, (user, key) in enumerate(buyers):
        indexes[n % partitions].update_summary(user, key)
    reports = population_reports(partitions, rules)
    settled = []
    for p, index in enumerate(indexes):
        settled += reports.add(snapshot_doc(p, boundary_ms, index, rules.scores.churn_fit_days * DAY_MS))
    [(boundary, cuts)] = settled
    assert boundary == boundary_ms
    return cuts.churn


def test_the_live_fit_from_the_partitions_reports_recovers_each_parameter_within_10_percent():
    boundary_day = 20_000 - 20_000 % 7  # a fit boundary (weekly from the epoch)
    buyers = _cohorts(boundary_day, seed=100)
    fitted = _fit_through_reports(buyers, 3, boundary_day * DAY_MS)
    assert fitted.customers == 24_000
    for name, want in TRUTH.as_dict().items():
        assert abs(fitted.params.as_dict()[name] / want - 1) <= 0.10, (name, fitted)
    # Bounded: the reports hold bins, not customers.
    index = PopulationIndex()
    for user, key in buyers:
        index.update_summary(user, key)
    assert len(summary_bins(index.summary_counts, boundary_day * DAY_MS)) < 24_000 / 5
    # However the buyers are split over partitions, the same merged bins
    # and so exactly the same parameters (what lets every worker agree).
    assert _fit_through_reports(buyers, 1, boundary_day * DAY_MS) == fitted


def test_each_customer_s_figures_follow_the_model():
    fitted = Fitted(0, 1000, TRUTH, horizon_days=90)
    day = DAY_MS
    # The worked example: first order on day 0, two repeats, the last on day 120, now day 365.
    alive, expected = customer_figures(fitted, 3, 0, 120 * day, 365 * day)
    assert (alive, expected) == (0.326, 0.1706)  # docs/scores.md: 0.326 and 0.171
    assert alive == round(float(p_alive(TRUTH, 2, 120, 365)), 4)
    assert expected == round(float(expected_purchases(TRUTH, 90, 2, 120, 365)), 4)
    # A one-time buyer fades as time passes.
    fading = [customer_figures(fitted, 1, 0, 0, t * day)[0] for t in (1, 30, 180, 365)]
    assert fading == sorted(fading, reverse=True) and fading[-1] < 0.6
    assert summary_key(0, None, None) is None and summary_key(3, 5 * day, 9 * day) == (2, 5, 9)


def test_the_crossing_time_is_when_p_alive_passes_the_limit():
    rng = np.random.default_rng(5)
    fitted = Fitted(0, 1000, Params(r=0.25, alpha=4.0, a=0.8, b=2.5))
    for _ in range(500):
        orders = int(rng.integers(1, 12))
        first = int(rng.integers(0, 400 * DAY_MS))
        last = first + (int(rng.integers(0, 300 * DAY_MS)) if orders > 1 else 0)
        limit = float(rng.uniform(0.02, 0.98))
        t = alive_crossing_ms(fitted, orders, first, last, limit)
        if t == NEVER_MS:  # beyond 35,000 years: no wake-up
            assert alive_probability(fitted, orders, first, last, NEVER_MS) >= limit
        elif t > last:  # still above the limit right after the last order: it crosses while silent
            assert alive_probability(fitted, orders, first, last, t) < limit
            hair = 3 + int((t - first) * 2e-9)  # how far past the exact moment it may be
            assert alive_probability(fitted, orders, first, last, t - hair) >= limit
        else:
            assert alive_probability(fitted, orders, first, last, last) < limit


def test_a_refit_wakes_every_buyer_whose_side_of_a_limit_it_may_change_in_time():
    """refit_wake works on summaries known to the day; checked here against
    each buyer's exact crossing times under both fits."""
    rng = np.random.default_rng(11)
    limits = (0.1, 0.5)
    checked = flipped = 0
    for _ in range(300):
        before, after = (Fitted(0, 1000, Params(r=float(rng.uniform(0.1, 2)), alpha=float(rng.uniform(1, 30)),
                                                a=float(rng.uniform(0.2, 3)), b=float(rng.uniform(0.5, 8))))
                         for _ in range(2))
        x = int(rng.integers(0, 8))
        first_day = int(rng.integers(0, 300))
        last_day = first_day + (int(rng.integers(0, 200)) if x else 0)
        boundary = (last_day + int(rng.integers(0, 400))) * DAY_MS
        wake = refit_wake(before, after, (x, first_day, last_day), limits, boundary)
        for _ in range(20):
            first = first_day * DAY_MS + int(rng.integers(0, DAY_MS))
            last = max(first, last_day * DAY_MS + int(rng.integers(0, DAY_MS))) if x else first
            for limit in limits:
                old = alive_crossing_ms(before, x + 1, first, last, limit)
                new = alive_crossing_ms(after, x + 1, first, last, limit)
                checked += 1
                if (old <= boundary) != (new <= boundary):  # the refit alone moves them across
                    flipped += 1
                    assert wake == boundary
                if new > boundary:  # they will cross later: woken no later than that
                    assert wake is not None and boundary <= wake <= new
    assert checked == 12_000 and flipped > 500
    # The first fit: no P(alive) before it, so every buyer is re-evaluated.
    assert refit_wake(None, after, (0, 1, 1), limits, 5 * DAY_MS) == 5 * DAY_MS


def test_extreme_buyers_get_figures_not_a_float_overflow():
    # A buyer with thousands of orders, silent for years, raises a ratio to
    # a power in the thousands; a tiny r puts a crossing past any float.
    heavy = Fitted(0, 1000, Params(r=0.25, alpha=4.0, a=0.8, b=2.5))
    first, last, now = 0, 400 * DAY_MS, 4000 * DAY_MS
    alive, expected = customer_figures(heavy, 3000, first, last, now)
    assert alive == 0.0 and (expected is None or expected >= 0)
    assert alive_probability(heavy, 3000, first, last, now) == pytest.approx(0.0)
    assert alive_crossing_ms(heavy, 3000, first, last, 0.5) < now
    faint = Fitted(0, 1000, Params(r=0.001, alpha=4.0, a=0.01, b=50.0))
    assert alive_crossing_ms(faint, 1, first, first, 0.01) == NEVER_MS
    assert refit_wake(faint, faint, (0, 0, 0), (0.01,), 10 * DAY_MS) is None
