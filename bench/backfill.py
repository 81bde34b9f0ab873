"""Backfill: a shop's whole purchase history already in the events topic
when the worker starts, decided as fast as the data allows?

    python -m bench.backfill                          # 25k customers, 9 months, 4 and 16 partitions
    python -m bench.backfill --customers 2000 --partitions 4   # smoke
    python -m bench.backfill --broker kafka

For each partition count, the same history twice, each on fresh servers
(the configuration in force is one per cluster): a worker with fixed
thresholds (the baseline) and a worker with the shipped defaults (quantile
R/F/M scores and the churn model), both with the operator metrics on and
the replay clock. Measured: from the worker's start and from its first
decision to its last (tier changes and churn alerts; the last is the one
after which the outputs stay still for `--settle` seconds). Reported: the
shipped defaults' time as a ratio to the baseline's (issue #23's target:
within 1.3x). Then a restart: the shipped defaults' worker stopped with
SIGTERM once it has accepted half the history and started again, timed
from the restart to its last decision, against a fresh worker given only
the remainder (`--no-restart` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.run import fixed_rules_file, log, produce_batched
from cli.embedded import EmbeddedServers
from cli.processes import free_port, spawn, stop
from stream import topics
from stream.admin import ensure_topics

DAY_MS = 86_400_000
START_MS = 1_672_531_200_000  # 2023-01-01


def purchase_history(customers: int, days: int = 270, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs in event-time order: each customer signs up at a
    uniform time in the window and orders once at signup; most never again
    (85%), some two or three times (12%), a few four to eight times (3%),
    at random later times in the window. Amounts log-normal (median ~40)."""
    rnd = random.Random(seed)
    out: list[tuple[int, str, dict]] = []
    for c in range(customers):
        user = f"c-{c:07d}"
        joined = START_MS + rnd.randrange(days * DAY_MS)
        out.append((joined, user, {"event_id": f"{user}-s", "user_id": user, "type": "signup", "ts": joined}))
        roll = rnd.random()
        orders = 1 if roll < 0.85 else rnd.randint(2, 3) if roll < 0.97 else rnd.randint(4, 8)
        end = START_MS + days * DAY_MS
        times = [joined + 60_000] + sorted(rnd.randrange(joined + 60_000, end) for _ in range(orders - 1))
        for n, at in enumerate(times):
            amount = round(math.exp(rnd.gauss(math.log(40), 0.8)), 2)
            out.append((at, user, {"event_id": f"{user}-o{n}", "user_id": user, "type": "order", "ts": at,
                                   "amount": amount}))
    out.sort(key=lambda e: (e[0], e[2]["event_id"]))
    return [(user.encode(), orjson.dumps(body)) for _, user, body in out]


async def _decisions_settle(servers: EmbeddedServers, started: float, settle: float, timeout: float,
                            worker: Any) -> tuple[float, float, int]:
    """(first decision, last decision, count) in perf_counter time: reads the
    decision topics until nothing new has come for `settle` seconds after
    at least one decision."""
    consumer = servers.kafka.consumer(topics.TIER_CHANGES, topics.CHURN_ALERTS, group_id=None,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    first = last = None
    count = 0
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            now = time.perf_counter()
            got = sum(len(records) for records in batch.values())
            if got:
                count += got
                first = first or now
                last = now
            if last is not None and now - last > settle:
                return first, last, count  # type: ignore[return-value]
            if now - started > timeout:
                raise TimeoutError(f"no settled decisions within {timeout:.0f}s ({count} so far)")
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with code {worker.returncode}")
    finally:
        await consumer.stop()


def _worker_env(servers: EmbeddedServers, partitions: int, rules: str, metrics_port: int | None = None) -> dict:
    env = {**os.environ, "TIERSTREAM_BROKER": servers.broker, "TIERSTREAM_REDIS_URL": servers.redis_url,
           "TIERSTREAM_PARTITIONS": str(partitions), "TIERSTREAM_CLOCK": "replay",
           "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6", "TIERSTREAM_MAX_FUTURE_SECONDS": str(10**9)}
    if metrics_port:
        env["TIERSTREAM_METRICS_PORT"] = str(metrics_port)
    if rules == "fixed":
        env["TIERSTREAM_RULES"] = str(fixed_rules_file(servers.workdir))
    else:
        env.pop("TIERSTREAM_RULES", None)
    return env


async def restart_run(history: list[tuple[bytes, bytes]], partitions: int, broker: str, settle: float,
                      timeout: float) -> dict[str, float]:
    """The shipped defaults' worker stopped (SIGTERM) once it has accepted
    half the history, and started again: seconds from the restart to the
    last decision, against a fresh worker given only the events the first
    had not accepted (the same remainder, decided from scratch)."""
    from bench.run import metric

    servers = EmbeddedServers(broker_kind=broker).start(partitions)
    try:
        await ensure_topics(servers.kafka, partitions)
        await produce_batched(servers.broker, topics.EVENTS, history, partitions)
        port = free_port()
        env = _worker_env(servers, partitions, "shipped", port)
        worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=servers.workdir / "worker-1.log")
        try:
            while metric(port, "tierstream_events_accepted_total") < len(history) / 2:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with code {worker.returncode}")
                await asyncio.sleep(0.1)
            accepted = int(metric(port, "tierstream_events_accepted_total"))
        finally:
            stop(worker)
        restarted = time.perf_counter()
        worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=servers.workdir / "worker-2.log")
        try:
            _, last, _ = await _decisions_settle(servers, restarted, settle, timeout, worker)
        finally:
            stop(worker)
    finally:
        servers.stop()
    fresh = await one_run(history[accepted:], partitions, "shipped", broker, settle, timeout)
    return {"accepted_before_stop": accepted, "restart_to_last_s": last - restarted,
            "fresh_remainder_s": fresh["start_to_last_s"]}


