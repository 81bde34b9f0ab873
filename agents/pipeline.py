"""The ingest agent and the sweeps that age silent users.

Per message: parse (or dead-letter), drop redeliveries, hand the event to the
pure core, then record what the core decided: the state in the users table,
and in an outbox its changelog record, tier changes, alerts and dead
letters; the membership record goes to a coalescing buffer that a
background task flushes to Redis.

Messages arrive as whole fetched batches (stream.batching), processed in
chunks, and the outbox of a chunk is handed to the Kafka producer in one
go. Faust flushes that same producer before it commits input offsets, so a
committed offset always has its outputs behind it, without waiting for a
round trip per batch.
Changelog records name their partition explicitly (the partition the
user's events arrive on), so sweeps outside of stream iteration write the
same changelog partition an event would have.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from agents import metrics
from agents.gc_tuning import HeapFreezer
from agents.outbox import BatchSender, Record
from state.engine import ChurnAlert, Decision, advance, on_event, wake_at
from state.evaluate import Assessment
from state.membership import MembershipUpdate, MembershipWriter
from state.model import UserState
from state.rules import STAGES, Rules
from state.due_index import DueIndex
from stream import topics
from stream.app import StreamApp
from stream.codecs import churn_alert_record, dead_letter_record, encode_state, tier_change_record, user_record
from stream.contract import Rejection, parse_event
from stream.settings import Settings

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        streams: StreamApp,
        settings: Settings,
        rules: Rules,
        membership: MembershipWriter | None,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.membership = membership
        self.wall_clock_ms = wall_clock_ms
        self.store: Any = streams.users.data  # the table's local store: a dict-like
        self.index = DueIndex()
        # Latest event time seen per partition: the watermark's source.
        self.max_event_ms: dict[int, int] = {}
        # user -> latest assessment not yet in Redis; the doc is built at flush
        self.pending: dict[str, Assessment] = {}
        self.outbox: list[Record] = []
        self.sender = BatchSender()
        self.tally = metrics.Tally()
        self.freezer = HeapFreezer()
        self.changelog_topic = streams.users.changelog_topic.get_topic_name()
        streams.users.on_active_partitions = self.on_active_partitions

    # -- ownership -------------------------------------------------------

    def on_active_partitions(self, partitions: set[int]) -> None:
        """After recovery: rebuild the due index from the recovered table for
        the partitions this worker actively owns (standbys are left out)."""
        self.index.reset(partitions)
        owned = 0
        for user_id, state in self.store.items():
            if state.src_partition in partitions:
                owned += 1
                self.index.schedule(state.src_partition, wake_at(state), user_id)
                # Every event seen is in some user's state (applied or held),
                # so the partition's watermark comes back exactly.
                seen = max(state.last_seen_ms, state.held[-1][0] if state.held else 0)
                p = state.src_partition
                self.max_event_ms[p] = max(self.max_event_ms.get(p, 0), seen)
        metrics.DUE_INDEX_SIZE.set(len(self.index))
        metrics.RECOVERED_USERS.set(owned)
        self.freezer.maybe_freeze(len(self.store))
        log.info("owning partitions %s, %d users due-indexed", sorted(partitions), len(self.index))
        if self.settings.recovery_dump is not None:
            self._dump_recovered(partitions)

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
        self.index.reset(set(self.index.partitions()) - partitions)

    # -- per message -----------------------------------------------------

    def on_message(self, message: Any) -> None:
        """Never raises: whatever goes wrong with one message becomes a dead letter."""
        try:
            self._process(message)
        except Exception as exc:  # one bad event must not stop the stream
            log.exception("failed to process %s[%s]@%s", message.topic, message.partition, message.offset)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self._dead_letter(message, Rejection("processing_error", detail))

    def _process(self, message: Any) -> None:
        wall = self.wall_clock_ms()
        parsed = parse_event(
            message.value or b"",
            now_ms=wall,
            max_bytes=self.settings.max_event_bytes,
            max_future_ms=self.settings.max_future_seconds * 1000,
        )
        if isinstance(parsed, Rejection):
            self._dead_letter(message, parsed)
            return
        user_id = parsed.user_id
        if message.key != user_id.encode():
            # The table is partitioned by user id: an event on the wrong
            # partition would split a user's state. Send it where it belongs.
            self.outbox.append(Record(topics.EVENTS, user_id.encode(), message.value))
            self.tally.add(metrics.EVENTS_REKEYED)
            return
        partition = message.partition
        state: UserState | None = self.store.get(user_id)
        if state is not None and state.src_partition == partition and message.offset <= state.src_offset:
            self.tally.add(metrics.EVENTS_REDELIVERED)  # replayed after a restart: already applied
            return
        watermark_before = self.watermark(partition, wall)
        self.max_event_ms[partition] = max(self.max_event_ms.get(partition, 0), parsed.ts_ms)
        watermark = self.watermark(partition, wall)
        previous_due = wake_at(state) if state is not None else None
        result = on_event(state, parsed, watermark_before, watermark, self.rules)
        if not result.accepted:
            self.tally.add(metrics.EVENTS_DUPLICATE)
            return
        self.tally.add(metrics.EVENTS_ACCEPTED)
        result.state.src_partition, result.state.src_offset = partition, message.offset
        self._commit(user_id, partition, result.state, result.decisions, result.assessment, previous_due)
        if watermark > watermark_before:
            self.sweep(partition, watermark)

    def watermark(self, partition: int, wall_ms: int) -> int:
        """Latest event time seen on the partition (and, live, the wall
        clock), minus the allowed lateness. Decisions are final up to here."""
        latest = self.max_event_ms.get(partition, 0)
        if self.settings.clock == "live":
            latest = max(latest, wall_ms)
        return latest - self.settings.allowed_lateness_ms

    # -- time ------------------------------------------------------------

    def sweep(self, partition: int, watermark: int) -> int:
        """Advance every user of `partition` who needs attention by `watermark`."""
        if not self.index.owns(partition):
            return 0
        touched = 0
        for _due, user_id in self.index.pop_due(partition, watermark, self._wake_of):
            state = self.store[user_id]
            held_before = len(state.held)
            assessment, decisions = advance(user_id, state, watermark, self.rules)
            if decisions or len(state.held) != held_before:
                self._commit(user_id, partition, state, decisions, assessment, previous_due=None)
            else:
                # Nothing changed, only the next due time moved. That is not
                # worth a changelog record: a recovered state with the older
                # due time wakes early, finds nothing, and moves on.
                self.index.schedule(partition, wake_at(state), user_id)
            touched += 1
        # Every reschedule leaves a stale entry; in replay mode nothing else
        # would ever clear them.
        self.index.maybe_compact(partition, self._wake_of)
        return touched

    def tick(self) -> None:
        """Live clock: age silent users of every owned partition to now."""
        wall = self.wall_clock_ms()
        for partition in self.index.partitions():
            self.sweep(partition, self.watermark(partition, wall))
        metrics.DUE_INDEX_SIZE.set(len(self.index))

    def _wake_of(self, user_id: str) -> int | None:
        state = self.store.get(user_id)
        return wake_at(state) if state is not None else None

    # -- outputs ---------------------------------------------------------

    def _commit(
        self,
        user_id: str,
        partition: int,
        state: UserState,
        decisions: list[Decision],
        assessment: Assessment | None,
        previous_due: int | None,
    ) -> None:
        key = user_id.encode()
        self.store[user_id] = state
        self.outbox.append(Record(self.changelog_topic, key, encode_state(state), partition))
        wake = wake_at(state)
        if wake != previous_due:
            self.index.schedule(partition, wake, user_id)
        for decision in decisions:
            if isinstance(decision, ChurnAlert):
                self.outbox.append(Record(topics.CHURN_ALERTS, key, orjson.dumps(churn_alert_record(decision))))
                self.tally.add(metrics.ALERTS_AT_RISK if decision.level == "at_risk" else metrics.ALERTS_CHURNED)
            else:
                self.outbox.append(Record(topics.TIER_CHANGES, key, orjson.dumps(tier_change_record(decision))))
                self.tally.add(metrics.TIER_CHANGES)
        if assessment is not None:
            self.pending[user_id] = assessment

    def _dead_letter(self, message: Any, rejection: Rejection) -> None:
        record = dead_letter_record(
            reason=rejection.reason,
            error=rejection.error,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            payload=message.value,
            max_payload=self.settings.dlq_max_payload_bytes,
        )
        self.outbox.append(Record(topics.DEAD_LETTERS, message.key, record))
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()

    def _membership_update(self, user_id: str, assessment: Assessment) -> MembershipUpdate:
        # The store holds the state that goes with the latest assessment:
        # both are replaced together in _commit.
        state = self.store[user_id]
        doc = orjson.dumps(user_record(user_id, state, assessment))
        return MembershipUpdate(user_id, state.version, assessment.tier, assessment.stage, doc)

    async def publish(self, producer: Any) -> None:
        """Hand the outbox to the producer (enqueue only; see module doc)."""
        self.tally.flush()
        self.freezer.maybe_freeze(len(self.store))
        if self.outbox:
            batch, self.outbox = self.outbox, []
            await self.sender.send(producer, batch)

    async def declare_segments(self) -> None:
        if self.membership is None:
            return
        try:
            await self.membership.declare_segments(self.rules.tier_names, STAGES)
        except Exception:  # Redis down at start: flushes will retry, counts just miss zeros
            log.exception("could not declare segments in Redis")

    async def flush_membership(self) -> int:
        """Write the coalesced membership updates; on failure keep them for
        the next try (newer updates for the same user replace older ones)."""
        if not self.pending or self.membership is None:
            return 0
        batch, self.pending = self.pending, {}
        started = time.perf_counter()
        try:
            await self.membership.write(self._membership_update(u, a) for u, a in batch.items())
        except Exception:
            metrics.REDIS_ERRORS.inc()
            log.exception("redis flush of %d updates failed; will retry", len(batch))
            for user_id, assessment in batch.items():
                self.pending.setdefault(user_id, assessment)  # a newer one, if any, wins
            metrics.REDIS_PENDING.set(len(self.pending))
            return 0
        metrics.REDIS_FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.REDIS_WRITES.inc(len(batch))
        metrics.REDIS_PENDING.set(len(self.pending))
        return len(batch)


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's: the same connection, settings and
    shutdown flush, without Faust's per-record wrapper and signals."""
    return app.producer._ensure_producer()


