"""The Faust wiring: the agent, timers and tasks that drive a Pipeline.

Each piece is a small named function taking what it needs; `install`
attaches them to the app. Faust's own internals (the batching consumer,
recovery, transactions) are in stream.faust_ext.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import TP

from agents import metrics
from agents.pipeline import Pipeline
from store.live_feed import FeedWriter
from store.membership import MembershipWriter
from store.metrics_store import MetricsStore
from state.rules import Rules
from stream.app import StreamApp
from stream.faust_ext.producer import kafka_producer, transactional_id
from stream.connection import redis_access
from stream.settings import Settings

log = logging.getLogger(__name__)


class Sender:
    """How a chunk's records leave: `publish` (at least once), or into
    Faust's per-partition transactions (exactly-once), which commit with
    the input offsets."""

    def __init__(self, app: Any, pipeline: Pipeline, events_topic: str, exactly_once: bool) -> None:
        self.app = app
        self.pipeline = pipeline
        self.events_topic = events_topic
        self.exactly_once = exactly_once
        # Exactly-once: partitions whose open transaction holds records not committed yet.
        self.uncommitted: set[int] = set()

    def transactional_id(self, partition: int) -> str:
        return transactional_id(self.app, self.events_topic, partition)

    async def send_out(self, outside_a_batch: bool = False) -> None:
        if not self.exactly_once:
            await self.pipeline.publish(kafka_producer(self.app))
            return
        self.uncommitted.update(await self.pipeline.publish_in_transactions(self.app.producer, self.transactional_id))
        if outside_a_batch and self.uncommitted:
            # A sweep moves no input offset: close the transactions holding
            # its decisions now rather than at the next commit (a silent
            # user's alert would wait for it).
            await self.commit_transactions()

    async def commit_transactions(self) -> None:
        """Commit every open transaction at its partition's commit point,
        while no record is on its way into one: a transaction then holds
        whole chunks, each chunk's decisions with the changelog records of
        the states that made them. A chunk of a batch still in hand commits
        with the offset before that batch; that is safe, because the state
        committed with it drops those inputs as applied when they come
        again after a crash."""
        async with self.pipeline.publisher.lock:
            done = await self.app.consumer.commit_transactions({TP(self.events_topic, p) for p in self.uncommitted})
            self.uncommitted.difference_update(tp.partition for tp in done)
            # Partitions no longer assigned: their transactions went with them.
            self.uncommitted.intersection_update(tp.partition for tp in self.app.consumer.assignment()
                                                 if tp.topic == self.events_topic)


async def until_ready(app: Any, pipeline: Pipeline, partition: int) -> bool:
    """Hold a recovered partition's input until the population reader has
    read the cut points it recovered into (PartitionEngine.ready). False
    when the partition is revoked, or the worker stops, meanwhile: the input
    is then left unread, for the partition's next owner."""
    if pipeline.ready(partition):
        return True
    while not app.should_stop and pipeline.engine.owns(partition):
        await asyncio.sleep(0.05)
        if pipeline.engine.owns(partition) and pipeline.ready(partition):
            return True
    return False


def idle_partitions(app: Any, pipeline: Pipeline, events_topic: str, idle_seconds: float) -> set[int]:
    """Owned partitions with nothing left to read and nothing new for a
    while: only events move time in a replay, so without following the
    others these would hold them at their last boundary."""
    now = time.monotonic()
    return {tp.partition for tp in app.consumer.assignment()
            if tp.topic == events_topic and pipeline.engine.owns(tp.partition)
            and now - pipeline.last_input.get(tp.partition, now) >= idle_seconds
            and app.consumer.caught_up(tp)}


def batch_handler(app: Any, pipeline: Pipeline, sender: Sender, batch_max: int) -> Any:
    async def on_batch(tp: Any, records: list[Any]) -> bool:
        # Chunks of batch_max, yielding between them, so that one large
        # fetch does not hold the Redis flusher and the timers back.
        if not await until_ready(app, pipeline, tp.partition):
            return False  # not taken (stream.faust_ext.batching): the offsets stay
        pipeline.last_input[tp.partition] = time.monotonic()
        for start in range(0, len(records), batch_max):
            for record in records[start : start + batch_max]:
                pipeline.on_message(record)
            await sender.send_out()
            await asyncio.sleep(0)
        pipeline.crash.reached("batch_done")
        return True

    return on_batch


async def redis_round(pipeline: Pipeline, sender: Sender, settings: Settings, heal_after: float) -> float:
    """One round of the Redis flusher; returns when healing may be tried next."""
    sync = pipeline.redis
    if time.monotonic() >= heal_after:
        try:
            await sync.heal_membership()
        except Exception as exc:  # Redis down: try again later, not every flush
            metrics.REDIS_ERRORS.inc()
            heal_after = time.monotonic() + settings.redis_check_seconds
            log.warning("redis healing failed (%r); retrying in %.0fs", exc, settings.redis_check_seconds)
    await sync.flush_membership()
    await sync.flush_feed()
    if pipeline.has_work():
        # Decided outside a batch (the sweep after recovery) with no event
        # or tick to publish it.
        await sender.send_out(outside_a_batch=True)
    return heal_after


PROGRESS_SECONDS = 1.0


