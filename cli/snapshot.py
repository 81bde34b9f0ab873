"""`tierstream snapshot --as-of TS --out FILE`: every user's membership as of event time TS.

Read from the users table (its changelog), each user is brought to TS with
the same pure `advance` the worker uses (held events released, quiet spells
aged) and evaluated at TS. A state cannot be rewound: users whose applied
events are already past TS make the snapshot refuse, with what to do.
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from faust.types import TP

from cli.io import collector_paused, decode_states, read_population, read_users_changelog
from state.steps import UserParked, advance
from state.evaluate import evaluate
from state.model import UserState
from state.quantiles import boundary_at_or_before
from state.rules import Rules
from stream import topics
from stream.codecs import iso, money
from stream.faust_ext.recovery import true_end_offsets
from stream.connection import kafka_access, redis_access
from stream.settings import Settings

COLUMNS = ("user_id", "tier", "stage", "recency_days", "days_inactive", "frequency", "monetary",
           "r", "f", "m", "lifetime_orders", "ltv", "aov", "as_of")
CHURN_COLUMNS = ("p_alive", "expected_orders")  # with the churn model (empty before its first fit)
ACQUISITION_COLUMNS = ("acquisition_channel", "acquisition_campaign")  # when any user's is known (empty: unknown)


class SnapshotError(ValueError):
    pass


def membership_as_of(user_id: str, state: UserState, as_of_ms: int, rules: Rules,
                     parked: list[UserParked] | None = None) -> dict[str, Any] | None:
    """One snapshot row; None for a user with nothing applied by `as_of_ms`.
    Users the core parks on the way (their due time would not move on) are
    added to `parked`, and their row is their state as evaluated at `as_of_ms`."""
    if state.has_applied and state.last_seen_ms > as_of_ms:
        raise SnapshotError(user_id)
    _, decisions = advance(user_id, state, as_of_ms, rules)
    if parked is not None:
        parked.extend(d for d in decisions if isinstance(d, UserParked))
    if not state.has_applied:
        return None
    a = evaluate(state, as_of_ms, rules, user_id)
    return {
        "user_id": user_id, "tier": a.tier, "stage": a.stage, "recency_days": a.recency_days,
        "days_inactive": a.days_inactive, "frequency": a.frequency, "monetary": money(a.monetary_cents),
        "r": a.r, "f": a.f, "m": a.m, "lifetime_orders": a.lifetime_orders, "ltv": money(a.ltv_cents),
        "aov": money(a.aov_cents), "as_of": iso(as_of_ms),
        **({"p_alive": a.p_alive, "expected_orders": a.expected_orders} if rules.scores.churn_model else {}),
        # Where the user came from, for users an event placed (docs/events.md).
        **({"acquisition_channel": state.acquisition[0], "acquisition_campaign": state.acquisition[1]}
           if state.acquisition is not None else {}),
    }


def snapshot_rows(states: dict[str, UserState], as_of_ms: int, rules: Rules,
                  parked: list[UserParked] | None = None) -> list[dict[str, Any]]:
    rows, ahead = [], []
    for user_id in sorted(states):
        try:
            row = membership_as_of(user_id, states[user_id], as_of_ms, rules, parked)
        except SnapshotError:
            ahead.append(user_id)
            continue
        if row is not None:
            rows.append(row)
    if ahead:
        raise SnapshotError(
            f"{len(ahead)} users (e.g. {', '.join(ahead[:3])}) have events after {iso(as_of_ms)}; "
            "state cannot be rewound: replay the history with --until into fresh state, then snapshot"
        )
    return rows


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    if out.suffix.lower() == ".csv":
        with out.open("w", newline="") as handle:
            churn = bool(rows) and "p_alive" in rows[0]
            placed = any("acquisition_channel" in row for row in rows)
            columns = COLUMNS + (CHURN_COLUMNS if churn else ()) + (ACQUISITION_COLUMNS if placed else ())
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    else:
        with out.open("wb") as handle:
            for row in rows:
                handle.write(orjson.dumps(row) + b"\n")


async def wait_caught_up(settings: Settings, timeout: float) -> None:
    """Wait until the worker group has committed every input message (Faust
    flushes the changelog before committing, so the table is then complete)."""
    tps = {TP(topics.EVENTS, p) for p in range(settings.partitions)}
    deadline = time.monotonic() + timeout
    # Reads the group's committed offsets without joining the group (no
    # subscribe, so the workers' assignment is untouched).
    kafka = kafka_access(settings)
    probe = kafka.consumer(group_id=settings.app_id, enable_auto_commit=False)
    await probe.start()
    try:
        while True:
            ends = await true_end_offsets(kafka, tps)
            behind = {}
            for tp, end in ends.items():
                committed = await probe.committed(TopicPartition(tp.topic, tp.partition))
                behind[tp.partition] = end - (committed or 0)
            if all(lag <= 0 for lag in behind.values()):
                break
            if time.monotonic() > deadline:
                raise SnapshotError(f"the worker is still behind after {timeout:.0f}s (lag per partition: {behind})")
            await asyncio.sleep(0.5)
    finally:
        await probe.stop()
    await wait_decided(settings, deadline, timeout)


async def wait_decided(settings: Settings, deadline: float, timeout: float) -> None:
    """Then until every partition's worker says, in a report made after the
    input was committed, that its decisions trail nothing it has read
    (agents.wiring report_progress, through Redis). Without Redis, the
    committed input is all there is to go by: said, not waited for."""
    from store.membership import MembershipReader

    since_ms = int(time.time() * 1000)
    redis = redis_access(settings).client(socket_connect_timeout=5, socket_timeout=5)
    reader = MembershipReader(redis, settings.redis_prefix)
    try:
        while True:
            try:
                progress = await reader.progress()
            except Exception as exc:  # noqa: BLE001 (no Redis: the offsets are all there is)
                print(f"note: could not read the workers' progress from Redis ({exc}); the input is committed",
                      file=sys.stderr)
                return
            fresh = {p: r for p, r in progress.items() if r["at_ms"] >= since_ms and p < settings.partitions}
            behind = {p: r["behind_ms"] for p, r in fresh.items() if r["behind_ms"] > 0}
            if len(fresh) == settings.partitions and not behind:
                return
            if time.monotonic() > deadline:
                raise SnapshotError(f"the worker's decisions still trail the events it read after {timeout:.0f}s "
                                    f"(ms per partition: {behind or 'no recent report'})")
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


def cuts_needed(as_of_ms: int, rules: Rules) -> int:
    """The boundary whose cut points (and churn fit) are in force at
    `as_of_ms` (state.quantiles.ThresholdBook.at)."""
    return boundary_at_or_before(as_of_ms, rules.cadence_ms) - rules.cadence_ms


async def with_settled_population(settings: Settings, rules: Rules, as_of_ms: int, wait: float | None) -> Rules:
    """The rules with the workers' cut points and fits, once the ones in
    force at `as_of_ms` are settled: evaluating with whatever had settled
    so far (older cuts, an older fit) gave another answer than the workers
    and than another snapshot of the same history. Waits up to `wait`
    seconds for the reports, then refuses, naming the partitions behind."""
    deadline = time.monotonic() + (wait or 0)
    needed = cuts_needed(as_of_ms, rules)
    while True:
        settled, reports = await read_population(settings, rules)
        if reports is None or settled.thresholds.settled(needed):
            return settled
        if time.monotonic() >= deadline:
            behind = {p: iso(b) for p, b in sorted(reports.through.items()) if b < needed}
            silent = sorted(set(range(settings.partitions)) - set(reports.through))
            raise SnapshotError(
                f"the cut points in force at {iso(as_of_ms)} (from the population at {iso(needed)}) are not settled "
                f"yet: partitions {silent} have not reported, and these only through: {behind}. The workers "
                "decide nothing past that point either; wait for them (--wait SECONDS) or snapshot an earlier time")
        await asyncio.sleep(1)


async def take_snapshot(settings: Settings, rules: Rules, as_of_ms: int, out: Path, wait: float | None,
                        parked: list[UserParked] | None = None) -> int:
    started = time.monotonic()
    if wait:
        await wait_caught_up(settings, wait)
    rules = await with_settled_population(settings, rules, as_of_ms,
                                          None if wait is None else max(0.0, wait - (time.monotonic() - started)))
    latest = await read_users_changelog(settings)
    with collector_paused():  # a million states: see cli.io.collector_paused
        rows = snapshot_rows(dict(decode_states(latest.items())), as_of_ms, rules, parked)
    write_rows(rows, out)
    return len(rows)
