"""A rules roll-out: when a new configuration comes into force, decided
alike by every worker, at one event time for every partition.

`tierstream rules apply` puts a proposal on the config topic: a new
document, and optionally the event time it should be in force from. Each
partition, when its worker learns of the proposal, reports its watermark
on the population topic and holds its watermark there (it decides nothing
past that point under either version) until every partition has reported.
From the reports alone, which every worker reads alike, the proposal is
settled:

- with `--at TS`: accepted if every partition reported a watermark before
  TS (none has decided anything at or past it), refused otherwise;
- without: in force from the first moment past every reported watermark,
  snapped up to the next cadence boundary when quantile scores are on
  (cut points change only on a boundary).

Each partition then sweeps up to that moment under the old version,
switches, and re-assesses every one of its users at that moment
(engine.partition). The first report of a partition on a proposal is the
one that counts, as for population reports: a recovered worker that
reports again cannot move the outcome.

A proposal some partition never answers (its worker down, an old worker
that does not know roll-outs) would hold every partition for ever, so it
can be withdrawn (`tierstream rules withdraw`): a withdrawal record goes
after the reports in each partition's stream of reports, and a proposal
is refused as withdrawn if the withdrawal comes first in any partition's
stream. Every worker reads each stream in order, so every worker decides
alike. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from state.config import flat_toml

# What a live roll-out may not change: how a user's state is kept (the
# window's buckets, the duplicate memory), how scores are computed from the
# population (every worker's reports would have to be cut alike under both
# versions), and the metrics' calendar (cells already booked by period).
FIXED_SECTIONS = ("window", "dedup", "scores", "metrics")


def fixed_changes(old_rules_text: str, new_rules_text: str) -> list[str]:
    """The keys of FIXED_SECTIONS that differ between two rules texts."""
    before, after = flat_toml(old_rules_text), flat_toml(new_rules_text)
    out = []
    for key in sorted(before.keys() | after.keys()):
        if key.split(".", 1)[0] in FIXED_SECTIONS and before.get(key) != after.get(key):
            out.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a proposal: in force from `from_ms`, or refused."""

    key: str
    version: str
    from_ms: int | None  # None: refused
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.from_ms is not None


@dataclass(slots=True)
class Proposal:
    key: str  # the proposal's name: its version at its offset on the config topic (a version may come back)
    version: str
    at_ms: int | None  # None: as soon as every partition can
    reports: dict[int, int] = field(default_factory=dict)  # partition -> watermark, first report each
    withdrawn: set[int] = field(default_factory=set)  # partitions whose stream had the withdrawal first
    withdrawn_by: str = ""
    outcome: Outcome | None = None


