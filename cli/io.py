"""Kafka and Redis I/O behind the produce, tail and rebuild-cache commands."""

from __future__ import annotations

import asyncio
import csv
import gc
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from faust.types import TP

from state.config import Published
from state.evaluate import evaluate
from store.membership import MembershipUpdate, MembershipWriter
from state.model import UserState
from state.quantiles import PopulationReports, ThresholdBook, population_reports
from state.rollout import Outcome, settle_history
from state.rules import STAGES, Rules
from stream import topics
from stream.config_topic import config_summary
from stream.admin import ensure_topics
from stream.codecs import decode_state, user_record
from stream.faust_ext.recovery import true_end_offsets
from stream.connection import kafka_access, redis_access
from stream.contract import Rejection
from stream.costs import CostStatement, encode_statement, parse_statement
from stream.settings import Settings


def _user_key(line: bytes) -> bytes | None:
    try:
        user_id = orjson.loads(line).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return user_id.encode() if isinstance(user_id, str) else None


async def produce_file(settings: Settings, path: Path) -> tuple[int, int]:
    """Every line is sent, even unreadable ones: the worker dead-letters them
    with the reason, so a producer sees one place for every rejection."""
    kafka = kafka_access(settings)
    await ensure_topics(kafka, settings.partitions)
    producer = kafka.producer(linger_ms=5, acks="all")
    await producer.start()
    sent = unkeyed = 0
    try:
        pending = []
        with path.open("rb") as lines:
            for line in lines:
                line = line.strip()
                if not line:
                    continue
                key = _user_key(line)
                unkeyed += key is None
                pending.append(await producer.send(topics.EVENTS, line, key=key))
                sent += 1
                if len(pending) >= 10_000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent, unkeyed


