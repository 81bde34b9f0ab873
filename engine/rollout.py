"""A partition's side of a rules roll-out (state.rollout): held where it
reported on an open proposal, the versions it comes to, where a newly
assigned partition stands among them, and the sweep that re-assesses its
users when one comes into force.

A part of engine.partition.PartitionEngine, kept apart so that the
engine's own module stays about events, time and periods; these methods
use the engine's users, rules, index and re-assessment. Pure, as the
engine: no I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from state.rules import Rules

log = logging.getLogger("engine.partition")


class RolloutSteps:
    """Mixed into PartitionEngine; the attributes below are its own."""

    # Provided by PartitionEngine:
    partition: int
    rules: Rules
    users: Any
    book: Any
    entered: int | None

    def init_rollouts(self) -> None:
        # Rules roll-outs (state.rollout). `hold`: the watermark reported on
        # an open proposal; nothing is decided past it until it settles.
        # `switches`: the versions this partition comes to, in order, each
        # with the event time it is in force from. `placed`: whether this
        # process knows every proposal made before the partition was
        # assigned (the adapter's reader says so); until then it waits.
        self.hold: int | None = None
        self.switches: deque[tuple[int, Rules]] = deque()
        self.placed = True
        # A switch under way: the users left to re-assess at its start.
        # `switch_chunk` users at a time (None: all at once), so that a
        # worker's event loop is not held for seconds at a million users.
        self.reassessing: deque[str] | None = None
        self.switch_chunk: int | None = None

    def _reachable(self, wall: int) -> int:
        """The raw watermark, held where the partition reported on an open roll-out."""
        raw = self.raw_watermark(wall)
        return raw if self.hold is None else min(raw, self.hold)

    def learn(self, wall: int) -> int:
        """A roll-out proposed: hold the watermark where it is now and
        return it (the partition's report)."""
        self.hold = self.watermark(wall)
        return self.hold

    def settle(self, from_ms: int | None, rules: Rules | None) -> None:
        """The open roll-out settled: the hold ends; accepted, the partition
        switches to `rules` when its watermark reaches `from_ms`."""
        self.hold = None
        if from_ms is not None and rules is not None:
            self.switches.append((from_ms, rules))

    def place(self, rules: Rules, switches: list[tuple[int, Rules]], hold: int | None) -> None:
        """Where this partition stands among the roll-outs, once the process
        has read them all: the version it runs (in force at its earliest
        evaluation still behind a later version's start), the versions it
        comes to, and the hold of a roll-out it reported on that is open."""
        self.rules = rules
        self.switches = deque(switches)
        self.hold = hold
        self.placed = True
        if self.book is not None and self.switches and self.entered is not None and \
                self.entered >= self.switches[0][0]:
            # Recovered into a period past a switch some of its users had not
            # been brought through (their re-assessment was not written):
            # enter the switch's period again, so that they are swept to it
            # under the old version and re-assessed at its start as before.
            # Later periods are entered again on the way, as after any crash.
            self.entered = self.switches[0][0] - self.rules.cadence_ms

    def _switch(self) -> bool:
        """The next version is in force from its start: re-assess there
        every user of the partition not evaluated there or later, and write
        each state; `switch_chunk` users a call. Returns whether it is done
        (until then the watermark stays before the start, and events wait
        as deferred ones). A worker that dies part way leaves the rest
        evaluated before the start, and its successor (placed back on the
        old version, `place`) does the same again: those already done are
        passed over."""
        start, rules = self.switches[0]
        if self.reassessing is None:
            self.rules = rules
            self.reassessing = deque(sorted(
                user_id for user_id, state in self.users.items()
                if state.src_partition == self.partition and state.has_applied
                and (state.evaluated_ms is None or state.evaluated_ms < start)))
            log.info("partition %d: rules version %s in force from %d; re-assessing %d users", self.partition,
                     rules.version, start, len(self.reassessing))
        left = self.switch_chunk or len(self.reassessing)
        while self.reassessing and left > 0:
            self._reassess_at(self.reassessing.popleft(), start, reason="rules_changed")
            self.on_point("rollout_reassessed")
            left -= 1
        if self.reassessing:
            return False
        self.reassessing = None
        self.switches.popleft()
        return True