def install(streams: StreamApp, settings: Settings, rules: Rules, config_summary: bytes | None = None) -> Pipeline:
    """Attach the agent, the sweep timer and the Redis flusher to the app.
    `config_summary`: the configuration in force `rules` come from (state.config)."""
    app = streams.app
    redis = redis_access(settings).client()
    exactly_once = settings.processing_guarantee == "exactly_once"
    # With exactly-once the feed would show records before their transaction
    # commits, and its Redis writes would add a wait inside the publishing
    # path Faust's transactions depend on: it is off there.
    feed = None if exactly_once else FeedWriter(redis, settings.redis_prefix, settings.user_history)
    pipeline = Pipeline(streams, settings, rules, MembershipWriter(redis, settings.redis_prefix), feed)
    pipeline.redis.config_summary = config_summary
    events_topic = streams.events.get_topic_name()
    sender = Sender(app, pipeline, events_topic, exactly_once)

    # The population reader settles quantile scores' cut points and rules
    # roll-outs (state.rollout): every worker runs it.
    from agents.population import PopulationReader

    pipeline.engine.enable_rollouts(settings.partitions)
    membership = pipeline.redis.membership
    reader = PopulationReader(
        settings, pipeline.engine, redis, lambda: sender.send_out(outside_a_batch=True),
        (lambda: idle_partitions(app, pipeline, events_topic, settings.idle_partition_seconds))
        if not pipeline.clock.live else None,
        write_config=membership.write_config if membership is not None else None)

    @app.task
    async def read_population() -> None:
        await reader.run(lambda: app.should_stop)

    @app.task
    async def roll_out_sweeps() -> None:
        # A roll-out's re-assessment, a chunk at a time (engine.partition:
        # switch_chunk), with the rest of the worker's work between chunks.
        while not app.should_stop:
            if pipeline.engine.switching:
                pipeline.resume()
                await sender.send_out(outside_a_batch=True)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.1)

    if settings.operator_metrics:
        from agents import metrics_aggregator

        pipeline.aggregator = metrics_aggregator.install(
            app, settings, pipeline.rules, MetricsStore(redis, settings.redis_prefix))

    if exactly_once:

        @app.timer(interval=app.conf.broker_commit_interval)
        async def commit_open_transactions() -> None:
            await sender.commit_transactions()

    # The consumer hands the events topic's fetches over whole
    # (stream.faust_ext.batching): Faust's per-record path is the bottleneck otherwise.
    streams.batch_handlers[events_topic] = batch_handler(app, pipeline, sender, settings.batch_max)
    # Events a partition deferred (it waits for cut points) are not applied
    # yet: its commits stop before the first of them.
    streams.commit_limits[events_topic] = pipeline.engine.commit_limit

    @app.agent(streams.events, name="tierstream.ingest")
    async def ingest(stream: Any) -> None:
        # Subscribes the topic (and so co-partitions the table with it).
        # Records reach this stream only on a consumer without batch
        # handlers (never, as the app is built); the work is the same, except
        # that Faust acks each record, so the commit limit of deferred
        # events (engine.partition) is not honoured on this path.
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            for event in events:
                # This path cannot leave a message unread: a partition lost
                # while waiting is handled as any message in hand then is.
                await until_ready(app, pipeline, event.message.partition)
                pipeline.on_message(event.message)
            await sender.send_out()

    async def before_revoke(revoked: set[TP]) -> None:
        # Stop sweeping the partitions, then hand over what is queued (after
        # a publish in progress, which holds the lock) while Faust's flush
        # that follows still covers it: nothing of theirs is sent later.
        pipeline.on_partitions_revoked({tp.partition for tp in revoked if tp.topic == events_topic})
        await sender.send_out()

    streams.revoke_hooks.append(before_revoke)

    if pipeline.clock.live:

        @app.timer(interval=settings.tick_seconds)
        async def age_silent_users() -> None:
            pipeline.tick()
            await sender.send_out(outside_a_batch=True)

    @app.timer(interval=PROGRESS_SECONDS)
    async def report_progress() -> None:
        # How far decisions trail the events read: a Prometheus gauge, and
        # in Redis for /healthz and `snapshot --wait` (which must not take
        # "input committed" for "everything decided").
        behind = pipeline.decisions_behind()
        membership = pipeline.redis.membership
        if membership is not None:
            try:
                await membership.write_progress(behind, pipeline.clock.now_ms())
            except Exception as exc:  # Redis down: the flusher says so; try next time
                log.debug("progress not written to Redis (%r)", exc)

    @app.task
    async def flush_to_redis() -> None:
        await pipeline.redis.declare_segments()
        heal_after = 0.0
        while not app.should_stop:
            await asyncio.sleep(settings.redis_flush_ms / 1000)
            heal_after = await redis_round(pipeline, sender, settings, heal_after)

    @app.on_before_shutdown.connect
    async def final_flush(app_: Any, **kwargs: Any) -> None:
        await pipeline.redis.flush_membership()
        await pipeline.redis.flush_feed()
        if exactly_once:
            try:
                await sender.commit_transactions()
            except Exception:  # what stays uncommitted is redone after the restart
                log.exception("final commit of the open transactions failed")

    return pipeline
