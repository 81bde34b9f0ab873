"""Crash runs: feed a history to real workers, SIGKILL them at moments chosen
by what they are doing (agents/faults.py), restart them, and collect what
reached the output topics and Redis, to compare with a run without faults.

Used by tests/integration/test_crash.py, and on its own for the audit the
issue asks for (10 runs of three kills each):

    .venv/bin/python -m tests.integration.crash --runs 10
    TIERSTREAM_TEST_BROKER=kafka .venv/bin/python -m tests.integration.crash --runs 3 [--exactly-once]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from redis.asyncio import Redis

from bench import workload
from cli.embedded import EmbeddedServers
from cli.processes import spawn, stop
from stream import topics
from stream.admin import ensure_topics
from state.rules import population_rules_text
from tests.support.fixed_rules import write_fixed_rules
from tests.integration.harness import BROKER, PARTITIONS, new_servers, read_topic

DAY_MS = 86_400_000
# Three kills: mid-chunk (decisions acked, their states not yet handed
# over), during the catch-up of the restarted worker, and right after a
# sweep decided something for silent users.
THREE_KILLS = ("outputs_acked:4", "batch_done:2", "sweep_decided:300")


def kills_for_run(i: int) -> tuple[str, ...]:
    """Three kills of the same kinds as THREE_KILLS, landing elsewhere in
    each run: a different chunk, catch-up batch and sweep."""
    return (f"outputs_acked:{2 + i % 5}", f"batch_done:{1 + i % 3}", f"sweep_decided:{100 + 60 * i}")


LATENESS_MS = DAY_MS  # the workers' TIERSTREAM_ALLOWED_LATENESS_MS in these runs


def history(users: int = 3000, events: int = 30_000, seed: int = 29, days: int = 730) -> list[dict]:
    """A deterministic history (two years by default), in event-time order
    (the order it is produced in, so every run sees the same order per
    partition). It closes with one login per partition, an allowed lateness
    after its last event: every partition's watermark then ends at that
    last event (`snapshot_time`), where the workers' answer, a snapshot's
    and another run's can be compared user by user."""
    bodies = sorted(workload.history(users=users, events=events, days=days, seed=seed, channels=workload.CHANNELS),
                    key=lambda b: (b["ts"], b["event_id"]))
    end = bodies[-1]["ts"] + LATENESS_MS
    closers: dict[int, str] = {}
    for n in range(1000):
        user = f"closer-{n}"
        closers.setdefault(_partition_of(user), user)
        if len(closers) == PARTITIONS:
            break
    return bodies + [{"event_id": f"close-{u}", "user_id": u, "type": "login", "ts": end}
                     for _, u in sorted(closers.items())]


def snapshot_time(bodies: list[dict]) -> int:
    """Where every partition's watermark ends for a `history()`."""
    return bodies[-1]["ts"] - LATENESS_MS


def _partition_of(user_id: str) -> int:
    return DefaultPartitioner()(user_id.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))


