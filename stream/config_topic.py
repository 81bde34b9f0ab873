"""The configuration in force on `tierstream.config` (state.config): read
it, publish a version, and check a worker's own files against it.

One partition; each record a whole document; the latest record is the
version in force and the earlier ones are its history (Tansu does not
compact, and the roll-out history wants them all anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiokafka import TopicPartition
from faust.types import TP

import orjson

from state.config import ConfigDocument, ConfigMismatch, Published, config_history, in_force as current_of, mismatch_message
from stream import topics
from stream.connection import KafkaAccess
from stream.faust_ext.recovery import true_end_offsets

log = logging.getLogger(__name__)


async def history(kafka: KafkaAccess) -> list[Published]:
    """Every version published, oldest first, to the topic's true end; none
    before the topic exists (no worker has started on this cluster yet)."""
    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[Published] = []
    try:
        if topics.CONFIG not in await consumer.topics():
            return []
        end = (await true_end_offsets(kafka, {TP(topics.CONFIG, 0)}))[TP(topics.CONFIG, 0)]
        if end == 0:
            return []
        tp = TopicPartition(topics.CONFIG, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while True:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for r in batch.get(tp, []):
                try:
                    out.append(replace(Published.decode(r.value), offset=r.offset))
                except (ValueError, KeyError) as exc:  # not ours to stop on: say so and skip it
                    log.error("%s@%d is not a configuration record (%s); skipped", topics.CONFIG, r.offset, exc)
                if r.offset + 1 >= end:
                    return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topics.CONFIG} stalled before offset {end}")
    finally:
        await consumer.stop()


async def in_force(kafka: KafkaAccess) -> Published | None:
    versions = await history(kafka)
    return versions[-1] if versions else None


async def publish(kafka: KafkaAccess, document: ConfigDocument, by: str, rollout: bool = False,
                  rollout_at_ms: int | None = None) -> Published:
    """Put a version on the topic: whole (every worker stopped), or as a
    live roll-out's proposal (state.rollout)."""
    published = Published(document, by, int(time.time() * 1000), rollout, rollout_at_ms)
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topics.CONFIG, published.encode(), key=b"config", partition=0)
    finally:
        await producer.stop()
    return replace(published, offset=sent.offset)


async def establish(kafka: KafkaAccess, local: ConfigDocument, by: str,
                    settle: Callable[[list[Published]], Awaitable[dict]] | None = None) -> Published:
    """For a worker starting: the version in force if it is this worker's
    own; its own, published, if none is in force yet; else ConfigMismatch.
    Two first workers with different files may both publish: the later
    record wins, and the worker whose record it is not refuses. `settle`:
    the outcomes of the roll-outs (cli.rollout.outcomes); the version a
    worker must start with is the latest not refused."""
    current = await in_force(kafka)
    if current is None:
        await publish(kafka, local, by)
        current = await in_force(kafka)
        assert current is not None
    elif settle is not None and current.rollout:
        versions = await history(kafka)
        settled = await settle(versions)
        current = next(v for v in reversed(versions)
                       if not v.rollout or getattr(settled.get(v.key), "from_ms", 0) is not None)
    if current.document.version != local.version:
        raise ConfigMismatch(mismatch_message(local, current))
    return current


async def config_summary(kafka: KafkaAccess,
                         settle: Callable[[list[Published]], Awaitable[dict]] | None = None) -> bytes | None:
    """What the workers write to Redis for the API: the version in force
    (GET /v1/config) with the history of versions (GET /v1/config/history).
    `settle`: the outcomes of the roll-outs (cli.io.rollout_outcomes)."""
    versions = await history(kafka)
    if not versions:
        return None
    settled = await settle(versions) if settle is not None else {}
    current = current_of(versions, settled)
    return orjson.dumps({**current.summary(), "history": config_history(versions, settled)})
