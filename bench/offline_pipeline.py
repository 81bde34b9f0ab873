"""The pipeline's own cost per event, with no I/O: `Pipeline.on_message`
over the harness's events in one process, outputs built and dropped.

    python -m bench.offline_pipeline --events 200000 --users 100000 [--profile]

Uses the replay clock, as section c does. What this leaves out (Kafka,
Redis, Faust) is what separates it from section c's rate. Also prints the
decisions made per event (tier changes and churn alerts), read off the
worker's own counters.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import zlib
from types import SimpleNamespace
from typing import Any

import orjson

from prometheus_client import REGISTRY

from agents.gc_tuning import collect_less_often
from agents.pipeline import Pipeline
from bench import workload
from state.kpis import Step
from state.rules import fixed_threshold_rules
from stream import topics
from stream.settings import Settings


PARTITIONS = 8


class _Table:
    """The users table's surface the pipeline uses, as a plain dict."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.on_active_partitions = None
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: "tierstream-users-changelog")


def messages(events: int, users: int, span_days: int = 365) -> list[SimpleNamespace]:
    """The workload's events as the consumer would hand them over."""
    return [
        SimpleNamespace(topic=topics.EVENTS, partition=zlib.crc32(k) % PARTITIONS, offset=i, key=k, value=v)
        for i, (k, v) in enumerate(workload.events(events, users, span_days=span_days))
    ]


def through_pipeline(bodies: list[dict], rules: Any) -> tuple[Pipeline, float]:
    """`bodies` through a pipeline that owns every partition, with its own
    population reports looped back (quantile scores, the churn model), as one
    process would; outputs dropped chunk by chunk. Returns it and the seconds taken."""
    settings = Settings(clock="replay", max_future_seconds=10**9, partitions=PARTITIONS)
    p = Pipeline(SimpleNamespace(users=_Table()), settings, rules, None)
    if rules.scores.from_population:
        p.engine.loop_back(PARTITIONS)
    p.on_active_partitions(set(range(PARTITIONS)))
    started = time.perf_counter()
    for i, b in enumerate(bodies):
        p.on_message(SimpleNamespace(topic=topics.EVENTS, partition=zlib.crc32(b["user_id"].encode()) % PARTITIONS,
                                     offset=i, key=b["user_id"].encode(), value=orjson.dumps(b)))
        if i % settings.batch_max == 0:
            p.resume()
            drop(p)
    p.resume()
    drop(p)
    return p, time.perf_counter() - started


def drop(p: Pipeline) -> None:
    """What a publish would take off the queues (records built, then
    dropped), and the assessments a Redis flush would take."""
    p.drain()
    p.redis.pending.clear()


def metric_steps(p: Pipeline) -> dict[int, list[Step]]:
    """The metric steps booked since the last call, per partition (the
    facts a publish would send), and the rest of the queue dropped."""
    steps: dict[int, list[Step]] = {}
    for facts in p.engine.seal_facts():
        steps.setdefault(facts.partition, []).extend(facts.steps)
    drop(p)
    return steps


def run(events: int, users: int, profile: bool) -> None:
    records = messages(events, users)
    settings = Settings(clock="replay", max_future_seconds=10**9)
    pipeline = Pipeline(SimpleNamespace(users=_Table()), settings, fixed_threshold_rules(), None)
    pipeline.on_active_partitions(set(range(PARTITIONS)))

    def process() -> None:
        for start in range(0, len(records), settings.batch_max):
            for record in records[start : start + settings.batch_max]:
                pipeline.on_message(record)
            pipeline.drain()  # the records, built as a publish would
            pipeline.tally.flush()
            pending, pipeline.redis.pending = pipeline.redis.pending, {}
            for user_id, assessment in pending.items():  # the Redis documents, built as a flush would
                pipeline.redis.membership_update(user_id, assessment)

    started = time.perf_counter()
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(process)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        process()
    seconds = time.perf_counter() - started
    print(f"{events / seconds:,.0f} events/s, {seconds / events * 1e6:.0f} µs per event (no I/O)")
    changes = REGISTRY.get_sample_value("tierstream_tier_changes_total") or 0.0
    alerts = sum(REGISTRY.get_sample_value("tierstream_churn_alerts_total", {"level": level}) or 0.0
                 for level in ("at_risk", "churned"))
    print(f"per event: {changes / events:.2f} tier changes, {alerts / events:.2f} churn alerts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="cProfile it (slower; for where, not how fast)")
    args = parser.parse_args()
    collect_less_often()  # as the worker does
    run(args.events, args.users, args.profile)


if __name__ == "__main__":
    main()
