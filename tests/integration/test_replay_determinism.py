"""Replaying a two-year history: the same tiers and alerts every time, the
same as feeding it live out of order (within the allowed lateness), and the
same as the pure model computes; and a replay cut at TS snapshots exactly
the membership at TS. Each run gets fresh state: its own broker and Redis."""

import csv
import random
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from bench import workload

from cli.snapshot import snapshot_rows
from state.model import DAY_MS
from state.rules import load_rules
from stream.codecs import iso
from tests.integration.harness import Cluster, new_servers, read_topic
from tests.unit.test_event_time import feed

pytestmark = pytest.mark.integration

USERS, EVENTS, DAYS = 5000, 50_000, 730
LATENESS = DAY_MS
HISTORY = workload.history(users=USERS, events=EVENTS, days=DAYS, seed=21)
END = max(b["ts"] for b in HISTORY)
MID = workload.START_MS + 400 * DAY_MS


def write_jsonl(path: Path, bodies) -> Path:
    with path.open("wb") as f:
        for b in bodies:
            f.write(orjson.dumps(b) + b"\n")
    return path


def run(tmp: Path, name: str, send, as_of: int) -> tuple[dict, list[dict]]:
    """Fresh broker, Redis and worker; send the history; return the decision
    streams per user and the snapshot at `as_of`."""
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_ALLOWED_LATENESS_MS": str(LATENESS),
                                          "TIERSTREAM_APP_ID": f"replay-{name}"})
    try:
        cluster.start_worker()
        send(cluster)
        out = tmp / f"{name}.csv"
        cluster.cli("snapshot", "--as-of", iso(as_of), "--out", str(out), "--wait", "600", timeout=700)
        decisions = defaultdict(list)
        for topic in ("tierstream.tier-changes", "tierstream.churn-alerts"):
            import asyncio

            for record in asyncio.run(read_topic(servers.broker, topic)):
                decisions[record["user_id"]].append((topic, record))
        with out.open() as f:
            rows = list(csv.DictReader(f))
        return dict(decisions), rows
    finally:
        cluster.stop_worker()
        servers.stop()


def pure_snapshot(bodies: list[dict], as_of: int) -> list[dict]:
    """The same history through the pure core and the agent adapter, no Kafka."""
    p, _ = feed(sorted(bodies, key=lambda b: b["ts"]), lateness=LATENESS)
    rows = snapshot_rows(dict(p.store), as_of, load_rules())
    return [{k: str(v) for k, v in r.items()} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    history = write_jsonl(tmp / "history.jsonl", HISTORY)  # file order is shuffled: replay sorts
    rnd = random.Random(5)
    live_order = sorted(HISTORY, key=lambda b: b["ts"] + rnd.randrange(LATENESS))
    live = write_jsonl(tmp / "live.jsonl", live_order)

    def replay(until=None):
        args = ["replay", str(history), "--no-progress"] + (["--until", str(until)] if until else [])
        return lambda cluster: cluster.cli(*args, timeout=600)

    return {
        "first": run(tmp, "first", replay(), END),
        "second": run(tmp, "second", replay(), END),
        "live": run(tmp, "live", lambda c: c.cli("produce", str(live), timeout=600), END),
        "until": run(tmp, "until", replay(until=MID), MID),
    }


def test_history_is_big_enough():
    assert len(HISTORY) >= 50_000 and len({b["user_id"] for b in HISTORY}) == 5000
    assert END - min(b["ts"] for b in HISTORY) >= 700 * DAY_MS


def test_replaying_twice_gives_identical_streams_and_snapshots(runs):
    first, second = runs["first"], runs["second"]
    assert sum(len(v) for v in first[0].values()) > 10_000  # plenty of decisions to compare
    assert any(t == "tierstream.churn-alerts" for v in first[0].values() for t, _ in v)
    assert first[0] == second[0]  # same ids, same payloads, per user in order
    assert first[1] == second[1]


def test_live_out_of_order_feed_matches_the_replay(runs):
    decisions, rows = runs["live"]
    assert decisions == runs["first"][0]
    assert rows == runs["first"][1]


def test_the_replay_matches_the_pure_model(runs):
    assert runs["first"][1] == pure_snapshot(HISTORY, END)


def test_replay_until_then_snapshot_gives_the_membership_at_that_time(runs):
    _, rows = runs["until"]
    assert rows == pure_snapshot([b for b in HISTORY if b["ts"] <= MID], MID)
    assert len(rows) > 1000
