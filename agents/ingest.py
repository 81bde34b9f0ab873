"""Input messages in: parse (or dead-letter), re-key, hand the event to its
partition's engine, count what became of it. Never raises: whatever goes
wrong with one message becomes a dead letter, and the stream goes on."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from agents import metrics
from agents.outbox import Record
from agents.routing import Router
from engine.coordinator import Coordinator
from engine.effects import TakenLater
from engine.partition import Taken, TooOld
from stream import topics
from stream.contract import Rejection, parse_event
from stream.settings import Settings

log = logging.getLogger(__name__)

COUNTERS = {Taken.APPLIED: metrics.EVENTS_ACCEPTED, Taken.DUPLICATE: metrics.EVENTS_DUPLICATE,
            Taken.REDELIVERED: metrics.EVENTS_REDELIVERED}


class Ingest:
    def __init__(self, settings: Settings, engine: Coordinator, router: Router, tally: metrics.Tally,
                 queue: list[Record]) -> None:
        self.settings = settings
        self.engine = engine
        self.router = router
        self.tally = tally
        self.queue = queue  # records for Kafka this makes itself (agents.publisher)
        self.earliest_ms = settings.earliest_event_ms

    def on_message(self, message: Any) -> None:
        try:
            self._take(message)
        except Exception as exc:  # one bad event must not stop the stream
            log.exception("failed to process %s[%s]@%s", message.topic, message.partition, message.offset)
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self.queue.append(self.router.dead_letter(message, Rejection("processing_error", detail)))

    def _take(self, message: Any) -> None:
        wall = self.engine.clock.now_ms()
        parsed = parse_event(
            message.value or b"",
            now_ms=wall,
            max_bytes=self.settings.max_event_bytes,
            max_future_ms=self.settings.max_future_seconds * 1000,
            earliest_ms=self.earliest_ms,
            on_unknown_fields=self._count_unknown_fields,
        )
        if isinstance(parsed, Rejection):
            self.queue.append(self.router.dead_letter(message, parsed))
            return
        user_id = parsed.user_id
        if message.key != user_id.encode():
            # The table is partitioned by user id: an event on the wrong
            # partition would split a user's state. Send it where it belongs.
            self.queue.append(Record(topics.EVENTS, user_id.encode(), message.value, source=message.partition))
            self.tally.add(metrics.EVENTS_REKEYED)
            return
        taken = self.engine.engine(message.partition).take(user_id, parsed, message.offset, wall, source=message)
        self.outcome(message, user_id, taken)

    def outcome(self, message: Any, user_id: str, taken: Taken | TooOld) -> None:
        """What became of an event: counted, or refused with its reason (for
        a deferred event, when the engine took it: Effects.later)."""
        if isinstance(taken, TooOld):
            self.queue.append(self.router.dead_letter(message, Rejection("implausibly_old", str(taken), user_id)))
        elif taken is not Taken.DEFERRED:
            self.tally.add(COUNTERS[taken])

    def later(self, taken: TakenLater) -> None:
        self.outcome(taken.source, taken.user_id, taken.outcome)

    def _count_unknown_fields(self, names: list[str]) -> None:
        self.tally.add(metrics.UNKNOWN_FIELDS_DROPPED, len(names))
