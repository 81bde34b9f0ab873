"""The population reader: tierstream.population in, the cut points every
worker applies out (quantile scores, state.quantiles); and, with
tierstream.config, the rules roll-outs (state.rollout): proposals and the
partitions' reports on them in, the event time each version comes into
force out.

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
from dataclasses import replace
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from aiokafka import TopicPartition
from faust.types import TP

from agents import metrics
from engine.coordinator import Coordinator
from state.config import Published, config_history, in_force
from state.quantiles import population_reports, thresholds_doc
from stream import topics
from stream.connection import kafka_access
from stream.faust_ext.recovery import true_end_offsets
from stream.settings import Settings

log = logging.getLogger(__name__)
WAIT_WARNING_SECONDS = 30.0


class PopulationReader:
    def __init__(self, settings: Settings, engine: Coordinator, redis: Redis | None,
                 send_out: Callable[[], Awaitable[None]] | None,
                 idle_partitions: Callable[[], set[int]] | None = None,
                 write_config: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        rules = engine.rules
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.send_out = send_out
        # Replay clock: which owned partitions are idle now (caught up, and
        # nothing new for a while); they follow the others' reports.
        self.idle_partitions = idle_partitions
        self.reports = population_reports(settings.partitions, rules) if engine.book is not None else None
        # Roll-outs: every version read off the config topic, and where it
        # must read both topics to before placing the partitions that wait.
        self.versions: list[Published] = []
        self.write_config = write_config
        self._read_to: tuple[set[int], dict[TopicPartition, int]] | None = None
        self._waiting_since: float | None = None
        self._followed: set[int] = set()  # partitions said to follow (logged once each)

    async def run(self, should_stop: Callable[[], bool]) -> None:
        # No group: a consumer subscribed without one is given every
        # partition of the topic (each worker must read all the reports).
        consumer = kafka_access(self.settings).consumer(
            topics.POPULATION, *([topics.CONFIG] if self.engine.rollouts is not None else []),
            group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Every cadence boundary of a replay waits on this read: fetch as
            # the worker's consumer does, not with aiokafka's 500 ms long poll.
            # Without quantile scores only roll-outs come here, and half a
            # second is soon enough for them: a 10 ms poll of idle partitions
            # cost the broker (Tansu) CPU the whole suite felt.
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms if self.reports is not None else 500,
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
        configs = [r for tp, records in batch.items() if tp.topic == topics.CONFIG for r in records]
        docs = [orjson.loads(record.value) for tp, records in batch.items() if tp.topic == topics.POPULATION
                for record in records]
        if self.engine.rollouts is not None:
            docs = await self._rollouts(consumer, configs, docs)
        # A report completing a fit boundary runs the churn model's fit
        # (0.1-0.3 s): off the event loop, so batches and timers go on. Only
        # this task touches the reports, one call at a time. Other reports
        # settle in well under a millisecond: added here, as a replay's
        # daily boundary would otherwise pay a thread's hand-over (and the
        # GIL's back and forth) each time.
        if docs and self.reports is not None and self.reports.may_fit(docs):
            settled = await asyncio.to_thread(self._add_all, docs)
        else:
            settled = self._add_all(docs) if docs else []
        # Checked every round (at most 200 ms apart), so that an idle
        # partition keeps in step with the others' reports as they come.
        followed = self.reports is not None and self.idle_partitions is not None and \
            self.follow_idle(self.idle_partitions())
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
        if self.engine.rollouts is not None:
            await self._place(consumer)
        self._warn_if_stuck()

    def _add_all(self, docs: list[dict]) -> list:
        settled = []
        if self.reports is None:
            return settled
        for doc in docs:
            settled += self.reports.add(doc)
        return settled

    async def _rollouts(self, consumer: AIOKafkaConsumer, configs: list, docs: list[dict]) -> list[dict]:
        """Proposals and reports on them to the coordinator; the population
        reports proper are returned. Then, when partitions wait to be placed
        and both topics are read to where they ended when they were
        assigned, place them."""
        wall = self.engine.clock.now_ms()
        changed = False
        for record in configs:
            try:
                published = Published.decode(record.value)
                rules = published.document.rules()
            except Exception as exc:  # not ours to stop on: said by `tierstream config` too
                log.error("%s@%d is not a configuration this worker can run (%s); skipped", topics.CONFIG,
                          record.offset, exc)
                continue
            published = replace(published, offset=record.offset)
            self.versions.append(published)
            if published.rollout:
                self.engine.propose(published.key, rules, published.rollout_at_ms, wall)
            else:
                self.engine.rebase(rules)
            changed = True
        rest = []
        for doc in docs:
            if "rollout" in doc:
                changed = bool(self.engine.rollout_report(doc["rollout"], int(doc["p"]), int(doc["watermark"]),
                                                          wall)) or changed
            elif "withdraw" in doc:
                changed = bool(self.engine.rollout_withdrawn(doc["withdraw"], self._sources(int(doc["q"])),
                                                             str(doc.get("by") or ""), wall)) or changed
            else:
                rest.append(doc)
        if changed and self.send_out is not None:
            await self.send_out()
        if changed:
            await self._write_config()
        return rest

    def _sources(self, population_partition: int) -> set[int]:
        """The partitions whose reports go to this partition of the population topic."""
        n = self.settings.partitions
        return {p for p in range(n) if topics.population_partition(p, n) == population_partition}

    async def _place(self, consumer: AIOKafkaConsumer) -> None:
        """Place the partitions that wait (engine.coordinator.place_waiting)
        once both topics are read to where they ended after they were
        assigned: every proposal made, and every report on it, before."""
        waiting = {p for p in self.engine.owned() if not self.engine.engines[p].placed}
        if not waiting:
            return
        if self._read_to is None or not waiting <= self._read_to[0]:
            tps = {TP(tp.topic, tp.partition) for tp in consumer.assignment()}
            if TP(topics.CONFIG, 0) not in tps or len(tps) < 2:
                return  # not assigned both topics yet (no group: that comes with the metadata)
            ends = await true_end_offsets(kafka_access(self.settings), tps)
            self._read_to = waiting, {TopicPartition(tp.topic, tp.partition): end for tp, end in ends.items()}
        for tp, end in self._read_to[1].items():
            if await consumer.position(tp) < end:
                return
        placed = self.engine.place_waiting(self.engine.clock.now_ms(), only=self._read_to[0])
        log.info("partitions %s placed among the rules roll-outs", placed)
        self._read_to = None
        if self.send_out is not None:
            await self.send_out()

    async def _write_config(self) -> None:
        """The configuration in force and its history, roll-outs and all, for the API."""
        if self.write_config is None or not self.versions or self.engine.rollouts is None:
            return
        outcomes = self.engine.rollouts.outcomes()
        current = in_force(self.versions, outcomes) or self.versions[-1]
        try:
            await self.write_config(orjson.dumps({**current.summary(),
                                                  "history": config_history(self.versions, outcomes)}))
        except Exception as exc:  # Redis down: written again with the next change
            log.warning("configuration history not written to Redis (%r)", exc)

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
