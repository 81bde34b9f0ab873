"""Redis kept in step with the worker's state: segment membership (coalesced
writes, healing after recovery or a Redis that came back empty) and the
dashboard's live feed of published changes and alerts. A view: the topics
and the users table are the truth, and Redis is rebuilt from them."""

from __future__ import annotations

import logging
import time
from collections import deque

import orjson

from agents import metrics
from agents.outbox import Record
from engine.coordinator import Coordinator
from state.evaluate import Assessment, evaluate
from state.model import UserState
from state.rules import STAGES
from store.live_feed import KINDS as FEED_KINDS
from store.live_feed import FeedItem, FeedWriter
from store.membership import MembershipUpdate, MembershipWriter
from stream.codecs import user_record
from stream.settings import Settings

log = logging.getLogger(__name__)

FEED_BUFFER = 100_000  # published changes and alerts waiting for Redis, at most


class RedisSync:
    def __init__(self, settings: Settings, engine: Coordinator, membership: MembershipWriter | None,
                 feed: FeedWriter | None) -> None:
        self.settings = settings
        self.engine = engine
        self.membership = membership
        # user -> latest assessment not yet in Redis; the doc is built at flush
        self.pending: dict[str, Assessment] = {}
        # Published tier changes and alerts on their way to the live feed;
        # bounded, so a long Redis outage costs the oldest entries (counted),
        # never the worker's memory.
        self.feed = feed
        self.feed_pending: deque[FeedItem] = deque(maxlen=FEED_BUFFER)
        # Owned partitions whose Redis membership must be checked against
        # the state (after recovery, or when Redis lost its marker).
        self.to_heal: set[int] = set()
        # The configuration in force (state.config), as JSON for the API;
        # written to Redis with the segments.
        self.config_summary: bytes | None = None
        self._next_marker_check = 0.0
        self._next_flush_error_log = 0.0

    def assessed(self, assessments: dict[str, Assessment]) -> None:
        self.pending.update(assessments)

    def published(self, records: list[Record]) -> None:
        """Records the broker took: the changes and alerts among them go to the feed."""
        if self.feed is None:
            return
        for r in records:
            kind = FEED_KINDS.get(r.topic)
            if kind is not None:
                if len(self.feed_pending) == FEED_BUFFER:
                    metrics.FEED_DROPPED.inc()
                self.feed_pending.append(FeedItem(kind, r.key.decode(), r.value))

    async def flush_feed(self) -> int:
        """Write the published changes and alerts to the live feed; on
        failure keep them for the next try (flush_membership logs the outage)."""
        if not self.feed_pending or self.feed is None:
            return 0
        batch, self.feed_pending = self.feed_pending, deque(maxlen=FEED_BUFFER)
        try:
            await self.feed.write(batch)
        except Exception:
            metrics.REDIS_ERRORS.inc()
            kept = deque(batch, maxlen=FEED_BUFFER)
            kept.extend(self.feed_pending)  # what came meanwhile is newer; the oldest go if full
            metrics.FEED_DROPPED.inc(len(batch) + len(self.feed_pending) - len(kept))
            self.feed_pending = kept
            return 0
        return len(batch)

    async def declare_segments(self) -> None:
        if self.membership is None:
            return
        try:
            await self.membership.declare_segments(self.engine.rules.tier_names, STAGES)
            if self.config_summary is not None:
                await self.membership.write_config(self.config_summary)
        except Exception:  # Redis down at start: flushes will retry, counts just miss zeros
            log.exception("could not declare segments in Redis")

    def membership_update(self, user_id: str, assessment: Assessment) -> MembershipUpdate:
        """The user's Redis record. The store holds the state that goes with
        the latest assessment: the engine replaces both together."""
        state = self.engine.users[user_id]
        doc = orjson.dumps(user_record(user_id, state, assessment))
        return MembershipUpdate(user_id, state.version, assessment.tier, assessment.stage, doc)

    async def heal_membership(self) -> int:
        """Bring Redis into agreement with the state of the partitions in
        `to_heal`, and notice a Redis that came back empty. Compares
        versions in Redis (ids and numbers on the wire) and rewrites only
        the users that differ; returns how many were rewritten."""
        if self.membership is None:
            return 0
        owned = set(self.engine.owned())
        now = time.monotonic()
        if now >= self._next_marker_check and owned:
            self._next_marker_check = now + self.settings.redis_check_seconds
            lost = await self.membership.missing_markers(owned - self.to_heal)
            if lost:
                log.warning("redis lost the membership of partitions %s (restarted empty?): repopulating", sorted(lost))
                metrics.REDIS_REPOPULATIONS.inc()
                await self.declare_segments()
                self.to_heal |= lost
        parts = self.to_heal & owned
        if not parts:
            return 0
        started = time.perf_counter()
        # Only users with an assessment: one whose every event is still held
        # has never been in Redis.
        versions = [(u, s.version) for u, s in self.engine.users.items()
                    if s.src_partition in parts and s.evaluated_ms is not None]
        stale = await self.membership.differing(versions)
        updates = []
        for user_id in stale:
            state = self.engine.users.get(user_id)
            if state is None or state.evaluated_ms is None:
                continue
            assessment = self.pending.pop(user_id, None) or self._assessment_of(user_id, state)
            updates.append(self.membership_update(user_id, assessment))
        await self.membership.write(updates, force=True)
        await self.membership.mark_synced(parts)
        self.to_heal -= parts
        metrics.REDIS_HEALED.inc(len(updates))
        log.info("redis healed for partitions %s: %d of %d users differed (%.2fs)", sorted(parts), len(updates),
                 len(versions), time.perf_counter() - started)
        return len(updates)

    def _assessment_of(self, user_id: str, state: UserState) -> Assessment:
        """The assessment the state was last given (its tier and stage are
        the state's own: those are what was published)."""
        assert state.evaluated_ms is not None
        a = evaluate(state, state.evaluated_ms, self.engine.rules, user_id)
        a.tier, a.stage = state.tier or a.tier, state.stage or a.stage
        return a

    async def flush_membership(self) -> int:
        """Write the coalesced membership updates; on failure keep them for
        the next try (newer updates for the same user replace older ones)."""
        if not self.pending or self.membership is None:
            return 0
        batch, self.pending = self.pending, {}
        started = time.perf_counter()
        try:
            await self.membership.write(self.membership_update(u, a) for u, a in batch.items())
        except Exception as exc:
            metrics.REDIS_ERRORS.inc()  # every failure counts; the log says so once per check interval
            now = time.monotonic()
            if now >= self._next_flush_error_log:
                self._next_flush_error_log = now + self.settings.redis_check_seconds
                log.warning("redis flush of %d updates failed (%r); retrying every %d ms, updates kept",
                            len(batch), exc, self.settings.redis_flush_ms)
            for user_id, assessment in batch.items():
                self.pending.setdefault(user_id, assessment)  # a newer one, if any, wins
            metrics.REDIS_PENDING.set(len(self.pending))
            return 0
        metrics.REDIS_FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.REDIS_WRITES.inc(len(batch))
        metrics.REDIS_PENDING.set(len(self.pending))
        return len(batch)