@dataclass
class Outcome:
    ids: Counter  # change_id / alert_id / action_id / outcome_id -> deliveries
    membership: dict[str, tuple[int, str, str]]  # user -> (version, tier, stage) in Redis
    kills: list[str] = field(default_factory=list)
    seconds: float = 0.0
    metric_cells: dict[str, dict[str, int]] = field(default_factory=dict)  # period/cohort hash -> cells
    metric_records: dict[str, dict] = field(default_factory=dict)  # tierstream.metrics id -> record
    records: dict[str, dict] = field(default_factory=dict)  # decision id -> its record (the last delivery)
    workdir: str = ""  # the run's broker, Redis and worker logs (kept after the run)
    # `tierstream snapshot` at `snapshot_time`: user -> row
    snapshot: dict[str, dict] = field(default_factory=dict)

    def snapshot_disagreements(self, reference: Outcome | None = None) -> dict[str, list[str]]:
        """Users whose snapshot row differs from the reference run's, and
        users whose Redis tier and stage (what the API serves) differ from
        this run's own snapshot."""
        out: dict[str, list[str]] = {}
        if reference is not None:
            out["snapshot_vs_reference"] = sorted(
                u for u in self.snapshot.keys() | reference.snapshot.keys()
                if self.snapshot.get(u) != reference.snapshot.get(u))
        out["redis_vs_snapshot"] = sorted(
            u for u in self.snapshot.keys() | {u for u in self.membership if not u.startswith("closer-")}
            if (self.membership.get(u, (0, None, None))[1:]
                != (self.snapshot.get(u, {}).get("tier"), self.snapshot.get(u, {}).get("stage"))))
        return out

    def compare(self, reference: Outcome) -> dict[str, int]:
        lost = set(reference.ids) - set(self.ids)
        extra = set(self.ids) - set(reference.ids)
        disagree = {u for u in reference.membership.keys() | self.membership.keys()
                    if reference.membership.get(u) != self.membership.get(u)}
        cells = {k for k in reference.metric_cells.keys() | self.metric_cells.keys()
                 if reference.metric_cells.get(k) != self.metric_cells.get(k)}
        records = {i for i in reference.metric_records.keys() | self.metric_records.keys()
                   if reference.metric_records.get(i) != self.metric_records.get(i)}
        return {"lost": len(lost), "unexpected": len(extra), "duplicates": sum(self.ids.values()) - len(self.ids),
                "redis_disagreements": len(disagree), "metric_cells_differing": len(cells),
                "metric_records_differing": len(records)}

    def explain(self, reference: Outcome, limit: int = 5) -> str:
        """Evidence for a failed comparison: a few decisions this run made
        that the run without faults did not, next to what that run decided
        for the same users, and where the logs are."""
        extra = sorted(set(self.ids) - set(reference.ids))[:limit]
        lines = [f"logs: {self.workdir}"]
        for decision_id in extra:
            record = self.records[decision_id]
            user = record.get("user_id")
            lines.append(f"unexpected {decision_id}: {orjson.dumps(record).decode()}")
            lines += [f"  reference {i}: {orjson.dumps(r).decode()}"
                      for i, r in reference.records.items() if r.get("user_id") == user][:12]
        # Operator metrics: which period records are missing, extra or
        # different, and in which figures (the cells they come from beside).
        for i in sorted(reference.metric_records.keys() | self.metric_records.keys()):
            ours, theirs = self.metric_records.get(i), reference.metric_records.get(i)
            if ours == theirs:
                continue
            if limit <= 0:
                lines.append("(more metric records differ)")
                break
            limit -= 1
            if ours is None or theirs is None:
                where = {k: v for k, v in (ours or theirs).items() if k in ("kind", "grain", "period", "cohort")}
                lines.append(f"metric record {i} {'missing' if ours is None else 'extra'}: {where}")
                continue
            diff = {k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
            lines.append(f"metric record {i} ({ours.get('grain')} {ours.get('period')}) differs, "
                         f"(this run, reference): {str(diff)[:1500]}")
        cells = sorted(k for k in reference.metric_cells.keys() | self.metric_cells.keys()
                       if reference.metric_cells.get(k) != self.metric_cells.get(k))
        lines += [f"cell {k}: this run {self.metric_cells.get(k)}, reference {reference.metric_cells.get(k)}"
                  for k in cells[:5]]
        return "\n".join(lines)

    def settled_like(self, reference: Outcome) -> bool:
        return (set(self.ids) >= set(reference.ids) and self.membership == reference.membership
                and self.metric_cells == reference.metric_cells and self.metric_records == reference.metric_records)


async def _produce(broker: str, bodies: list[dict]) -> dict[int, int]:
    """Send in order; returns the end offset per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5, max_batch_size=262_144, acks="all")
    await producer.start()
    ends: dict[int, int] = {}
    try:
        futures = [await producer.send(topics.EVENTS, orjson.dumps(b), key=b["user_id"].encode()) for b in bodies]
        for meta in await asyncio.gather(*futures):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def _produce_costs(broker: str, statements: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for s in statements:
            await producer.send_and_wait(topics.COSTS, orjson.dumps(s), key=f"{s['channel']}|{s['period']}".encode())
    finally:
        await producer.stop()


async def _committed(broker: str, group: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for p in range(PARTITIONS):
            out[p] = await consumer.committed(TopicPartition(topics.EVENTS, p)) or 0
        return out
    finally:
        await consumer.stop()


async def membership(redis_url: str, prefix: str = "tierstream:") -> dict[str, tuple[int, str, str]]:
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "user:*", count=1000)]
        pipe = redis.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, "v", "tier", "stage")
        rows = await pipe.execute()
        # A user's hash may hold only the aggregator's `mv` for a moment (a
        # Redis refilled from empty: the metrics' rebuild can write it before
        # the worker's membership): not a member yet.
        return {k.decode()[len(prefix) + 5:]: (int(v), t.decode(), s.decode()) for k, (v, t, s) in zip(keys, rows)
                if v is not None}
    finally:
        await redis.aclose()


async def metric_cells(redis_url: str, prefix: str = "tierstream:") -> dict[str, dict[str, int]]:
    """Every period and cohort hash of the operator metrics (not the
    aggregator's bookkeeping)."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=prefix + "m:*", count=1000)
                if k.decode()[len(prefix) + 2:].startswith(("day:", "week:", "month:", "c:", "campaign:", "acq:"))
                or k.decode()[len(prefix) + 2:] == "spend"]
        pipe = redis.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        rows = await pipe.execute()
        # Zero-valued fields are left out: whether a field that nets to zero
        # exists depends on how the facts fell into batches.
        cells = {k.decode(): {f.decode(): int(v) for f, v in h.items() if int(v)} for k, h in zip(keys, rows)}
        return {k: h for k, h in cells.items() if h}
    finally:
        await redis.aclose()


async def _metric_records(broker: str, isolation_level: str = "read_uncommitted") -> dict[str, dict]:
    return {r["id"]: r for r in await read_topic(broker, topics.METRICS, isolation_level)}


DECISION_IDS = {topics.TIER_CHANGES: "change_id", topics.CHURN_ALERTS: "alert_id", topics.ACTIONS: "action_id",
                topics.CAMPAIGN_OUTCOMES: "outcome_id"}


async def _decisions(broker: str, isolation_level: str = "read_uncommitted") -> tuple[Counter, dict[str, dict]]:
    """Deliveries per decision id, and each id's record."""
    ids: Counter = Counter()
    records: dict[str, dict] = {}
    for topic, id_field in DECISION_IDS.items():
        for record in await read_topic(broker, topic, isolation_level):
            ids[record[id_field]] += 1
            records[record[id_field]] = record
    return ids, records


async def _snapshot(servers: EmbeddedServers, group: str, at_ms: int) -> dict[str, dict]:
    """`tierstream snapshot --as-of at_ms --wait` of the run, under the
    rules version the workers published."""
    from cli.snapshot import take_snapshot
    from stream.config_topic import in_force
    from stream.settings import Settings

    settings = Settings(broker=servers.broker, redis_url=servers.redis_url, partitions=PARTITIONS, app_id=group)
    published = await in_force(servers.kafka)
    assert published is not None, "the workers published no configuration"
    out = servers.workdir / "snapshot.jsonl"
    await take_snapshot(settings, published.document.rules(), at_ms, out, wait=120)
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return {r["user_id"]: r for r in rows if not r["user_id"].startswith("closer-")}


class Workers:
    """Worker processes in slots; slot 0 is the one the kills are aimed at."""

    def __init__(self, servers: EmbeddedServers, app_id: str, count: int, extra_env: dict[str, str]) -> None:
        self.servers, self.app_id, self.extra_env = servers, app_id, extra_env
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.starts = 0

    def env(self, crash_at: str | None) -> dict[str, str]:
        env = {**os.environ, "TIERSTREAM_BROKER": self.servers.broker, "TIERSTREAM_REDIS_URL": self.servers.redis_url,
               "TIERSTREAM_PARTITIONS": str(PARTITIONS), "TIERSTREAM_CLOCK": "replay",
               "TIERSTREAM_ALLOWED_LATENESS_MS": str(DAY_MS), "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6",
               "TIERSTREAM_APP_ID": self.app_id, "TIERSTREAM_LOG_LEVEL": "INFO", "TIERSTREAM_REDIS_CHECK_SECONDS": "1",
               "TIERSTREAM_CAMPAIGNS": "example",
               "TIERSTREAM_RULES": str(write_fixed_rules(self.servers.workdir)),  # tests/support/fixed_rules.py
               **self.extra_env}
        env.pop("TIERSTREAM_CRASH_AT", None)
        if crash_at:
            env["TIERSTREAM_CRASH_AT"] = crash_at
        return env

    def start(self, slot: int, crash_at: str | None) -> None:
        self.starts += 1
        log = self.servers.workdir / f"worker-{slot}-{self.starts}.log"
        self.procs[slot] = spawn([sys.executable, "-m", "cli.main", "worker"], env=self.env(crash_at), log=log)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        logs = sorted(self.servers.workdir.glob("worker-*.log"), key=lambda p: p.stat().st_mtime)
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs[-2:])


