"""tierstream benchmark harness: the pipeline side by side with its limits,
all measured in one run on one embedded broker (see docs/performance.md).

    python -m bench.run                       # 200k events, 50k users, all sections
    python -m bench.run --events 2000 --users 500 --sections a,c   # smoke
    python -m bench.run --broker kafka        # the same sections on Apache Kafka

Sections: a raw consume, b minimal stateful Faust agent, c full tierstream
worker with the shipped defaults (quantile scores, the churn model, the
operator metrics) (+ f state size and RSS, g recovery time), d
event->tier-change latency at a fixed rate, e read-API latency against a
direct Redis client, r replay of a two-year history end to end against raw
produce of the file, x (Apache Kafka only) section c's events again through
a worker with exactly-once (Kafka transactions), m section c's events again
through a worker with the operator metrics off (their cost is c / m), k
section c's events through the worker with fixed thresholds, q the Quix
Streams application doing the same per-user RFM work (bench.quix_app;
`pip install .[bench]`), w backfill (bench.backfill) with both rule sets.

c and k are measured to the last decision: events divided by the time from
the first event accepted to the last tier change or alert published (the
outputs still for 10 s); `*_full_pipeline_eps` is the rate of accepting
events, which with quantile scores runs ahead of the decisions.
Figures are rates and percentiles of this run; compare runs by their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench import workload
from cli.embedded import EmbeddedServers
from cli.processes import free_port, spawn, stop, wait_for_port
from state.rules import fixed_threshold_rules_text
from stream import topics
from stream.settings import Settings
from stream.connection import KafkaAccess, RedisAccess

PARTITIONS = 8


def fixed_rules_file(workdir: Path) -> Path:
    """Fixed thresholds: the second line beside the shipped defaults
    (quantile scores and the churn model), and the rules the Quix baseline
    implements."""
    path = workdir / "fixed-rules.toml"
    path.write_text(fixed_threshold_rules_text())
    return path


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def metric(port: int, name: str) -> float:
    """Sum of a Prometheus metric's samples (0 if absent or not up yet)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def reader_at_end(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A started consumer positioned at the topic's current end. A short
    fetch wait: Tansu answers a fetch only when the wait runs out."""
    consumer = KafkaAccess.plain(bootstrap).consumer(topic, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=10)
    await consumer.start()
    await consumer.seek_to_end()
    for tp in consumer.assignment():
        await consumer.position(tp)
    return consumer


async def read_until(consumer: AIOKafkaConsumer, done: Any, on_record: Any, clock: Any = time.perf_counter) -> None:
    """Call on_record(record, arrival time) for every record until done()."""
    while not done():
        batch = await consumer.getmany(timeout_ms=200)
        now = clock()
        for records in batch.values():
            for record in records:
                on_record(record, now)


async def send_paced(
    producer: AIOKafkaProducer, topic: str, pairs: Any, rate: float, sent: dict[str, float],
    clock: Any = time.perf_counter,
) -> None:
    """Send (key, value) pairs at `rate` per second, recording each key's
    send time by `clock` (wall time where it is compared with record timestamps)."""
    start = time.perf_counter()
    for i, (key, value) in enumerate(pairs):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[key.decode()] = clock()
        await producer.send(topic, value, key=key)  # enqueue only: measured at the reader


async def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS,
                       configs: dict[str, str] | None = None) -> None:
    admin = KafkaAccess.plain(bootstrap).admin()
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def produce_batched(bootstrap: str, topic: str, records, partitions: int = PARTITIONS) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Produce with the batch API (the raw produce ceiling), keyed as the
    default partitioner keys; returns (count, seconds)."""
    producer = KafkaAccess.plain(bootstrap).producer(linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    n = 0
    try:
        from aiokafka.partitioner import DefaultPartitioner

        partitioner = DefaultPartitioner()
        all_parts = list(range(partitions))
        batches: dict[int, Any] = {}
        futures = []
        for key, value in records:
            p = partitioner(key, all_parts, all_parts)
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            n += 1
        for p, batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n, time.perf_counter() - started


async def last_decision(bootstrap: str, settle: float = 10.0, timeout: float = 3600) -> tuple[float, int]:
    """(wall time the last decision was published, decisions): reads the
    decision topics (tier changes, churn alerts) until nothing new has come
    for `settle` seconds. The time is the records' own (the producer's
    timestamp), so the reading does not have to keep up."""
    consumer = KafkaAccess.plain(bootstrap).consumer(topics.TIER_CHANGES, topics.CHURN_ALERTS, group_id=None,
                                                     auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    latest, count, quiet_since, started = 0.0, 0, time.monotonic(), time.monotonic()
    try:
        while time.monotonic() - quiet_since < settle:
            batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
            for records in batch.values():
                if records:
                    count += len(records)
                    latest = max(latest, max(r.timestamp for r in records) / 1000)
                    quiet_since = time.monotonic()
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"decisions still coming after {timeout:.0f}s")
    finally:
        await consumer.stop()
    return latest, count


def first_accepted(port: int, timeout: float) -> float:
    """Wall time at which the worker's first event was accepted (polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(port, "tierstream_events_accepted_total") > 0:
            return time.time()
        time.sleep(0.05)
    raise TimeoutError("no event accepted")


def wait_for_count(port: int, name: str, target: float, timeout: float) -> tuple[float, float]:
    """Poll a counter until it reaches `target`; returns (t_first_nonzero, t_done)."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        value = metric(port, name)
        now = time.perf_counter()
        if value > 0 and first is None:
            first = now
        if value >= target:
            return first or now, now
        time.sleep(0.25)  # scraping costs the worker CPU: not too often
    raise TimeoutError(f"{name} stuck at {metric(port, name)} of {target}")


@dataclass
class Bench:
    events: int
    users: int
    servers: EmbeddedServers
    results: dict[str, Any] = field(default_factory=dict)
    worker: Any = None
    worker_metrics: int = 0
    rules: str = "shipped"  # or "fixed" (fixed_rules_file)
    settle: float = 10.0  # outputs still this long: the last decision has been published

    # -- a ------------------------------------------------------------------
    async def raw_consume(self) -> None:
        topic = "bench.raw"
        await create_topic(self.servers.broker, topic)
        n, secs = await produce_batched(self.servers.broker, topic, workload.events(self.events, self.users))
        self.results["raw_produce_batch_eps"] = n / secs
        consumer = KafkaAccess.plain(self.servers.broker).consumer(topic, group_id=None,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)
        await consumer.start()
        got, first = 0, time.perf_counter()
        try:
            while got < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
                for records in batch.values():
                    for r in records:
                        orjson.loads(r.value)
                    got += len(records)
            self.results["a_raw_consume_eps"] = got / (time.perf_counter() - first)
        finally:
            await consumer.stop()
        log(f"a raw consume: {self.results['a_raw_consume_eps']:.0f} ev/s")

    # -- b ------------------------------------------------------------------
    async def minimal_agent(self) -> None:
        topic = "bench.minimal"
        await create_topic(self.servers.broker, topic)
        await produce_batched(self.servers.broker, topic, workload.events(self.events, self.users))
        port = free_port()
        env = {**os.environ, "BENCH_BROKER": self.servers.broker, "BENCH_TOPIC": topic,
               "BENCH_METRICS_PORT": str(port), "BENCH_PARTITIONS": str(PARTITIONS)}
        proc = spawn([sys.executable, "-m", "bench.minimal_agent", "worker"], env=env,
                     log=self.servers.workdir / "minimal.log")
        try:
            first, done = await asyncio.to_thread(
                wait_for_count, port, "bench_minimal_processed_total", self.events, 1800)
            self.results["b_minimal_stateful_eps"] = self.events / max(done - first, 1e-9)
        finally:
            stop(proc)
        log(f"b minimal stateful Faust agent: {self.results['b_minimal_stateful_eps']:.0f} ev/s")

    # -- c, f, g --------------------------------------------------------------
    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TIERSTREAM_RULES"}
        if self.rules == "fixed":
            env["TIERSTREAM_RULES"] = str(fixed_rules_file(self.servers.workdir))
        return {**env, "TIERSTREAM_BROKER": self.servers.broker,
                "TIERSTREAM_REDIS_URL": self.servers.redis_url, "TIERSTREAM_PARTITIONS": str(PARTITIONS),
                "TIERSTREAM_CLOCK": "replay", "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6",
                "TIERSTREAM_METRICS_PORT": str(self.worker_metrics), "TIERSTREAM_MAX_FUTURE_SECONDS": str(10**9)}

    def start_worker(self, tag: str) -> float:
        self.worker_metrics = self.worker_metrics or free_port()
        started = time.perf_counter()
        self.worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=self.worker_env(),
                            log=self.servers.workdir / f"worker-{tag}.log")
        return started

    async def full_worker(self) -> None:
        from stream.admin import ensure_topics

        await ensure_topics(self.servers.kafka, PARTITIONS)
        n, secs = await produce_batched(self.servers.broker, topics.EVENTS, workload.events(self.events, self.users))
        self.start_worker("c")
        first_wall = await asyncio.to_thread(first_accepted, self.worker_metrics, 600)
        first, done = await asyncio.to_thread(
            wait_for_count, self.worker_metrics, "tierstream_events_accepted_total", n, 3600)
        last, decisions = await last_decision(self.servers.broker, self.settle)
        tag = "c" if self.rules == "shipped" else "k"
        self.results[f"{tag}_full_pipeline_eps"] = n / max(done - first, 1e-9)
        self.results[f"{tag}_decided_eps"] = n / max(last - first_wall, 1e-9)
        self.results[f"{tag}_decisions"] = decisions
        log(f"{tag} full tierstream worker ({self.rules} rules): {self.results[f'{tag}_decided_eps']:.0f} ev/s to the "
            f"last decision ({decisions} decisions); events accepted at {self.results[f'{tag}_full_pipeline_eps']:.0f}"
            " ev/s")
        # Let Redis catch up before measuring memory: the result must be complete.
        await asyncio.to_thread(self._wait_redis_drained)
        from cli.io import read_users_changelog

        latest = await read_users_changelog(Settings(broker=self.servers.broker, partitions=PARTITIONS))
        sizes = [len(v) for v in latest.values()]
        self.results["f_users"] = len(latest)
        self.results["f_state_bytes_mean"] = statistics.fmean(sizes)
        self.results["f_state_bytes_max"] = max(sizes)
        self.results["f_worker_rss_mb"] = rss_mb(self.worker.pid)
        log(f"f {len(latest)} users: state {statistics.fmean(sizes):.0f} B mean, {max(sizes)} B max; "
            f"worker RSS {self.results['f_worker_rss_mb']:.0f} MB")

    async def _second_worker(self, tag: str, env: dict[str, str]) -> float:
        """Section c's events again, through a worker of its own consumer
        group with `env` on top: its events/s."""
        stop(self.worker)
        self.worker = None
        port = free_port()
        env = {**self.worker_env(), **env, "TIERSTREAM_APP_ID": f"bench-{tag}", "TIERSTREAM_REDIS_PREFIX": f"bench-{tag}:",
               "TIERSTREAM_METRICS_PORT": str(port)}
        proc = spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=self.servers.workdir / f"worker-{tag}.log")
        try:
            first, done = await asyncio.to_thread(wait_for_count, port, "tierstream_events_accepted_total",
                                                  self.events, 3600)
        finally:
            stop(proc)
        return self.events / max(done - first, 1e-9)

    async def exactly_once(self) -> None:
        """x: with exactly-once (Kafka transactions; Apache Kafka only): its
        cost, as a ratio to section c in the same run."""
        eps = await self._second_worker("eos", {"TIERSTREAM_PROCESSING_GUARANTEE": "exactly_once",
                                                "TIERSTREAM_RECOVERY": "faust"})
        self.results["x_exactly_once_eps"] = eps
        self.results["ratio_exactly_once_vs_at_least_once"] = eps / self.results["c_full_pipeline_eps"]
        log(f"x exactly-once worker: {eps:.0f} ev/s ({self.results['ratio_exactly_once_vs_at_least_once']:.2f} of c)")

    async def without_metrics(self) -> None:
        """m: with the operator metrics off: their cost (the facts, their
        topic and the aggregator, which runs in the same process), as the
        ratio of section c to this one, in the same run."""
        eps = await self._second_worker("nometrics", {"TIERSTREAM_OPERATOR_METRICS": "false"})
        self.results["m_no_metrics_eps"] = eps
        self.results["ratio_metrics_on_vs_off"] = self.results["c_full_pipeline_eps"] / eps
        log(f"m worker without operator metrics: {eps:.0f} ev/s (c is {self.results['ratio_metrics_on_vs_off']:.2f} "
            "of it)")

    def _wait_redis_drained(self) -> None:
        deadline = time.monotonic() + 120
        while metric(self.worker_metrics, "tierstream_redis_pending") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)

    async def recovery(self) -> None:
        stop(self.worker, timeout=60)
        started = self.start_worker("g")
        users = self.results["f_users"]
        _, done = await asyncio.to_thread(
            wait_for_count, self.worker_metrics, "tierstream_recovered_users", users, 3600)
        self.results["g_recovery_seconds_incl_join"] = done - started
        log(f"g recovery of {users} users (incl. group join): {done - started:.1f} s")

    # -- d ------------------------------------------------------------------
    async def latency(self, rate: int = 2000, seconds: int = 10) -> None:
        consumer = await reader_at_end(self.servers.broker, topics.TIER_CHANGES)
        producer = KafkaAccess.plain(self.servers.broker).producer(linger_ms=0)
        await producer.start()
        sent: dict[str, float] = {}
        received: dict[str, float] = {}
        # Right where the throughput run's history ends: a jump in event time
        # would make every user due at once and measure that sweep instead.
        ts_ms = workload.START_MS + 365 * workload.DAY_MS + 1
        total = rate * seconds

        def on_record(record: Any, now: float) -> None:
            user = record.key.decode()
            if user in sent and user not in received:
                received[user] = now

        # Warm up (connections, metadata, first batches), then measure.
        for key, value in workload.signups(rate, "warm", ts_ms):
            await producer.send(topics.EVENTS, value, key=key)
        await producer.flush()
        await asyncio.sleep(3)
        reader = asyncio.create_task(read_until(consumer, lambda: len(received) >= total, on_record))
        await send_paced(producer, topics.EVENTS, workload.signups(total, "lat", ts_ms), rate, sent)
        try:
            await asyncio.wait_for(reader, timeout=120)
        except TimeoutError:
            reader.cancel()
        await producer.stop()
        await consumer.stop()
        lat = [(received[u] - sent[u]) * 1000 for u in received] or [float("nan")]
        self.results["d_latency_rate_eps"] = rate
        self.results["d_latency_p50_ms"] = pct(lat, 0.5)
        self.results["d_latency_p99_ms"] = pct(lat, 0.99)
        self.results["d_latency_lost"] = total - len(lat)
        log(f"d event->tier change at {rate}/s: p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms "
            f"({total - len(lat)} not seen)")

    # -- e ------------------------------------------------------------------
    async def api_latency(self, requests: int = 20_000, concurrency: int = 32, rate: int = 1000) -> None:
        port = free_port()
        env = {**self.worker_env(), "TIERSTREAM_API_PORT": str(port)}
        api = spawn([sys.executable, "-m", "cli.main", "api"], env=env, log=self.servers.workdir / "api.log")
        wait_for_port(port, api, what="api")
        redis = RedisAccess.plain(self.servers.redis_url).client(max_connections=concurrency)
        users = [k.decode().split("user:", 1)[1] async for k in redis.scan_iter(match="tierstream:user:*", count=1000)]
        users = users[:5000]
        rnd = random.Random(3)
        picks = [rnd.choice(users) for _ in range(requests)]

        async def closed_loop(fetch) -> float:  # type: ignore[no-untyped-def]
            """Requests/s with `concurrency` clients each sending back to back:
            the most this client machine gets through (saturates the client)."""
            it = iter(picks)

            async def client() -> None:
                for user in it:
                    await fetch(user)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return len(picks) / (time.perf_counter() - started)

        async def open_loop(fetch) -> list[float]:  # type: ignore[no-untyped-def]
            """Latency at a fixed offered rate, up to `concurrency` in flight,
            timed from when each request was due (a late start counts)."""
            lat: list[float] = []
            slots = asyncio.Semaphore(concurrency)
            start = time.perf_counter()

            async def one(user: str, due: float) -> None:
                async with slots:
                    await fetch(user)
                lat.append((time.perf_counter() - due) * 1000)

            tasks = []
            for i, user in enumerate(picks[: rate * 10]):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(user, due)))
            await asyncio.gather(*tasks)
            return lat

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            async def via_api(user: str) -> None:
                async with http.get(f"http://127.0.0.1:{port}/v1/users/{user}") as resp:
                    assert resp.status == 200
                    await resp.read()

            async def via_redis(user: str) -> None:
                assert await redis.hget(f"tierstream:user:{user}", "doc")

            await closed_loop(via_redis)  # warm both paths
            await closed_loop(via_api)
            base = await open_loop(via_redis)
            api_lat = await open_loop(via_api)
            base_rps = await closed_loop(via_redis)
            api_rps = await closed_loop(via_api)
        await redis.aclose()
        stop(api)
        for name, lat in (("e_redis_direct", base), ("e_api", api_lat)):
            self.results[f"{name}_p50_ms"] = pct(lat, 0.5)
            self.results[f"{name}_p99_ms"] = pct(lat, 0.99)
        self.results["e_rate_rps"] = rate
        self.results["e_concurrency"] = concurrency
        self.results["e_redis_direct_max_rps"] = base_rps
        self.results["e_api_max_rps"] = api_rps
        log(f"e GET /v1/users/{{id}} at {rate} req/s: p50 {pct(api_lat, .5):.2f} ms p99 {pct(api_lat, .99):.2f} ms; "
            f"direct Redis HGET p50 {pct(base, .5):.2f} p99 {pct(base, .99):.2f}; closed loop of {concurrency}: "
            f"API {api_rps:.0f} req/s, Redis {base_rps:.0f} req/s")


