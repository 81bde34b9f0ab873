"""Changelog recovery that reads to the true end of each changelog partition.

Faust decides when a table is recovered by comparing what it read with the
partition's end offset (ListOffsets). Tansu 0.6 reports that as the first
offset of the last record batch + 1, so a restarted worker would stop early
and silently lose the tail of the changelog. The high-water mark in a fetch
response is right on every broker, so we fetch the last batch once and take
the largest of: ListOffsets, the last record's offset + 1, the fetch
high-water mark. On Apache Kafka all three agree and this costs one fetch
per partition at rebalance.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

log = logging.getLogger(__name__)


async def true_end_offsets(bootstrap: str, tps: set[TP], timeout_ms: int = 5000) -> dict[TP, int]:
    """The offset after the last record of each partition, read from fetches."""
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
        consumer.assign(list(parts))
        listed = await consumer.end_offsets(list(parts))
        result: dict[TP, int] = {}
        for ktp, tp in parts.items():
            end = listed[ktp]
            if end == 0:
                result[tp] = 0
                continue
            consumer.seek(ktp, end - 1)
            batch = await consumer.getmany(ktp, timeout_ms=timeout_ms, max_records=100_000)
            records = batch.get(ktp, [])
            last = records[-1].offset + 1 if records else end
            result[tp] = max(end, last, consumer.highwater(ktp) or 0)
            if result[tp] != end:
                log.info("changelog %s: broker listed end %d, true end %d", tp, end, result[tp])
        return result
    finally:
        await consumer.stop()


class TrueEndRecovery(Recovery):
    async def _build_highwaters(self, consumer: Any, tps: set[TP], destination: Counter, title: str) -> None:
        ends = await true_end_offsets(_bootstrap(self.app), set(tps))
        # Faust's highwater is the offset of the last record (end - 1).
        destination.clear()
        destination.update({tp: end - 1 for tp, end in ends.items()})


class TierstreamTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TrueEndRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def _bootstrap(app: Any) -> str:
    return ",".join(f"{u.host}:{u.port or 9092}" for u in app.conf.broker)