def install(streams: StreamApp, settings: Settings, rules: Rules) -> Pipeline:
    """Attach the agent, the sweep timer and the Redis flusher to the app."""
    app = streams.app
    redis = Redis.from_url(settings.redis_url)
    pipeline = Pipeline(streams, settings, rules, MembershipWriter(redis, settings.redis_prefix))

    async def on_batch(tp: Any, records: list[Any]) -> None:
        # Chunks of batch_max, yielding between them, so that one large
        # fetch does not hold the Redis flusher and the timers back.
        step = settings.batch_max
        for start in range(0, len(records), step):
            for record in records[start : start + step]:
                pipeline.on_message(record)
            await pipeline.publish(kafka_producer(app))
            await asyncio.sleep(0)

    # The consumer hands the events topic's fetches over whole
    # (stream.batching): Faust's per-record path is the bottleneck otherwise.
    streams.batch_handlers[streams.events.get_topic_name()] = on_batch

    @app.agent(streams.events, name="tierstream.ingest")
    async def ingest(stream: Any) -> None:
        # Subscribes the topic (and so co-partitions the table with it).
        # Records reach this stream only on a consumer without batch
        # handlers; the work is the same.
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            for event in events:
                pipeline.on_message(event.message)
            await pipeline.publish(kafka_producer(app))

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: set, **kwargs: Any) -> None:
        pipeline.on_partitions_revoked({tp.partition for tp in revoked if tp.topic == streams.events.get_topic_name()})

    if settings.clock == "live":

        @app.timer(interval=settings.tick_seconds)
        async def age_silent_users() -> None:
            pipeline.tick()
            await pipeline.publish(kafka_producer(app))

    @app.task
    async def flush_to_redis() -> None:
        interval = settings.redis_flush_ms / 1000
        await pipeline.declare_segments()
        while not app.should_stop:
            await asyncio.sleep(interval)
            await pipeline.flush_membership()

    @app.on_before_shutdown.connect
    async def final_flush(app_: Any, **kwargs: Any) -> None:
        await pipeline.flush_membership()

    return pipeline
