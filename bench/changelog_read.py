"""How long the tools take to read the users table's changelog at scale:
the part of `tierstream snapshot` and `tierstream rules preview` that
bench.snapshot_time and bench.preview_time leave out.

    python -m bench.changelog_read --users 1000000 --broker kafka

Fills `<app>-users-changelog` on a fresh broker with N states (real ones
from the offline pipeline over a generated history of --sample users, with
the shipped defaults, repeated under other user ids), then times
`cli.io.read_users_changelog`, the tools' own read, to its true end.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import workload
from bench.offline_pipeline import through_pipeline
from cli.embedded import EmbeddedServers
from cli.io import read_users_changelog
from state.campaigns import example_campaigns_text
from state.config import ConfigDocument
from state.rules import default_rules_text
from stream import topics
from stream.codecs import encode_state
from stream.settings import Settings

PARTITIONS = 8


async def fill(servers: EmbeddedServers, name: str, records: list[tuple[str, bytes]]) -> None:
    admin = servers.kafka.admin()
    await admin.start()
    try:
        from aiokafka.admin import NewTopic

        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = servers.kafka.producer(linger_ms=20, max_batch_size=1 << 20, acks="all")
    await producer.start()
    try:
        pending = []
        for user, data in records:
            pending.append(await producer.send(name, data, key=user.encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="kafka")
    args = parser.parse_args()
    rules = ConfigDocument(default_rules_text(), example_campaigns_text()).rules()
    bodies = sorted(workload.history(users=args.sample, events=args.sample * 3, days=365),
                    key=lambda b: (b["ts"], b["event_id"]))
    p, _ = through_pipeline(bodies, rules)
    encoded = [(u, encode_state(s)) for u, s in p.store.items()]
    copies = -(-args.users // len(encoded))
    records = [(f"{u}#{c}" if c else u, data) for c in range(copies) for u, data in encoded][:args.users]
    size = sum(len(d) for _, d in records)
    servers = EmbeddedServers(broker_kind=args.broker).start(PARTITIONS)
    try:
        settings = Settings(broker=servers.broker, partitions=PARTITIONS, app_id="bench-changelog")
        name = f"{settings.app_id}-{topics.USERS_TABLE}-changelog"
        started = time.perf_counter()
        asyncio.run(fill(servers, name, records))
        filled = time.perf_counter()
        latest = asyncio.run(read_users_changelog(settings))
        done = time.perf_counter()
        assert len(latest) == len(records), (len(latest), len(records))
        print(f"{args.broker}: {len(records)} states ({size / 1e6:.0f} MB) written in {filled - started:.1f} s; "
              f"read_users_changelog {done - filled:.1f} s")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
