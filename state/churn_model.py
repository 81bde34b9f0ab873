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

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1


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
