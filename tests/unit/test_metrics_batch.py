"""The incremental metrics against an independent batch computation
(tests/metrics_batch.py), on a shop history run through the real agent
adapter without a broker. The same comparison runs on the real broker and
Redis in tests/integration/test_replay_determinism.py."""

import random

import orjson
from bench import workload
from state.calendar import parse_label
from state.metrics_report import fold, kpi_row
from state.rules import STAGES
from state.calendar import Calendar
from stream import topics
from tests.support import metrics_batch
from tests.support.engine import feed
from tests.support.fixed_rules import fixed_rules

DAY = 86_400_000
RULES = fixed_rules()


def with_late_activity(bodies: list[dict], rnd: random.Random, share: float, delay_ms: int) -> list[dict]:
    """Arrival order: event time, except a share of logins and views (never
    a user's first event) that arrive `delay_ms` late."""
    first = {}
    for b in sorted(bodies, key=lambda b: b["ts"]):
        first.setdefault(b["user_id"], b["event_id"])
    def arrival(b):
        late = b["type"] in ("login", "view") and first[b["user_id"]] != b["event_id"] and rnd.random() < share
        return b["ts"] + (delay_ms if late else 0)
    return sorted(bodies, key=arrival)


def compare(cells, months, history, changes, grains=("day", "week", "month")):
    batch = metrics_batch.compute(history, changes, RULES.tier_names, list(STAGES), RULES.metrics.conversion_days)
    checked = 0
    for (grain, period), r in batch["kpis"].items():
        got = kpi_row(grain, parse_label(grain, period), cells, months, RULES.tier_names, list(STAGES), Calendar())
        want = metrics_batch.expected_row(r, RULES.tier_names, list(STAGES))
        assert {k: got[k] for k in want} == want, (grain, period)
        checked += 1
    for (by, grain, cohort), c in batch["cohorts"].items():
        got = {k: v for k, v in cells.get(f"c:{by}:{grain}:{cohort}", {}).items() if not k.startswith("late:")}
        assert got == dict(c["active"]), (by, grain, cohort)  # late activity included: `late:` only marks it
        size_cell = "new" if by == "first_seen" else "first_orders"
        assert cells[f"{grain}:{cohort}"][size_cell] == c["size"]
    return checked


def run(bodies):
    p, _ = feed(bodies, lateness=DAY)
    cells = {}
    for steps in p.steps.values():
        for s in steps:
            fold(cells, s)
    changes = p.records(topics.TIER_CHANGES)
    months = sorted({k.split(":", 1)[1] for k in cells if k.startswith("month:")})
    return cells, months, changes


def test_incremental_metrics_match_a_batch_recomputation_with_late_events():
    """Two years, 5,000 users, refunds, silences and comebacks (the shop
    history), and 5% of logins and views arriving 5 days late (the lateness
    is 1 day): they correct their own periods, and every figure of every
    day, week and month, and every cohort cell, matches the batch."""
    late_share = 0.05
    history = workload.history(users=5000, events=50_000, days=730, seed=8)
    # A last event beyond the lateness, so the watermark passes every other
    # event; it is itself still held, so it is in no figure.
    clock = {"event_id": "clock", "user_id": "zz-clock", "type": "view", "ts": max(b["ts"] for b in history) + 2 * DAY}
    bodies = with_late_activity(history, random.Random(3), late_share, 5 * DAY) + [clock]
    cells, months, changes = run(bodies)
    assert compare(cells, months, history, changes) > 800  # every day, week and month of two years
    late = sum(h.get("late:late", 0) for k, h in cells.items() if k.startswith("day:"))
    assert late > 500  # the late events did arrive late, and are marked as corrections
