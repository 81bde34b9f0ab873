"""The ingest agent and the sweeps that age silent users.

Per message: parse (or dead-letter), drop redeliveries, hand the event to the
pure core (state.engine: where an event becomes a tier change), then record
what the core decided: the state in the users table, its changelog record,
and the tier changes, alerts and dead letters to publish; the membership
record goes to a coalescing buffer that a background task flushes to Redis.

A decision, once made, reaches its topic (at least once, with a stable id):
`publish` hands a chunk's decisions to the producer and waits for the
broker to acknowledge them before it hands over the changelog records that
mark their inputs as applied. So a durable state always has its decisions
durable behind it; a crash before that leaves the older state durable, and
the same decisions are derived again, with the same ids, from the
redelivered input or, for sweeps, from the recovered state and watermark.
Faust flushes the producer before it commits input offsets, so a committed
offset has its changelog records behind it.

Messages arrive as whole fetched batches (stream.batching), processed in
chunks. Changelog records name their partition explicitly (the partition
the user's events arrive on), so sweeps outside of stream iteration write
the same changelog partition an event would have.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from faust.types import TP
from redis.asyncio import Redis

from agents import metrics
from agents.faults import CrashPoints
from agents.gc_tuning import HeapFreezer
from agents.outbox import BatchSender, Record
from state.churn_model import Fitted, SummaryKey, buyer_summary, refit_wake
from state.engine import (
    CampaignAction, CampaignOutcome, ChurnAlert, Decision, UserParked, advance, implausibly_old, on_event, reassess,
    wake_at,
)
from state.evaluate import Assessment, evaluate, window_figures
from state.quantiles import (
    Cuts, PopulationIndex, PopulationReports, ThresholdBook, boundary_at_or_before, empty_doc, f_bin, m_bin, r_day,
    snapshot_doc,
)
from state.calendar import Calendar
from state.kpis import Ledger, Step
from state.live_feed import KINDS as FEED_KINDS
from state.live_feed import FeedItem, FeedWriter
from state.membership import MembershipUpdate, MembershipWriter
from state.metrics_store import MetricsStore
from state.model import DAY_MS, UserState
from state.rules import STAGES, Rules
from state.due_index import DueIndex
from stream import topics
from stream.app import StreamApp
from stream.codecs import action_record, churn_alert_record, outcome_record, dead_letter_record, encode_state, tier_change_record, user_record
from stream.contract import Rejection, parse_event
from stream.settings import Settings

log = logging.getLogger(__name__)


class PublishFailed(RuntimeError):
    """Kafka refused decisions after aiokafka's retries: the worker must stop."""


