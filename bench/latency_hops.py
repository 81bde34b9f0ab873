"""Where event -> tier-change latency goes, hop by hop (diagnostics for
docs/performance.md, section d's target).

    python -m bench.latency_hops --rate 2000 --preload 200000

Starts a broker, Redis and a worker, optionally loads `preload` events over
preload/4 users first, then sends new users' signups at `rate` for 10 s and
splits each one's latency with the output record's timestamp (set when the
worker appends it to a producer batch): send -> output appended (broker,
worker fetch, processing) and output appended -> read by this process
(producer, broker, our fetch). Also prints the CPU share of the broker and
of the worker while the signups were being sent and read.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any


from bench import workload
from bench.broker_latency import cpu_seconds
from bench.run import Bench, pct, produce_batched, read_until, reader_at_end, send_paced, wait_for_count
from cli.embedded import EmbeddedServers
from cli.processes import stop
from stream import topics
from stream.admin import ensure_topics
from stream.connection import KafkaAccess


async def measure(rate: int, preload: int, seconds: int = 10, broker: str = "tansu") -> None:
    servers = EmbeddedServers(broker_kind=broker).start(8)
    bench = Bench(1000, 1000, servers)
    try:
        await ensure_topics(servers.kafka, 8)
        if preload:
            await produce_batched(servers.broker, topics.EVENTS, workload.events(preload, max(1, preload // 4)))
        bench.start_worker("hops")
        if preload:
            await asyncio.to_thread(wait_for_count, bench.worker_metrics, "tierstream_events_accepted_total",
                                    preload, 1800)
        await asyncio.sleep(12)  # the group join, when there was no preload
        consumer = await reader_at_end(servers.broker, topics.TIER_CHANGES)
        producer = KafkaAccess.plain(servers.broker).producer(linger_ms=0)
        await producer.start()
        ts = workload.START_MS + 365 * workload.DAY_MS + 1
        sent: dict[str, float] = {}
        received: dict[str, float] = {}
        appended: dict[str, float] = {}
        total = rate * seconds

        def on_record(record: Any, now: float) -> None:
            user = record.key.decode()
            if user in sent and user not in received:
                received[user], appended[user] = now, record.timestamp / 1000

        for key, value in workload.signups(2000, "warm", ts):
            await producer.send(topics.EVENTS, value, key=key)
        await producer.flush()
        await asyncio.sleep(5)
        # Wall-clock times throughout: they are compared with record timestamps.
        pids = {"broker": servers.broker_pid, "worker": bench.worker.pid}
        cpu_before, started = {k: cpu_seconds(p) for k, p in pids.items()}, time.perf_counter()
        reader = asyncio.create_task(read_until(consumer, lambda: len(received) >= total, on_record, time.time))
        await send_paced(producer, topics.EVENTS, workload.signups(total, "lat", ts), rate, sent, time.time)
        try:
            await asyncio.wait_for(reader, 60)
        except TimeoutError:
            reader.cancel()
        elapsed = time.perf_counter() - started
        shares = {k: (cpu_seconds(p) - cpu_before[k]) / elapsed for k, p in pids.items()}
        await producer.stop()
        await consumer.stop()
        hops = {
            "total": [(received[u] - sent[u]) * 1000 for u in received],
            "send -> output appended": [(appended[u] - sent[u]) * 1000 for u in received],
            "output appended -> read": [(received[u] - appended[u]) * 1000 for u in received],
        }
        for name, lat in hops.items():
            print(f"{name:<26} p50 {pct(lat, .5):7.1f} ms  p90 {pct(lat, .9):7.1f} ms  p99 {pct(lat, .99):7.1f} ms")
        print(f"not seen: {total - len(received)}")
        print("CPU while measuring: " + ", ".join(f"{k} {v:.0%} of a core" for k, v in shares.items()))
    finally:
        stop(bench.worker)
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--preload", type=int, default=0)
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    args = parser.parse_args()
    asyncio.run(measure(args.rate, args.preload, broker=args.broker))


if __name__ == "__main__":
    main()
