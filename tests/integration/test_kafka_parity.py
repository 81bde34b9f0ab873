"""What only Apache Kafka can show: the users table's changelog is created
compacted and is compacted, so recovery reads one record per user, not the
whole history. (Tansu does not compact; on it this module is skipped.)"""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.harness import BROKER, PARTITIONS, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.broker_dependent("Kafka only: compaction"),
              pytest.mark.skipif(BROKER != "kafka", reason="Tansu 0.6, the embedded broker, does not compact topics; this test runs in the suite's Apache Kafka half")]
CHANGELOG = "tierstream-users-changelog"


async def changelog_records(broker: str, keys: set[bytes]) -> int:
    """Records for `keys` still in the changelog, read from its start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(CHANGELOG, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        count = 0
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                count += sum(1 for r in records if r.key in keys)
        return count
    finally:
        await consumer.stop()


async def test_the_changelog_is_created_compacted_and_compacts(ready, era):
    broker = ready.servers.broker
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, CHANGELOG)])
    finally:
        await admin.close()
    configs = {name: value for name, value, *_ in described[0].resources[0][4]}
    assert configs["cleanup.policy"] == "compact"

    # 40 users, 50 events each: at least 2,000 changelog records for 40 keys.
    users = [f"c{i}" for i in range(40)]
    events = [era.event(u, "login", day / 10) for day in range(50) for u in users]
    await produce(broker, events)
    keys = {era.user(u).encode() for u in users}

    async def all_written():
        n = await changelog_records(broker, keys)
        return n if n >= 2000 else 0

    written = await wait_until(all_written, timeout=60, what="2,000 changelog records")

    # Compaction only touches closed segments: the test broker rolls them
    # every 10 s (cli/apache_kafka.py), on the next append: keep a trickle of
    # events going on every partition.
    async def compacted():
        await produce(broker, [era.event(f"trickle{i}", "login", 6) for i in range(16)])  # every partition
        return await changelog_records(broker, keys) <= len(keys) * 5

    await wait_until(compacted, timeout=90, what="the log cleaner to compact the changelog")
    print(f"changelog records for {len(keys)} users: {written}+ written, compacted to "
          f"{await changelog_records(broker, keys)}")
