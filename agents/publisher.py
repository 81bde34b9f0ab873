"""The ordering protocol: a decision, once made, reaches its topic.

`publish` hands a chunk's decisions to the producer and waits for the
broker to acknowledge them before it hands over the changelog records that
mark their inputs as applied. So a durable state always has its decisions
durable behind it; a crash before that leaves the older state durable, and
the same decisions are derived again, with the same ids, from the
redelivered input or, for sweeps, from the recovered state and watermark.
Faust flushes the producer before it commits input offsets, so a committed
offset has its changelog records behind it.

With exactly-once, every record goes into the open transaction of the input
partition that made it instead (`publish_in_transactions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agents import metrics
from agents.faults import CrashPoints
from agents.gc_tuning import HeapFreezer
from agents.outbox import BatchSender, Record
from agents.routing import Router
from engine.coordinator import Coordinator
from engine.effects import TakenLater


class PublishFailed(RuntimeError):
    """Kafka refused decisions after aiokafka's retries: the worker must stop."""


class Publisher:
    def __init__(self, engine: Coordinator, router: Router, tally: metrics.Tally, crash: CrashPoints,
                 freezer: HeapFreezer, published: Callable[[list[Record]], None],
                 assessed: Callable[[dict], None]) -> None:
        self.engine = engine
        self.router = router
        self.tally = tally
        self.crash = crash
        self.freezer = freezer
        self.published = published  # records the broker took (the live feed's source)
        self.assessed = assessed  # the latest assessments, for the membership cache
        # Records the adapters made themselves (re-keyed events, dead letters).
        self.queued: list[Record] = []
        # What became of events the engine took late (agents.ingest.Ingest.later).
        self.later: Callable[[TakenLater], None] = lambda taken: None
        # Held while records are on their way to Kafka; with exactly-once,
        # transactions commit only under it (agents.wiring).
        self.lock = asyncio.Lock()
        self.sender = BatchSender()

    def has_work(self) -> bool:
        return bool(self.queued or self.engine.effects)

    def drain(self) -> tuple[list[Record], list[Record]]:
        """Everything waiting for Kafka, as records: the outputs (decisions,
        dead letters, re-keyed events, population reports, metric facts) and
        the changelog records, which may reach Kafka only after those."""
        effects = self.engine.effects
        for taken in effects.later:
            self.later(taken)
        effects.later.clear()
        outputs = self.queued[:]  # the list itself stays: ingest appends to it
        self.queued.clear()
        changelog: list[Record] = []
        for committed in effects.committed:
            self.router.committed(committed, outputs, changelog)
        outputs.extend(self.router.reported(r) for r in effects.reported)
        for facts in self.engine.seal_facts():
            outputs.extend(self.router.facts(facts))
        effects.committed.clear()
        effects.reported.clear()
        if effects.assessed:
            self.assessed(effects.assessed)
            effects.assessed = {}
        return outputs, changelog

    async def publish(self, producer: Any) -> None:
        """Hand what is queued to the producer: the outputs, and once the
        broker has acknowledged every one of them, the changelog records
        (enqueued only: Faust's commit flushes them). Callers are the batch
        handler and the sweep timer; the lock keeps one order for both."""
        self.freezer.maybe_freeze(len(self.engine.users))
        async with self.lock:
            sealed = self.engine.seal_unsent()  # the input these records come from: not committed past yet
            outputs, changelog = self.drain()
            self.tally.flush()
            if outputs:
                await acknowledged(await self.sender.send(producer, outputs))
                self.crash.reached("outputs_acked")
                self.published(outputs)
            if changelog:
                await self.sender.send(producer, changelog)
                self.crash.reached("changelog_sent")
            self.engine.sent(sealed)  # never on a failure: the input stays uncommitted for the restart

    async def publish_in_transactions(self, producer: Any, transactional_id: Callable[[int], str]) -> set[int]:
        """Exactly-once: every record goes into the open transaction of the
        input partition that made it (Faust's transactional producer for
        that partition), and becomes visible to read_committed consumers
        when Faust commits that transaction with the partition's input
        offset. Order within a transaction does not matter: it commits
        whole or not at all. Returns the partitions that got records."""
        self.freezer.maybe_freeze(len(self.engine.users))
        async with self.lock:
            sealed = self.engine.seal_unsent()
            outputs, changelog = self.drain()
            self.tally.flush()
            records = outputs + changelog
            deliveries = []
            for r in records:
                deliveries.append(await producer.send(
                    r.topic, r.key, r.value, r.partition, None, None, transactional_id=transactional_id(r.source)))
            self.crash.reached("outputs_acked")
            await acknowledged(deliveries)
            self.crash.reached("changelog_sent")
            self.engine.sent(sealed)  # in the partitions' open transactions, which commit with the offsets
            self.published(records)  # uncommitted still: the feed is a view, consumers read the topics
            return {r.source for r in records}


async def acknowledged(deliveries: list[asyncio.Future]) -> None:
    """Wait until Kafka has acknowledged every delivery. If it refused any
    (after aiokafka's retries), the states in memory are ahead of what
    reached Kafka: their changelog records must not be written, and only a
    restart from the last durable state is safe."""
    acks = await asyncio.gather(*deliveries, return_exceptions=True)
    failed = [a for a in acks if isinstance(a, BaseException)]
    if failed:
        raise PublishFailed(f"{len(failed)} record batches were not accepted by Kafka: {failed[0]!r}")