class RolloutBook:
    """Every proposal, the partitions' reports on it and its outcome, in
    the order proposed. `cadence_ms`: quantile scores' cadence (outcomes
    snap to its boundaries), None without them.

    One proposal is open at a time: the earliest not settled. Partitions
    report on it alone, so a later proposal is judged only once the ones
    before it are settled, whatever order a reader meets the config and
    population topics in: every worker settles the same outcomes."""

    def __init__(self, partitions: int, cadence_ms: int | None) -> None:
        self.partitions = partitions
        self.cadence_ms = cadence_ms
        self.proposals: dict[str, Proposal] = {}
        # Reports (and withdrawals: watermark None, and who) read before
        # their proposal (two topics, read side by side).
        self.early: dict[str, list[tuple[int, int | None, str]]] = {}

    def propose(self, key: str, version: str, at_ms: int | None) -> list[Outcome]:
        """A proposal read from the config topic (again: ignored); the
        outcomes it settles."""
        if key in self.proposals:
            return []
        p = self.proposals[key] = Proposal(key, version, at_ms)
        if at_ms is not None and self.cadence_ms is not None and at_ms % self.cadence_ms:
            p.outcome = Outcome(key, version, None, "with quantile scores a version comes into force on a "
                                                    "cadence boundary")
            return [p.outcome]
        for partition, watermark, by in self.early.pop(key, []):
            self._add(p, partition, watermark, by)
        return self._settle_ready()

    def _add(self, p: Proposal, partition: int, watermark: int | None, by: str) -> None:
        if partition in p.reports or partition in p.withdrawn:
            return  # the first in the partition's stream counts
        if watermark is None:
            p.withdrawn.add(partition)
            p.withdrawn_by = p.withdrawn_by or by
        else:
            p.reports[partition] = watermark

    def pending(self) -> Proposal | None:
        """The open proposal, if any: the earliest not settled."""
        for p in self.proposals.values():
            if p.outcome is None:
                return p
        return None

    def latest_from(self) -> int:
        return max((p.outcome.from_ms for p in self.proposals.values()
                    if p.outcome is not None and p.outcome.from_ms is not None), default=-(1 << 62))

    def report(self, key: str, partition: int, watermark: int) -> list[Outcome]:
        """A partition's watermark when it learnt of the proposal `key`
        (its first report counts); the outcomes that settles."""
        p = self.proposals.get(key)
        if p is None:
            self.early.setdefault(key, []).append((partition, watermark, ""))
            return []
        if p.outcome is not None:
            return []
        self._add(p, partition, watermark, "")
        return self._settle_ready()

    def withdraw(self, key: str, partitions: set[int], by: str) -> list[Outcome]:
        """A withdrawal read in the report streams of `partitions` (one
        population partition's sources); the outcomes that settles."""
        p = self.proposals.get(key)
        if p is None:
            self.early.setdefault(key, []).extend((q, None, by) for q in sorted(partitions))
            return []
        if p.outcome is not None:
            return []
        for q in sorted(partitions):
            self._add(p, q, None, by)
        return self._settle_ready()

    def _settle_ready(self) -> list[Outcome]:
        out = []
        while (p := self.pending()) is not None and len(p.reports) + len(p.withdrawn) >= self.partitions:
            p.outcome = self._judge(p)
            out.append(p.outcome)
        return out

    def _judge(self, p: Proposal) -> Outcome:
        if p.withdrawn:
            return Outcome(p.key, p.version, None, f"withdrawn by {p.withdrawn_by or '?'} before partitions "
                                                   f"{sorted(p.withdrawn)} answered")
        latest = max(p.reports.values())
        if p.at_ms is not None:
            if p.at_ms <= self.latest_from():
                return Outcome(p.key, p.version, None, "it would come into force before the version in force did")
            if latest >= p.at_ms:
                late = sorted(q for q, w in p.reports.items() if w >= p.at_ms)
                return Outcome(p.key, p.version, None, f"partitions {late} had decided up to event time {latest} "
                                                       "already, past the time asked for")
            return Outcome(p.key, p.version, p.at_ms)
        start = max(latest + 1, self.latest_from() + 1)
        if self.cadence_ms is not None:
            start = -(-start // self.cadence_ms) * self.cadence_ms
        return Outcome(p.key, p.version, start)

    def reported(self, key: str, partition: int) -> int | None:
        p = self.proposals.get(key)
        return None if p is None else p.reports.get(partition)

    def accepted(self) -> list[Outcome]:
        """Accepted outcomes, in the order they come into force."""
        return sorted((p.outcome for p in self.proposals.values() if p.outcome is not None and p.outcome.accepted),
                      key=lambda o: o.from_ms or 0)

    def outcomes(self) -> dict[str, Outcome]:
        return {k: p.outcome for k, p in self.proposals.items() if p.outcome is not None}


def settle_history(versions: list, reports: list[tuple[str, int | set[int], int | str]], partitions: int,
                   cadence_ms: int | None) -> dict[str, Outcome]:
    """The outcome of every roll-out on the config topic (state.config.Published,
    in order) from the reports on the population topic, as every worker
    settles them: for the tools and the API. Each report is (key, partition,
    watermark); a withdrawal (key, its partitions, who). A version published
    whole starts afresh (the workers were stopped)."""
    books: list[RolloutBook] = []
    book_of: dict[str, RolloutBook] = {}
    for v in versions:
        if not v.rollout or not books:
            books.append(RolloutBook(partitions, cadence_ms))
        if v.rollout:
            books[-1].propose(v.key, v.document.version, v.rollout_at_ms)
            book_of[v.key] = books[-1]
    for key, partition, watermark in reports:
        if key not in book_of:
            continue
        if isinstance(partition, int) and isinstance(watermark, int):
            book_of[key].report(key, partition, watermark)
        else:
            book_of[key].withdraw(key, set(partition) if not isinstance(partition, int) else {partition}, str(watermark))
    return {k: o for b in books for k, o in b.outcomes().items()}
