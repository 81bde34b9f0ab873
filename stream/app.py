"""The Faust app, its topics and the users table, built from Settings.

Read top to bottom: app -> topics -> table. Agents live in agents/ and are
attached by `agents.wiring.install`. Faust's internals it builds with are
in stream.faust_ext.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from faust.tables import TableManager

from stream import topics
from stream.faust_ext import codecs
from stream.faust_ext.batching import BatchHandler, CommitLimit, RevokeHook, batching_consumer_class
from stream.faust_ext.recovery import TierstreamTableManager
from stream.faust_ext.table import UsersTable
from stream.connection import faust_credentials, kafka_access
from stream.settings import Settings


@dataclass
class StreamApp:
    app: faust.App
    events: Any  # the input faust topic
    users: UsersTable
    # topic name -> handler of whole fetched batches (stream.faust_ext.batching)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    # awaited when partitions are revoked, before Faust flushes the producer
    revoke_hooks: list[RevokeHook] = field(default_factory=list)
    # topic name -> the offset each partition's commits must not pass
    commit_limits: dict[str, CommitLimit] = field(default_factory=dict)


def build_app(settings: Settings) -> StreamApp:
    codecs.register()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.broker.split(",")],
        # TLS and SASL for Faust's consumer, producer and topic creator, the
        # same as every other client gets (stream.connection).
        broker_credentials=faust_credentials(kafka_access(settings)),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        producer_linger=settings.producer_linger_ms / 1000,
        # aiokafka keeps one batch per partition waiting and one produce
        # request in flight per broker: a publish with more than one 16 KB
        # batch (its default) for a partition waits a round trip for each.
        producer_max_batch_size=settings.producer_max_batch_bytes,
        # Faust's stock manager only where asked (the restart test on Apache
        # Kafka shows it suffices there); ours reads to the true end, in bulk.
        TableManager=TierstreamTableManager if settings.recovery == "bulk" else TableManager,
        # The read API is our own (api/), reading Redis; Faust's web server
        # would only add a port to collide with.
        web_enabled=False,
        # One worker and one broker in dev: a standby copy would double the
        # changelog reads for no gain. Production raises this (see README).
        table_standby_replicas=0,
        # Larger fetches: recovery reads the whole changelog, and the stream
        # is consumed in batches anyway.
        broker_max_poll_records=settings.max_poll_records,
        processing_guarantee=settings.processing_guarantee,
    )
    batch_handlers: dict[str, BatchHandler] = {}
    revoke_hooks: list[RevokeHook] = []
    commit_limits: dict[str, CommitLimit] = {}
    # Faust instantiates the transport's consumer class itself.
    app.transport.Consumer = batching_consumer_class(batch_handlers, revoke_hooks, settings.fetch_max_wait_ms,
                                                     commit_limits)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    # Values stay bytes: the agent parses them itself so that a bad message
    # becomes a dead letter instead of a deserialisation crash. Outputs are
    # written with the producer directly (agents/publisher.py), in batches.
    events = app.topic(topics.EVENTS, partitions=settings.partitions, **raw)
    users = app.tables.add(
        UsersTable(
            app,
            name=topics.USERS_TABLE,
            partitions=settings.partitions,
            beacon=app.tables.beacon,
            help="Per-user state (RFM figures, tier, stage) keyed by user_id",
        )
    )
    return StreamApp(app, events, users, batch_handlers, revoke_hooks, commit_limits)
