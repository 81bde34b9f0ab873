"""MBG/NBD: the fit recovers known parameters from simulated histories, its
predictions track the simulated future, and one-time buyers are not
assumed alive forever (BG/NBD's flaw)."""

import numpy as np
import pytest

from state.churn_model import Params, expected_purchases, fit, log_likelihood, p_alive, simulate

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
