"""The users table: Faust's Table with the compact state codec, bulk
restore, and the worker told which partitions it owns once recovered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from stream.codecs import decode_state
from stream.faust_ext.recovery import committed_inputs


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
        """Bulk recovery (stream.faust_ext.recovery): the last changelog value per key."""
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
