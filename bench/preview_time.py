"""How long `tierstream rules preview` takes to evaluate N users under the
rules in force and under a changed version, with the shipped defaults
(quantile scores, the churn model, the example campaigns).

    python -m bench.preview_time --users 100000 --copies 10    # 1M users

The states come from the pipeline run over a generated history of
`--users` users (no I/O, its own population reports looped back), encoded
as the users table's changelog holds them; `--copies` repeats them under
other user ids to reach larger populations without running the pipeline
that long (each user costs the same to preview whatever their id). Timed:
decoding every state and the preview itself (state.preview), as the
command does after reading the changelog; reading the changelog from the
broker is not included. The change previewed: high value from R >= 4
instead of 3, dormant after 120 days instead of 180.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import workload
from bench.offline_pipeline import through_pipeline
from state.campaigns import example_campaigns_text
from state.config import ConfigDocument
from state.preview import preview
from state.rules import default_rules_text
from cli.io import collector_paused, decode_states
from stream.codecs import encode_state

CHANGE = (('name = "dormant"\ndays_since_order_min = 180', 'name = "dormant"\ndays_since_order_min = 120'),
          ('name = "high_value"\nr_min = 3', 'name = "high_value"\nr_min = 4'))


def main() -> None:
    at_sizes(__doc__, _time)


def at_sizes(description: str | None, timed: Callable[[list[tuple[str, bytes]], int, Any, Any], None]) -> None:
    """The command line of this benchmark and bench.rollout_time: `timed`
    on the pipeline's population, then on all its copies."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--events-per-user", type=int, default=3)
    args = parser.parse_args()
    changelog, at, old, new = populations(args.users, args.copies, args.events_per_user)
    if args.copies > 1:  # the population the pipeline made, alone first
        timed(changelog[:len(changelog) // args.copies], at, old, new)
    timed(changelog, at, old, new)


def populations(users: int, copies: int, events_per_user: int) -> tuple[list[tuple[str, bytes]], int, Any, Any]:
    """The users' states as the changelog holds them (`copies` times under
    other ids), the latest event time, the rules in force (with the cut
    points the pipeline settled) and the changed version."""
    old_doc = ConfigDocument(default_rules_text(), example_campaigns_text())
    new_text = default_rules_text()
    for before, after in CHANGE:
        assert before in new_text, before
        new_text = new_text.replace(before, after)
    bodies = sorted(workload.history(users=users, events=users * events_per_user, days=365),
                    key=lambda b: (b["ts"], b["event_id"]))
    p, seconds = through_pipeline(bodies, old_doc.rules())
    old = p.rules
    new = ConfigDocument(new_text, example_campaigns_text()).rules().with_thresholds(old.thresholds)
    encoded = {u: encode_state(s) for u, s in p.store.items()}
    changelog = [(f"{u}#{c}" if c else u, data) for c in range(copies) for u, data in encoded.items()]
    print(f"{users} users, {len(bodies)} events through the pipeline in {seconds:.0f} s; {len(changelog)} states")
    return changelog, max(b["ts"] for b in bodies), old, new


def _time(changelog: list[tuple[str, bytes]], at: int, old, new) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    states = decode_states(changelog)
    decoded = time.perf_counter()
    with collector_paused():  # as the command
        doc = preview(states, at, old, new).doc(old, new)
    done = time.perf_counter()
    print(f"decode {decoded - started:.1f} s, preview {done - decoded:.1f} s, total {done - started:.1f} s: "
          f"{doc['users']} users, {doc['tier_moves']} would change tier")


if __name__ == "__main__":
    main()