async def one_run(history: list[tuple[bytes, bytes]], partitions: int, rules: str, broker: str,
                  settle: float, timeout: float,
                  watch: Callable[[subprocess.Popen], Callable[[], None]] | None = None) -> dict[str, float]:
    """One worker from start to its last decision. `watch`, if given, is
    called with the worker process as it starts and returns what to call
    once it has stopped (bench.profile attaches py-spy this way)."""
    servers = EmbeddedServers(broker_kind=broker).start(partitions)
    try:
        await ensure_topics(servers.kafka, partitions)
        await produce_batched(servers.broker, topics.EVENTS, history, partitions)
        env = _worker_env(servers, partitions, rules)
        started = time.perf_counter()
        worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=env,
                       log=servers.workdir / f"worker-{rules}.log")
        done = watch(worker) if watch else None
        try:
            first, last, count = await _decisions_settle(servers, started, settle, timeout, worker)
        finally:
            stop(worker)
            if done:
                done()
        return {"start_to_last_s": last - started, "first_to_last_s": last - first, "decisions": count}
    finally:
        servers.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    history = purchase_history(args.customers, args.days)
    log(f"history: {args.customers} customers, {len(history)} events over {args.days} days")
    results: dict[str, Any] = {"customers": args.customers, "events": len(history), "days": args.days,
                               "broker": args.broker}
    for partitions in args.partitions:
        row = {}
        for rules in ("fixed", "shipped"):
            run = await one_run(history, partitions, rules, args.broker, args.settle, args.timeout)
            row[rules] = run
            log(f"{partitions} partitions, {rules}: last decision {run['start_to_last_s']:.1f} s after start "
                f"({run['first_to_last_s']:.1f} s after the first), {run['decisions']} decisions")
        row["ratio_shipped_vs_fixed"] = row["shipped"]["start_to_last_s"] / row["fixed"]["start_to_last_s"]
        log(f"{partitions} partitions: shipped defaults / fixed thresholds = {row['ratio_shipped_vs_fixed']:.2f}")
        if args.restart:
            restart = await restart_run(history, partitions, args.broker, args.settle, args.timeout)
            restart["ratio_restart_vs_fresh"] = restart["restart_to_last_s"] / restart["fresh_remainder_s"]
            row["restart"] = restart
            log(f"{partitions} partitions, shipped, stopped after {restart['accepted_before_stop']} events and "
                f"restarted: last decision {restart['restart_to_last_s']:.1f} s after the restart; a fresh worker "
                f"given the remainder: {restart['fresh_remainder_s']:.1f} s "
                f"({restart['ratio_restart_vs_fresh']:.2f})")
        results[f"p{partitions}"] = row
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=25_000)
    parser.add_argument("--days", type=int, default=270)
    parser.add_argument("--partitions", type=lambda s: [int(p) for p in s.split(",")], default=[4, 16])
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument("--settle", type=float, default=20.0, help="outputs still this long = the last decision")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="skip the restart measurement (shipped defaults stopped half-way and started again)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    results = asyncio.run(main(args))
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
