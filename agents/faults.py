"""Crash points: the crash tests' way to SIGKILL a worker at a moment chosen
by what it is doing, not by a timer that may or may not land in the window.

`TIERSTREAM_CRASH_AT=point:n` makes the worker kill itself, with SIGKILL
and nothing flushed, the n-th time it reaches `point`. Unset (always, in
production) every check is one attribute test. The points:

- `outputs_acked`: a chunk's decisions are acknowledged by the broker, its
  changelog records not yet handed to the producer;
- `changelog_sent`: the changelog records are handed over, not yet acked,
  and the input offset not yet committed;
- `sweep_decided`: a sweep (time alone) has decided something, nothing of
  it is published yet;
- `batch_done`: a fetched batch is fully handled. Counted from the
  process's start, so on a restarted worker `batch_done:2` lands in its
  catch-up;
- `rollout_reassessed`: a rules roll-out's sweep has re-assessed one more
  user (state.rollout), nothing of it published yet.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

POINTS = ("outputs_acked", "changelog_sent", "sweep_decided", "batch_done", "rollout_reassessed")


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.at = 0
        self.seen = 0
        if spec:
            point, _, count = spec.partition(":")
            if point not in POINTS or not count.isascii() or not count.isdigit() or int(count) < 1:
                raise ValueError(f"TIERSTREAM_CRASH_AT={spec!r}: expected one of {', '.join(POINTS)} then ':N', N >= 1")
            self.point, self.at = point, int(count)

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.at:
            log.warning("crash point %s:%d reached: SIGKILL", point, self.at)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)
