"""The configuration in force on `tierstream.config` (state.config): read
it, publish a version, and check a worker's own files against it.

One partition; each record a whole document; the latest record is the
version in force and the earlier ones are its history (Tansu does not
compact, and the roll-out history wants them all anyway).
"""

from __future__ import annotations

import logging
import time

from aiokafka import TopicPartition
from faust.types import TP

import orjson

from state.config import ConfigDocument, ConfigMismatch, Published, config_history, mismatch_message
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
                    out.append(Published.decode(r.value))
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


async def publish(kafka: KafkaAccess, document: ConfigDocument, by: str) -> Published:
    published = Published(document, by, int(time.time() * 1000))
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.CONFIG, published.encode(), key=b"config", partition=0)
    finally:
        await producer.stop()
    return published


async def establish(kafka: KafkaAccess, local: ConfigDocument, by: str) -> Published:
    """For a worker starting: the version in force if it is this worker's
    own; its own, published, if none is in force yet; else ConfigMismatch.
    Two first workers with different files may both publish: the later
    record wins, and the worker whose record it is not refuses."""
    current = await in_force(kafka)
    if current is None:
        await publish(kafka, local, by)
        current = await in_force(kafka)
        assert current is not None
    if current.document.version != local.version:
        raise ConfigMismatch(mismatch_message(local, current))
    return current


async def config_summary(kafka: KafkaAccess) -> bytes | None:
    """What the workers write to Redis for the API: the version in force
    (GET /v1/config) with the history of versions (GET /v1/config/history)."""
    versions = await history(kafka)
    if not versions:
        return None
    return orjson.dumps({**versions[-1].summary(), "history": config_history(versions)})
