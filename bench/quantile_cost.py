"""What quantile scores and the churn model cost the pipeline, without
I/O: the same history through `Pipeline.on_message` with the rules' fixed
thresholds, with quantile R, F and M (cut points recomputed daily), and
with the churn model on top (fitted weekly; P(alive) and expected orders
at every evaluation). The pipeline's own population reports are looped
back, as one process owning every partition.

    python -m bench.quantile_cost --users 20000 --events 200000
    python -m bench.quantile_cost --backfill 25000        # bench.backfill's history instead
    python -m bench.quantile_cost --backfill 25000 --count   # evaluations made, not rates

Prints the rates and their ratios, from one run. `--count` counts the
evaluations each rule set makes (every `evaluate` the engine's steps call;
the count slows the run, so no rates then): what issue #23's "wake a user
only when a figure a rule reads can have changed" saves.
"""

from __future__ import annotations

import argparse
import time
import zlib
from types import SimpleNamespace

import orjson

from agents.gc_tuning import collect_less_often
from agents.pipeline import Pipeline
from bench.backfill import purchase_history
from bench.offline_pipeline import PARTITIONS, _Table
from bench.workload import history
from state import steps
from state.rules import fixed_threshold_rules_text, parse_rules, population_rules_text
from stream import topics
from stream.settings import Settings

FIXED = fixed_threshold_rules_text()
QUANTILES = FIXED.replace("quantiles = []", 'quantiles = ["r", "f", "m"]', 1)
CHURN = population_rules_text()  # the shipped defaults: quantile R, F, M and the churn model


def rate(bodies: list[dict], rules_text: str, count: bool = False) -> tuple[float, int, int]:
    """(events/s, tier changes, evaluations: counted with `count`, else 0)."""
    calls = 0
    real = steps.evaluate

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    if count:
        steps.evaluate = counted  # the name state.steps calls: every step's evaluation, and nothing else's
    try:
        per_second, changes = _rate(bodies, rules_text)
    finally:
        steps.evaluate = real
    return per_second, changes, calls


def _rate(bodies: list[dict], rules_text: str) -> tuple[float, int]:
    rules = parse_rules(rules_text)
    settings = Settings(clock="replay", max_future_seconds=10**9, partitions=PARTITIONS)
    p = Pipeline(SimpleNamespace(users=_Table()), settings, rules, None)
    if rules.scores.from_population:
        p.engine.loop_back(PARTITIONS)
    p.on_active_partitions(set(range(PARTITIONS)))
    messages = [SimpleNamespace(topic=topics.EVENTS, partition=zlib.crc32(b["user_id"].encode()) % PARTITIONS,
                                offset=i, key=b["user_id"].encode(), value=orjson.dumps(b))
                for i, b in enumerate(bodies)]
    changes = 0
    started = time.perf_counter()
    for start in range(0, len(messages), settings.batch_max):
        for m in messages[start:start + settings.batch_max]:
            p.on_message(m)
        p.resume()
        outputs, _ = p.drain()
        changes += sum(r.topic == topics.TIER_CHANGES for r in outputs)
        p.redis.pending.clear()
    return len(messages) / (time.perf_counter() - started), changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--backfill", type=int, default=None, metavar="CUSTOMERS",
                        help="bench.backfill's purchase history of this many customers instead")
    parser.add_argument("--count", action="store_true", help="count the evaluations made instead of timing")
    args = parser.parse_args()
    collect_less_often()  # as the worker does
    if args.backfill:
        bodies = [orjson.loads(value) for _, value in purchase_history(args.backfill)]
    else:
        bodies = sorted(history(users=args.users, events=args.events, days=730, seed=5), key=lambda b: b["ts"])
    fixed, fixed_changes, fixed_calls = rate(bodies, FIXED, args.count)
    quantile, quantile_changes, quantile_calls = rate(bodies, QUANTILES, args.count)
    churn, churn_changes, churn_calls = rate(bodies, CHURN, args.count)
    if args.count:
        print(f"fixed thresholds:  {fixed_calls:,} evaluations ({fixed_changes:,} tier changes)")
        print(f"quantile R, F, M:  {quantile_calls:,} evaluations ({quantile_changes:,} tier changes)")
        print(f"and churn model:   {churn_calls:,} evaluations ({churn_changes:,} tier changes)")
        return
    print(f"fixed thresholds:  {fixed:,.0f} events/s ({fixed_changes:,} tier changes)")
    print(f"quantile R, F, M:  {quantile:,.0f} events/s ({quantile_changes:,} tier changes)")
    print(f"and churn model:   {churn:,.0f} events/s ({churn_changes:,} tier changes)")
    print(f"ratio quantile / fixed: {quantile / fixed:.2f}")
    print(f"ratio quantile and churn model / quantile: {churn / quantile:.2f}")
    print(f"ratio quantile and churn model / fixed: {churn / fixed:.2f}")


if __name__ == "__main__":
    main()
