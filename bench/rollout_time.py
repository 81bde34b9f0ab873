"""How long a rules roll-out's sweep takes (state.rollout, engine.partition:
`_switch`): every user of every partition re-assessed at the switch under
the new version, each state written (encoded for the changelog), with the
shipped defaults (quantile scores, the churn model, the example campaigns)
and the change bench.preview_time previews.

    python -m bench.rollout_time --users 100000 --copies 10    # 1M users

The states are made as bench.preview_time makes them; they are spread over
the default partition count, as a worker owning every partition holds them.
Timed: the sweep of each partition up to the switch and its re-assessment
of everyone, in one process on one core. Not included: the broker round
trips of the changes and states it publishes (they go out as any chunk's
records do), and the wait for every partition's report (milliseconds once
every worker has read the proposal).
"""

from __future__ import annotations

import time
from typing import Any

from bench.preview_time import at_sizes
from cli.io import collector_paused, decode_states
from engine.clock import ReplayClock
from engine.coordinator import Coordinator
from stream.settings import Settings


def main() -> None:
    at_sizes(__doc__, _time)


def _time(changelog: list[tuple[str, bytes]], at: int, old: Any, new: Any) -> None:
    settings = Settings()
    users = dict(decode_states(changelog))
    for n, state in enumerate(users.values()):
        state.src_partition = n % settings.partitions
    boundary = (at // old.cadence_ms + 1) * old.cadence_ms  # the next cadence boundary: where a roll-out comes in
    engine = Coordinator(old, ReplayClock(), users, lateness_ms=settings.allowed_lateness_ms,
                         max_event_age_days=settings.max_event_age_days)
    engine.book = old.thresholds  # the cut points the pipeline settled
    for p in range(settings.partitions):
        e = engine.engine(p)
        e.owned = True
        e.book = None  # the periods were entered by the pipeline; time the sweep alone
    started = time.perf_counter()
    moved = written = 0
    with collector_paused():  # the worker keeps the users' states out of the collector too (agents.gc_tuning)
        for p in range(settings.partitions):
            e = engine.engines[p]
            e.settle(boundary, new)
            e.sweep(boundary - 1)
            while not e._switch():  # noqa: SLF001 - the sweep under test, on its own
                pass
            written += len(engine.effects.committed)
            moved += sum(1 for c in engine.effects.committed for d in c.decisions
                         if getattr(d, "reason", None) == "rules_changed" and hasattr(d, "change_id"))
            engine.effects.committed.clear()
            engine.effects.assessed.clear()
    seconds = time.perf_counter() - started
    print(f"roll-out sweep of {len(users)} users over {settings.partitions} partitions: {seconds:.1f} s "
          f"({len(users) / seconds:,.0f} users/s); {written} states written, {moved} tier changes rules_changed")

if __name__ == "__main__":
    main()
