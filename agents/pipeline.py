"""The worker's path for the partitions it owns, assembled from its parts:

    messages ─▶ agents.ingest ─▶ engine (one PartitionEngine per partition,
                                 engine.coordinator across them)
                                   │ effects
                                   ▼
            agents.publisher (routing: agents.routing) ─▶ Kafka
            agents.redis_sync ─▶ Redis (membership, live feed)

`Pipeline` holds them together and is what the Faust wiring (agents.wiring)
and the tests drive. The business rules are in state/ (one user's step) and
engine/ (when each step happens); everything here moves bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from agents import metrics
from agents.faults import CrashPoints
from agents.gc_tuning import HeapFreezer
from agents.ingest import Ingest
from agents.outbox import Record
from agents.publisher import Publisher
from agents.redis_sync import RedisSync
from agents.routing import Router
from engine.clock import clock_for, wall_ms
from engine.coordinator import Coordinator
from store.live_feed import FeedWriter
from store.membership import MembershipWriter
from state.rules import Rules
from stream.codecs import encode_state
from stream.settings import Settings

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        streams: Any,
        settings: Settings,
        rules: Rules,
        membership: MembershipWriter | None,
        feed: FeedWriter | None = None,
        wall_clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.store: Any = streams.users.data  # the table's local store: a dict-like
        self.crash = CrashPoints(settings.crash_at)
        self.clock = clock_for(settings.clock, wall_clock_ms)
        self.engine = Coordinator(rules, self.clock, self.store, lateness_ms=settings.allowed_lateness_ms,
                                  max_event_age_days=settings.max_event_age_days,
                                  metrics=settings.operator_metrics, on_point=self.crash.reached)
        self.engine.switch_chunk = settings.rollout_chunk_users
        self.tally = metrics.Tally()
        self.freezer = HeapFreezer()
        self.router = Router(streams.users.changelog_topic.get_topic_name(), settings.dlq_max_payload_bytes,
                             self.tally)
        self.redis = RedisSync(settings, self.engine, membership, feed)
        self.publisher = Publisher(self.engine, self.router, self.tally, self.crash, self.freezer,
                                   published=self.redis.published, assessed=self.redis.assessed)
        self.ingest = Ingest(settings, self.engine, self.router, self.tally, self.publisher.queued)
        self.publisher.later = self.ingest.later
        # When each owned partition last had input (time.monotonic()): the
        # replay clock's idle rule (agents.wiring) reads it.
        self.last_input: dict[int, float] = {}
        self.aggregator: Any = None  # agents.metrics_aggregator, when operator metrics are on
        streams.users.on_active_partitions = self.on_active_partitions

    @property
    def rules(self) -> Rules:
        return self.engine.rules

    # -- ownership -------------------------------------------------------

    def on_active_partitions(self, partitions: set[int], committed: dict[int, int] | None = None) -> None:
        """After recovery: the engines take their users from the recovered
        table for the partitions this worker actively owns (standbys are
        left out). `committed`: the group's committed input offset per
        partition, when known."""
        now = time.monotonic()
        for p in partitions:
            self.last_input[p] = now  # idle only after a while with nothing new
        owned = self.engine.on_active_partitions(partitions, committed)
        metrics.DUE_INDEX_SIZE.set(self.engine.due_count())
        metrics.RECOVERED_USERS.set(owned)
        self.freezer.maybe_freeze(len(self.store))
        log.info("owning partitions %s, %d users due-indexed", sorted(partitions), self.engine.due_count())
        if self.settings.recovery_dump is not None:
            self._dump_recovered(partitions)
        self.engine.catch_up_all(partitions, self.clock.now_ms())
        # Redis may disagree with what was recovered (updates lost with the
        # old process, or written ahead of the changelog): heal it.
        self.redis.to_heal |= partitions

    def _dump_recovered(self, partitions: set[int]) -> None:
        """Write the recovered users of `partitions` (diagnostics, and the
        restart test's evidence that recovery lost nothing)."""
        path = self.settings.recovery_dump
        assert path is not None
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for user_id, state in self.store.items():
                if state.src_partition in partitions:
                    out.write(orjson.dumps({"user_id": user_id, "state": orjson.loads(encode_state(state))}) + b"\n")
        tmp.replace(path)

    def on_partitions_revoked(self, partitions: set[int]) -> None:
        # Stop sweeping at once: another worker may own these now.
        self.engine.on_partitions_revoked(partitions)
        self.redis.to_heal -= partitions
        for p in partitions:
            self.last_input.pop(p, None)

    # -- input and time --------------------------------------------------

    def on_message(self, message: Any) -> None:
        """Never raises: whatever goes wrong with one message becomes a dead letter."""
        self.ingest.on_message(message)

    def tick(self) -> None:
        """Live clock: age silent users of every owned partition to now."""
        self.engine.tick(self.clock.now_ms())
        metrics.DUE_INDEX_SIZE.set(self.engine.due_count())

    def ready(self, partition: int) -> bool:
        return self.engine.ready(partition)

    def decisions_behind(self) -> dict[int, int]:
        """Per owned partition, how far its final decisions trail the latest
        event time it has read, in ms (engine.partition: behind_ms)."""
        behind = self.engine.behind(self.clock.now_ms())
        for partition, ms in behind.items():
            metrics.DECISIONS_BEHIND.labels(str(partition)).set(ms / 1000)
        return behind

    def resume(self) -> None:
        self.engine.resume()

    # -- output ----------------------------------------------------------

    def drain(self) -> tuple[list[Record], list[Record]]:
        """What is queued for Kafka (the outputs, then the changelog
        records), taken off the queue: for drivers without a producer,
        which hold the records from then on (as a producer would)."""
        sealed = self.engine.seal_unsent()
        drained = self.publisher.drain()
        self.engine.sent(sealed)
        return drained

    def has_work(self) -> bool:
        return self.publisher.has_work()

    async def publish(self, producer: Any) -> None:
        await self.publisher.publish(producer)

    async def publish_in_transactions(self, producer: Any, transactional_id: Callable[[int], str]) -> set[int]:
        return await self.publisher.publish_in_transactions(producer, transactional_id)
