"""Campaign statistics: is the treatment arm different from the holdout?

Pure functions over per-arm counts. Choices, and why:
- **Uplift interval: Newcombe's hybrid score interval** (Newcombe 1998,
  method 10) for the difference of two proportions. It combines the Wilson
  score intervals of each arm, keeps its coverage near 95% with small arms
  and rates near 0 or 1 (where the Wald interval undercovers badly), and
  needs no iteration.
- **p-value: the two-sided pooled two-proportion z-test**, the test that
  matches "no difference" as the null hypothesis.
- **Relative uplift** (treatment rate / control rate - 1) gets a delta-method
  interval on the log ratio (Katz), the standard for a risk ratio.
- **Revenue per user**: Welch's interval for the difference of two means,
  from each arm's sum and sum of squares (revenue is skewed, Welch does not
  assume equal variances).
- **Sample size still needed**: the usual normal-approximation formula for
  two proportions at the given alpha and power, for a minimum detectable
  absolute effect, against the control rate observed so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from statistics import NormalDist

_N = NormalDist()  # the standard library's normal distribution: no SciPy needed for z quantiles
Z95 = _N.inv_cdf(0.975)


@dataclass(frozen=True)
class Arm:
    assigned: int
    converted: int
    revenue: float = 0.0  # in the conversion windows
    revenue_sq: float = 0.0  # sum of squares of each user's window revenue

    @property
    def rate(self) -> float | None:
        return self.converted / self.assigned if self.assigned else None

    @property
    def revenue_per_user(self) -> float | None:
        return self.revenue / self.assigned if self.assigned else None


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(t: Arm, c: Arm, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of rate(t) - rate(c)."""
    p1, p2 = t.converted / t.assigned, c.converted / c.assigned
    l1, u1 = wilson(t.converted, t.assigned, z)
    l2, u2 = wilson(c.converted, c.assigned, z)
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lower, upper


def two_proportion_p_value(t: Arm, c: Arm) -> float:
    pooled = (t.converted + c.converted) / (t.assigned + c.assigned)
    se = math.sqrt(pooled * (1 - pooled) * (1 / t.assigned + 1 / c.assigned))
    if se == 0:
        return 1.0
    z = (t.converted / t.assigned - c.converted / c.assigned) / se
    return 2 * (1 - _N.cdf(abs(z)))


def relative_interval(t: Arm, c: Arm, z: float = Z95) -> tuple[float, float] | None:
    """Katz log interval of the rate ratio, as (ratio - 1)."""
    if not (t.converted and c.converted):
        return None
    ratio = (t.converted / t.assigned) / (c.converted / c.assigned)
    se = math.sqrt(1 / t.converted - 1 / t.assigned + 1 / c.converted - 1 / c.assigned)
    return math.exp(math.log(ratio) - z * se) - 1, math.exp(math.log(ratio) + z * se) - 1


def welch(t: Arm, c: Arm, z: float = Z95) -> tuple[float, float, float] | None:
    """Difference of revenue per user, with a normal-approximation Welch
    interval (arms are large in practice; the t quantile is ~z there)."""
    if t.assigned < 2 or c.assigned < 2:
        return None

    def mean_var(a: Arm) -> tuple[float, float]:
        mean = a.revenue / a.assigned
        var = max(0.0, (a.revenue_sq - a.assigned * mean * mean) / (a.assigned - 1))
        return mean, var

    m1, v1 = mean_var(t)
    m2, v2 = mean_var(c)
    d = m1 - m2
    se = math.sqrt(v1 / t.assigned + v2 / c.assigned)
    return d, d - z * se, d + z * se


def sample_size_per_arm(base_rate: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Users per arm to detect an absolute uplift of `effect` over `base_rate`."""
    p1, p2 = base_rate, base_rate + effect
    if not (0 < p1 < 1 and 0 < p2 < 1) or effect == 0:
        return None
    za, zb = _N.inv_cdf(1 - alpha / 2), _N.inv_cdf(power)
    p_bar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * p_bar * (1 - p_bar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / effect**2
    return math.ceil(n)


def summarize(t: Arm, c: Arm, cost_per_contact: float | None = None, value_per_conversion: float | None = None,
              min_effect: float = 0.02) -> dict:
    """Everything the campaign results page shows, for one campaign."""
    out: dict = {
        "treatment": _arm(t), "control": _arm(c),
        "uplift": None, "uplift_ci95": None, "relative_uplift": None, "relative_uplift_ci95": None,
        "p_value": None, "incremental_conversions": None, "revenue_per_user_uplift": None,
        "revenue_per_user_uplift_ci95": None, "incremental_revenue": None, "cost": None, "roi": None,
        "value_per_conversion": value_per_conversion, "roi_at_value_per_conversion": None,
        "sample_size_per_arm_needed": None, "min_effect": min_effect,
    }
    if not (t.assigned and c.assigned):
        return out
    uplift = t.converted / t.assigned - c.converted / c.assigned
    out["uplift"] = uplift
    out["uplift_ci95"] = list(newcombe(t, c))
    out["p_value"] = two_proportion_p_value(t, c)
    if c.converted:
        out["relative_uplift"] = (t.converted / t.assigned) / (c.converted / c.assigned) - 1
        rel = relative_interval(t, c)
        out["relative_uplift_ci95"] = list(rel) if rel else None
    out["incremental_conversions"] = uplift * t.assigned
    rev = welch(t, c)
    if rev is not None:
        out["revenue_per_user_uplift"] = rev[0]
        out["revenue_per_user_uplift_ci95"] = [rev[1], rev[2]]
        out["incremental_revenue"] = rev[0] * t.assigned
    if cost_per_contact:
        # One ROI, from what was measured: the incremental revenue (the
        # treatment arm's revenue per user over control's, times the
        # treated) against what contacting them cost (docs/metrics.md). The
        # configured value per conversion gives a second figure, named so;
        # mixing the two under one name once showed ROI +27% beside an
        # incremental revenue of -2,585.
        cost = cost_per_contact * t.assigned
        out["cost"] = cost
        if out["incremental_revenue"] is not None:
            out["roi"] = (out["incremental_revenue"] - cost) / cost
        if value_per_conversion is not None:
            out["roi_at_value_per_conversion"] = (out["incremental_conversions"] * value_per_conversion - cost) / cost
    base = c.converted / c.assigned
    needed = sample_size_per_arm(base, min_effect) if base > 0 else None
    out["sample_size_per_arm_needed"] = max(0, needed - min(t.assigned, c.assigned)) if needed else None
    return out


def _arm(a: Arm) -> dict:
    return {"assigned": a.assigned, "converted": a.converted, "conversion_rate": a.rate,
            "revenue": round(a.revenue, 2), "revenue_per_user": a.revenue_per_user}
