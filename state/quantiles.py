"""Scores from the population's own distribution (pure): recency,
frequency and monetary scored by the population's quantiles, not by fixed
amounts, so a shop selling $15 items gets as meaningful tiers as one
selling $2,000 ones.

How the cut points are kept (docs/scores.md has the whole story):
- Each partition keeps a `PopulationIndex`: every customer's bins, with the
  users in each bin. Frequency bins are order counts; monetary bins are
  fixed and log-spaced (MONEY_BINS_PER_DECADE per power of ten, so ~6%
  wide); recency is kept as the day of the last order. Memory is bounded
  by the bins, plus one entry per customer for the re-assessment.
- At every cadence boundary B of event time (daily by default) each
  partition publishes its histograms as they stand after every step
  before B. Merged over all partitions they are the whole population's
  distribution at B; `compute_cuts` turns it into `Cuts`, which are in
  force for event times [B + cadence, B + 2 cadence). Every worker merges
  the same records, so every worker applies the same cuts at the same
  event time, in a replay as live.
- Ties: a cut may fall inside a bin (many customers with exactly one
  order). By default equal figures get equal scores: the cut is the bin's
  value and, as in pandas' right-closed `cut`, a customer whose figure
  equals it falls below it (score = 1 + the cuts strictly below the
  figure). A tie-heavy dimension then gives scores unequal shares, some
  none. With `split_ties` (an option of the rules) the cut is (bin, share):
  of that bin's customers, those whose `tiebreak` (a stable hash of the
  user id) is below `share` fall below it, so each score gets its share
  however the values tie. Recency is in whole days and never split: a
  customer whose days since their last order equal a limit takes the
  higher (more recent) score.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

from state.churn_model import Fitted, SummaryKey, fit_bins, summary_bins
from state.model import DAY_MS

DIMENSIONS = ("r", "f", "m")
MONEY_BINS_PER_DECADE = 40
MAX_ORDERS_BIN = 100_000

Histogram = dict[int, int]  # bin -> customers


@lru_cache(maxsize=1 << 18)  # every evaluation of a customer asks again
def tiebreak(user_id: str) -> float:
    """A fraction in [0, 1) fixed for the user: the same in every process
    and replay (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def f_bin(orders: int) -> int | None:
    return min(orders, MAX_ORDERS_BIN) if orders > 0 else None


def m_bin(cents: int) -> int | None:
    return math.floor(MONEY_BINS_PER_DECADE * math.log10(cents)) if cents > 0 else None


def m_bin_floor(b: int) -> float:
    """The smallest amount (currency units) in monetary bin `b`."""
    return 10 ** (b / MONEY_BINS_PER_DECADE) / 100


def r_day(last_order_ms: int | None) -> int | None:
    """The last order's day, rounded up: recency in whole days at a
    midnight B is then exactly B's day minus this."""
    return None if last_order_ms is None else -(-last_order_ms // DAY_MS)


Key = tuple[int | None, int | None, int | None]  # (r_day, f_bin, m_bin)


@dataclass(frozen=True, slots=True)
class Cut:
    bin: int
    share: float  # of `bin`'s customers, those with tiebreak < share are below the cut

    def below(self, b: int, tb: float) -> bool:
        return b < self.bin or (b == self.bin and tb < self.share)


@dataclass(frozen=True)
class Cuts:
    """The cut points in force for event times [in_force_ms, in_force_ms + cadence)."""

    as_of_ms: int  # the boundary whose population they come from
    in_force_ms: int
    customers: dict[str, int]  # per dimension: how many were scored against
    r: tuple[int, ...] | None  # recency days: score 5 at most r[0], 4 at most r[1], ...
    f: tuple[Cut, ...] | None  # ascending: at or above f[j] (and not below) scores 2 + j or more
    m: tuple[Cut, ...] | None
    churn: Fitted | None = None  # the churn model's latest fit (state.churn_model), when the rules ask for it

    def score_r(self, recency_days: int) -> int:
        assert self.r is not None
        for i, limit in enumerate(self.r):
            if recency_days <= limit:
                return 5 - i
        return 1

    @staticmethod
    def _score(cuts: tuple[Cut, ...], b: int, tb: float) -> int:
        score = 1
        for cut in cuts:
            if cut.below(b, tb):
                break
            score += 1
        return score

    def score_f(self, orders: int, tb: float) -> int:
        assert self.f is not None
        b = f_bin(orders)
        return 1 if b is None else self._score(self.f, b, tb)

    def score_m(self, cents: int, tb: float) -> int:
        assert self.m is not None
        b = m_bin(cents)
        return 1 if b is None else self._score(self.m, b, tb)

    def summary(self) -> dict:
        """What a tier change record and the API show: built once per set of
        cuts (every tier change of a period carries it), shared, read-only."""
        return self._summary

    @cached_property
    def _summary(self) -> dict:
        out: dict = {"as_of_ms": self.as_of_ms, "in_force_ms": self.in_force_ms, "customers": self.customers}
        if self.r is not None:
            out["recency_days"] = list(self.r)
        if self.f is not None:
            out["frequency_orders"] = [[c.bin, round(c.share, 4)] for c in self.f]
        if self.m is not None:
            out["monetary"] = [[round(m_bin_floor(c.bin), 2), round(c.share, 4)] for c in self.m]
        if self.churn is not None:
            out["churn_model"] = self.churn.summary()
        return out


def split_cuts(hist: Mapping[int, int], points: Iterable[float], split_ties: bool = False) -> tuple[Cut, ...] | None:
    """Ascending cuts at the given population shares (0 < p < 1), e.g.
    quintiles 0.2, 0.4, 0.6, 0.8: the p-th cut is the bin where the share p
    of customers is reached. A customer in that bin falls below the cut
    (right-closed, as pandas' `cut`), unless `split_ties`, where just enough
    of the bin's customers (by `tiebreak`) fall below it to make the share p
    exact. None for an empty population."""
    total = sum(hist.values())
    if total == 0:
        return None
    bins = sorted(b for b, n in hist.items() if n > 0)
    out = []
    for p in points:
        target = p * total
        below = 0
        for b in bins:
            n = hist[b]
            if below + n >= target:
                out.append(Cut(b, (target - below) / n if split_ties else 1.0))
                break
            below += n
        else:  # p == 1 within rounding: everyone below
            out.append(Cut(bins[-1], 1.0))
    return tuple(out)


def recency_limits(days_hist: Mapping[int, int], points: Iterable[float]) -> tuple[int, ...] | None:
    """Recency limits (days) for scores 5, 4, 3, 2: the most recent share
    1 - p_top of customers scores 5, and so on. Whole days: the limit is the
    day whose cumulative share is nearest the target (a day's customers are
    not split)."""
    total = sum(days_hist.values())
    if total == 0:
        return None
    days = sorted(days_hist)
    out = []
    for p in sorted(points, reverse=True):  # score 5 is the most recent 1 - p_max
        target = (1 - p) * total
        cum, best, best_gap = 0, days[0], math.inf
        for d in days:
            cum += days_hist[d]
            gap = abs(cum - target)
            if gap < best_gap:
                best, best_gap = d, gap
        out.append(best)
    # A limit never goes below the previous one (scores are ordered).
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    return tuple(out)


def compute_cuts(merged: Mapping[str, Mapping[int, int]], boundary_ms: int, cadence_ms: int,
                 points: tuple[float, ...], dims: Iterable[str], split_ties: bool = False) -> Cuts:
    """The population's cuts at `boundary_ms`, from every partition's
    histograms merged. Deterministic: the same histograms give the same cuts."""
    dims = set(dims)
    day = boundary_ms // DAY_MS
    recency = {day - d: n for d, n in merged.get("r", {}).items() if n > 0}
    return Cuts(
        as_of_ms=boundary_ms,
        in_force_ms=boundary_ms + cadence_ms,
        customers={d: sum(merged.get(d, {}).values()) for d in sorted(dims)},
        r=recency_limits(recency, points) if "r" in dims else None,
        f=split_cuts(merged.get("f", {}), points, split_ties) if "f" in dims else None,
        m=split_cuts(merged.get("m", {}), points, split_ties) if "m" in dims else None,
    )


def merge(histograms: Iterable[Mapping[str, Mapping[int, int]]]) -> dict[str, Histogram]:
    out: dict[str, Histogram] = {d: {} for d in DIMENSIONS}
    for h in histograms:
        for dim, bins in h.items():
            target = out.setdefault(dim, {})
            for b, n in bins.items():
                target[b] = target.get(b, 0) + n
    return out


@dataclass
class PopulationIndex:
    """One partition's customers by bin: the histograms, and who is in
    each bin (to find the customers a changed cut moves, without a scan)."""

    key_of: dict[str, Key] = field(default_factory=dict)
    bins: dict[str, dict[int, set[str]]] = field(default_factory=lambda: {d: {} for d in DIMENSIONS})
    tiebreaks: dict[str, float] = field(default_factory=dict)  # cached: a moved cut compares many
    # The churn model's summaries: each buyer's (repeats, first and last
    # order's day), and how many buyers share each.
    summary_of: dict[str, SummaryKey] = field(default_factory=dict)
    summary_counts: dict[SummaryKey, int] = field(default_factory=dict)

    def update_summary(self, user_id: str, key: SummaryKey | None) -> None:
        old = self.summary_of.get(user_id)
        if old == key:
            return
        counts = self.summary_counts
        if old is not None:
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
        if key is None:
            del self.summary_of[user_id]
        else:
            self.summary_of[user_id] = key
            counts[key] = counts.get(key, 0) + 1

    def update(self, user_id: str, key: Key) -> None:
        old = self.key_of.get(user_id)
        if old == key:
            return
        for dim, before, after in zip(DIMENSIONS, old or (None, None, None), key, strict=True):
            if before == after:
                continue
            table = self.bins[dim]
            if before is not None:
                members = table[before]
                members.discard(user_id)
                if not members:
                    del table[before]
            if after is not None:
                table.setdefault(after, set()).add(user_id)
        if key == (None, None, None):
            self.key_of.pop(user_id, None)
            self.tiebreaks.pop(user_id, None)
        else:
            self.key_of[user_id] = key
            if user_id not in self.tiebreaks:
                self.tiebreaks[user_id] = tiebreak(user_id)

    def histograms(self) -> dict[str, list[list[int]]]:
        """Each dimension's [bin, customers] pairs, by bin (built in one
        pass: a report a day per partition lists every bin)."""
        return {dim: [[b, len(users)] for b, users in sorted(table.items())] for dim, table in self.bins.items()}

    def moved(self, dim: str, old: Cut, new: Cut) -> list[str]:
        """The customers on different sides of two cuts: those in the bins
        between them, and in a tie bin only those whose tiebreak lies
        between the two shares."""
        found: list[str] = []
        table = self.bins[dim]
        lo, hi = min(old.bin, new.bin), max(old.bin, new.bin)
        for b in range(lo, hi + 1):
            members = table.get(b)
            if not members:
                continue
            if lo < b < hi:  # wholly between the two: every one of them moved
                found.extend(members)
                continue
            tbs = self.tiebreaks
            found.extend(u for u in members if old.below(b, tbs[u]) != new.below(b, tbs[u]))
        return found

    def users(self, dim: str, lo: int, hi: int) -> list[str]:
        """The customers with a `dim` bin in [lo, hi], in a stable order."""
        table = self.bins[dim]
        if hi - lo > len(table):
            found = [u for b, users in table.items() if lo <= b <= hi for u in users]
        else:
            found = [u for b in range(lo, hi + 1) for u in table.get(b, ())]
        return sorted(found)


class ThresholdBook:
    """The cuts every worker agrees on, by the boundary they come from.
    `settled(B)` once every partition has reported on B (cuts computed, or
    no customers anywhere yet); evaluations at t use the cuts of the latest
    settled boundary at or before t - cadence, or the rules' fixed
    thresholds when there is none yet."""

    def __init__(self, cadence_ms: int) -> None:
        self.cadence_ms = cadence_ms
        self._by_boundary: dict[int, Cuts | None] = {}
        self._latest: int | None = None  # the latest settled boundary (they settle in order)
        self._boundaries: list[int] = []  # of the settled boundaries that have cuts, ascending
        self._cuts: list[Cuts] = []

    def settle(self, boundary_ms: int, cuts: Cuts | None) -> None:
        if boundary_ms in self._by_boundary:
            return
        self._by_boundary[boundary_ms] = cuts
        if self._latest is None or boundary_ms > self._latest:
            self._latest = boundary_ms
        if cuts is not None:
            i = bisect.bisect(self._boundaries, boundary_ms)
            self._boundaries.insert(i, boundary_ms)
            self._cuts.insert(i, cuts)

    def settled(self, boundary_ms: int) -> bool:
        return self._latest is not None and boundary_ms <= self._latest

    @property
    def latest_settled(self) -> int | None:
        return self._latest

    def at(self, t_ms: int) -> Cuts | None:
        """The cuts in force at event time t."""
        i = bisect.bisect_right(self._boundaries, t_ms - self.cadence_ms)
        return self._cuts[i - 1] if i else None

    def latest(self) -> Cuts | None:
        return self._cuts[-1] if self._cuts else None


def boundary_at_or_before(t_ms: int, cadence_ms: int) -> int:
    return t_ms // cadence_ms * cadence_ms


def snapshot_doc(partition: int, boundary_ms: int, index: PopulationIndex, churn_fit_ms: int | None = None) -> dict:
    """A partition's report at a boundary: its histograms after every step
    before it; on the churn model's fit boundaries, also the buyers'
    (x, t_x, T) summaries (`s`)."""
    h: dict[str, Any] = index.histograms()
    if churn_fit_ms and boundary_ms % churn_fit_ms == 0:
        h["s"] = sorted([b, n] for b, n in summary_bins(index.summary_counts, boundary_ms).items())
    return {"p": partition, "b": boundary_ms, "h": h}


def empty_doc(partition: int, through_ms: int) -> dict:
    """A partition's first report: it had no customer at any boundary up to
    `through_ms` (its first watermark: anything older arriving later is a
    correction, applied after that)."""
    return {"p": partition, "empty_through": through_ms}


class PopulationReports:
    """Every partition's reports in; the boundaries they settle out, with
    their cuts. Pure: the worker's consumer only moves bytes, and a replay
    of the same reports settles the same cuts. A partition's later report
    on a boundary it already reported (after a crash) is ignored: the first
    is the one made before any step past the boundary."""

    def __init__(self, partitions: int, cadence_ms: int, points: tuple[float, ...], dims: Iterable[str],
                 churn_fit_ms: int | None = None, churn_horizon_days: int = 90, split_ties: bool = False) -> None:
        self.partitions = partitions
        self.split_ties = split_ties
        self.cadence_ms = cadence_ms
        self.points = points
        self.dims = tuple(dims)
        self.churn_fit_ms = churn_fit_ms
        self.churn_horizon_days = churn_horizon_days
        self.fitted: Fitted | None = None  # the churn model's latest fit; each fit starts from the last
        self.through: dict[int, int] = {}  # partition -> latest boundary it reported on
        self.pending: dict[int, dict[int, dict[str, Histogram]]] = {}  # boundary -> partition -> histograms
        self.next_boundary: int | None = None  # the earliest boundary not settled yet

    def add(self, doc: Mapping) -> list[tuple[int, Cuts | None]]:
        if "rollout" in doc or "withdraw" in doc:
            return []  # a partition's report on a rules roll-out, or a withdrawal (state.rollout), not a population
        p = int(doc["p"])
        if "empty_through" in doc:
            if p in self.through:
                # A first report again (from a worker that recovered none of
                # the partition's states): only the first came before the
                # partition's first step; a later watermark in this one would
                # mark periods empty that the partition never reported on.
                return []
            reported = boundary_at_or_before(int(doc["empty_through"]), self.cadence_ms)
        else:
            reported = int(doc["b"])
            if self.next_boundary is None or reported >= self.next_boundary:
                self.pending.setdefault(reported, {}).setdefault(
                    p, {dim: {int(b): int(n) for b, n in pairs} for dim, pairs in doc["h"].items()})
        if reported > self.through.get(p, reported - 1):
            self.through[p] = reported
        return self._settle()

    def may_fit(self, docs: Iterable[Mapping]) -> bool:
        """Whether adding `docs` may settle a churn-model fit boundary (a
        fit takes 0.1-0.3 s; settling any other boundary, well under a
        millisecond). Errs towards yes."""
        if not self.churn_fit_ms:
            return False
        if self.next_boundary is None:
            return True
        next_fit = -(-self.next_boundary // self.churn_fit_ms) * self.churn_fit_ms
        for doc in docs:
            if "b" in doc:
                reported = int(doc["b"])
            elif "empty_through" in doc:
                reported = boundary_at_or_before(int(doc["empty_through"]), self.cadence_ms)
            else:
                continue
            if reported >= next_fit:
                return True
        return False

    def follow_target(self, partition: int) -> int | None:
        """The boundary an idle partition is moved on to (replay clock): the
        furthest any other partition has reported on. Idle partitions follow
        the busy ones and never lead: with none busy, nothing moves."""
        others = [b for p, b in self.through.items() if p != partition]
        return max(others) if others else None

    def _settle(self) -> list[tuple[int, Cuts | None]]:
        if len(self.through) < self.partitions:
            return []
        low = min(self.through.values())
        if self.next_boundary is None:
            self.next_boundary = min([*self.through.values(), *self.pending])
        out = []
        while self.next_boundary <= low:
            b = self.next_boundary
            merged = merge(self.pending.pop(b, {}).values())
            cuts = compute_cuts(merged, b, self.cadence_ms, self.points, self.dims, self.split_ties)
            if self.churn_fit_ms and b % self.churn_fit_ms == 0:
                bins = merged.get("s", {})
                start = self.fitted.params if self.fitted is not None else None
                params = fit_bins(bins, start)
                if params is not None:
                    self.fitted = Fitted(b, sum(bins.values()), params, self.churn_horizon_days)
            if self.fitted is not None:
                cuts = replace(cuts, churn=self.fitted)
            out.append((b, cuts if any(cuts.customers.values()) or cuts.churn is not None else None))
            self.next_boundary = b + self.cadence_ms
        return out


def thresholds_doc(rules: Any, book: ThresholdBook | None) -> dict:
    """What GET /v1/scores/thresholds serves: the configuration and the
    latest settled cut points (in force from their `in_force_ms`)."""
    latest = book.latest() if book is not None else None
    s = rules.scores
    return {
        "quantiles": list(s.quantiles),
        "cut_points": list(s.cut_points),
        "split_ties": s.split_ties,
        "cadence_days": s.cadence_days,
        "churn_model": s.churn_model,
        "churn_fit_days": s.churn_fit_days,
        "churn_horizon_days": s.churn_horizon_days,
        "fixed": {"recency_days": s.recency_days, "frequency_orders": s.frequency_orders, "monetary": s.monetary},
        "latest": latest.summary() if latest is not None else None,
    }


def population_reports(partitions: int, rules: Any) -> PopulationReports:
    """The reports reader the rules ask for (quantile dimensions, churn fits)."""
    sc = rules.scores
    return PopulationReports(partitions, rules.cadence_ms, tuple(sc.cut_points), sc.quantiles,
                             sc.churn_fit_days * DAY_MS if sc.churn_model else None, sc.churn_horizon_days,
                             sc.split_ties)
