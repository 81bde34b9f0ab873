"""How long `tierstream snapshot` takes to evaluate N users with the shipped
defaults (quantile scores, the churn model, the example campaigns): the
states come from the pipeline run over a generated history (no I/O, its own
population reports looped back), and the snapshot's own code
(`cli.snapshot.snapshot_rows`) brings every user to the time asked.

    python -m bench.snapshot_time --users 100000
    python -m bench.snapshot_time --users 100000 --copies 10    # 1M users

Prints the time at the history's end (where the workers are) and 90 days
later (every silent user stepped through their wake-ups to then), decoding
the states as the changelog holds them included; reading the changelog and
the population topic from the broker is not.
"""

from __future__ import annotations

import argparse
import time

from bench import workload
from bench.offline_pipeline import through_pipeline
from cli.io import collector_paused, decode_states
from cli.snapshot import snapshot_rows
from state.campaigns import example_campaigns_text
from state.config import ConfigDocument
from state.model import DAY_MS
from state.rules import default_rules_text
from stream.codecs import encode_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="repeat the states under other user ids (1M users "
                        "from a 100k-user pipeline run: each user costs the same whatever their id)")
    args = parser.parse_args()
    rules = ConfigDocument(default_rules_text(), example_campaigns_text()).rules()
    bodies = sorted(workload.history(users=args.users, events=args.users * args.events_per_user, days=365),
                    key=lambda b: (b["ts"], b["event_id"]))
    p, seconds = through_pipeline(bodies, rules)
    print(f"{args.users} users, {len(bodies)} events through the pipeline in {seconds:.0f} s")
    end = max(b["ts"] for b in bodies)
    encoded = [(f"{u}#{c}" if c else u, encode_state(state)) for c in range(args.copies) for u, state in p.store.items()]
    for label, at in (("at the history's end", end), ("90 days after it", end + 90 * DAY_MS)):
        started = time.perf_counter()
        with collector_paused():  # as the command (cli.snapshot.take_snapshot)
            rows = snapshot_rows(dict(decode_states(encoded)), at, p.rules)
        print(f"snapshot {label}: {len(rows)} users, decoded and evaluated in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
