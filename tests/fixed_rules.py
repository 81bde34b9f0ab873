"""The rules the engine-mechanics tests pin: the default rules, fixed RFM
thresholds and no churn model (state.rules.fixed_threshold_rules). What
those tests expect (worked examples, batch recomputations, fault-free
reference runs) is stated in fixed thresholds, so they keep them even if
the defaults change. Quantile scores and the churn model are run by
tests/unit/test_quantiles.py, tests/unit/test_churn_model.py and
tests/integration/test_quantile_scores.py."""

from __future__ import annotations

from pathlib import Path

from state.rules import fixed_threshold_rules as fixed_rules, fixed_threshold_rules_text

__all__ = ["fixed_rules", "write_fixed_rules"]


def write_fixed_rules(directory: Path) -> Path:
    path = directory / "fixed-rules.toml"
    path.write_text(fixed_threshold_rules_text())
    return path
