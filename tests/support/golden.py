"""The golden run: a fixed history through the worker's per-partition code,
every output kept, compared with the files in tests/golden/.

The refactors of the engine (issue "The engine, taken apart") promise no
behaviour change. This is the evidence: the same history, with the shipped
rules and the example campaigns, gives the same published records (ids and
payloads), the same metric facts and cells, the same closed-period figures,
the same population reports and the same final snapshot, before and after
each step. Records are compared keyed by their ids (cells by their keys),
never by offsets or by how facts were framed into records.

Two runs: one without faults, and one where the process dies part-way (as
tests.support.quantile_shop.Crash says) and a second recovers what was
durable. Both must give the one recorded outcome: the crash run's records,
deduplicated by id, are the fault-free run's, and so are its metric steps,
cells, closed periods and snapshot.

    python -m tests.support.golden --write    # after a change of behaviour on purpose; say why in the commit
    python -m tests.support.golden            # compare; prints the first differences
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import random
import sys
from pathlib import Path
from typing import Any

import orjson

from cli.snapshot import snapshot_rows
from state.calendar import Calendar
from state.campaigns import example_campaigns_text
from state.config import ConfigDocument
from state.kpis import Step
from state.metrics_report import fold, kpi_row, period_key
from state.model import DAY_MS
from state.rules import STAGES, default_rules_text
from stream import topics
from stream.codecs import decode_state
from tests.support.quantile_shop import Crash, run_shop

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
PARTITIONS = 4
USERS, EVENTS, DAYS = 2500, 25_000, 730
LATENESS_MS = 6 * 3_600_000  # shorter than the default: more events arrive later than it
CRASH = Crash(at=37, changelog_lag=2, commit_lag=1)


def rules() -> Any:
    """The shipped rules and the example campaigns, versioned as a worker
    started with those two files runs them."""
    return ConfigDocument(default_rules_text(), example_campaigns_text()).rules()


def history() -> list[dict]:
    """Two years of a shop (bench.workload: signups, visits, orders, refunds,
    quiet spells and comebacks; acquisition channels on most signups), in
    arrival order: mostly event-time order, with 4% of events arriving up to three days late (within and beyond the
    allowed lateness), 0.5% sent twice, and a few a producer gets wrong."""
    from bench.workload import CHANNELS, history as shop

    rnd = random.Random(2026)
    bodies = sorted(shop(users=USERS, events=EVENTS, days=DAYS, seed=5, channels=CHANNELS),
                    key=lambda b: (b["ts"], b["event_id"]))
    arrival = []
    for b in bodies:
        delay = rnd.uniform(0, 3 * DAY_MS) if rnd.random() < 0.04 else 0.0
        arrival.append((b["ts"] + delay, b))
        if rnd.random() < 0.005:
            arrival.append((b["ts"] + rnd.uniform(0, DAY_MS), dict(b)))  # a redelivered duplicate
    for n, (at, b) in enumerate(sorted(arrival, key=lambda x: x[0])[::997]):
        bad = dict(b, event_id=f"bad-{n}")
        if n % 3 == 0:
            bad["type"] = "teleport"
        elif n % 3 == 1:
            bad["amount"] = -5
            bad["type"] = "order"
        else:
            bad["ts"] = "yesterday"
        arrival.append((at + 1, bad))
    return [b for _, b in sorted(arrival, key=lambda x: x[0])]


def _cells(steps: dict[str, Step]) -> dict[str, dict[str, int]]:
    cells: dict[str, dict[str, int]] = {}
    for step in steps.values():
        fold(cells, step)
    return {k: {n: v for n, v in sorted(h.items()) if v} for k, h in sorted(cells.items())}


def outcome(crash: Crash | None, full: bool = False) -> dict[str, Any]:
    """One run's outputs, keyed: every record a consumer of each topic sees
    (duplicates by id folded), the metric steps and cells, the periods the
    final watermarks close, and the snapshot at the last watermark.
    `full`: payloads as they are, not their digests."""
    keep = (lambda value: value) if full else digest
    r = rules()
    bodies = history()
    pipeline, outputs = run_shop(bodies, chunk=40, partitions=PARTITIONS, seed=3, rules=r, crash=crash,
                                 lateness_ms=LATENESS_MS)
    keyed: dict[str, dict[str, Any]] = {}
    steps: dict[str, Step] = {}
    watermarks: dict[int, int] = {}
    for rec in outputs:
        doc = orjson.loads(rec.value)
        if rec.topic == topics.METRIC_FACTS:
            for user, version, facts, late in doc["steps"]:
                steps.setdefault(f"{user}@{version}", Step(user, version, facts, late))
            watermarks[doc["p"]] = max(watermarks.get(doc["p"], -1), doc["wm"])
            continue
        if rec.topic == topics.POPULATION:
            key = f"{doc['p']}@{doc['b']}" if "b" in doc else f"{doc['p']}@empty-through-{doc['empty_through']}"
        elif rec.topic == topics.DEAD_LETTERS:
            key = f"{doc['reason']}:{doc['topic']}:{doc['partition']}:{doc['offset']}"
        else:
            key = doc.get("change_id") or doc.get("alert_id") or doc.get("outcome_id") or doc.get("action_id")
            assert key, (rec.topic, doc)
        # The first record under an id is the one consumers act on; a
        # re-derived one after a crash must say the same (checked by equality).
        keyed.setdefault(rec.topic, {}).setdefault(key, doc)
    cells = _cells(steps)
    calendar = Calendar(r.metrics.timezone)
    settle = r.metrics.conversion_days * DAY_MS
    until = min(watermarks.values())
    months = sorted(k.split(":", 1)[1] for k in cells if k.startswith("month:"))
    closed = {}
    for grain in ("day", "week", "month"):
        for key in sorted(k for k in cells if k.startswith(grain + ":")):
            index = _index(calendar, grain, key)
            if calendar.end_ms(grain, index) + settle <= until:
                row = kpi_row(grain, index, cells, months, r.tier_names, list(STAGES), calendar,
                              corrected=False, settle_ms=settle)
                row.pop("closed", None)
                closed[period_key(grain, index)] = row
    last = max(b["ts"] for b in bodies if isinstance(b.get("ts"), int)) - LATENESS_MS
    states = {u: decode_state(bytes(_encoded(s))) for u, s in pipeline.store.items()}
    return {
        "records": {t: {k: keep(doc) for k, doc in sorted(v.items())} for t, v in sorted(keyed.items())},
        "metric_steps": {k: keep([s.facts, s.late]) for k, s in sorted(steps.items())},
        "cells": cells,
        "closed_periods": closed,
        "snapshot": {row["user_id"]: row for row in snapshot_rows(states, min(last, until), r)},
    }


def digest(value: Any) -> str:
    """A record's payload, canonical JSON, hashed: the golden files keep
    every record this way (their full text would be ~60 MB); `--out` writes
    the full payloads of a run for a closer look at a difference."""
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=10).hexdigest()


def _index(calendar: Calendar, grain: str, key: str) -> int:
    from state.calendar import parse_label

    return parse_label(grain, key.split(":", 1)[1])


def _encoded(state: Any) -> bytes:
    from stream.codecs import encode_state

    return encode_state(state)


PATH = GOLDEN / "outcome.json.xz"
RUNS = {"no_faults": None, "crash": CRASH}


def write() -> None:
    """Record the fault-free run's outcome (the crash run must give the same)."""
    GOLDEN.mkdir(exist_ok=True)
    data = orjson.dumps(outcome(None), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    PATH.write_bytes(lzma.compress(data, preset=9))


def expected() -> dict[str, Any]:
    return orjson.loads(lzma.decompress(PATH.read_bytes()))


def differences(want: dict[str, Any], got: dict[str, Any], limit: int = 10) -> list[str]:
    """The first `limit` keys whose values differ, as paths."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() | b.keys()):
                if k not in a or k not in b:
                    out.append(f"{path}/{k}: {'missing' if k not in b else 'unexpected'}")
                    if len(out) >= limit:
                        return
                else:
                    walk(a[k], b[k], f"{path}/{k}")
        elif a != b:
            out.append(f"{path}: expected {str(a)[:200]}, got {str(b)[:200]}")

    walk(want, got, "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the golden files from the current code")
    parser.add_argument("--out", type=Path, help="write this code's full outcomes (payloads, not digests) here")
    args = parser.parse_args()
    if args.write:
        write()
        return
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, crash in RUNS.items():
            (args.out / f"{name}.json").write_bytes(
                orjson.dumps(outcome(crash, full=True), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        return
    failed = False
    for name, crash in RUNS.items():
        got = orjson.loads(orjson.dumps(outcome(crash), option=orjson.OPT_SORT_KEYS))
        diff = differences(expected(), got)
        print(f"{name}: {'identical' if not diff else 'DIFFERS'}")
        for line in diff:
            print("  " + line)
        failed |= bool(diff)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
