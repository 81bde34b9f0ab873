"""Faust's consumer, handing whole fetched batches to a handler.

Faust delivers every record on its own: it wraps it in a Message, awaits
`wait_first` (two tasks per record), takes a lock in the conductor, decodes,
queues an Event, and the agent's stream acks it back one by one. That path
costs about 80 µs per record here, a ceiling of ~12k records/s before any
work is done (issue #4).

A topic registered with a batch handler skips all of that: each fetched
batch of a partition goes to the handler as the list of aiokafka records,
and once the handler returns, the offset after the batch's last record is
what Faust's commit timer commits (after flushing the producer, as for any
acked message). Everything else stays Faust's: the consumer group and its
co-partitioned assignment, table recovery, standbys, rebalances, the commit
timer. Topics without a handler (changelogs, ...) keep the per-record path.

The handler must not raise for one bad record (it dead-letters instead); if
it does raise, the worker crashes like any Faust agent error, and the batch
is read again from the last commit. A handler may also decline a batch
(return False: it waited for its partition to be ready, and lost it): that
partition's offsets then stay where they were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from stream.faust_ext.tuning import TunedConsumerThread

log = logging.getLogger(__name__)

# Returns False when it did not take the batch (its partition was revoked,
# or the worker stops, while it waited): the offsets then stay where they
# were, and the partition's next owner reads the batch from the last commit.
BatchHandler = Callable[[TP, list[Any]], Awaitable[bool]]
CommitLimit = Callable[[int], "int | None"]
RevokeHook = Callable[[set[TP]], Awaitable[None]]


class BatchingConsumer(Consumer):
    #: topic name -> handler; set per app by `batching_consumer_class`.
    batch_handlers: dict[str, BatchHandler] = {}
    #: awaited first when partitions are revoked, before Faust waits for
    #: the streams and flushes the producer (see on_partitions_revoked).
    revoke_hooks: list[RevokeHook] = []
    #: topic name -> (partition -> the offset its commits must not pass, if
    #: any): the handler took records it has not applied yet (the engine's
    #: deferred events), which a restart must read again.
    commit_limits: dict[str, CommitLimit] = {}
    #: the consumer thread (stream.faust_ext.tuning: the fetch wait)
    consumer_thread_class: type[TunedConsumerThread] = TunedConsumerThread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Offset to commit next per partition: the one after the last record
        # a handler finished. Faust's ack lists would hold one int per record.
        self._batch_done: dict[TP, int] = {}
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()
        self._announced: set[str] = set()

    def _new_consumer_thread(self) -> TunedConsumerThread:
        # Faust's builds AIOKafkaConsumerThread, whose aiokafka consumer has a 1.5 s fetch wait.
        return self.consumer_thread_class(self, loop=self.loop, beacon=self.beacon)

    # -- delivery --------------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:
        if not self.batch_handlers:
            return await super()._drain_messages(fetcher)
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self._drain_once()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _drain_once(self) -> None:
        self.diag.set_flag(CONSUMER_FETCHING)
        try:
            records, active = await self._wait_next_records(1.0)
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)
        await self.sleep(0)
        if not records or self.should_stop:
            return
        if not self.flow_active:
            # A rebalance began while fetching: what we hold may not be ours.
            await self.perform_seek()
            return
        generation = self.app.consumer_generation_id
        for tp, batch in self._fresh(records, active):
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            handler = self.batch_handlers.get(tp.topic)
            if handler is None:
                await self._deliver_one_by_one(tp, batch)
                continue
            if tp.topic not in self._announced:
                self._announced.add(tp.topic)
                log.info("%s: fetched batches go to their handler whole", tp.topic)
            self._batch_idle.clear()
            try:
                taken = await handler(tp, batch)
            finally:
                self._batch_idle.set()
            if taken is False:
                continue
            self._read_offset[tp] = self._batch_done[tp] = batch[-1].offset + 1
            self.app.monitor.stream_inbound_time[tp] = time.monotonic()  # the livelock detector reads it

    def _fresh(self, records: dict, active: set[TP] | None) -> Iterator[tuple[TP, list[Any]]]:
        """Per partition, the records not yet read (a seek back can refetch)."""
        for tp, batch in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            # After a seek this is the next offset to read; Faust's own path
            # sets it to the last record it delivered. `>=` is right for both.
            read = self._read_offset[tp]
            if read is not None and batch and batch[0].offset < read:
                batch = [r for r in batch if r.offset >= read]
            if batch:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, batch

    async def _deliver_one_by_one(self, tp: TP, batch: list[Any]) -> None:
        """Faust's own path, for topics without a batch handler."""
        callback = self.callback
        for record in batch:
            message = self._to_message(tp, record)
            await self.wait_first(callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = record.offset

    # -- commits ---------------------------------------------------------

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        yield from super()._filter_tps_with_pending_acks(topics)
        for tp in list(self._batch_done):
            if topics is None or tp in topics or tp.topic in topics:
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.batch_handlers:
            if self.in_transaction:
                # Exactly-once: the handler's side commits these partitions'
                # transactions itself (commit_transactions), at moments when
                # no record is on its way into them. Faust's commit timer
                # would commit whenever it fires: it takes the transaction's
                # lock between two of our sends, and a chunk's decisions would
                # commit without the changelog records that mark them made.
                return None
            return self._limited(tp, self._batch_done.get(tp))  # Faust skips it once committed
        return super()._new_offset(tp)

    def _limited(self, tp: TP, offset: int | None) -> int | None:
        limit = self.commit_limits.get(tp.topic)
        at = limit(tp.partition) if limit is not None and offset is not None else None
        return offset if at is None else min(offset, at)

    async def commit_transactions(self, with_records: set[TP]) -> set[TP]:
        """Exactly-once: commit the open transaction of each assigned
        partition of a batch-handled topic that holds records
        (`with_records`) or a finished batch not yet committed, at its
        commit point, through Faust's own commit path. Returns the
        partitions committed."""
        offsets: dict[TP, int] = {}
        for tp in self.assignment():
            at = self.commit_point(tp) if tp.topic in self.batch_handlers else None
            if at is None:
                continue
            committed = self._committed_offset.get(tp)
            if tp in with_records or committed is None or at > committed:
                # aiokafka's transactional offset commit takes its own
                # TopicPartition only (equal to Faust's TP as a tuple).
                offsets[TopicPartition(tp.topic, tp.partition)] = at
        if offsets:
            await self._commit_offsets(offsets)
        return set(offsets)

    def caught_up(self, tp: TP) -> bool:
        """Every record the broker held for `tp` at the latest fetch has been
        handled (an idle partition, for the replay clock's followers)."""
        highwater = self.highwater(tp)  # None until a fetch answered for tp
        if highwater is None:
            return False
        return (self.commit_point(tp) or 0) >= highwater

    def commit_point(self, tp: TP) -> int | None:
        """The offset a commit of `tp` would record now: after the last
        finished batch, else the last committed one."""
        done = self._limited(tp, self._batch_done.get(tp))
        return done if done is not None else self._committed_offset.get(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Records the handler's side made outside a batch (sweeps) must
        # reach the producer before Faust flushes it below: sent after the
        # flush, they could land behind the new owner's records for the
        # same users, and a later recovery would take them for the latest.
        if not self.transport.app.should_stop:
            for hook in self.revoke_hooks:
                await hook(revoked)
        # As Faust drops the acks of revoked partitions: their new owner
        # starts from the last commit (and drops redeliveries itself).
        for tp in revoked:
            self._batch_done.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def wait_empty(self) -> None:
        # A rebalance or shutdown waits for the batch in hand, as Faust
        # waits for unacked messages.
        await self._batch_idle.wait()
        await super().wait_empty()


def batching_consumer_class(handlers: dict[str, BatchHandler], revoke_hooks: list[RevokeHook] | None = None,
                            fetch_max_wait_ms: int | None = None,
                            commit_limits: dict[str, CommitLimit] | None = None) -> type[BatchingConsumer]:
    """A consumer class bound to one app's handlers, commit limits and fetch
    wait (Faust instantiates the transport's Consumer class itself)."""
    thread = type("TierstreamConsumerThread", (TunedConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
    return type("TierstreamConsumer", (BatchingConsumer,),
                {"batch_handlers": handlers, "revoke_hooks": revoke_hooks if revoke_hooks is not None else [],
                 "commit_limits": commit_limits if commit_limits is not None else {},
                 "consumer_thread_class": thread})
