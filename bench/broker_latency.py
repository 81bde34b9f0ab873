"""The embedded broker's own produce -> consume latency, with no tierstream
in the path (the floor under section d's figures).

    python -m bench.broker_latency --records 600000

At 2,000 records/s, one record per send (as section d sends): on an empty
topic, then on a topic already holding `records` records.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import workload
from bench.run import create_topic, pct, produce_batched, read_until, reader_at_end, send_paced
from cli.embedded import EmbeddedServers


async def probe(broker: str, topic: str, n: int = 4000, rate: int = 2000) -> tuple[float, float]:
    consumer = await reader_at_end(broker, topic)
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    lat: list[float] = []

    def on_record(record: Any, now: float) -> None:
        key = record.key.decode()
        if key in sent:
            lat.append((now - sent.pop(key)) * 1000)

    reader = asyncio.create_task(read_until(consumer, lambda: len(lat) >= n, on_record))
    await send_paced(producer, topic, ((f"k{i}".encode(), b"x" * 100) for i in range(n)), rate, sent)
    await asyncio.wait_for(reader, 120)
    await producer.stop()
    await consumer.stop()
    return pct(lat, 0.5), pct(lat, 0.99)


async def measure(records: int) -> None:
    servers = EmbeddedServers().start()
    try:
        await create_topic(servers.broker, "probe.empty")
        p50, p99 = await probe(servers.broker, "probe.empty")
        print(f"empty topic:                      p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
        await create_topic(servers.broker, "probe.full")
        await produce_batched(servers.broker, "probe.full", workload.events(records, 50_000))
        p50, p99 = await probe(servers.broker, "probe.full")
        print(f"topic holding {records:>9,} records: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    finally:
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600_000)
    asyncio.run(measure(parser.parse_args().records))


if __name__ == "__main__":
    main()
