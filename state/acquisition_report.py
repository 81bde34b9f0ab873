"""LTV against CAC: from acquisition cells and cost statements to the
figures a growth team reads (pure). docs/metrics.md, "Acquisition",
defines each; the API, `tierstream report --acquisition` and the tests all
compute through here.

Inputs:
- cells: the acquisition cohort hashes (`acq:<grain>:<label>`, fields
  `<name>|<channel>`, state.acquisition);
- spend: the cost statements in force (`<period>|<channel>` -> cents,
  stream.costs), each spread evenly over its days;
- observed_day: the first day not yet complete in event time (the day of
  the metrics' watermark): a cohort's first N days are observed once its
  last acquisition day plus N is at most this day.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from state.acquisition import AGE_CAP, UNATTRIBUTED
from state.calendar import days_in, label, month_of_day, parse_label, week_of_day

HORIZONS = (30, 90, 180, 365)  # days after acquisition the realised LTV is given at
CURVE_STEP = 7  # days between the points of a payback curve
_GRAIN_OF = (("day", re.compile(r"^\d{4}-\d{2}-\d{2}$")), ("week", re.compile(r"^\d{4}-W\d{2}$")),
             ("month", re.compile(r"^\d{4}-\d{2}$")))


def grain_of(period: str) -> str | None:
    """The grain a period label is written in: day, week, month or None."""
    return next((g for g, pattern in _GRAIN_OF if pattern.match(period)), None)


def daily(period: str, cents: int) -> dict[int, int]:
    """A statement's amount spread over its period's days (day index ->
    cents): evenly, the odd cents to the first days, so they sum to it."""
    grain = grain_of(period)
    if grain is None:
        raise ValueError(f"{period!r} is not a day, an ISO week or a month")
    days = list(days_in(grain, parse_label(grain, period)))
    share, odd = divmod(cents, len(days))
    return {d: share + (1 if i < odd else 0) for i, d in enumerate(days)}


def spend_by_cohort(spend: Mapping[str, int], grain: str) -> dict[tuple[int, str], int]:
    """(cohort index, channel) -> cents spent in the cohort's days."""
    of = week_of_day if grain == "week" else month_of_day
    out: dict[tuple[int, str], int] = defaultdict(int)
    for key, cents in spend.items():
        period, _, channel = key.partition("|")
        for day, share in daily(period, cents).items():
            out[(of(day), channel)] += share
    return dict(out)


class _Group:
    """One channel's figures over one or more cohorts."""

    def __init__(self) -> None:
        self.n = self.b = self.spend = 0
        self.revenue: dict[int, int] = defaultdict(int)  # age -> cents
        self.tiers: dict[str, int] = defaultdict(int)
        # per cohort: (observed days, customers, spend, revenue by age)
        self.cohorts: list[tuple[int, int, int, dict[int, int]]] = []

    def add(self, fields: Mapping[str, int], spend: int, observed: int) -> None:
        n, b = fields.get("n", 0), fields.get("b", 0)
        ages = {int(k[1:]): v for k, v in fields.items() if k.startswith("r")}
        self.n += n
        self.b += b
        self.spend += spend
        for age, cents in ages.items():
            self.revenue[age] += cents
        for k, v in fields.items():
            if k.startswith("t="):
                self.tiers[k[2:]] += v
        self.cohorts.append((observed, n, spend, ages))

    def within(self, days: int) -> tuple[int, int, int] | None:
        """(customers, spend, revenue in their first `days` days) over the
        cohorts observed that long; None if none is."""
        seen = [(n, s, sum(c for a, c in ages.items() if a < days))
                for observed, n, s, ages in self.cohorts if observed >= days]
        if not seen:
            return None
        return sum(x[0] for x in seen), sum(x[1] for x in seen), sum(x[2] for x in seen)

    def doc(self, tiers: Iterable[str], curve: bool) -> dict[str, Any]:
        ltv: dict[str, float | None] = {}
        ltv_cac: dict[str, float | None] = {}
        for h in HORIZONS:
            seen = self.within(h)
            n, spend, revenue = seen if seen is not None else (0, 0, 0)
            ltv[str(h)] = _money(round(revenue / n)) if n else None
            ltv_cac[str(h)] = _ratio(revenue, spend) if n and spend else None
        payback_days, points = self._payback(curve)
        out: dict[str, Any] = {
            "new_customers": self.n,
            "buyers": self.b,
            "spend": _money(self.spend),
            "cac": _money(round(self.spend / self.n)) if self.n and self.spend else None,
            "cost_per_buyer": _money(round(self.spend / self.b)) if self.b and self.spend else None,
            "revenue_to_date": _money(sum(self.revenue.values())),
            "ltv_to_date": _money(round(sum(self.revenue.values()) / self.n)) if self.n else None,
            "ltv": ltv,
            "ltv_cac": ltv_cac,
            "payback_days": payback_days,
            "payback": ("no spend" if not self.spend else "paid back" if payback_days is not None else "not yet"),
            "tiers": {t: _ratio(self.tiers.get(t, 0), self.n) if self.n else None for t in tiers},
        }
        if curve:
            out["curve"] = points
        return out

    def _payback(self, curve: bool) -> tuple[int | None, list[dict[str, Any]]]:
        """The first N (days) at which the revenue of the customers' first N
        days reaches what they cost, over the cohorts observed that long;
        and the curve's points (LTV and LTV:CAC every CURVE_STEP days)."""
        longest = min(AGE_CAP, max((o for o, *_ in self.cohorts), default=0))
        found: int | None = None
        points: list[dict[str, Any]] = []
        # Prefix sums per cohort: one pass over the ages, not one per N.
        cumulative = []
        for observed, n, spend, ages in self.cohorts:
            dense = [0] * (min(observed, AGE_CAP) + 1)
            for age, cents in ages.items():
                if age < len(dense) - 1:
                    dense[age + 1] += cents
            for i in range(1, len(dense)):
                dense[i] += dense[i - 1]
            cumulative.append((observed, n, spend, dense))
        for days in range(1, longest + 1):
            n = spend = revenue = 0
            for observed, cn, cs, dense in cumulative:
                if observed >= days:
                    n, spend, revenue = n + cn, spend + cs, revenue + dense[days]
            if found is None and spend and n and revenue >= spend:
                found = days
                if not curve:
                    break
            if curve and n and (days % CURVE_STEP == 0 or days == longest):
                points.append({"days": days, "ltv": _money(round(revenue / n)),
                               "cac": _money(round(spend / n)) if spend else None,
                               "ltv_cac": _ratio(revenue, spend) if spend else None})
        return found, points


