"""Snapshot rows from states, with the worker's own `advance`. No broker."""

import copy

import pytest

from bench import workload
from cli.snapshot import SnapshotError, snapshot_rows
from state.model import DAY_MS
from tests.support.engine import feed
from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()


def test_snapshot_ages_users_to_the_as_of_time_exactly_like_the_worker():
    bodies = sorted(workload.history(users=40, events=800, days=200, seed=3), key=lambda b: b["ts"])
    end = max(b["ts"] for b in bodies)
    cut = workload.START_MS + 120 * DAY_MS
    # The worker fed up to the cut, then snapshot at the cut ...
    p_cut, _ = feed([b for b in bodies if b["ts"] <= cut], lateness=DAY_MS)
    at_cut = snapshot_rows(copy.deepcopy(dict(p_cut.users)), cut, RULES)
    # ... equals the worker fed up to the cut then aged by the watermark alone.
    p_aged, _ = feed([b for b in bodies if b["ts"] <= cut] +
                     [{"event_id": "tick", "user_id": "zz-clock", "type": "login", "ts": cut + DAY_MS}], lateness=DAY_MS)
    aged = {u: s for u, s in p_aged.users.items() if u != "zz-clock"}
    for row in at_cut:
        state = aged[row["user_id"]]
        assert (row["tier"], row["stage"]) == (state.tier, state.stage), row["user_id"]
    assert len(at_cut) == 40 and end > cut


def test_snapshot_refuses_to_rewind():
    bodies = sorted(workload.history(users=5, events=50, days=100, seed=4), key=lambda b: b["ts"])
    p, _ = feed(bodies)
    with pytest.raises(SnapshotError, match="cannot be rewound"):
        snapshot_rows(dict(p.users), workload.START_MS + DAY_MS, RULES)


async def test_a_snapshot_waits_for_the_cut_points_in_force_then_refuses_naming_the_partitions_behind(monkeypatch):
    """With quantile scores, evaluating with whatever had settled (older
    cuts, an older churn fit) gave other scores than the workers and than
    another snapshot of the same history: the cut points in force at the
    snapshot time must be settled first."""
    import cli.snapshot as snap
    from state.quantiles import PopulationIndex, empty_doc, population_reports, snapshot_doc, ThresholdBook
    from state.rules import parse_rules, population_rules_text
    from stream.settings import Settings

    rules = parse_rules(population_rules_text())
    settings = Settings(partitions=2)
    day = 20_000 * DAY_MS
    index = PopulationIndex()
    index.update("a", (19_990, 2, 100))
    docs = [snapshot_doc(0, day, index), empty_doc(1, day + 1), snapshot_doc(0, day + DAY_MS, index)]
    reads = {"n": 0}

    async def read_population(_settings, _rules):
        # Partition 1 reports on the second boundary only from the third read on.
        reads["n"] += 1
        reports, book = population_reports(2, rules), ThresholdBook(rules.cadence_ms)
        for doc in docs + ([snapshot_doc(1, day + DAY_MS, PopulationIndex())] if reads["n"] >= 3 else []):
            for boundary, cuts in reports.add(doc):
                book.settle(boundary, cuts)
        return rules.with_thresholds(book), reports

    monkeypatch.setattr(snap, "read_population", read_population)
    at = day + 2 * DAY_MS + 5  # the cuts of day + 1 are in force then
    assert snap.cuts_needed(at, rules) == day + DAY_MS
    with pytest.raises(SnapshotError, match=r"not settled yet.*\{1: '") as refused:
        await snap.with_settled_population(settings, rules, at, wait=None)
    assert "--wait" in str(refused.value)
    settled = await snap.with_settled_population(settings, rules, at, wait=30)
    assert settled.thresholds.settled(day + DAY_MS) and reads["n"] == 3
    # An earlier time, whose cuts are settled, needs no wait.
    assert (await snap.with_settled_population(settings, rules, day + DAY_MS + 5, wait=None)).thresholds is not None
