"""The rules the engine-mechanics tests pin: the shipped defaults with the
fixed RFM thresholds instead of quantile scores, and without the churn
model (state.rules.fixed_threshold_rules). What those tests expect (worked
examples, batch recomputations, fault-free reference runs) is stated in
fixed thresholds, and their subject (event time, crashes, metrics,
campaigns) works alike under either scoring. The shipped defaults
themselves are run by tests/unit/test_quantiles.py,
tests/integration/test_quantile_scores.py, tests/integration/test_dev.py
and the quantile crash test in tests/integration/test_crash.py."""

from __future__ import annotations

from pathlib import Path

from state.rules import fixed_threshold_rules as fixed_rules, fixed_threshold_rules_text

__all__ = ["fixed_rules", "write_fixed_rules"]


def write_fixed_rules(directory: Path) -> Path:
    path = directory / "fixed-rules.toml"
    path.write_text(fixed_threshold_rules_text())
    return path
