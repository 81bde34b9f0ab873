"""The embedded broker's own produce -> consume latency, with no tierstream
in the path (the floor under section d's figures).

    python -m bench.broker_latency --records 600000 --small-batches 4000

At 2,000 records/s, one record per send (as section d sends), read by a
consumer at the topic's end:
1. on an empty topic;
2. on a topic holding `records` records in large batches (as the harness
   loads its input);
3. on topics holding `small-batches` batches of 4 records per partition,
   after each of several rounds: the way the worker writes its outputs at a
   modest rate (one small batch per partition per fetch). Tansu 0.6.0's
   fetch cost grows with the batches a partition holds, and this shows by
   how much, with the broker's CPU share during each probe.
Each probe itself adds 500 one-record batches per partition to its topic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any


from bench import workload
from bench.run import create_topic, pct, produce_batched, read_until, reader_at_end, send_paced
from cli.embedded import EmbeddedServers
from stream.connection import KafkaAccess

PARTITIONS = 8


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def probe(broker: str, topic: str, n: int = 4000, rate: int = 2000) -> tuple[float, float]:
    consumer = await reader_at_end(broker, topic)
    producer = KafkaAccess.plain(broker).producer(linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    lat: list[float] = []

    def on_record(record: Any, now: float) -> None:
        key = record.key.decode()
        if key in sent:
            lat.append((now - sent.pop(key)) * 1000)

    reader = asyncio.create_task(read_until(consumer, lambda: len(lat) >= n, on_record))
    await send_paced(producer, topic, ((f"k{i}".encode(), b"x" * 100) for i in range(n)), rate, sent)
    await asyncio.wait_for(reader, 300)
    await producer.stop()
    await consumer.stop()
    return pct(lat, 0.5), pct(lat, 0.99)


async def write_small_batches(broker: str, topic: str, batches: int, per_batch: int = 4) -> None:
    """`batches` batches of `per_batch` records into each partition."""
    producer = KafkaAccess.plain(broker).producer(linger_ms=0)
    await producer.start()
    try:
        pending = []
        for i in range(batches):
            for partition in range(PARTITIONS):
                batch = producer.create_batch()
                for _ in range(per_batch):
                    batch.append(key=b"k", value=b"x" * 200, timestamp=None)
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            if i % 100 == 99:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def measure(records: int, small_batches: int) -> None:
    servers = EmbeddedServers().start()
    broker_pid = servers.broker_pid
    try:
        await create_topic(servers.broker, "probe.empty")
        p50, p99 = await probe(servers.broker, "probe.empty")
        print(f"empty topic:                                  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
        await create_topic(servers.broker, "probe.full")
        await produce_batched(servers.broker, "probe.full", workload.events(records, 50_000))
        p50, p99 = await probe(servers.broker, "probe.full")
        print(f"{records:>9,} records in large batches:         p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
        if small_batches:
            await create_topic(servers.broker, "probe.small")
            rounds = 4
            for r in range(1, rounds + 1):
                await write_small_batches(servers.broker, "probe.small", small_batches // rounds)
                before, started = cpu_seconds(broker_pid), time.perf_counter()
                p50, p99 = await probe(servers.broker, "probe.small")
                share = (cpu_seconds(broker_pid) - before) / (time.perf_counter() - started)
                held = r * (small_batches // rounds)
                print(f"{held:>9,} batches of 4 records per partition: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                      f"(broker CPU {share:.0%} of a core)")
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--small-batches", type=int, default=4000, help="per partition; 0 skips that probe")
    args = parser.parse_args()
    asyncio.run(measure(args.records, args.small_batches))


if __name__ == "__main__":
    main()