def _money(cents: int) -> float:
    return round(cents / 100, 2)  # per-customer figures are rounded to whole cents first, as state.metrics_report


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _channel(name: str) -> str | None:
    return None if name == UNATTRIBUTED else name


def _split(fields: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """`<name>|<channel>` fields -> channel -> name -> value. Fields at zero
    are left out: a channel its customers all moved away from (a correction)
    keeps its fields in Redis, at zero, and has no row."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for k, v in fields.items():
        if v:
            name, _, channel = k.partition("|")
            out[channel][name] = v
    return out


def observed_days(grain: str, cohort: int, observed_day: int | None) -> int:
    """How many days after acquisition every customer of the cohort has
    been followed: from its last day to the first incomplete one."""
    if observed_day is None:
        return 0
    return max(0, observed_day - days_in(grain, cohort)[-1])


def by_cohort(grain: str, cohorts: list[int], cells: Mapping[str, Mapping[str, int]], spend: Mapping[str, int],
              tiers: list[str], observed_day: int | None) -> list[dict[str, Any]]:
    """One row per cohort and channel (channels with customers or spend)."""
    costs = spend_by_cohort(spend, grain)
    rows = []
    for c in cohorts:
        per_channel = _split(cells.get(f"acq:{grain}:{label(grain, c)}") or {})
        channels = set(per_channel) | {ch for (i, ch) in costs if i == c}
        observed = observed_days(grain, c, observed_day)
        for channel in sorted(channels):
            group = _Group()
            group.add(per_channel.get(channel, {}), costs.get((c, channel), 0), observed)
            rows.append({"cohort": label(grain, c), "channel": _channel(channel), "observed_days": observed,
                         **group.doc(tiers, curve=False)})
    return rows


def by_channel(grain: str, cohorts: list[int], cells: Mapping[str, Mapping[str, int]], spend: Mapping[str, int],
               tiers: list[str], observed_day: int | None) -> list[dict[str, Any]]:
    """One row per channel over the given cohorts, with its payback curve."""
    costs = spend_by_cohort(spend, grain)
    groups: dict[str, _Group] = defaultdict(_Group)
    for c in cohorts:
        per_channel = _split(cells.get(f"acq:{grain}:{label(grain, c)}") or {})
        observed = observed_days(grain, c, observed_day)
        for channel in sorted(set(per_channel) | {ch for (i, ch) in costs if i == c}):
            groups[channel].add(per_channel.get(channel, {}), costs.get((c, channel), 0), observed)
    return [{"channel": _channel(ch), **groups[ch].doc(tiers, curve=True)} for ch in sorted(groups)]
