"""What quantile scores and the churn model cost the pipeline, without
I/O: the same history through `Pipeline.on_message` with the rules' fixed
thresholds, with quantile R, F and M (cut points recomputed daily), and
with the churn model on top (fitted weekly; P(alive) and expected orders
at every evaluation). The pipeline's own population reports are looped
back, as one process owning every partition.

    python -m bench.quantile_cost --users 20000 --events 200000

Prints the rates and their ratios, from one run.
"""

from __future__ import annotations

import argparse
import time
import zlib
from types import SimpleNamespace

import orjson

from agents.pipeline import Pipeline
from bench.offline_pipeline import PARTITIONS, _Table
from bench.workload import history
from state.rules import fixed_threshold_rules_text, parse_rules, population_rules_text
from stream import topics
from stream.settings import Settings

FIXED = fixed_threshold_rules_text()
QUANTILES = FIXED.replace("quantiles = []", 'quantiles = ["r", "f", "m"]', 1)
CHURN = population_rules_text()  # the shipped defaults: quantile R, F, M and the churn model


def rate(bodies: list[dict], rules_text: str) -> tuple[float, int]:
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
    args = parser.parse_args()
    bodies = sorted(history(users=args.users, events=args.events, days=730, seed=5), key=lambda b: b["ts"])
    fixed, fixed_changes = rate(bodies, FIXED)
    quantile, quantile_changes = rate(bodies, QUANTILES)
    churn, churn_changes = rate(bodies, CHURN)
    print(f"fixed thresholds:  {fixed:,.0f} events/s ({fixed_changes:,} tier changes)")
    print(f"quantile R, F, M:  {quantile:,.0f} events/s ({quantile_changes:,} tier changes)")
    print(f"and churn model:   {churn:,.0f} events/s ({churn_changes:,} tier changes)")
    print(f"ratio quantile / fixed: {quantile / fixed:.2f}")
    print(f"ratio quantile and churn model / quantile: {churn / quantile:.2f}")
    print(f"ratio quantile and churn model / fixed: {churn / fixed:.2f}")


if __name__ == "__main__":
    main()
