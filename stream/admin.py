"""Create the contract topics up front, so producers, tails and the worker
never race Kafka's auto-creation (which may be off in production)."""

from __future__ import annotations

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream import topics
from stream.connection import KafkaAccess


async def ensure_topics(kafka: KafkaAccess, partitions: int) -> None:
    admin = kafka.admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topics.EVENTS, *topics.OUTPUTS]
        missing = [NewTopic(name, partitions, 1) for name in wanted if name not in existing]
        for single in (topics.CONFIG, topics.COSTS):  # one partition: its records' order is the versions' order
            if single not in existing:
                missing.append(NewTopic(single, 1, 1))
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race: fine
        described = await admin.describe_topics([topics.EVENTS])
        found = len(described[0]["partitions"]) if described and described[0].get("partitions") else partitions
        if found != partitions:
            raise SystemExit(
                f"{topics.EVENTS} has {found} partitions but TIERSTREAM_PARTITIONS={partitions}; "
                "the users table must be partitioned like its input: set TIERSTREAM_PARTITIONS to match"
            )
    finally:
        await admin.close()
