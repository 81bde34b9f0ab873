"""All settings in one typed object, read from TIERSTREAM_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from datetime import UTC, datetime

from pydantic import AwareDatetime, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print every
    # setting it was given, passwords included.
    model_config = SettingsConfigDict(env_prefix="TIERSTREAM_", frozen=True, hide_input_in_errors=True)

    broker: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap server(s): host:port[,host:port], each may start with kafka://"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every client talks to Kafka: SASL_SSL for most managed clusters (Confluent "
        "Cloud, MSK with SCRAM, Aiven, Redpanda Cloud); SSL with a client certificate for mutual TLS")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (Confluent Cloud: PLAIN; MSK: SCRAM-SHA-512)")
    kafka_sasl_username: str | None = Field(None, description="SASL user (Confluent Cloud: the API key)")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (Confluent Cloud: the API secret); never logged")
    kafka_sasl_password_file: FilePath | None = Field(
        None, description="A file holding the SASL password (a mounted secret), instead of the variable")
    kafka_ssl_cafile: FilePath | None = Field(
        None, description="CA certificate(s) (PEM) the broker's certificate must chain to; unset = the system's")
    kafka_ssl_certfile: FilePath | None = Field(None, description="Client certificate (PEM), for mutual TLS")
    kafka_ssl_keyfile: FilePath | None = Field(None, description="Client certificate's private key (PEM, unencrypted)")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate holds the name connected to; false only for tests")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding segment membership; rediss:// for TLS. A user and "
        "password in the URL work, the settings below keep them out of it")
    redis_username: str | None = Field(None, description="Redis ACL user (unset: the default user)")
    redis_password: SecretStr | None = Field(None, description="Redis password (AUTH); never logged")
    redis_password_file: FilePath | None = Field(None, description="A file holding the Redis password, instead")
    redis_ssl_cafile: FilePath | None = Field(
        None, description="rediss:// only: CA certificate(s) (PEM) the server's must chain to; unset = the system's")
    redis_ssl_certfile: FilePath | None = Field(None, description="rediss:// only: client certificate (PEM)")
    redis_ssl_keyfile: FilePath | None = Field(None, description="rediss:// only: client certificate's key (PEM)")
    redis_ssl_check_hostname: bool = Field(
        True, description="rediss:// only: check that the server's certificate holds the name connected to")
    redis_prefix: str = Field("tierstream:", description="Prefix of every Redis key tierstream writes")
    rules: Path | None = Field(None, description="Rules TOML file; unset = the shipped defaults")
    campaigns: str | None = Field(
        None, description="Campaigns TOML file (state/example_campaigns.toml shows the format); 'example' = that "
        "shipped file; unset = no campaigns (tierstream dev uses the example)")
    api_host: str = Field("127.0.0.1", description="Address the read API and dashboard listen on")
    api_port: int = Field(8080, description="Port of the read API")
    api_token: str | None = Field(
        None, description="If set, the read API and the dashboard answer only requests bearing this token "
        "(Authorization: Bearer <token>, or ?access_token=<token>)")
    user_history: int = Field(
        3, ge=0, le=50, description="Latest tier changes and alerts kept per user in Redis for the dashboard's "
        "user lookup (0: none)")

    app_id: str = Field("tierstream", description="Kafka consumer group and changelog prefix")
    partitions: int = Field(4, ge=1, description="Partitions of the events topic and the users table")
    clock: Literal["live", "replay"] = Field(
        "live",
        description="live: wall-clock time also moves the watermark; replay: only events do",
    )
    allowed_lateness_ms: int = Field(
        0, ge=0, description="How far behind the latest event time an event may arrive and still count as on time"
    )
    tick_seconds: float = Field(1.0, gt=0, description="How often silent users are checked (live clock)")
    idle_partition_seconds: float = Field(
        5.0, gt=0, description="Replay clock, quantile scores: a partition caught up with its input and given "
        "nothing new for this long follows the other partitions' event time (docs/scores.md)")

    max_event_bytes: int = Field(16_384, description="Larger input messages go to the DLQ")
    max_future_seconds: int = Field(86_400, description="Events further ahead of the clock go to the DLQ")
    earliest_event: AwareDatetime = Field(
        datetime(1970, 1, 1, tzinfo=UTC), description="Events before this time go to the DLQ (ISO-8601 with an offset)"
    )
    max_event_age_days: int = Field(
        3653, ge=0, description="An event older than the partition's watermark by more than this many days, and "
        "(for a known user) older than the user's first event by as much, goes to the DLQ as implausibly_old "
        "(an unset clock, seconds sent as milliseconds); 0 turns the rule off (docs/events.md)")
    dlq_max_payload_bytes: int = Field(262_144, description="Original payload kept in a DLQ record, at most")

    batch_max: int = Field(2000, ge=1, description="Input messages taken per batch")
    rollout_chunk_users: int = Field(
        5000, ge=1, description="Users a rules roll-out re-assesses before it lets the worker's other work go on "
        "(about 0.1 s of the event loop; state.rollout)")
    batch_within_ms: int = Field(20, ge=1, description="A batch is cut after this long even if not full")
    redis_flush_ms: int = Field(20, description="Membership updates are coalesced this long, then written")
    max_poll_records: int = Field(5000, ge=1, description="Records one consumer poll may return")
    fetch_max_wait_ms: int = Field(10, ge=1, description="Longest a fetch waits for data (latency bound on idle brokers)")
    session_timeout_seconds: float = Field(10.0, description="Kafka consumer session timeout")
    producer_linger_ms: int = Field(
        0,
        ge=0,
        description="Producer batching delay. The worker already hands the producer whole record batches, so waiting only adds latency",
    )
    producer_max_batch_bytes: int = Field(
        512 * 1024, ge=16 * 1024, le=900 * 1024,
        description="Largest record batch the worker's producer builds per partition (aiokafka's 16 KB default "
        "made a publish of a few hundred decisions wait one broker round trip per 16 KB; under Kafka's 1 MB "
        "request limit)")
    redis_check_seconds: float = Field(
        5.0, gt=0, description="How often the worker checks that Redis still holds its partitions (a marker per partition)"
    )
    recovery: Literal["bulk", "faust"] = Field(
        "bulk",
        description="bulk: read the changelog to its true end in bulk (stream/faust_ext/recovery.py); faust: Faust's own "
        "recovery, which loses the changelog's tail on Tansu (its end offsets are under-reported)",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: decisions may repeat after a crash (same ids); exactly_once: Kafka transactions "
        "(Apache Kafka only; needs TIERSTREAM_RECOVERY=faust; consumers must read with isolation.level=read_committed)",
    )
    operator_metrics: bool = Field(
        True,
        description="Compute the operator metrics (KPIs, flows, cohorts: docs/metrics.md): each step's facts go to "
        "tierstream.metric-facts and the worker's aggregator keeps them in Redis",
    )
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics of the worker on this port")
    metrics_host: str = Field("127.0.0.1", description="Address the metrics port binds to")
    log_level: str = "WARNING"
    recovery_dump: Path | None = Field(
        None, description="Diagnostics: after each recovery, write the recovered users as JSON lines here"
    )
    crash_at: str | None = Field(
        None, description="Crash tests only: SIGKILL the worker the N-th time it reaches a point (agents/faults.py)"
    )


    @field_validator("broker")
    @classmethod
    def _bootstrap_servers(cls, value: str) -> str:
        """'kafka://a:9092,b:9092' (as Faust users write it) -> 'a:9092,b:9092'."""
        servers = []
        for entry in value.split(","):
            entry = entry.strip()
            scheme, sep, rest = entry.partition("://")
            if sep:
                if scheme != "kafka":
                    raise ValueError(f"{entry!r}: only kafka:// (or no scheme) is understood")
                entry = rest
            host, colon, port = entry.rpartition(":")
            if not colon or not host or not port.isdigit():
                raise ValueError(f"{entry!r} is not host:port")
            servers.append(entry)
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return value

    def kafka_password(self) -> str | None:
        return _secret(self.kafka_sasl_password, self.kafka_sasl_password_file)

    def redis_password_value(self) -> str | None:
        return _secret(self.redis_password, self.redis_password_file)

    @model_validator(mode="after")
    def _security_is_whole(self) -> Settings:
        # Half a configuration fails here, naming what is missing, rather than
        # as a handshake error on the first connection.
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                raise ValueError(f"TIERSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs TIERSTREAM_KAFKA_SASL_USERNAME")
            if self.kafka_password() is None:
                raise ValueError(f"TIERSTREAM_KAFKA_SECURITY_PROTOCOL={protocol} needs TIERSTREAM_KAFKA_SASL_PASSWORD "
                                 "or TIERSTREAM_KAFKA_SASL_PASSWORD_FILE")
        for name, both in (("KAFKA_SASL_PASSWORD", (self.kafka_sasl_password, self.kafka_sasl_password_file)),
                           ("REDIS_PASSWORD", (self.redis_password, self.redis_password_file))):
            if all(v is not None for v in both):
                raise ValueError(f"set TIERSTREAM_{name} or TIERSTREAM_{name}_FILE, not both")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if protocol not in ("SSL", "SASL_SSL") and any(tls_files):
            raise ValueError(f"TIERSTREAM_KAFKA_SSL_* files are set but TIERSTREAM_KAFKA_SECURITY_PROTOCOL is "
                             f"{protocol}: set it to SSL or SASL_SSL")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("TIERSTREAM_KAFKA_SSL_CERTFILE and TIERSTREAM_KAFKA_SSL_KEYFILE go together")
        redis_tls = (self.redis_ssl_cafile, self.redis_ssl_certfile, self.redis_ssl_keyfile)
        if any(redis_tls) and not self.redis_url.startswith("rediss://"):
            raise ValueError("TIERSTREAM_REDIS_SSL_* files are set but TIERSTREAM_REDIS_URL is not rediss://")
        if (self.redis_ssl_certfile is None) != (self.redis_ssl_keyfile is None):
            raise ValueError("TIERSTREAM_REDIS_SSL_CERTFILE and TIERSTREAM_REDIS_SSL_KEYFILE go together")
        return self

    @property
    def earliest_event_ms(self) -> int:
        return int(self.earliest_event.timestamp() * 1000)

    @model_validator(mode="after")
    def _exactly_once_recovers_committed_data(self) -> Settings:
        # The bulk changelog reader reads uncommitted records too; with
        # transactions, recovery must see committed ones only (Faust's does).
        if self.processing_guarantee == "exactly_once" and self.recovery != "faust":
            raise ValueError("TIERSTREAM_PROCESSING_GUARANTEE=exactly_once needs TIERSTREAM_RECOVERY=faust")
        return self


def _secret(value: SecretStr | None, file: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().rstrip("\r\n")  # a secret file usually ends with a newline
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