async def run(bodies: list[dict], kills: tuple[str, ...] = (), workers: int = 1,
              reference: Outcome | None = None, timeout: float = 300, exactly_once: bool = False,
              population_rules: bool = False, settle_s: float = 90, snapshot_at: int | None = None,
              rollout_at: int | None = None) -> Outcome:
    """One run on fresh servers. Slot 0 starts with the first kill's crash
    point; each time it dies by SIGKILL it is restarted with the next one,
    and after the last with none. The run ends when the group has
    committed every input offset; with a `reference`, it then waits (a
    bounded time) for the outputs and Redis to reach it, so a test failing
    on them has given them every chance. With `exactly_once` the workers
    use Kafka transactions and the outputs are read as a read_committed
    consumer would. `population_rules`: the default rules with quantile
    scores and the churn model on (state.rules.population_rules_text); `settle_s`:
    how long the outputs may trail the committed input; `snapshot_at`: take
    a `tierstream snapshot` at that event time once settled (Outcome.snapshot);
    `rollout_at`: before the history, roll out ROLLOUT_CHANGE from that
    event time (state.rollout), and restart workers with its files."""
    started = time.monotonic()
    servers = new_servers()
    group = f"crash-{os.getpid()}-{int(started)}"
    eos = {"TIERSTREAM_PROCESSING_GUARANTEE": "exactly_once", "TIERSTREAM_RECOVERY": "faust"}
    extra = dict(eos) if exactly_once else {}
    if population_rules:
        extra["TIERSTREAM_RULES"] = str(servers.workdir / "rules.toml")
        # Partitions done with their events follow the others soon, well
        # before the reference's outputs are taken as settled.
        extra["TIERSTREAM_IDLE_PARTITION_SECONDS"] = "1"
        (servers.workdir / "rules.toml").write_text(population_rules_text())
    pool = Workers(servers, group, workers, extra)
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    plan = list(kills)
    done_kills: list[str] = []
    try:
        await ensure_topics(servers.kafka, PARTITIONS)
        current: dict[int, str | None] = {0: plan.pop(0) if plan else None}
        pool.start(0, current[0])
        for slot in range(1, workers):
            pool.start(slot, None)
            current[slot] = None
        if rollout_at is not None:
            pool.extra_env["TIERSTREAM_RULES"] = str(await _roll_out(servers, group, rollout_at))
        # Cost statements (read by the metrics aggregator): the first half
        # now, the rest (restatements and late ones among them) once the
        # first kill has happened, so that some are applied by a worker
        # that restarted. The run without faults sends them the same way.
        statements = workload.cost_statements(workload.CHANNELS, days=(max(b["ts"] for b in bodies) - min(
            b["ts"] for b in bodies)) // DAY_MS + 1, start_ms=min(b["ts"] for b in bodies))
        bad = {"channel": "social", "period": "2020-13", "amount": 5}  # a dead letter, never a stop
        await _produce_costs(servers.broker, [*statements[:len(statements) // 2], bad])
        later_costs: list[dict] | None = statements[len(statements) // 2:]
        ends = await _produce(servers.broker, bodies)
        deadline = time.monotonic() + timeout
        committed: dict[int, int] | None = None
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"run did not finish in {timeout}s; kills so far {done_kills}; committed "
                                     f"{committed} of {ends}\n{pool.log_tail()}")
            for slot, proc in enumerate(pool.procs):
                code = proc.poll() if proc else None
                if code is None:
                    continue
                if code != -signal.SIGKILL or current[slot] is None:
                    raise AssertionError(f"worker {slot} exited with {code}, not by a crash point\n{pool.log_tail()}")
                done_kills.append(current[slot])
                current[slot] = plan.pop(0) if plan else None
                pool.start(slot, current[slot])
                if later_costs is not None:
                    await _produce_costs(servers.broker, later_costs)
                    later_costs = None
            try:  # a coordinator lookup can hang while the group rebalances: ask again
                committed = await asyncio.wait_for(_committed(servers.broker, group), 30)
            except TimeoutError:
                continue
            if committed == {p: ends.get(p, 0) for p in range(PARTITIONS)} and later_costs is not None:
                await _produce_costs(servers.broker, later_costs)  # no kill (the run without faults)
                later_costs = None
            if committed == {p: ends.get(p, 0) for p in range(PARTITIONS)}:
                if current[0] is not None:
                    raise AssertionError(f"crash point {current[0]} was never reached (kills done: {done_kills})")
                committed_at = time.monotonic()
                break
            await asyncio.sleep(0.5)

        async def outcome() -> Outcome:
            ids, records = await _decisions(servers.broker, isolation)
            return Outcome(ids, await membership(servers.redis_url), done_kills,
                           time.monotonic() - started, await metric_cells(servers.redis_url),
                           await _metric_records(servers.broker, isolation), records, str(servers.workdir))

        result = await outcome()
        # The aggregator may trail the worker by a few rebalances (each
        # crash makes its consumer group rebalance too): give it time.
        settle = time.monotonic() + settle_s
        if reference is None:
            # The reference itself: wait until the worker and the aggregator
            # have caught up (the same decisions, cells and records three
            # times in a row, two seconds apart: with quantile scores, the
            # decisions trail the input in steps, one cut point at a time).
            still = 0
            while time.monotonic() < settle and still < 3:
                await asyncio.sleep(2)
                again = await outcome()
                same = (again.ids == result.ids and again.metric_cells == result.metric_cells
                        and again.metric_records == result.metric_records)
                still = still + 1 if same else 0
                result = again
        polls = 1
        while reference is not None and time.monotonic() < settle:
            if result.settled_like(reference):
                break
            await asyncio.sleep(1)
            result = await outcome()
            polls += 1
        if snapshot_at is not None:
            result.snapshot = await _snapshot(servers, group, snapshot_at)
        if population_rules:  # the reports every cut came from, for a diff against another run's
            reports = await read_topic(servers.broker, topics.POPULATION, isolation)
            (servers.workdir / "population.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in reports))
        print(f"run: every input committed after {committed_at - started:.0f}s, outcome read {polls} times, "
              f"done after {time.monotonic() - started:.0f}s")
        return result
    finally:
        pool.stop()
        servers.stop()


# The roll-out the crash runs with `rollout_at` make: dormant after 45 days
# without an order, not 180.
ROLLOUT_CHANGE = ("name = \"dormant\"\ndays_since_order_min = 180", "name = \"dormant\"\ndays_since_order_min = 45")


async def _roll_out(servers: EmbeddedServers, group: str, at_ms: int) -> Path:
    """`tierstream rules apply --at at_ms` before any event: wait for the
    version the first worker put in force, propose the change, wait until
    every partition has answered (accepted: none has an event yet). Returns
    the new rules file, for the workers started from now on."""
    from cli.io import rollout_outcomes
    from state.config import ConfigDocument
    from stream.config_topic import history, publish
    from stream.settings import Settings

    settings = Settings(broker=servers.broker, redis_url=servers.redis_url, partitions=PARTITIONS, app_id=group)
    deadline = time.monotonic() + 120
    while not (versions := await history(servers.kafka)):
        assert time.monotonic() < deadline, "no worker put a configuration in force"
        await asyncio.sleep(0.5)
    current = versions[-1].document
    assert current.rules_text.count(ROLLOUT_CHANGE[0]) == 1
    path = servers.workdir / "rolled-out-rules.toml"
    path.write_text(current.rules_text.replace(*ROLLOUT_CHANGE))
    document = ConfigDocument(path.read_text(), current.campaigns_text, str(path), current.campaigns_source)
    proposal = await publish(servers.kafka, document, "crash test", rollout=True, rollout_at_ms=at_ms)
    while (outcome := (await rollout_outcomes(settings, await history(servers.kafka))).get(proposal.key)) is None:
        assert time.monotonic() < deadline, "the workers did not answer the roll-out"
        await asyncio.sleep(0.5)
    assert outcome.from_ms == at_ms, outcome
    return path


async def audit(runs: int, workers: int, exactly_once: bool, population_rules: bool = False) -> list[dict]:
    bodies = history()
    # With quantile scores, each day of event time is a round trip through
    # the population topic (every partition's report, then the cuts): the
    # decisions of a replay trail its committed input by minutes here.
    settle_s = 400 if population_rules else 90
    at = snapshot_time(bodies)
    reference = await run(bodies, population_rules=population_rules, settle_s=settle_s, snapshot_at=at)
    print(f"reference: {len(reference.ids)} decision ids, {len(reference.membership)} users in Redis, "
          f"{reference.seconds:.0f}s, snapshot of {len(reference.snapshot)} users; Redis and snapshot differ for "
          f"{len(reference.snapshot_disagreements()['redis_vs_snapshot'])}", flush=True)
    rows = []
    for i in range(runs):
        outcome = await run(bodies, kills_for_run(i), workers=workers, reference=reference, exactly_once=exactly_once,
                            population_rules=population_rules, settle_s=settle_s, snapshot_at=at)
        one_answer = {f"{k}_users": len(v) for k, v in outcome.snapshot_disagreements(reference).items()}
        row = {"run": i + 1, "kills": ",".join(outcome.kills), **outcome.compare(reference), **one_answer,
               "seconds": round(outcome.seconds)}
        print(orjson.dumps(row).decode(), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--exactly-once", action="store_true", help="Kafka transactions (TIERSTREAM_TEST_BROKER=kafka)")
    parser.add_argument("--population-rules", action="store_true",
                        help="quantile scores and the churn model on (state.rules.population_rules_text)")
    parser.add_argument("--out", type=Path, default=Path("crash-audit.json"))
    args = parser.parse_args()
    print(f"broker: {BROKER}; {'exactly-once' if args.exactly_once else 'at-least-once'}; "
          f"{'population' if args.population_rules else 'default'} rules", flush=True)
    rows = asyncio.run(audit(args.runs, args.workers, args.exactly_once, args.population_rules))
    totals = {k: sum(r[k] for r in rows) for k in ("lost", "unexpected", "duplicates", "redis_disagreements",
                                                   "metric_cells_differing", "metric_records_differing",
                                                   "snapshot_vs_reference_users", "redis_vs_snapshot_users")}
    print("total:", orjson.dumps(totals).decode())
    args.out.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