def read_cost_file(path: Path) -> list[CostStatement]:
    """The statements of a CSV file (channel, period, amount), each checked
    as the aggregator will; ValueError naming every bad line."""
    statements, problems = [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"channel", "period", "amount"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the header lacks {', '.join(sorted(missing))} (columns: channel,period,amount)")
        for line, row in enumerate(reader, start=2):
            parsed = parse_statement(orjson.dumps({k: row[k] for k in ("channel", "period", "amount")}))
            if isinstance(parsed, Rejection):
                problems.append(f"line {line}: {parsed.error}")
            else:
                statements.append(parsed)
    if problems:
        raise ValueError(f"{path}: nothing sent; fix these lines:\n  " + "\n  ".join(problems))
    return statements


async def publish_costs(settings: Settings, statements: list[CostStatement]) -> None:
    kafka = kafka_access(settings)
    await ensure_topics(kafka, settings.partitions)
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        for s in statements:  # in order: a later line for the same key wins
            await producer.send_and_wait(topics.COSTS, encode_statement(s.channel, s.period, Decimal(s.cents) / 100),
                                         key=s.key.encode())
    finally:
        await producer.stop()


async def tail_topic(
    settings: Settings, topic: str, *, from_end: bool, max_records: int | None, idle: float | None
) -> None:
    consumer = kafka_access(settings).consumer(
        topic, group_id=None,
        auto_offset_reset="latest" if from_end else "earliest", enable_auto_commit=False,
    )
    await consumer.start()
    printed = 0
    try:
        while max_records is None or printed < max_records:
            batch = await consumer.getmany(timeout_ms=int((idle or 1.0) * 1000))
            if not batch and idle is not None:
                return
            for records in batch.values():
                for record in records:
                    sys.stdout.write((record.value or b"").decode(errors="replace") + "\n")
                    printed += 1
            sys.stdout.flush()
    finally:
        await consumer.stop()


async def read_to_end(settings: Settings, name: str) -> AsyncIterator[Any]:
    """Every record of the topic's partitions, each partition in order, up
    to the true end it had when the read began."""
    tps = {TP(name, p) for p in range(settings.partitions)}
    kafka = kafka_access(settings)
    ends = await true_end_offsets(kafka, tps)
    parts = [TopicPartition(name, p) for p in range(settings.partitions) if ends[TP(name, p)] > 0]
    if not parts:
        # (Before a consumer starts: aiokafka's stop() right after start()
        # raises the CancelledError of a task that never ran.)
        return
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        remaining = set(parts)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    yield r
                if records and records[-1].offset + 1 >= ends[TP(tp.topic, tp.partition)]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while: a million states
    are millions of new objects, and each collection their allocation sets
    off walks them all (decoding 1M took 41.6 s with it; docs/performance.md).
    States hold no reference cycles, so it would find nothing there
    (agents.gc_tuning says the same of the worker's table)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decode_states(changelog: Iterable[tuple[str, bytes]]) -> list[tuple[str, UserState]]:
    with collector_paused():
        return [(u, decode_state(b)) for u, b in changelog]


async def read_users_changelog(settings: Settings) -> dict[str, bytes]:
    """The latest state bytes per user, read to the true end of the changelog."""
    latest: dict[str, bytes] = {}
    async for r in read_to_end(settings, f"{settings.app_id}-{topics.USERS_TABLE}-changelog"):
        if r.value is None:
            latest.pop(r.key.decode(), None)
        else:
            latest[r.key.decode()] = r.value
    return latest


async def with_population(settings: Settings, rules: Rules) -> Rules:
    """With quantile scores or the churn model: the rules with the cut
    points and fits the workers settled, from their reports on
    tierstream.population, so an evaluation here (a snapshot, a cache
    rebuild) scores as the workers did."""
    return (await read_population(settings, rules))[0]


async def read_population(settings: Settings, rules: Rules) -> tuple[Rules, PopulationReports | None]:
    """`with_population`, and the reports read (None without quantile
    scores or the churn model): how far each partition has reported."""
    if not rules.scores.from_population:
        return rules, None
    reports = population_reports(settings.partitions, rules)
    book = ThresholdBook(rules.cadence_ms)
    async for r in read_to_end(settings, topics.POPULATION):
        for boundary, cuts in reports.add(orjson.loads(r.value)):
            book.settle(boundary, cuts)
    return rules.with_thresholds(book), reports


async def rebuild_membership(settings: Settings, rules: Rules) -> tuple[int, int]:
    latest = await read_users_changelog(settings)
    rules = await with_population(settings, rules)
    redis = redis_access(settings).client()
    writer = MembershipWriter(redis, settings.redis_prefix)
    try:
        await writer.clear()
        await writer.declare_segments(rules.tier_names, STAGES)
        summary = await config_summary(kafka_access(settings), partial(rollout_outcomes, settings))
        if summary is not None:  # clear() took the API's copy of it too
            await writer.write_config(summary)
        updates = []
        for user_id, data in latest.items():
            state = decode_state(data)
            if not state.has_applied:
                continue  # only held events so far: not in any segment yet (as in the worker)
            # Evaluating again at the time of the last evaluation reproduces it.
            a = evaluate(state, state.evaluated_ms or state.last_seen_ms, rules, user_id)
            doc = orjson.dumps(user_record(user_id, state, a))
            updates.append(MembershipUpdate(user_id, state.version, a.tier, a.stage, doc))
        written = 0
        for i in range(0, len(updates), 5000):
            written += await writer.write(updates[i : i + 5000])
        return len(latest), written
    finally:
        await redis.aclose()


async def rollout_outcomes(settings: Settings, versions: list[Published]) -> dict[str, Outcome]:
    """What became of each roll-out on the config topic, from the
    partitions' reports on the population topic, settled as the workers do."""
    if not any(v.rollout for v in versions):
        return {}
    reports: list[tuple[str, Any, Any]] = []
    async for r in read_to_end(settings, topics.POPULATION):
        doc = orjson.loads(r.value)
        if "rollout" in doc:
            reports.append((str(doc["rollout"]), int(doc["p"]), int(doc["watermark"])))
        elif "withdraw" in doc:
            sources = {p for p in range(settings.partitions)
                       if topics.population_partition(p, settings.partitions) == int(doc["q"])}
            reports.append((str(doc["withdraw"]), sources, str(doc.get("by") or "")))
    rules = versions[-1].document.rules()
    cadence = rules.cadence_ms if rules.scores.from_population else None
    return settle_history(versions, reports, settings.partitions, cadence)
