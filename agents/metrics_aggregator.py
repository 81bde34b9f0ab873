"""The metrics aggregator: tierstream.metric-facts and tierstream.costs in,
Redis cells and tierstream.metrics out.

Runs in each worker as a task with its own consumer group, so workers
share the facts partitions as they share the events. For each fetched
batch: apply the facts to Redis (store.metrics_store: each step once, by
version), publish what became final, then commit the input offsets. A
crash anywhere in between redelivers facts that Redis then skips.

What is published on tierstream.metrics (keyed by period, deterministic ids):
- `period`: a period's figures once every partition's watermark passed its
  end. On-time figures only, so two runs publish the same record however
  their batches fell;
- `correction`: the cells an event beyond the allowed lateness added to a
  period, one record per step and period; a reader adds them up.

A Redis that comes back empty is rebuilt from the facts topic: the
aggregator notices the missing `from0` marker of a partition and reads it
again from its first offset (the topic must keep its history for that).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents import metrics
from state.calendar import Calendar, parse_label
from state.kpis import Step
from state.model import DAY_MS
from state.metrics_report import cell_targets
from store.metrics_store import MetricsReset, MetricsStore
from state.rules import STAGES, Rules
from stream import topics
from stream.codecs import dead_letter_record
from stream.connection import kafka_access
from stream.contract import Rejection
from stream.costs import parse_statement
from stream.settings import Settings

log = logging.getLogger(__name__)
PERIOD_GRAINS = ("day", "week", "month")
CLOSE_CHUNK = 200  # closed periods read from Redis and sent together


def record_id(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def decode_facts(value: bytes) -> tuple[int, int, list[Step]]:
    doc = orjson.loads(value)
    steps = [Step(u, v, facts, late) for u, v, facts, late in doc["steps"]]
    return doc["p"], doc["wm"], steps


class MetricsAggregator:
    def __init__(self, settings: Settings, rules: Rules, store: MetricsStore, group_id: str) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.group_id = group_id
        self.calendar = Calendar(rules.metrics.timezone)
        # A period's figures are final once the watermark passed its end plus
        # the conversion window (conversions are booked to the signup's or
        # cart's day when the order comes): it is published then.
        self.settle_ms = rules.metrics.conversion_days * DAY_MS
        self.applied_steps = 0
        self.published = 0

    def _end_of(self, key: str) -> int | None:
        grain, _, text = key.partition(":")
        if grain not in PERIOD_GRAINS:
            return None  # a cohort hash: not a period
        return self.calendar.end_ms(grain, parse_label(grain, text)) + self.settle_ms

    async def run(self, should_stop: Callable[[], bool]) -> None:
        exactly_once = self.settings.processing_guarantee == "exactly_once"
        kafka = kafka_access(self.settings)
        consumer = kafka.consumer(
            topics.METRIC_FACTS,
            topics.COSTS,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if exactly_once else "read_uncommitted",
        )
        producer = kafka.producer(acks="all", linger_ms=5)
        await consumer.start()
        await producer.start()
        try:
            await self.store.set_partitions(self.settings.partitions)
            while not should_stop():
                try:
                    await self._round(consumer, producer)
                except asyncio.CancelledError:
                    raise
                except MetricsReset as exc:  # the next round reads the partition from offset 0
                    log.warning("%s: rebuilding them from the facts topic", exc)
                except Exception as exc:  # Redis or Kafka away, or a rebalance: keep the offsets, try again
                    metrics.METRIC_AGGREGATION_ERRORS.inc()
                    log.warning("metrics aggregation failed (%r); retrying", exc)
                    await asyncio.sleep(self.settings.redis_check_seconds)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _round(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        batch = await consumer.getmany(timeout_ms=200, max_records=2000)
        everything = consumer.assignment()
        assigned = {tp for tp in everything if tp.topic == topics.METRIC_FACTS}
        await self._costs_from_start(consumer, everything, batch)
        rebuild = await self.store.missing_from_start(tp.partition for tp in assigned)
        for tp in assigned:
            if tp.partition in rebuild:
                # Redis lost this partition's cells (or never had them):
                # apply its facts again from the first one. Never had them
                # (nothing committed yet: a first start) is no news.
                lost = await consumer.committed(tp) is not None
                (log.warning if lost else log.info)(
                    "metrics of partition %d %s: reading its facts from the start", tp.partition,
                    "missing in redis" if lost else "not in redis yet (first start)")
                await consumer.seek_to_beginning(tp)
                batch.pop(tp, None)
        if rebuild:
            await self.store.mark_from_start(rebuild)
            await self.store.set_partitions(self.settings.partitions)  # gone with the rest of Redis
        applied: dict[TopicPartition, int] = {}
        try:
            for tp, records in batch.items():
                if tp.topic == topics.COSTS:
                    await self._apply_costs(producer, tp, records)
                    applied[tp] = records[-1].offset + 1
                    continue
                for record in records:
                    partition, wm, steps = decode_facts(record.value)
                    touched = await self.store.apply(partition, wm, steps)
                    ends = {k: e for k in touched if (e := self._end_of(k)) is not None}
                    await self.store.track_open(ends)
                    applied[tp] = record.offset + 1
                    self.applied_steps += len(steps)
                    metrics.METRIC_STEPS_APPLIED.inc(len(steps))
        except Exception:
            # Read again what was not applied (what was is skipped by version);
            # a partition a rebalance took away is the new owner's to read.
            still = consumer.assignment()
            for tp, records in batch.items():
                if tp in still:
                    consumer.seek(tp, applied.get(tp, records[0].offset))
            raise
        for tp in assigned:
            await self._publish_corrections(producer, tp.partition)
        await self._publish_closed(producer)
        if applied:
            await consumer.commit(applied)

    async def _costs_from_start(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition],
                                batch: dict[TopicPartition, list]) -> None:
        """A Redis without the costs marker (a first start, or one that came
        back empty) gets every statement again, from the topic's start."""
        for tp in assigned:
            if tp.topic == topics.COSTS and not await self.store.costs_from_start():
                log.info("cost statements not in redis: reading %s from the start", topics.COSTS)
                await consumer.seek_to_beginning(tp)
                batch.pop(tp, None)
                await self.store.mark_costs_from_start()

    async def _apply_costs(self, producer: AIOKafkaProducer, tp: TopicPartition, records: list) -> None:
        """Cost statements into Redis (each key keeps its latest); a bad one
        is a dead letter with its reason, and the rest go on."""
        good, dead = [], []
        for record in records:
            statement = parse_statement(record.value or b"")
            if isinstance(statement, Rejection):
                dead.append(producer.send(topics.DEAD_LETTERS, dead_letter_record(
                    reason=statement.reason, error=statement.error, topic=tp.topic, partition=tp.partition,
                    offset=record.offset, key=record.key, payload=record.value,
                    max_payload=self.settings.dlq_max_payload_bytes)))
                metrics.DEAD_LETTERS.labels(statement.reason).inc()
            else:
                good.append((statement.key, record.offset, statement.cents))
        await self.store.apply_costs(good)
        if dead:
            await asyncio.gather(*[await send for send in dead])

    async def _publish_closed(self, producer: AIOKafkaProducer) -> None:
        until = await self.store.closed_until()
        if until is None:
            return
        # Many periods close at once when the aggregator catches up (a
        # replay, a restart): their figures are read and sent in chunks,
        # not one Redis read and one acknowledgement per period.
        by_grain: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for key in await self.store.closable(until):
            grain, _, text = key.partition(":")
            by_grain[grain].append((key, parse_label(grain, text)))
        for grain, periods in by_grain.items():
            for start in range(0, len(periods), CLOSE_CHUNK):
                chunk = periods[start:start + CLOSE_CHUNK]
                rows = await self.store.kpis(grain, [index for _, index in chunk], self.rules.tier_names,
                                             list(STAGES), self.calendar, corrected=False, settle_ms=self.settle_ms)
                sends = []
                for (key, _), row in zip(chunk, rows, strict=True):
                    row.pop("closed", None)
                    doc = {"kind": "period", "id": record_id("period", key), "grain": grain,
                           "timezone": self.calendar.timezone, **row}
                    sends.append(await producer.send(topics.METRICS, orjson.dumps(doc), key=key.encode()))
                await asyncio.gather(*sends)
                await self.store.mark_published([key for key, _ in chunk])
                self.published += len(chunk)

    async def _publish_corrections(self, producer: AIOKafkaProducer, partition: int) -> None:
        while entries := await self.store.corrections(partition):
            by_period: dict[tuple[str, int, str], dict[str, int]] = defaultdict(dict)
            for user, version, cell, value in entries:
                keys, name = cell_targets(cell)
                for key in keys:
                    by_period[(user, version, key)][name] = value
            sends = []
            for (user, version, key), cells in by_period.items():
                doc = {"kind": "correction", "id": record_id("correction", user, version, key), **_where(key),
                       "timezone": self.calendar.timezone, "cells": cells}
                sends.append(await producer.send(topics.METRICS, orjson.dumps(doc), key=key.encode()))
            await asyncio.gather(*sends)
            await self.store.corrections_published(partition, entries)
            self.published += len(sends)


def _where(key: str) -> dict[str, str]:
    """`day:2024-01-05` or `c:first_seen:week:2024-W01` in words."""
    if key.startswith("c:"):
        _, by, grain, cohort = key.split(":", 3)
        return {"grain": grain, "cohort_by": by, "cohort": cohort}
    grain, _, period = key.partition(":")
    return {"grain": grain, "period": period}


def install(app: Any, settings: Settings, rules: Rules, store: MetricsStore) -> MetricsAggregator:
    aggregator = MetricsAggregator(settings, rules, store, group_id=f"{app.conf.id}-metrics")

    @app.task
    async def aggregate_metrics() -> None:
        await aggregator.run(lambda: app.should_stop)

    return aggregator
