"""Apache Kafka for the tests, the benchmarks and `tierstream dev --broker
kafka`: the broker production runs, resolved with Maven from Maven Central
once per machine, started as a single KRaft node (broker and controller in
one process) on free local ports, with a small heap.

Why Maven and not a downloaded tarball: the machines reach Maven Central
and nothing else, and `org.apache.kafka:kafka_2.13` with its dependencies
is exactly the broker's classpath. The jars land in a cache folder
(`TIERSTREAM_KAFKA_CACHE`, default ~/.cache/tierstream/kafka/<version>);
a second start only checks that they are there.

Version: 4.4.0, the newest served, and the one docker-compose.yml runs.
Kafka 4 removed old protocol versions (KIP-896); aiokafka 0.14 negotiates
versions Kafka 4.4 still serves, and the whole suite passes on it (see
README, "Apache Kafka").
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cli.certificates import Certificates
from cli.processes import spawn, wait_for_port

KAFKA_VERSION = "4.4.0"
HEAP = "512m"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tierstream</groupId><artifactId>apache-kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot be run on this machine; the message says why."""


def missing_tools() -> str | None:
    """Why Apache Kafka cannot run here, or None if it can."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH (Apache Kafka needs Java 17+ and Maven to fetch it)"
    return None


def cache_dir() -> Path:
    root = os.environ.get("TIERSTREAM_KAFKA_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "tierstream" / "kafka"
    return base / KAFKA_VERSION


def classpath() -> str:
    """The broker's classpath, resolving it with Maven on first use."""
    why = missing_tools()
    if why:
        raise KafkaUnavailable(why)
    cache = cache_dir()
    libs = cache / "libs"
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "pom.xml").write_text(_POM.format(version=KAFKA_VERSION))
        staging = cache / f"libs.{os.getpid()}"
        out = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(cache / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, timeout=900,
        )
        if out.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaUnavailable(f"Maven could not fetch Apache Kafka {KAFKA_VERSION}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        try:
            staging.rename(libs)  # atomic: a concurrent resolver's copy wins, ours goes
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return str(libs / "*")


@dataclass(frozen=True)
class KafkaSecurity:
    """The secured listeners a test broker adds to its plaintext one (which
    stays, on 127.0.0.1, for the broker's own use and its readiness probe):
    SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, for `users`) and SSL
    with client certificates required (mutual TLS). Both are named
    `localhost`, the one name the server certificate holds."""

    certificates: Certificates
    users: dict[str, str]  # user name -> password
    sasl_ssl_port: int
    mtls_port: int

    @property
    def sasl_ssl(self) -> str:
        return f"localhost:{self.sasl_ssl_port}"

    @property
    def mtls(self) -> str:
        return f"localhost:{self.mtls_port}"


def _security_properties(security: KafkaSecurity) -> list[str]:
    certs = security.certificates
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in security.users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return [
        "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        # PEM throughout (an unencrypted PKCS#8 key and its certificate in one
        # file): what openssl writes, no keystore password to hand around.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certs.server_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certs.ca}",
        "listener.name.ssl.ssl.client.auth=required",
    ]


def server_properties(data: Path, port: int, controller_port: int, partitions: int,
                      security: KafkaSecurity | None = None) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if security:
        secured = [f"SASL_SSL://{security.sasl_ssl}", f"SSL://{security.mtls}"]
        listeners += secured
        advertised += secured
        protocols += ",SASL_SSL:SASL_SSL,SSL:SSL"
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={protocols}",
        "inter.broker.listener.name=PLAINTEXT",
        *(_security_properties(security) if security else []),
        f"log.dirs={data}",
        f"num.partitions={partitions}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        # A single test broker: no reason to wait for more members to join.
        "group.initial.rebalance.delay.ms=0",
        # Compaction that a test can see within seconds: segments roll every
        # 10 s and the cleaner looks every second (compaction only ever
        # touches closed segments).
        "log.roll.ms=10000",
        "log.cleaner.backoff.ms=1000",
        "log.cleaner.min.cleanable.ratio=0.01",
        "",
    ])


def start_kafka(workdir: Path, port: int, controller_port: int, partitions: int, log: Path,
                security: KafkaSecurity | None = None) -> subprocess.Popen:
    """Format KRaft storage under `workdir` and start the broker; returns
    once it answers metadata requests. With `security`, its SCRAM users are
    written into the storage as it is formatted (KRaft keeps them in its
    metadata log; there is no ZooKeeper to add them to later)."""
    cp = classpath()
    data = workdir / "kafka-data"
    data.mkdir(parents=True, exist_ok=True)
    props = workdir / "server.properties"
    props.write_text(server_properties(data, port, controller_port, partitions, security))
    # A url-safe id may start with '-': passed as "--cluster-id=<id>" so the
    # tool's argument parser never takes it for an option (1 start in 64 did).
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    java = ["java", f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-cp", cp]
    scram = [f"--add-scram={mechanism}=[name={name},password={password}]"
             for name, password in (security.users.items() if security else ())
             for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")]
    fmt = subprocess.run([*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props),
                          *scram], capture_output=True, text=True, timeout=120)
    if fmt.returncode != 0:
        raise KafkaUnavailable(f"formatting KRaft storage failed:\n{fmt.stdout[-2000:]}{fmt.stderr[-2000:]}")
    proc = spawn([*java, "kafka.Kafka", str(props)], log=log)
    wait_for_port(port, proc, timeout=90, what="Apache Kafka")
    _wait_serving(f"127.0.0.1:{port}", proc)
    return proc


def _wait_serving(bootstrap: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until a client can fetch metadata (the port opens a little before)."""
    from stream.connection import KafkaAccess

    async def probe() -> None:
        admin = KafkaAccess.plain(bootstrap).admin(request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KafkaUnavailable(f"Apache Kafka exited with code {proc.returncode} while starting")
        errors: list[BaseException] = []
        # A thread of its own: the caller may be inside a running event loop.
        t = threading.Thread(target=lambda: _run_catching(probe, errors))
        t.start()
        t.join()
        if not errors:
            return
        last = errors[0]
        time.sleep(0.3)
    raise KafkaUnavailable(f"Apache Kafka did not serve metadata within {timeout}s: {last!r}")


def _run_catching(probe, errors: list[BaseException]) -> None:  # type: ignore[no-untyped-def]
    try:
        asyncio.run(probe())
    except Exception as exc:  # reported to the waiting thread
        errors.append(exc)
