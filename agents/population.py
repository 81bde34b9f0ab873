"""The population reader: tierstream.population in, the cut points every
worker applies out (quantile scores, state.quantiles).

Each worker reads the whole topic from its start, with no consumer group:
every partition's reports, whoever owns it. `PopulationReports` (pure)
settles a boundary once every partition has reported on it; the same
records give the same cuts in every worker, at the same event time. The
pipeline's partitions that waited at a period's end for those cuts then
go on (engine.coordinator). The latest cuts are also written to Redis for
the read API (`GET /v1/scores/thresholds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from agents import metrics
from engine.coordinator import Coordinator
from state.quantiles import population_reports, thresholds_doc
from stream import topics
from stream.connection import kafka_access
from stream.settings import Settings

log = logging.getLogger(__name__)
WAIT_WARNING_SECONDS = 30.0


class PopulationReader:
    def __init__(self, settings: Settings, engine: Coordinator, redis: Redis | None,
                 send_out: Callable[[], Awaitable[None]] | None,
                 idle_partitions: Callable[[], set[int]] | None = None) -> None:
        rules = engine.rules
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.send_out = send_out
        # Replay clock: which owned partitions are idle now (caught up, and
        # nothing new for a while); they follow the others' reports.
        self.idle_partitions = idle_partitions
        self.reports = population_reports(settings.partitions, rules)
        self._waiting_since: float | None = None
        self._followed: set[int] = set()  # partitions said to follow (logged once each)

    async def run(self, should_stop: Callable[[], bool]) -> None:
        # No group: a consumer subscribed without one is given every
        # partition of the topic (each worker must read all the reports).
        consumer = kafka_access(self.settings).consumer(
            topics.POPULATION, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Every cadence boundary of a replay waits on this read: fetch as
            # the worker's consumer does, not with aiokafka's 500 ms long poll.
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            isolation_level="read_committed" if self.settings.processing_guarantee == "exactly_once"
            else "read_uncommitted",
        )
        await consumer.start()
        try:
            while not should_stop():
                try:
                    await self._round(consumer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Kafka or Redis away: keep the position, try again
                    log.warning("population reader failed (%r); retrying", exc)
                    await asyncio.sleep(1.0)
        finally:
            await consumer.stop()

    async def _round(self, consumer: AIOKafkaConsumer) -> None:
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        docs = [orjson.loads(record.value) for records in batch.values() for record in records]
        # A report completing a fit boundary runs the churn model's fit
        # (0.1-0.3 s): off the event loop, so batches and timers go on. Only
        # this task touches the reports, one call at a time.
        settled = await asyncio.to_thread(self._add_all, docs) if docs else []
        # Checked every round (at most 200 ms apart), so that an idle
        # partition keeps in step with the others' reports as they come.
        followed = self.idle_partitions is not None and self.follow_idle(self.idle_partitions())
        if settled:
            self.engine.settle(settled)
            metrics.CUTS_SETTLED.inc(len(settled))
            self.engine.resume()
        if settled or followed:
            assert self.send_out is not None
            await self.send_out()
        if settled and self.redis is not None:
            await self.redis.set(self.settings.redis_prefix + "scores:thresholds",
                                 orjson.dumps(thresholds_doc(self.engine.rules, self.engine.book)))
        self._warn_if_stuck()

    def _add_all(self, docs: list[dict]) -> list:
        settled = []
        for doc in docs:
            settled += self.reports.add(doc)
        return settled

    def follow_idle(self, idle: set[int]) -> bool:
        """Move the idle partitions on to the others' latest boundary
        (replay clock, `PartitionEngine.follow`); whether any moved."""
        moved = False
        for partition in sorted(idle):
            target = self.reports.follow_target(partition)
            if target is not None and self.engine.follow(partition, target):
                metrics.PARTITIONS_FOLLOWED.inc()
                if partition not in self._followed:
                    log.info("partition %d is idle (caught up, nothing new for %.0fs): it follows the other "
                             "partitions' event time", partition, self.settings.idle_partition_seconds)
                    self._followed.add(partition)
                moved = True
        if moved:
            self.engine.resume()
        return moved

    def _warn_if_stuck(self) -> None:
        """A partition that never reports (no event at all, replay clock)
        holds every other back: say which, once in a while."""
        if not self.engine.waiting:
            self._waiting_since = None
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > WAIT_WARNING_SECONDS:
            behind = sorted(set(range(self.settings.partitions)) - {
                p for p, b in self.reports.through.items() if b >= min(self.engine.waiting.values())
                - self.engine.rules.cadence_ms})
            log.warning("quantile scores: partitions %s wait for the cut points of %s; partitions %s have not "
                        "reported that far (no events? with TIERSTREAM_CLOCK=replay only events move time)",
                        sorted(self.engine.waiting), sorted(set(self.engine.waiting.values())), behind)
            self._waiting_since = now
