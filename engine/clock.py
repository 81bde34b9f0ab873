"""Where event time comes from: the events alone (replay), or the events
and the wall clock (live).

With the live clock, time passes for a partition even when nothing
arrives: silent users age, alerts fire. With the replay clock only events
move time, so a history replays to the same decisions however fast it is
read. The wall clock is still read with the replay clock: the contract
refuses events too far in the future of it (stream.contract).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal


def wall_ms() -> int:
    return int(time.time() * 1000)


class ReplayClock:
    name: Literal["live", "replay"] = "replay"
    # No event yet, no watermark: a partition reports nothing, nor ages anyone.
    live = False

    def __init__(self, now_ms: Callable[[], int] = wall_ms) -> None:
        self.now_ms = now_ms

    def latest(self, seen_ms: int, wall: int) -> int:
        """The latest time the partition has reached, given its latest event time."""
        return seen_ms


class LiveClock(ReplayClock):
    name: Literal["live", "replay"] = "live"
    live = True

    def latest(self, seen_ms: int, wall: int) -> int:
        return max(seen_ms, wall)


Clock = ReplayClock | LiveClock


def clock_for(name: str, now_ms: Callable[[], int] = wall_ms) -> Clock:
    """The clock a `TIERSTREAM_CLOCK` setting names."""
    if name == "live":
        return LiveClock(now_ms)
    if name == "replay":
        return ReplayClock(now_ms)
    raise ValueError(f"unknown clock {name!r}: expected live or replay")
