"""Snapshot rows from states, with the worker's own `advance`. No broker."""

import copy

import pytest

from bench import workload
from cli.snapshot import SnapshotError, snapshot_rows
from state.model import DAY_MS
from tests.unit.test_event_time import feed
from tests.fixed_rules import fixed_rules

RULES = fixed_rules()


def test_snapshot_ages_users_to_the_as_of_time_exactly_like_the_worker():
    bodies = sorted(workload.history(users=40, events=800, days=200, seed=3), key=lambda b: b["ts"])
    end = max(b["ts"] for b in bodies)
    cut = workload.START_MS + 120 * DAY_MS
    # The worker fed up to the cut, then snapshot at the cut ...
    p_cut, _ = feed([b for b in bodies if b["ts"] <= cut], lateness=DAY_MS)
    at_cut = snapshot_rows(copy.deepcopy(dict(p_cut.store)), cut, RULES)
    # ... equals the worker fed up to the cut then aged by the watermark alone.
    p_aged, _ = feed([b for b in bodies if b["ts"] <= cut] +
                     [{"event_id": "tick", "user_id": "zz-clock", "type": "login", "ts": cut + DAY_MS}], lateness=DAY_MS)
    aged = {u: s for u, s in p_aged.store.items() if u != "zz-clock"}
    for row in at_cut:
        state = aged[row["user_id"]]
        assert (row["tier"], row["stage"]) == (state.tier, state.stage), row["user_id"]
    assert len(at_cut) == 40 and end > cut


def test_snapshot_refuses_to_rewind():
    bodies = sorted(workload.history(users=5, events=50, days=100, seed=4), key=lambda b: b["ts"])
    p, _ = feed(bodies)
    with pytest.raises(SnapshotError, match="cannot be rewound"):
        snapshot_rows(dict(p.store), workload.START_MS + DAY_MS, RULES)
