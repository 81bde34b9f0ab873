"""Real servers for integration tests: the embedded broker, Redis, a worker
and the API as separate processes, talked to over real sockets."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cli.embedded import EmbeddedServers
from cli.processes import free_port, spawn, stop, wait_for_port
from tests.support.fixed_rules import write_fixed_rules

PARTITIONS = 4
# Which broker the integration tests run on: scripts/test.sh runs them once
# per broker (TIERSTREAM_TEST_BROKER=tansu|kafka|both).
BROKER = os.environ.get("TIERSTREAM_TEST_BROKER", "tansu")


def new_servers() -> EmbeddedServers:
    """A broker of this run's kind and a Redis, both fresh."""
    return EmbeddedServers(broker_kind=BROKER).start(PARTITIONS)


@dataclass
class Cluster:
    servers: EmbeddedServers
    api_port: int = 0
    worker: Any = None
    api: Any = None
    worker_starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TIERSTREAM_BROKER": self.servers.broker,
            "TIERSTREAM_REDIS_URL": self.servers.redis_url,
            "TIERSTREAM_PARTITIONS": str(PARTITIONS),
            "TIERSTREAM_CLOCK": "replay",
            "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6",
            "TIERSTREAM_API_PORT": str(self.api_port),
            "TIERSTREAM_LOG_LEVEL": "INFO",
            "TIERSTREAM_RECOVERY_DUMP": str(self.recovery_dump),
            # Fixed thresholds unless a test asks for others (tests/support/fixed_rules.py).
            "TIERSTREAM_RULES": str(write_fixed_rules(self.servers.workdir)),
            **self.extra_env,
        }

    @property
    def recovery_dump(self) -> Path:
        return self.servers.workdir / "recovered.jsonl"

    def start_worker(self) -> None:
        self.worker_starts += 1
        log = self.servers.workdir / f"worker-{self.worker_starts}.log"
        self.worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=self.env, log=log)

    def stop_worker(self) -> None:
        stop(self.worker, timeout=30)
        self.worker = None

    def start_api(self) -> None:
        self.api_port = free_port()
        self.api = spawn([sys.executable, "-m", "cli.main", "api"], env=self.env,
                         log=self.servers.workdir / "api.log")
        wait_for_port(self.api_port, self.api, what="tierstream api")

    def cli(self, *args: str, timeout: float = 120) -> str:
        import subprocess

        out = subprocess.run([sys.executable, "-m", "cli.main", *args], env=self.env, capture_output=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"tierstream {' '.join(args)} failed:\n{out.stderr.decode()[-3000:]}")
        return out.stdout.decode()


async def two_workers(cluster: Cluster, name: str) -> list[Any]:
    """Two workers sharing the partitions (each its own recovery dump: two
    workers renaming one file race), once both own some; their logs are
    `<name>-worker-1.log` and `-2.log` in the servers' folder."""
    import re

    workdir = cluster.servers.workdir
    workers = []
    for n in (1, 2):
        env = {**cluster.env, "TIERSTREAM_RECOVERY_DUMP": str(workdir / f"recovered-{n}.jsonl")}
        workers.append(spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=workdir / f"{name}-worker-{n}.log"))

    async def both_own_partitions():
        logs = [(workdir / f"{name}-worker-{n}.log").read_text() for n in (1, 2)]
        return all(re.search(r"owning partitions \[\d", text) for text in logs) or None

    await wait_until(both_own_partitions, timeout=120, what="both workers to own partitions")
    return workers


async def wait_until(check: Callable[[], Awaitable[Any]], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def produce(broker: str, records: Iterable[dict | bytes], key: Callable[[Any], bytes | None] | None = None,
                  topic: str = "tierstream.events") -> int:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=20, max_batch_size=262_144)
    await producer.start()
    n = 0
    try:
        futures = []
        for r in records:
            value = r if isinstance(r, bytes) else orjson.dumps(r)
            k = key(r) if key else (r["user_id"].encode() if isinstance(r, dict) else None)
            futures.append(await producer.send(topic, value, key=k))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def read_topic(broker: str, topic: str, isolation_level: str = "read_uncommitted") -> list[dict]:
    """Everything currently in `topic`, read to the fetch high-water marks
    (`read_committed`: only what committed transactions wrote)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None, enable_auto_commit=False,
                                isolation_level=isolation_level)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[dict] = []
        idle_rounds = 0
        while idle_rounds < 2:
            batch = await consumer.getmany(timeout_ms=300, max_records=50_000)
            if not batch:
                idle_rounds += 1
                continue
            idle_rounds = 0
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


def api_get(port: int, path: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def settled_metrics(cluster: Cluster, paths: list[str], timeout: float = 300,
                          prefix: str = "tierstream:") -> dict[str, Any]:
    """The API's metric answers once the aggregator has caught up: its
    progress in Redis (each partition's watermark, the periods published
    and still open, the corrections waiting) unchanged three reads in a
    row, half a second apart; then the same answers (and the same number
    of records on tierstream.metrics) twice in a row, a second apart. The
    full answers (years of days) are costly, hence the cheap check first."""
    from redis.asyncio import Redis

    redis = Redis.from_url(cluster.servers.redis_url)

    async def progress() -> tuple:
        pipe = redis.pipeline(transaction=False)
        pipe.hgetall(prefix + "m:wm")
        pipe.scard(prefix + "m:published")
        pipe.zcard(prefix + "m:open")
        for p in range(PARTITIONS):
            pipe.llen(f"{prefix}m:outbox:{p}")
        return tuple(repr(v) for v in await pipe.execute())

    try:
        last, same, quiet = None, 0, 0
        previous = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now_progress = await progress()
            quiet = quiet + 1 if now_progress == previous else 0
            previous = now_progress
            if quiet < 2:
                await asyncio.sleep(0.5)
                continue
            answers = {p: api_get(cluster.api_port, p)[1] for p in paths}
            published = len(await read_topic(cluster.servers.broker, "tierstream.metrics"))
            now = (orjson.dumps(answers), published)
            same = same + 1 if now == last else 0
            if same >= 1 and published:
                return answers
            last = now
            await asyncio.sleep(1)
            quiet = 0  # the answers moved: wait for the aggregator again
        raise AssertionError("metrics did not settle")
    finally:
        await redis.aclose()


ERA_START_MS = 1_104_537_600_000  # 2005-01-01T00:00:00Z
ERA_DAYS = 800
DAY_MS = 86_400_000


@dataclass
class Era:
    """A stretch of event time of its own for one test. Stream time only moves
    forward, so tests sharing a worker each get a later era than the last."""

    index: int
    prefix: str
    seq: int = 0

    @property
    def base_ms(self) -> int:
        return ERA_START_MS + self.index * ERA_DAYS * DAY_MS

    def user(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def event(self, user: str, type_: str, day: float, amount: float | None = None, **extra: Any) -> dict:
        self.seq += 1
        body: dict[str, Any] = {"event_id": f"{self.prefix}-e{self.seq}", "user_id": self.user(user),
                                "type": type_, "ts": self.base_ms + int(day * DAY_MS)}
        if amount is not None:
            body["amount"] = amount
        body.update(extra)
        return body

    def clock_events(self, day: float, users: int = 40) -> list[dict]:
        """Activity of other users at `day`, spread over every partition, to
        move event time forward for everyone."""
        return [self.event(f"clock{i}", "login", day) for i in range(users)]