class Pipeline:
    def __init__(
        self,
        streams: StreamApp,
        settings: Settings,
        rules: Rules,
        membership: MembershipWriter | None,
        feed: FeedWriter | None = None,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.settings = settings
        # Quantile scores (state.quantiles): the cut points every worker
        # agrees on, fed by the population topic (or, with `loopback`, by
        # this pipeline's own reports: one process owning every partition).
        self.book = ThresholdBook(rules.cadence_ms) if rules.scores.from_population else None
        if self.book is not None:
            rules = rules.with_thresholds(self.book)
        self.rules = rules
        self.population: dict[int, PopulationIndex] = {}
        self.reported: dict[int, int] = {}  # partition -> the latest boundary it reported on
        self.entered: dict[int, int] = {}  # partition -> the latest boundary whose period it evaluates in
        self.waiting: dict[int, int] = {}  # partition -> the boundary it waits to enter (cuts not settled)
        # partition -> the boundary whose cuts it needs before anything else
        # (recovered into a period whose cuts this process has not read yet)
        self.recovering: dict[int, int] = {}
        self.loopback: PopulationReports | None = None
        self.churn_fit_ms = rules.scores.churn_fit_days * DAY_MS if rules.scores.churn_model else None
        self.membership = membership
        # Published tier changes and alerts on their way to the dashboard's
        # live feed (state.live_feed); bounded, so a long Redis outage costs
        # the oldest entries (counted), never the worker's memory.
        self.feed = feed
        self.feed_pending: deque[FeedItem] = deque(maxlen=FEED_BUFFER)
        self.wall_clock_ms = wall_clock_ms
        self.store: Any = streams.users.data  # the table's local store: a dict-like
        self.index = DueIndex()
        # Latest event time seen per partition: the watermark's source.
        self.max_event_ms: dict[int, int] = {}
        # Replay clock, quantile scores: the event time an idle partition was
        # moved on to, following the others (`follow`); and when each owned
        # partition last had input (time.monotonic()), which says it is idle.
        self.followed: dict[int, int] = {}
        self.last_input: dict[int, float] = {}
        # user -> latest assessment not yet in Redis; the doc is built at flush
        self.pending: dict[str, Assessment] = {}
        # Decisions, dead letters and re-keyed events; then the changelog
        # records, which may reach Kafka only after those (see module doc).
        self.outputs: list[Record] = []
        self.changelog: list[Record] = []
        # Held while records are on their way to Kafka; with exactly-once,
        # transactions commit only under it (see install).
        self.publishing = asyncio.Lock()
        self.crash = CrashPoints(settings.crash_at)
        self.earliest_ms = settings.earliest_event_ms
        self.max_event_age_ms = settings.max_event_age_days * DAY_MS
        # Owned partitions whose Redis membership must be checked against
        # the state (after recovery, or when Redis lost its marker).
        self.to_heal: set[int] = set()
        self._next_marker_check = 0.0
        self._next_flush_error_log = 0.0
        # Operator metrics: each step's facts, per partition, published with
        # the outputs (so before the state they come from); and the
        # watermark each partition was swept to, which says up to when a
        # partition's facts are complete.
        self.ledger = Ledger(Calendar(rules.metrics.timezone), rules.metrics.conversion_days) \
            if settings.operator_metrics else None
        self.facts: dict[int, list[Step]] = {}
        self.swept_to: dict[int, int] = {}
        self._facts_sent_wm: dict[int, int] = {}
        self.aggregator: Any = None  # agents.metrics_aggregator, when operator metrics are on
        self.sender = BatchSender()
        self.tally = metrics.Tally()
        self.freezer = HeapFreezer()
        self.changelog_topic = streams.users.changelog_topic.get_topic_name()
        # The configuration in force these rules are (state.config), as JSON
        # for the API; written to Redis with the segments.
        self.config_summary: bytes | None = None
        streams.users.on_active_partitions = self.on_active_partitions

    # -- ownership -------------------------------------------------------

    def on_active_partitions(self, partitions: set[int], committed: dict[int, int] | None = None) -> None:
        """After recovery: rebuild the due index from the recovered table for
        the partitions this worker actively owns (standbys are left out).
        `committed`: the group's committed input offset per partition, when
        known."""
        self.index.reset(partitions)
        now = time.monotonic()
        for p in partitions:
            self.followed.pop(p, None)
            self.last_input[p] = now  # idle only after a while with nothing new
        owned = 0
        for user_id, state in self.store.items():
            if state.src_partition in partitions:
                owned += 1
                self.index.schedule(state.src_partition, wake_at(state), user_id)
                p = state.src_partition
                # Every event seen is in some user's state (applied or held),
                # so the partition's watermark comes back from the states;
                # but only from those behind the committed input. A worker
                # that died writing a batch's changelog records left some of
                # its users' records past that point and not others': a
                # watermark taken from those would run ahead of the events
                # re-read now (its sweep deciding, and its facts closing
                # periods, before them). Re-read events move it on in order.
                if committed is not None and state.src_offset >= committed.get(p, 0):
                    continue
                seen = max(state.last_seen_ms, state.held[-1][0] if state.held else 0)
                self.max_event_ms[p] = max(self.max_event_ms.get(p, 0), seen)
        if self.book is not None:
            self._rebuild_population(partitions)
        metrics.DUE_INDEX_SIZE.set(len(self.index))
        metrics.RECOVERED_USERS.set(owned)
        self.freezer.maybe_freeze(len(self.store))
        log.info("owning partitions %s, %d users due-indexed", sorted(partitions), len(self.index))
        if self.settings.recovery_dump is not None:
            self._dump_recovered(partitions)
        # A crash may have come after a sweep's decisions were published but
        # before its changelog records were: the recovered states are then
        # behind the recovered watermark. Sweeping now derives the same
        # decisions again (same ids), without waiting for the next event.
        wall = self.wall_clock_ms()
        for partition in partitions:
            self.catch_up(partition, wall)
        # Redis may disagree with what was recovered (updates lost with the
        # old process, or written ahead of the changelog): heal it.
        self.to_heal |= partitions

    def _dump_recovered(self, partitions: set[int]) -> None:
        """Write the recovered users of `partitions` (diagnostics, and the
        restart test's evidence that recovery lost nothing)."""
        path = self.settings.recovery_dump
        assert path is not None
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for user_id, state in self.store.items():
                if state.src_partition in partitions:
                    out.write(orjson.dumps({"user_id": user_id, "state": orjson.loads(encode_state(state))}) + b"\n")
        tmp.replace(path)

    def on_partitions_revoked(self, partitions: set[int]) -> None:
        # Stop sweeping at once: another worker may own these now.
        self.index.reset(set(self.index.partitions()) - partitions)
        self.to_heal -= partitions
        for p in partitions:
            self.recovering.pop(p, None)
            self.followed.pop(p, None)
            self.last_input.pop(p, None)

    # -- per message -----------------------------------------------------

    def on_message(self, message: Any) -> None:
        """Never raises: whatever goes wrong with one message becomes a dead letter."""
        try:
            self._process(message)
        except Exception as exc:  # one bad event must not stop the stream
            log.exception("failed to process %s[%s]@%s", message.topic, message.partition, message.offset)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self._dead_letter(message, Rejection("processing_error", detail))

    def _process(self, message: Any) -> None:
        wall = self.wall_clock_ms()
        parsed = parse_event(
            message.value or b"",
            now_ms=wall,
            max_bytes=self.settings.max_event_bytes,
            max_future_ms=self.settings.max_future_seconds * 1000,
            earliest_ms=self.earliest_ms,
            on_unknown_fields=self._count_unknown_fields,
        )
        if isinstance(parsed, Rejection):
            self._dead_letter(message, parsed)
            return
        user_id = parsed.user_id
        if message.key != user_id.encode():
            # The table is partitioned by user id: an event on the wrong
            # partition would split a user's state. Send it where it belongs.
            self.outputs.append(Record(topics.EVENTS, user_id.encode(), message.value, source=message.partition))
            self.tally.add(metrics.EVENTS_REKEYED)
            return
        partition = message.partition
        state: UserState | None = self.store.get(user_id)
        if state is not None and state.src_partition == partition and message.offset <= state.src_offset:
            # Replayed after a restart: already applied. It moved the
            # watermark the first time, so it does again, in the same order.
            self.tally.add(metrics.EVENTS_REDELIVERED)
            self._saw(partition, parsed.ts_ms, wall)
            return
        too_old = implausibly_old(state, parsed.ts_ms, self.watermark(partition, wall), self.max_event_age_ms)
        if too_old is not None:
            self._dead_letter(message, Rejection("implausibly_old", too_old, user_id))
            return
        before = self._see(partition, parsed.ts_ms, wall)
        watermark_before, watermark = before[0], self.watermark(partition, wall)
        previous_due = wake_at(state) if state is not None else None
        result = on_event(state, parsed, watermark_before, watermark, self.rules, self.ledger)
        self._book(partition)
        if self.book is not None and result.assessment is not None:
            self._track(partition, user_id, result.state, result.assessment)
        if not result.accepted:
            self.tally.add(metrics.EVENTS_DUPLICATE)
            return
        self.tally.add(metrics.EVENTS_ACCEPTED)
        result.state.src_partition, result.state.src_offset = partition, message.offset
        self._commit(user_id, partition, result.state, result.decisions, result.assessment, previous_due)
        self._catch_up_if_moved(partition, wall, before)

    def _saw(self, partition: int, ts_ms: int, wall: int) -> None:
        """An event's time seen again: the watermark moves as it did."""
        if ts_ms > self.max_event_ms.get(partition, 0):
            self._catch_up_if_moved(partition, wall, self._see(partition, ts_ms, wall))

    def _see(self, partition: int, ts_ms: int, wall: int) -> tuple[int, int]:
        """An event time seen on the partition; returns the watermark and the
        raw watermark from before it."""
        before = self.watermark(partition, wall), self.raw_watermark(partition, wall)
        self.max_event_ms[partition] = max(self.max_event_ms.get(partition, 0), ts_ms)
        if self.book is not None and partition not in self.reported:
            self._first_report(partition, wall)
        return before

    def _catch_up_if_moved(self, partition: int, wall: int, before: tuple[int, int]) -> None:
        """Sweep when the watermark moved (or, with quantile scores, the raw
        watermark: it may enter a period while the watermark waits)."""
        if self.watermark(partition, wall) > before[0] or (
                self.book is not None and self.raw_watermark(partition, wall) > before[1]):
            self.catch_up(partition, wall)

    def _count_unknown_fields(self, names: list[str]) -> None:
        self.tally.add(metrics.UNKNOWN_FIELDS_DROPPED, len(names))

    def raw_watermark(self, partition: int, wall_ms: int) -> int:
        """Latest event time seen on the partition (and, live, the wall
        clock), minus the allowed lateness."""
        latest = max(self.max_event_ms.get(partition, 0), self.followed.get(partition, 0))
        if self.settings.clock == "live":
            latest = max(latest, wall_ms)
        return latest - self.settings.allowed_lateness_ms

    def watermark(self, partition: int, wall_ms: int) -> int:
        """Decisions are final up to here: the raw watermark, held back at
        the end of the current cadence period until the cuts of the next
        are settled (quantile scores only). Events past it wait in their
        users' states, as events within the allowed lateness do."""
        raw = self.raw_watermark(partition, wall_ms)
        if self.book is None:
            return raw
        entered = self.entered.get(partition)
        if entered is not None:
            return min(raw, entered + self.book.cadence_ms - 1)
        reported = self.reported.get(partition)
        return min(raw, reported - 1) if reported is not None else raw

    # -- quantile scores: the population, period by period ----------------

    def catch_up(self, partition: int, wall_ms: int) -> int:
        """Sweep the partition to its watermark, entering each cadence
        period on the way (state.quantiles: report, wait for the cuts,
        re-assess whom they move)."""
        if not self.ready(partition):
            return 0
        if self.book is not None and self.index.owns(partition):
            self._enter_periods(partition, self.raw_watermark(partition, wall_ms))
        return self.sweep(partition, self.watermark(partition, wall_ms))

    def ready(self, partition: int) -> bool:
        """Whether the partition may go on: not recovered into a period whose
        cuts this process has yet to read (`recovering`). Until then its
        input waits (see install) and nothing of it is swept: any step now
        would evaluate with no cuts, or older ones than the process that
        died had for the same step."""
        needed = self.recovering.get(partition)
        if needed is None:
            return True
        assert self.book is not None
        if not self.book.settled(needed):
            return False
        del self.recovering[partition]
        return True

    def _first_report(self, partition: int, wall_ms: int) -> None:
        """The partition's first watermark: it had no customer before."""
        raw = self.raw_watermark(partition, wall_ms)
        self.reported[partition] = boundary_at_or_before(raw, self.rules.cadence_ms)
        self._report(partition, empty_doc(partition, raw))

    def _enter_periods(self, partition: int, raw: int) -> None:
        cadence = self.rules.cadence_ms
        if partition not in self.reported:
            if partition not in self.max_event_ms and partition not in self.followed and self.settings.clock != "live":
                return  # replay clock, no event yet and not idle long enough to follow: no watermark to report
            self._first_report(partition, self.wall_clock_ms())
        while True:
            entered = self.entered.get(partition)
            boundary = self.reported[partition] if entered is None else entered + cadence
            if boundary > raw:
                self.waiting.pop(partition, None)
                return
            self.sweep(partition, boundary - 1)
            if self.reported[partition] < boundary:
                self._report(partition, snapshot_doc(partition, boundary, self.population_of(partition),
                                                     self.churn_fit_ms))
                self.reported[partition] = boundary
            assert self.book is not None
            if not self.book.settled(boundary - cadence):
                self.waiting[partition] = boundary
                return
            self._enter(partition, boundary)
            self.entered[partition] = boundary

    def follow(self, partition: int, boundary: int) -> bool:
        """Replay clock: an idle partition (caught up with its input, and
        nothing new for `idle_partition_seconds`) is moved on to `boundary`,
        the furthest another partition reported on, as an event at that time
        (plus the allowed lateness) would move it: it reports, enters the
        periods and ages its users. Without this, a partition that has no
        more events (or never had any) would hold every other back for ever.
        Its own events, should any come later, count from where it got to.
        Returns whether it moved."""
        if self.book is None or not self.index.owns(partition):
            return False
        target = boundary + self.settings.allowed_lateness_ms
        if target <= max(self.max_event_ms.get(partition, 0), self.followed.get(partition, 0)):
            return False
        self.followed[partition] = target
        metrics.PARTITIONS_FOLLOWED.inc()
        self.catch_up(partition, self.wall_clock_ms())
        return True

    def _report(self, partition: int, doc: dict) -> None:
        self.outputs.append(Record(topics.POPULATION, str(partition).encode(), orjson.dumps(doc), source=partition))
        if self.loopback is not None:
            self.settle(self.loopback.add(doc))

    def settle(self, settled: list[tuple[int, Cuts | None]]) -> None:
        """Cut points every worker computed alike (from the population topic)."""
        assert self.book is not None
        for boundary, cuts in settled:
            self.book.settle(boundary, cuts)

    def resume(self, wall_ms: int | None = None) -> None:
        """Let the partitions that waited for cuts go on."""
        wall = self.wall_clock_ms() if wall_ms is None else wall_ms
        for partition in list(self.recovering):
            if self.ready(partition):
                log.info("partition %d: the cut points it recovered into are read again; it goes on", partition)
                self.catch_up(partition, wall)
        moved = True
        while moved:  # a partition going on may report what settles another's wait
            moved = False
            for partition, boundary in list(self.waiting.items()):
                if self.book is not None and self.book.settled(boundary - self.book.cadence_ms):
                    self.catch_up(partition, wall)
                    moved = self.waiting.get(partition) != boundary or moved

    def population_of(self, partition: int) -> PopulationIndex:
        return self.population.setdefault(partition, PopulationIndex())

    def _track(self, partition: int, user_id: str, state: UserState, a: Assessment) -> None:
        index = self.population_of(partition)
        index.update(user_id, (r_day(state.last_order_ms), f_bin(a.frequency), m_bin(a.monetary_cents)))
        if self.rules.scores.churn_model:
            index.update_summary(user_id, buyer_summary(state))

    def _rebuild_population(self, partitions: set[int]) -> None:
        """After recovery: the index from the recovered states, and each
        partition restarting at the period of its latest evaluation (its
        reports and re-assessments there are repeated; the first report on
        a boundary is the one that counts, and a re-assessment that finds
        nothing changes nothing). A partition with recovered states but no
        evaluation yet (it waited for its first cuts) restarts where it
        first reported: its first report went out before any of its states
        was written, and a new one, from a later event, would say it had no
        customers through periods it has not reported on."""
        assert self.book is not None
        cadence = self.rules.cadence_ms
        latest: dict[int, int] = {}
        first: dict[int, int] = {}  # partition -> its earliest event time in the recovered states
        for p in partitions:
            self.population[p] = PopulationIndex()
            self.recovering.pop(p, None)
            self.entered.pop(p, None)
            self.reported.pop(p, None)
            self.waiting.pop(p, None)
        for user_id, state in self.store.items():
            p = state.src_partition
            if p not in partitions:
                continue
            seen = min(state.first_seen_ms, state.held[0][0]) if state.held else state.first_seen_ms
            first[p] = min(first.get(p, seen), seen)
            if state.evaluated_ms is not None:
                frequency, cents = window_figures(state, state.evaluated_ms, self.rules)
                self.population[p].update(user_id, (r_day(state.last_order_ms), f_bin(frequency), m_bin(cents)))
                if self.rules.scores.churn_model:
                    self.population[p].update_summary(user_id, buyer_summary(state))
                latest[p] = max(latest.get(p, state.evaluated_ms), state.evaluated_ms)
        for p, t in latest.items():
            restart = boundary_at_or_before(t, cadence) - cadence
            self.entered[p] = self.reported[p] = restart
            # The partition evaluates in the period of `restart` from now
            # on, and behind it (users due earlier): with the cuts settled
            # up to restart - cadence, which the process that evaluated it
            # had. This one's reader may not have read them again yet.
            if not self.book.settled(restart - cadence):
                self.recovering[p] = restart - cadence
        for p in first.keys() - latest.keys():
            self.reported[p] = boundary_at_or_before(first[p] - self.settings.allowed_lateness_ms, cadence)

    def _enter(self, partition: int, boundary: int) -> None:
        """Switch to the cuts in force from `boundary`: re-assess the
        customers whose score they may move, and wake those whose recency
        crosses a cut during the period."""
        assert self.book is not None
        before, after = self.book.at(boundary - 1), self.book.at(boundary)
        index = self.population_of(partition)
        if after is not before:
            for user_id in _moved(index, before, after, boundary, self.rules):
                self._reassess_at(partition, user_id, boundary)
        limits = self.rules.p_alive_limits
        if limits and after is not None and after.churn is not None and (
                before is None or before.churn != after.churn):
            self._wake_for_refit(partition, boundary, before.churn if before is not None else None, after.churn)
        if after is not None and after.r is not None:
            day = boundary // DAY_MS
            span = self.rules.cadence_ms // DAY_MS
            for limit in after.r:
                for user_id in index.users("r", day - limit - 1, day + span - limit):
                    state = self.store[user_id]
                    crossing = state.last_order_ms + (limit + 1) * DAY_MS
                    if boundary <= crossing < boundary + self.rules.cadence_ms:
                        self._wake_by(partition, user_id, state, crossing)

    def _wake_for_refit(self, partition: int, boundary: int, before: Fitted | None, after: Fitted) -> None:
        """A new churn-model fit moves every buyer's P(alive), and so the
        moments it passes the limits tiers test: wake, no later than needed,
        each buyer whose side of a limit may differ at the boundary or who
        may cross one before their own due time (state.churn_model.refit_wake).
        One pass over the partition's buyers per fit (weekly in event time by
        default), computed once per distinct summary, not per user."""
        by_summary: dict[SummaryKey, list[str]] = {}
        for user_id, key in self.population_of(partition).summary_of.items():
            by_summary.setdefault(key, []).append(user_id)
        for key, users in by_summary.items():
            wake = refit_wake(before, after, key, self.rules.p_alive_limits, boundary)
            if wake is None:
                continue
            for user_id in users:
                self._wake_by(partition, user_id, self.store[user_id], wake)

    def _wake_by(self, partition: int, user_id: str, state: UserState, at: int) -> None:
        """Bring the user's due time forward to `at`, unless they were
        evaluated at or after it. After a recovery a partition re-enters the
        periods of its latest evaluations, and some users' recovered states
        (written past the committed input) are already evaluated beyond them,
        with the cuts and fit in force then: waking such a user at `at`
        would evaluate them in the past with figures from later (a decision
        a run without the crash never made)."""
        if state.evaluated_ms is not None and at <= state.evaluated_ms:
            return
        if state.due_ms is None or at < state.due_ms:
            state.due_ms = at
            self.index.schedule(partition, wake_at(state), user_id)

    def _reassess_at(self, partition: int, user_id: str, boundary: int) -> None:
        state = self.store.get(user_id)
        if state is None or not state.has_applied:
            return
        at = max(boundary, state.evaluated_ms or boundary)
        before = self.ledger.before(state) if self.ledger is not None else None
        assessment, found = reassess(user_id, state, at, self.rules)
        if self.ledger is not None and found:
            self.ledger.record(user_id, state, before, None, at, decisions=found)
            self._book(partition)
        self._track(partition, user_id, state, assessment)
        if found:
            self._commit(user_id, partition, state, found, assessment, previous_due=None)
        else:
            self.index.schedule(partition, wake_at(state), user_id)

    # -- time ------------------------------------------------------------

    def sweep(self, partition: int, watermark: int) -> int:
        """Advance every user of `partition` who needs attention by `watermark`."""
        if not self.index.owns(partition):
            return 0
        touched = 0
        for _due, user_id in self.index.pop_due(partition, watermark, self._wake_of):
            state = self.store[user_id]
            held_before = len(state.held)
            assessment, decisions = advance(user_id, state, watermark, self.rules, self.ledger)
            self._book(partition)
            if self.book is not None and assessment is not None:
                self._track(partition, user_id, state, assessment)
            if decisions:
                self.crash.reached("sweep_decided")
            if decisions or len(state.held) != held_before:
                self._commit(user_id, partition, state, decisions, assessment, previous_due=None)
            else:
                # Nothing changed, only the next due time moved. That is not
                # worth a changelog record: a recovered state with the older
                # due time wakes early, finds nothing, and moves on.
                self.index.schedule(partition, wake_at(state), user_id)
            touched += 1
        # Every reschedule leaves a stale entry; in replay mode nothing else
        # would ever clear them.
        self.index.maybe_compact(partition, self._wake_of)
        self.swept_to[partition] = max(self.swept_to.get(partition, watermark), watermark)
        return touched

    def _book(self, partition: int) -> None:
        if self.ledger is not None and self.ledger.steps:
            self.facts.setdefault(partition, []).extend(self.ledger.drain())

    def _seal_facts(self) -> None:
        """One metric-facts record per partition with new steps or a
        watermark moved: its steps, and the watermark the partition was
        swept to, below which every on-time step is in this record or an
        earlier one."""
        if self.ledger is None:
            return
        moved = [p for p, wm in self.swept_to.items() if self._facts_sent_wm.get(p) != wm]
        for partition in sorted(set(self.facts) | set(moved)):
            steps = [(s.user_id, s.version, s.facts, s.late) for s in self.facts.pop(partition, [])]
            wm = self.swept_to.get(partition, -1)
            self._facts_sent_wm[partition] = wm
            # Kafka refuses records over its message size (1 MB by default):
            # a catch-up chunk can hold thousands of steps, so they go in
            # several records. Only the last carries the watermark, so a
            # period is never seen closed before all of its facts are in.
            parts = _bounded_json(steps, FACTS_RECORD_BYTES)
            for n, part in enumerate(parts):
                mark = wm if n == len(parts) - 1 else -1
                value = b'{"p":%d,"wm":%d,"steps":%s}' % (partition, mark, part)
                self.outputs.append(Record(topics.METRIC_FACTS, str(partition).encode(), value, partition,
                                           source=partition))

    def tick(self) -> None:
        """Live clock: age silent users of every owned partition to now."""
        wall = self.wall_clock_ms()
        for partition in self.index.partitions():
            self.catch_up(partition, wall)
        metrics.DUE_INDEX_SIZE.set(len(self.index))

    def _wake_of(self, user_id: str) -> int | None:
        state = self.store.get(user_id)
        return wake_at(state) if state is not None else None

    # -- outputs ---------------------------------------------------------

    def _commit(
        self,
        user_id: str,
        partition: int,
        state: UserState,
        decisions: list[Decision],
        assessment: Assessment | None,
        previous_due: int | None,
    ) -> None:
        key = user_id.encode()
        self.store[user_id] = state
        self.changelog.append(Record(self.changelog_topic, key, encode_state(state), partition, source=partition))
        wake = wake_at(state)
        if wake != previous_due:
            self.index.schedule(partition, wake, user_id)
        for decision in decisions:
            if isinstance(decision, UserParked):
                self._park(decision, partition, state)
                continue
            if isinstance(decision, CampaignAction):
                self.outputs.append(Record(topics.ACTIONS, key, orjson.dumps(action_record(decision)), source=partition))
                self.tally.add(metrics.CAMPAIGN_ACTIONS)
                continue
            if isinstance(decision, CampaignOutcome):
                self.outputs.append(Record(topics.CAMPAIGN_OUTCOMES, key, orjson.dumps(outcome_record(decision)),
                                           source=partition))
                self.tally.add(metrics.CAMPAIGN_OUTCOMES)
                continue
            if isinstance(decision, ChurnAlert):
                self.outputs.append(Record(topics.CHURN_ALERTS, key, orjson.dumps(churn_alert_record(decision)),
                                           source=partition))
                self.tally.add(metrics.ALERT_COUNTERS[decision.level])
            else:
                self.outputs.append(Record(topics.TIER_CHANGES, key, orjson.dumps(tier_change_record(decision)),
                                           source=partition))
                self.tally.add(metrics.TIER_CHANGES)
        if assessment is not None:
            self.pending[user_id] = assessment

    def _dead_letter(self, message: Any, rejection: Rejection) -> None:
        record = dead_letter_record(
            reason=rejection.reason,
            error=rejection.error,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            payload=message.value,
            max_payload=self.settings.dlq_max_payload_bytes,
        )
        self.outputs.append(Record(topics.DEAD_LETTERS, message.key, record, source=message.partition))
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()

    def _park(self, parked: UserParked, partition: int, state: UserState) -> None:
        """A user the core parked (their due time would not move on): a dead
        letter naming the user and why, with their state as the payload."""
        log.error("parked a user: %s", parked.reason)
        record = dead_letter_record(
            reason="no_progress", error=parked.reason, topic=self.changelog_topic, partition=partition,
            offset=state.src_offset, key=parked.user_id.encode(), payload=encode_state(state),
            max_payload=self.settings.dlq_max_payload_bytes,
        )
        self.outputs.append(Record(topics.DEAD_LETTERS, parked.user_id.encode(), record, source=partition))
        metrics.DEAD_LETTERS.labels("no_progress").inc()

    def _membership_update(self, user_id: str, assessment: Assessment) -> MembershipUpdate:
        # The store holds the state that goes with the latest assessment:
        # both are replaced together in _commit.
        state = self.store[user_id]
        doc = orjson.dumps(user_record(user_id, state, assessment))
        return MembershipUpdate(user_id, state.version, assessment.tier, assessment.stage, doc)

    @property
    def outbox(self) -> list[Record]:
        """Everything queued for Kafka, in the order it will be handed over."""
        return self.outputs + self.changelog

    async def publish(self, producer: Any) -> None:
        """Hand what is queued to the producer: the outputs, and once the
        broker has acknowledged every one of them, the changelog records
        (enqueued only: Faust's commit flushes them). Callers are the batch
        handler and the sweep timer; the lock keeps one order for both."""
        self.tally.flush()
        self.freezer.maybe_freeze(len(self.store))
        async with self.publishing:
            self._seal_facts()
            outputs, self.outputs = self.outputs, []
            changelog, self.changelog = self.changelog, []
            if outputs:
                await _acknowledged(await self.sender.send(producer, outputs))
                self.crash.reached("outputs_acked")
                self._to_feed(outputs)
            if changelog:
                await self.sender.send(producer, changelog)
                self.crash.reached("changelog_sent")

    async def publish_in_transactions(self, producer: Any, transactional_id: Callable[[int], str]) -> set[int]:
        """Exactly-once: every record goes into the open transaction of the
        input partition that made it (Faust's transactional producer for
        that partition), and becomes visible to read_committed consumers
        when Faust commits that transaction with the partition's input
        offset. Order within a transaction does not matter: it commits
        whole or not at all. Returns the partitions that got records."""
        self.tally.flush()
        self.freezer.maybe_freeze(len(self.store))
        async with self.publishing:
            self._seal_facts()
            records = self.outputs + self.changelog
            self.outputs, self.changelog = [], []
            deliveries = []
            for r in records:
                deliveries.append(await producer.send(
                    r.topic, r.key, r.value, r.partition, None, None, transactional_id=transactional_id(r.source)))
            self.crash.reached("outputs_acked")
            await _acknowledged(deliveries)
            self.crash.reached("changelog_sent")
            self._to_feed(records)  # uncommitted still: the feed is a view, consumers read the topics
            return {r.source for r in records}

    def _to_feed(self, records: list[Record]) -> None:
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
            await self.membership.declare_segments(self.rules.tier_names, STAGES)
            if self.config_summary is not None:
                await self.membership.write_config(self.config_summary)
        except Exception:  # Redis down at start: flushes will retry, counts just miss zeros
            log.exception("could not declare segments in Redis")

    async def heal_membership(self) -> int:
        """Bring Redis into agreement with the state of the partitions in
        `to_heal`, and notice a Redis that came back empty. Compares
        versions in Redis (ids and numbers on the wire) and rewrites only
        the users that differ; returns how many were rewritten."""
        if self.membership is None:
            return 0
        owned = set(self.index.partitions())
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
        versions = [(u, s.version) for u, s in self.store.items()
                    if s.src_partition in parts and s.evaluated_ms is not None]
        stale = await self.membership.differing(versions)
        updates = []
        for user_id in stale:
            state = self.store.get(user_id)
            if state is None or state.evaluated_ms is None:
                continue
            assessment = self.pending.pop(user_id, None) or self._assessment_of(user_id, state)
            updates.append(self._membership_update(user_id, assessment))
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
        a = evaluate(state, state.evaluated_ms, self.rules, user_id)
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
            await self.membership.write(self._membership_update(u, a) for u, a in batch.items())
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


def _moved(index: PopulationIndex, before: Cuts | None, after: Cuts | None, boundary: int, rules: Rules) -> list[str]:
    """The customers whose score may differ between two sets of cuts at
    `boundary`: those on different sides of a cut's old and new place, or
    everyone scored on a dimension that switches between fixed thresholds
    and cuts (once, when the first cuts come)."""
    found: set[str] = set()
    everyone = -(1 << 62), 1 << 62
    for dim in ("f", "m"):
        old, new = getattr(before, dim, None), getattr(after, dim, None)
        if old is None and new is None:
            continue
        if old is None or new is None:
            found.update(index.users(dim, *everyone))
            continue
        for a, b in zip(old, new, strict=True):
            if a != b:
                found.update(index.moved(dim, a, b))
    old_r = getattr(before, "r", None)
    new_r = getattr(after, "r", None)
    if old_r != new_r:
        day = boundary // DAY_MS
        fixed = tuple(int(x) for x in rules.scores.recency_days)
        for a, b in zip(old_r or fixed, new_r or fixed, strict=True):
            if a != b:  # recency between the two limits (a day's margin each side)
                found.update(index.users("r", day - max(a, b) - 1, day - min(a, b) + 1))
    return sorted(found)


FEED_BUFFER = 100_000  # published changes and alerts waiting for Redis, at most
FACTS_RECORD_BYTES = 256 * 1024  # well under Kafka's default 1 MB message size


def _bounded_json(steps: list, limit: int) -> list[bytes]:
    """`steps` as JSON arrays of at most `limit` bytes each (one step alone
    may exceed it; at least one array, possibly empty)."""
    encoded = orjson.dumps(steps)
    if len(encoded) <= limit or len(steps) <= 1:
        return [encoded]
    half = len(steps) // 2
    return _bounded_json(steps[:half], limit) + _bounded_json(steps[half:], limit)


async def _acknowledged(deliveries: list[asyncio.Future]) -> None:
    """Wait until Kafka has acknowledged every delivery. If it refused any
    (after aiokafka's retries), the states in memory are ahead of what
    reached Kafka: their changelog records must not be written, and only a
    restart from the last durable state is safe."""
    acks = await asyncio.gather(*deliveries, return_exceptions=True)
    failed = [a for a in acks if isinstance(a, BaseException)]
    if failed:
        raise PublishFailed(f"{len(failed)} record batches were not accepted by Kafka: {failed[0]!r}")


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's: the same connection, settings and
    shutdown flush, without Faust's per-record wrapper and signals."""
    return app.producer._ensure_producer()


def install(streams: StreamApp, settings: Settings, rules: Rules, config_summary: bytes | None = None) -> Pipeline:
    """Attach the agent, the sweep timer and the Redis flusher to the app.
    `config_summary`: the configuration in force `rules` come from (state.config)."""
    app = streams.app
    redis = Redis.from_url(settings.redis_url)
    # With exactly-once the feed would show records before their transaction
    # commits, and its Redis writes would add a wait inside the publishing
    # path Faust's transactions depend on: it is off there.
    feed = None if settings.processing_guarantee == "exactly_once" else FeedWriter(
        redis, settings.redis_prefix, settings.user_history)
    pipeline = Pipeline(streams, settings, rules, MembershipWriter(redis, settings.redis_prefix), feed)
    pipeline.config_summary = config_summary
    if pipeline.book is not None:
        from agents.population import PopulationReader

        def idle_partitions() -> set[int]:
            """Owned partitions with nothing left to read and nothing new
            for a while: only events move time in a replay, so without
            following the others these would hold them at their last
            boundary."""
            now = time.monotonic()
            return {tp.partition for tp in app.consumer.assignment()
                    if tp.topic == events_topic and pipeline.index.owns(tp.partition)
                    and now - pipeline.last_input.get(tp.partition, now) >= settings.idle_partition_seconds
                    and app.consumer.caught_up(tp)}

        reader = PopulationReader(settings, pipeline, redis, lambda: send_out(outside_a_batch=True),
                                  idle_partitions if settings.clock == "replay" else None)

        @app.task
        async def read_population() -> None:
            await reader.run(lambda: app.should_stop)

    if settings.operator_metrics:
        from agents import metrics_aggregator

        pipeline.aggregator = metrics_aggregator.install(
            app, settings, rules, MetricsStore(redis, settings.redis_prefix))

    events_topic = streams.events.get_topic_name()
    exactly_once = settings.processing_guarantee == "exactly_once"

    def transactional_id(partition: int) -> str:
        # Faust's own naming (TransactionManager.transactional_id_format):
        # the producer Faust opened for the partition when it was assigned.
        return f"{app.conf.id}-{app.assignor.group_for_topic(events_topic)}-{partition}"

    # Exactly-once: partitions whose open transaction holds records that
    # are not committed yet.
    uncommitted: set[int] = set()

    async def send_out(outside_a_batch: bool = False) -> None:
        if not exactly_once:
            await pipeline.publish(kafka_producer(app))
            return
        uncommitted.update(await pipeline.publish_in_transactions(app.producer, transactional_id))
        if outside_a_batch and uncommitted:
            # A sweep moves no input offset: close the transactions holding
            # its decisions now rather than at the next commit (a silent
            # user's alert would wait for it).
            await commit_transactions()

    async def commit_transactions() -> None:
        """Commit every open transaction at its partition's commit point,
        while no record is on its way into one: a transaction then holds
        whole chunks, each chunk's decisions with the changelog records of
        the states that made them. A chunk of a batch still in hand commits
        with the offset before that batch; that is safe, because the state
        committed with it drops those inputs as applied when they come
        again after a crash."""
        async with pipeline.publishing:
            done = await app.consumer.commit_transactions({TP(events_topic, p) for p in uncommitted})
            uncommitted.difference_update(tp.partition for tp in done)
            # Partitions no longer assigned: their transactions went with them.
            uncommitted.intersection_update(tp.partition for tp in app.consumer.assignment()
                                            if tp.topic == events_topic)

    if exactly_once:

        @app.timer(interval=app.conf.broker_commit_interval)
        async def commit_open_transactions() -> None:
            await commit_transactions()

    async def until_ready(partition: int) -> bool:
        """Hold a recovered partition's input until the population reader
        has read the cut points it recovered into (Pipeline.ready). False
        when the partition is revoked, or the worker stops, meanwhile: the
        input is then left unread, for the partition's next owner."""
        if pipeline.ready(partition):
            return True
        while not app.should_stop and pipeline.index.owns(partition):
            await asyncio.sleep(0.05)
            if pipeline.index.owns(partition) and pipeline.ready(partition):
                return True
        return False

    async def on_batch(tp: Any, records: list[Any]) -> bool:
        # Chunks of batch_max, yielding between them, so that one large
        # fetch does not hold the Redis flusher and the timers back.
        step = settings.batch_max
        if not await until_ready(tp.partition):
            return False  # not taken (stream.batching): the offsets stay

        pipeline.last_input[tp.partition] = time.monotonic()
        for start in range(0, len(records), step):
            for record in records[start : start + step]:
                pipeline.on_message(record)
            await send_out()
            await asyncio.sleep(0)
        pipeline.crash.reached("batch_done")
        return True

    # The consumer hands the events topic's fetches over whole
    # (stream.batching): Faust's per-record path is the bottleneck otherwise.
    streams.batch_handlers[events_topic] = on_batch

    @app.agent(streams.events, name="tierstream.ingest")
    async def ingest(stream: Any) -> None:
        # Subscribes the topic (and so co-partitions the table with it).
        # Records reach this stream only on a consumer without batch
        # handlers; the work is the same.
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            for event in events:
                # This path cannot leave a message unread: a partition lost
                # while waiting is handled as any message in hand then is.
                await until_ready(event.message.partition)
                pipeline.on_message(event.message)
            await send_out()

    async def before_revoke(revoked: set[TP]) -> None:
        # Stop sweeping the partitions, then hand over what is queued (after
        # a publish in progress, which holds the lock) while Faust's flush
        # that follows still covers it: nothing of theirs is sent later.
        pipeline.on_partitions_revoked({tp.partition for tp in revoked if tp.topic == events_topic})
        await send_out()

    streams.revoke_hooks.append(before_revoke)

    if settings.clock == "live":

        @app.timer(interval=settings.tick_seconds)
        async def age_silent_users() -> None:
            pipeline.tick()
            await send_out(outside_a_batch=True)

    @app.task
    async def flush_to_redis() -> None:
        interval = settings.redis_flush_ms / 1000
        await pipeline.declare_segments()
        heal_after = 0.0
        while not app.should_stop:
            await asyncio.sleep(interval)
            if time.monotonic() >= heal_after:
                try:
                    await pipeline.heal_membership()
                except Exception as exc:  # Redis down: try again later, not every flush
                    metrics.REDIS_ERRORS.inc()
                    heal_after = time.monotonic() + settings.redis_check_seconds
                    log.warning("redis healing failed (%r); retrying in %.0fs", exc, settings.redis_check_seconds)
            await pipeline.flush_membership()
            await pipeline.flush_feed()
            if pipeline.outputs or pipeline.changelog:
                # Decided outside a batch (the sweep after recovery) with no
                # event or tick to publish it.
                await send_out(outside_a_batch=True)

    @app.on_before_shutdown.connect
    async def final_flush(app_: Any, **kwargs: Any) -> None:
        await pipeline.flush_membership()
        await pipeline.flush_feed()
        if exactly_once:
            try:
                await commit_transactions()
            except Exception:  # what stays uncommitted is redone after the restart
                log.exception("final commit of the open transactions failed")

    return pipeline