async def replay_section(results: dict[str, Any], events: int, users: int, broker: str) -> None:
    """Replay throughput, end to end (first event sent -> last tier change
    written), against the raw rate of producing the same file, one run."""
    from cli.replay import replay
    from stream.admin import ensure_topics

    servers = EmbeddedServers(broker_kind=broker).start(PARTITIONS)
    worker = None
    try:
        path = servers.workdir / "history.jsonl"
        with path.open("wb") as f:
            for body in workload.history(users=users, events=events, days=730, seed=21):
                f.write(orjson.dumps(body) + b"\n")
        await create_topic(servers.broker, "bench.replay-raw")
        producer = KafkaAccess.plain(servers.broker).producer(linger_ms=5, max_batch_size=1 << 20)
        await producer.start()
        started = time.perf_counter()
        pending = []
        with path.open("rb") as f:
            for line in f:
                pending.append(await producer.send("bench.replay-raw", line.strip()))
        await asyncio.gather(*pending)
        raw_seconds = time.perf_counter() - started
        await producer.stop()
        n = len(pending)
        results["r_raw_produce_file_eps"] = n / raw_seconds

        await ensure_topics(servers.kafka, PARTITIONS)
        port = free_port()
        env = {**os.environ, "TIERSTREAM_BROKER": servers.broker, "TIERSTREAM_REDIS_URL": servers.redis_url,
               "TIERSTREAM_PARTITIONS": str(PARTITIONS), "TIERSTREAM_CLOCK": "replay",
               "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6", "TIERSTREAM_METRICS_PORT": str(port),
               "TIERSTREAM_RULES": str(fixed_rules_file(servers.workdir))}
        worker = spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=servers.workdir / "worker-r.log")
        # Joined and ready before the clock starts: a probe event goes through.
        probe = [(b"probe", orjson.dumps({"event_id": "p", "user_id": "probe", "type": "signup",
                                            "ts": workload.START_MS}))]
        await produce_batched(servers.broker, topics.EVENTS, probe)
        await asyncio.to_thread(wait_for_count, port, "tierstream_events_accepted_total", 1, 300)
        wall_start = time.time()
        settings = Settings(broker=servers.broker, partitions=PARTITIONS)
        await asyncio.to_thread(replay, settings, path, mapping=None, until_ms=None, rate=None, progress=False)
        await asyncio.to_thread(wait_for_count, port, "tierstream_events_accepted_total", n + 1, 3600)
        await asyncio.sleep(2)  # let the last batch's outputs land
        last_change = 0.0
        consumer = KafkaAccess.plain(servers.broker).consumer(topics.TIER_CHANGES, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
                if not batch:
                    break
                for records in batch.values():
                    last_change = max(last_change, max(r.timestamp for r in records) / 1000)
        finally:
            await consumer.stop()
        results["r_replay_end_to_end_eps"] = n / (last_change - wall_start)
        results["ratio_replay_vs_raw_produce"] = results["r_replay_end_to_end_eps"] / results["r_raw_produce_file_eps"]
        log(f"r replay of {n} events: {results['r_replay_end_to_end_eps']:.0f} ev/s end to end; raw produce of "
            f"the same file {results['r_raw_produce_file_eps']:.0f} ev/s")
    finally:
        stop(worker)
        servers.stop()


async def fixed_section(results: dict[str, Any], events: int, users: int, broker: str, settle: float) -> None:
    """k: section c's events through the same worker with fixed thresholds,
    on servers of its own (the rules in force are one per cluster)."""
    servers = EmbeddedServers(broker_kind=broker).start(PARTITIONS)
    bench = Bench(events, users, servers, rules="fixed", settle=settle)
    try:
        await bench.full_worker()
    finally:
        stop(bench.worker)
        servers.stop()
    results.update({k: v for k, v in bench.results.items() if k.startswith("k_")})


async def quix_section(results: dict[str, Any], events: int, users: int, broker: str) -> None:
    """q: the Quix Streams application (bench.quix_app) over section c's
    events: events/s from its first output to its last (outputs settled),
    its output checked against the same logic run offline. Times are of
    arrival at a reader started before it (a 10 ms fetch wait)."""
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        log("q skipped: quixstreams is not installed (pip install .[bench])")
        return
    from bench.quix_app import tiers_offline

    servers = EmbeddedServers(broker_kind=broker).start(PARTITIONS)
    proc = None
    try:
        source, out = "bench.quix-events", "bench.quix-tiers"
        # Quix derives its changelog topics' settings from the source's
        # retention, which Tansu reports only when it was set at creation.
        retention = {"retention.ms": "-1", "retention.bytes": "-1"}
        await create_topic(servers.broker, source, configs=retention)
        await create_topic(servers.broker, out, configs=retention)
        pairs = list(workload.events(events, users))
        expected = tiers_offline(orjson.loads(v) for _, v in pairs)
        await produce_batched(servers.broker, source, pairs)
        env = {**os.environ, "BENCH_BROKER": servers.broker, "BENCH_TOPIC": source, "BENCH_OUT": out,
               "BENCH_STATE_DIR": str(servers.workdir / "quix-state")}
        proc = spawn([sys.executable, "-m", "bench.quix_app"], env=env, log=servers.workdir / "quix.log")
        consumer = KafkaAccess.plain(servers.broker).consumer(out, group_id=None, auto_offset_reset="earliest",
                                                              fetch_max_wait_ms=10)
        await consumer.start()
        got: list[tuple[str, str]] = []
        first = last = 0.0
        quiet_since = time.monotonic()
        try:
            while len(got) < len(expected) or time.monotonic() - quiet_since < 5:
                batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
                # Arrival times: Quix stamps its outputs with their input's
                # timestamp, so the records' own say nothing of when.
                now = time.time()
                for records in batch.values():
                    for r in records:
                        body = orjson.loads(r.value)
                        got.append((body["user_id"], body["tier"]))
                        first = first or now
                        last = now
                        quiet_since = time.monotonic()
                if time.monotonic() - quiet_since > 300:
                    raise TimeoutError(f"quix app: {len(got)} of {len(expected)} records")
        finally:
            await consumer.stop()
        per_user: dict[str, list[str]] = {}
        for user, tier in got:
            per_user.setdefault(user, []).append(tier)
        wanted: dict[str, list[str]] = {}
        for user, tier in expected:
            wanted.setdefault(user, []).append(tier)
        results["q_quix_output_matches_offline"] = per_user == wanted
        results["q_quix_eps"] = events / max(last - first, 1e-9)
        log(f"q Quix Streams application: {results['q_quix_eps']:.0f} ev/s; {len(got)} tier records, "
            f"{'equal to' if per_user == wanted else 'NOT equal to'} the offline computation")
    finally:
        stop(proc)
        servers.stop()


async def backfill_section(results: dict[str, Any], customers: int, broker: str) -> None:
    """w: bench.backfill on 4 partitions (the full table, 16 too, is
    `python -m bench.backfill`)."""
    from bench.backfill import one_run, purchase_history

    history = purchase_history(customers)
    for rules in ("fixed", "shipped"):
        run = await one_run(history, 4, rules, broker, settle=10.0, timeout=3600)
        results[f"w_backfill_{rules}_s"] = run["start_to_last_s"]
        log(f"w backfill of {customers} customers ({len(history)} events), {rules}: last decision "
            f"{run['start_to_last_s']:.1f} s after the worker started")
    results["ratio_backfill_shipped_vs_fixed"] = results["w_backfill_shipped_s"] / results["w_backfill_fixed_s"]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sections = set(args.sections.split(","))
    servers = EmbeddedServers(broker_kind=args.broker).start(PARTITIONS)
    bench = Bench(args.events, args.users, servers, settle=args.settle)
    bench.results.update(broker=args.broker, events=args.events, users=args.users, partitions=PARTITIONS,
                         python=platform.python_version(),
                         cpus=os.cpu_count(), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        if "a" in sections:
            await bench.raw_consume()
        if "b" in sections:
            await bench.minimal_agent()
        if "c" in sections:
            await bench.full_worker()
            if "g" in sections:
                await bench.recovery()
            if "d" in sections:
                await bench.latency(rate=args.rate)
            if "e" in sections:
                await bench.api_latency()
            if "x" in sections and args.broker == "kafka":
                await bench.exactly_once()
            if "m" in sections:
                await bench.without_metrics()
    finally:
        stop(bench.worker)
        servers.stop()
    if "r" in sections:
        await replay_section(bench.results, args.events, min(args.users, max(1, args.events // 10)), args.broker)
    if "k" in sections:
        await fixed_section(bench.results, args.events, args.users, args.broker, args.settle)
    if "q" in sections:
        await quix_section(bench.results, args.events, args.users, args.broker)
    if "w" in sections:
        await backfill_section(bench.results, args.backfill_customers, args.broker)
    r = bench.results
    headline = "c_decided_eps" if "c_decided_eps" in r else "c_full_pipeline_eps"
    if "b_minimal_stateful_eps" in r and headline in r:
        r["ratio_full_vs_minimal_stateful"] = r[headline] / r["b_minimal_stateful_eps"]
    if "a_raw_consume_eps" in r and headline in r:
        r["ratio_full_vs_raw_consume"] = r[headline] / r["a_raw_consume_eps"]
    if "c_decided_eps" in r and "k_decided_eps" in r:
        r["ratio_shipped_vs_fixed"] = r["c_decided_eps"] / r["k_decided_eps"]
    if "q_quix_eps" in r:
        for tag, key in (("fixed", "k_decided_eps"), ("shipped", "c_decided_eps")):
            if key in r:
                r[f"ratio_{tag}_vs_quix"] = r[key] / r["q_quix_eps"]
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=2000, help="offered rate for the latency section")
    parser.add_argument("--sections", default="a,b,c,d,e,g,m,r,x,k,q,w")
    parser.add_argument("--backfill-customers", type=int, default=25_000, help="section w's shop size")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="c, k: the outputs still this long mean the last decision has been published")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu",
                        help="the embedded Tansu, or Apache Kafka (needs Java and Maven; see cli/apache_kafka.py)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
