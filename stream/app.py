"""The Faust app, its topics and the users table, built from Settings.

Read top to bottom: app -> topics -> table. Agents live in agents/ and are
attached by `agents.pipeline.install`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.tables import TableManager
from faust.types import TP

import stream.codecs  # noqa: F401  (registers the 'tierstate' and 'utf8' codecs)
from stream.codecs import decode_state
from stream import topics
from stream.batching import BatchHandler, RevokeHook, batching_consumer_class
from stream.recovery import TierstreamTableManager, committed_inputs
from stream.settings import Settings
from stream.tuning import set_fetch_max_wait


class UsersTable(faust.Table):
    """The users table, telling the pipeline which partitions it now owns
    once their state is fully recovered (and only then)."""

    on_active_partitions: Callable[[set[int], dict[int, int] | None], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Faust derives serializers from key/value types (json by default);
        # ours are the compact codecs of stream.codecs.
        self.key_serializer = "utf8"
        self.value_serializer = "tierstate"

    def restore_latest(self, partition: int, latest: dict[bytes, bytes | None]) -> None:
        """Bulk recovery (stream.recovery): the last changelog value per key."""
        store = self.data
        for key, value in latest.items():
            user_id = key.decode()
            if value is None:
                store.pop(user_id, None)
            else:
                store[user_id] = decode_state(value)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.on_active_partitions is not None:
            partitions = {tp.partition for tp in active_tps}
            # Where the group's input stands: recovered states past it are
            # ahead of the events the worker is about to re-read.
            committed = await committed_inputs(self.app, partitions) if partitions else {}
            self.on_active_partitions(partitions, committed)


@dataclass
class StreamApp:
    app: faust.App
    events: Any  # the input faust topic
    users: UsersTable
    # topic name -> handler of whole fetched batches (stream.batching)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    # awaited when partitions are revoked, before Faust flushes the producer
    revoke_hooks: list[RevokeHook] = field(default_factory=list)


def build_app(settings: Settings) -> StreamApp:
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.broker.split(",")],
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        producer_linger=settings.producer_linger_ms / 1000,
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
    # Faust instantiates the transport's consumer class itself.
    app.transport.Consumer = batching_consumer_class(batch_handlers, revoke_hooks)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    # Values stay bytes: the agent parses them itself so that a bad message
    # becomes a dead letter instead of a deserialisation crash. Outputs are
    # written with the producer directly (agents/pipeline.py), in batches.
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
    return StreamApp(app, events, users, batch_handlers, revoke_hooks)
