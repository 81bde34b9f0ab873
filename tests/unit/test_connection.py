"""Every Kafka and Redis client gets the security settings: they are built
in one module (stream.connection), and this file fails if any other module
of the product constructs a client itself. Also: what each setting turns
into, the settings that are refused, and secrets kept out of reprs and
error messages. No broker, no Redis."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream.connection import (
    KAFKA_CLIENT_CLASSES,
    KafkaAccess,
    RedisAccess,
    faust_credentials,
    kafka_access,
    redis_access,
)
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("agents", "api", "bench", "cli", "engine", "state", "store", "stream")
REDIS_CONSTRUCTORS = {"Redis", "StrictRedis", "from_url"}
# faust.App: the worker's app is built with broker_credentials (stream/app.py).
# bench/minimal_agent.py is the benchmark's baseline Faust agent, run only
# against the broker the benchmark starts itself.
FAUST_APPS_WITHOUT_CREDENTIALS = {"bench/minimal_agent.py"}
PASSWORD = "pa55-w0rd-never-printed"


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr if not isinstance(func.value, ast.Name) else f"{func.value.id}.{func.attr}"
    return ""


def _client_constructions() -> list[tuple[str, int, str]]:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), relative)):
                if not isinstance(node, ast.Call):
                    continue
                name = _called_name(node)
                last = name.rpartition(".")[2]
                if last in KAFKA_CLIENT_CLASSES or name in REDIS_CONSTRUCTORS or name.endswith(
                        ("Redis.from_url", "redis.from_url")):
                    found.append((relative, node.lineno, name))
                if name == "faust.App" and not any(k.arg == "broker_credentials" for k in node.keywords) \
                        and relative not in FAUST_APPS_WITHOUT_CREDENTIALS:
                    found.append((relative, node.lineno, "faust.App without broker_credentials"))
    return found


def test_only_stream_connection_constructs_kafka_and_redis_clients():
    outside = [f"{path}:{line} {name}" for path, line, name in _client_constructions()
               if path != "stream/connection.py"]
    assert outside == [], ("build clients with stream.connection (KafkaAccess.consumer/producer/admin, "
                           "RedisAccess.client) so they get the TLS and SASL settings:\n" + "\n".join(outside))


def test_the_scan_recognises_the_constructions_in_stream_connection():
    """The scan above would pass vacuously if it recognised nothing."""
    names = {name for path, _, name in _client_constructions() if path == "stream/connection.py"}
    assert {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "Redis.from_url"} <= names


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("ca.pem", "client.pem", "client.key", "secret"):
        files[name] = tmp_path / name
        files[name].write_text(PASSWORD + "\n" if name == "secret" else "x")
    return files


def test_sasl_ssl_settings_reach_aiokafka_and_faust(tmp_path, monkeypatch):
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", lambda self, *a, **k: None)
    files = _files(tmp_path)
    settings = Settings(broker="kafka.example.com:9093", kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="svc",
                        kafka_sasl_password_file=files["secret"], kafka_ssl_cafile=files["ca.pem"])
    access = kafka_access(settings)
    assert access.bootstrap == "kafka.example.com:9093"
    assert access.auth["security_protocol"] == "SASL_SSL"
    assert access.auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert access.auth["sasl_plain_username"] == "svc"
    assert access.auth["sasl_plain_password"] == PASSWORD  # the file's trailing newline is not part of it
    context = access.auth["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED

    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    credentials = faust_credentials(access)
    assert isinstance(credentials, SASLCredentials)
    # What Faust's own consumer, producer and topic creator will be given.
    assert credentials_to_aiokafka_auth(credentials) == dict(access.auth)
    assert PASSWORD not in repr(settings) + repr(access) + repr(credentials)


async def test_each_kafka_client_is_built_with_the_access_options():
    auth = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_plain_username": "svc",
            "sasl_plain_password": PASSWORD}
    access = KafkaAccess("kafka.example.com:9093", auth)
    consumer, producer, admin = access.consumer("t"), access.producer(), access.admin()
    # aiokafka's connection-owning client under each
    for inner in (consumer._client, producer.client, admin._client):
        assert (inner._security_protocol, inner._sasl_mechanism, inner._sasl_plain_username) == \
            ("SASL_PLAINTEXT", "PLAIN", "svc")
        assert inner._sasl_plain_password == PASSWORD
        assert inner._bootstrap_servers == "kafka.example.com:9093"
    await consumer.stop()
    await producer.stop()
    await admin.close()


def test_mutual_tls_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", lambda self, *a, **k: None)
    loaded = []
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", lambda self, certfile, keyfile=None, password=None:
                        loaded.append((certfile, keyfile)))
    files = _files(tmp_path)
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=files["ca.pem"],
                        kafka_ssl_certfile=files["client.pem"], kafka_ssl_keyfile=files["client.key"],
                        kafka_ssl_check_hostname=False)
    access = kafka_access(settings)
    assert access.auth["security_protocol"] == "SSL" and "sasl_mechanism" not in access.auth
    assert [tuple(map(str, pair)) for pair in loaded] == [(str(files["client.pem"]), str(files["client.key"]))]
    assert access.auth["ssl_context"].check_hostname is False
    from faust.auth import SSLCredentials

    assert isinstance(faust_credentials(access), SSLCredentials)


def test_plaintext_is_the_default_and_gives_faust_no_credentials():
    settings = Settings()
    assert kafka_access(settings) == KafkaAccess.plain(settings.broker)
    assert faust_credentials(kafka_access(settings)) is None
    assert redis_access(settings) == RedisAccess.plain(settings.redis_url)


def test_redis_tls_and_acl_settings(tmp_path):
    files = _files(tmp_path)
    access = redis_access(Settings(redis_url="rediss://cache.example.com:6380/0", redis_username="svc",
                                   redis_password=PASSWORD, redis_ssl_cafile=files["ca.pem"]))
    assert access.options["username"] == "svc" and access.options["password"] == PASSWORD
    assert access.options["ssl_ca_certs"] == str(files["ca.pem"])
    assert access.options["ssl_check_hostname"] is True and access.options["ssl_cert_reqs"] == "required"
    pool = access.client().connection_pool
    assert pool.connection_kwargs["password"] == PASSWORD and pool.connection_class.__name__ == "SSLConnection"
    assert PASSWORD not in repr(access)
    with_password_in_url = RedisAccess("rediss://svc:" + PASSWORD + "@cache.example.com:6380/0")
    assert PASSWORD not in with_password_in_url.where


@pytest.mark.parametrize(("settings", "says"), [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": PASSWORD}, "KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD,
      "kafka_sasl_password_file": "secret"}, "not both"),
    ({"kafka_ssl_cafile": "ca.pem"}, "set it to SSL or SASL_SSL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "client.pem"}, "go together"),
    ({"redis_ssl_cafile": "ca.pem"}, "not rediss://"),
    ({"redis_url": "http://cache:6379"}, "rediss://"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "missing.pem"}, "kafka_ssl_cafile"),
    ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
])
def test_half_a_security_configuration_is_refused_saying_what_is_missing(settings, says, tmp_path, monkeypatch):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError) as refused:
        Settings(**settings)
    assert says in str(refused.value)
    assert PASSWORD not in str(refused.value)  # hide_input_in_errors
