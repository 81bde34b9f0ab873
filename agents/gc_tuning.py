"""Keep Python's cyclic garbage collector off the table of user states.

The users table is hundreds of thousands of long-lived objects (each state,
its lists and dict). CPython's full collection walks every tracked object:
206 ms at 50k users in a running worker, 1,050 ms for 1M states in a bare
process (0 ms once they are frozen), and it runs whenever the old
generation has grown by a quarter, so it shows up as latency spikes and as
lost throughput. States hold no reference cycles, so walking them finds nothing.

`gc.freeze()` moves every object alive at that moment to a permanent
generation that collections skip; objects in it are still freed by
reference counting, which is how states are ever freed. We freeze right
after a full collection, so no garbage is frozen with them: after each
recovery, and each time the number of users has doubled since the last
freeze (users are what the heap is made of; counting objects would itself
walk them). Amortised, each state is collected-then-frozen about once.

What this gives up: a frozen object that later becomes part of a garbage
*cycle* is not reclaimed. States never form one; the worker's own
long-lived objects (Faust services, connections) rarely do.

The youngest generation is also collected less often than CPython's
default (every 700 net allocations). A step makes thousands of objects
that live for one batch (assessments, decisions, records on their way to
the producer); at 700 they are caught alive, moved to the older
generations and walked again there, and the state copies a step leaves
behind fill the old generation towards a full collection. At 50,000 most
of them are gone by the time the collector looks: offline, the backfill
history ran 1.25 times as fast with fixed thresholds and 1.6 times with
the shipped defaults (docs/performance.md). A young collection of 50,000
objects takes a few milliseconds.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

# Below this many users a full collection is cheap: no freeze needed.
FLOOR_USERS = 20_000
# Net allocations between collections of the youngest generation
# (CPython's default is 700; the module's docstring says why more).
YOUNG_THRESHOLD = 50_000


def collect_less_often() -> None:
    """Raise the youngest generation's threshold for this process (the
    worker's, once at start); the older generations' stay as they are."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)


class HeapFreezer:
    def __init__(self, floor_users: int = FLOOR_USERS) -> None:
        self.floor_users = floor_users
        self.users_at_freeze = 0

    def freeze(self, users: int) -> float:
        """Full collection, then freeze the survivors. Returns the pause (s)."""
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.users_at_freeze = users
        pause = time.perf_counter() - started
        log.info("gc: %d users, %d objects frozen, pause %.0f ms", users, gc.get_freeze_count(), pause * 1000)
        return pause

    def maybe_freeze(self, users: int) -> bool:
        """A cheap check, to call often: freeze when the users have doubled
        since the last freeze (and are past the floor)."""
        if users < max(self.floor_users, 2 * self.users_at_freeze):
            return False
        self.freeze(users)
        return True
