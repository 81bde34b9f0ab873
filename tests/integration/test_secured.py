"""tierstream against a secured Apache Kafka (SASL_SSL with SCRAM users, and
mutual TLS) and a secured Redis (TLS, an ACL user limited to tierstream's
keys, no anonymous access): the whole path, each client over the secured
connection, wrong credentials failing fast with the cause named, and no
password in any log or output (tests/support/secured.py starts them).

Apache Kafka only: these are Kafka's own listeners (Tansu 0.6 has neither
TLS nor SASL), so the file runs in the suite's Apache Kafka half.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import BROKER, PARTITIONS, Cluster
from tests.support.secured import RedisWithoutTls, SecuredServers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.broker_dependent("TLS and SASL listeners are Apache Kafka's: the secured set-up production runs"),
    pytest.mark.skipif(BROKER != "kafka", reason="Tansu 0.6 has no TLS or SASL; this file runs in the Apache "
                                                 "Kafka half"),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    servers = SecuredServers(workdir=tmp_path_factory.mktemp("secured"))
    try:
        servers.start(PARTITIONS)
    except RedisWithoutTls as exc:
        servers.stop()
        pytest.skip(f"the Redis part cannot be tested here: {exc} (scripts/test.sh installs Debian's redis-server, "
                    "which has TLS)")
    yield servers
    servers.stop()


def _without_security(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("TIERSTREAM_KAFKA_", "TIERSTREAM_REDIS_"))}


def _secrets(secured: SecuredServers) -> tuple[str, str]:
    return secured.kafka_password, secured.redis_password


def _history(tmp_path):
    """200 users over 90 days, then one event at the end on every partition
    (their watermarks all reach it, so the last quantile period closes)."""
    from bench import workload
    from tests.integration.crash import _partition_of

    bodies = sorted(workload.history(users=200, events=2000, days=90, seed=5), key=lambda b: (b["ts"], b["event_id"]))
    end = bodies[-1]["ts"]
    closers = {}
    for n in range(1000):
        closers.setdefault(_partition_of(f"closer-{n}"), f"closer-{n}")
    bodies += [{"event_id": f"close-{u}", "user_id": u, "type": "login", "ts": end} for u in closers.values()]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path, bodies, end


def _api_doc(cluster: Cluster, user: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.api_port}/v1/users/{user}", timeout=10) as r:
        return json.loads(r.read())


def test_the_whole_path_over_sasl_ssl_and_redis_tls_and_then_mutual_tls(secured, tmp_path):
    """Worker, API and commands over SASL_SSL (SCRAM-SHA-512) and Redis TLS
    with the ACL user, the shipped rules (quantile scores: the population
    reader) and the operator metrics (the aggregator): a history goes in
    with `produce`; `snapshot --wait`, computed from the changelog by the
    command, agrees user by user with what the API serves from Redis; tier
    changes and alerts come out through `tail`. Then the worker restarts
    on the mutual-TLS listener: it recovers its table over it and decides
    for a new user. No password appears in any log or output."""
    history, bodies, end = _history(tmp_path)
    users = {b["user_id"] for b in bodies}
    shipped_rules = str(Path(__file__).resolve().parents[2] / "state" / "default_rules.toml")
    cluster = Cluster(secured, extra_env={**secured.env("sasl_ssl"), "TIERSTREAM_RULES": shipped_rules})  # type: ignore[arg-type]
    outputs: list[str] = []

    def tool(*args: str, listener: str = "sasl_ssl") -> str:
        env = {**cluster.env, **secured.env(listener)}
        run = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                             timeout=400)
        outputs.append(run.stdout + run.stderr)
        assert run.returncode == 0, (args, run.stderr[-3000:])
        return run.stdout

    try:
        cluster.start_api()
        cluster.start_worker()
        tool("produce", str(history))
        out = tmp_path / "snapshot.jsonl"
        tool("snapshot", "--as-of", str(end), "--out", str(out), "--wait", "300")
        rows = {r["user_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert set(rows) == users

        deadline = time.monotonic() + 90  # the API trails the worker by a Redis flush
        while True:
            differing = {}
            for user, row in rows.items():
                doc = _api_doc(cluster, user)
                if (doc["tier"], doc["stage"]) != (row["tier"], row["stage"]):
                    differing[user] = ((doc["tier"], doc["stage"]), (row["tier"], row["stage"]))
            if not differing or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert differing == {}, list(differing.items())[:5]

        changes = [json.loads(line) for line in tool("tail", "tierstream.tier-changes", "--idle", "3").splitlines()]
        alerts = [json.loads(line) for line in tool("tail", "tierstream.churn-alerts", "--idle", "3").splitlines()]
        assert {c["user_id"] for c in changes} <= users and len({c["user_id"] for c in changes}) >= 150
        assert alerts and {a["level"] for a in alerts} >= {"at_risk"}
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.api_port}/v1/metrics/kpis?grain=week",
                                    timeout=30) as r:
            kpis = json.loads(r.read())
        assert kpis["periods"], "the metrics aggregator wrote nothing over the secured connections"
        assert "in force since" in tool("config", "show")

        # The same worker group, now on the mutual-TLS listener.
        cluster.stop_worker()
        cluster.extra_env = {**cluster.extra_env, **secured.env("mtls")}
        cluster.start_worker()
        newcomer = {"event_id": "mtls-1", "user_id": "mtls-newcomer", "type": "signup", "ts": end}
        (tmp_path / "new.jsonl").write_text(json.dumps(newcomer) + "\n")
        tool("produce", str(tmp_path / "new.jsonl"), listener="mtls")
        tool("snapshot", "--as-of", str(end), "--out", str(out), "--wait", "300", listener="mtls")
        rows_after = {r["user_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert set(rows_after) == users | {"mtls-newcomer"}
        assert {u: (r["tier"], r["stage"]) for u, r in rows_after.items() if u in users} == \
            {u: (r["tier"], r["stage"]) for u, r in rows.items()}  # recovered over mTLS, nothing lost
    finally:
        cluster.stop_worker()
        from cli.processes import stop

        stop(cluster.api)

    logs = [p.read_text(errors="replace") for p in secured.workdir.glob("*.log")
            if p.name.startswith(("worker", "api"))]
    assert len(logs) >= 3 and any("tierstream" in text for text in logs)
    for secret in _secrets(secured):
        assert all(secret not in text for text in logs + outputs), "a password was written to a log or output"


def _refused(secured: SecuredServers, command: str, env: dict[str, str], timeout: float = 60,
             args: tuple[str, ...] = ()) -> str:
    # subprocess.run's timeout: a process that retried for ever fails the test.
    run = subprocess.run([sys.executable, "-m", "cli.main", command, *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    said = run.stdout + run.stderr
    assert run.returncode != 0, f"{command} started although it should have been refused:\n{said[-2000:]}"
    for secret in _secrets(secured):
        assert secret not in said
    return said


@pytest.mark.parametrize(("case", "expected"), [
    ("kafka wrong password", "refused the SASL login of user 'tierstream-app'"),
    ("kafka unknown CA", "not signed by a CA this client trusts"),
    ("kafka wrong hostname", "not valid for '127.0.0.1'"),
    ("kafka mTLS without a client certificate", "client certificate"),
    ("kafka plaintext client on a TLS listener", "another security protocol"),
    ("redis wrong password", "Redis at rediss://localhost"),
    ("redis unknown CA", "TIERSTREAM_REDIS_SSL_CAFILE"),
])
def test_a_wrong_credential_stops_the_worker_at_once_naming_the_cause(secured, case, expected):
    base = {**os.environ, **secured.env("sasl_ssl"), "TIERSTREAM_PARTITIONS": str(PARTITIONS)}
    port = secured.security.sasl_ssl_port  # type: ignore[union-attr]
    env = {
        "kafka wrong password": {**base, "TIERSTREAM_KAFKA_SASL_PASSWORD": "not-the-password"},
        "kafka unknown CA": {**base, "TIERSTREAM_KAFKA_SSL_CAFILE": str(secured.certificates.other_ca)},  # type: ignore[union-attr]
        "kafka wrong hostname": {**base, "TIERSTREAM_BROKER": f"127.0.0.1:{port}"},
        "kafka mTLS without a client certificate": {
            k: v for k, v in {**os.environ, **secured.env("mtls")}.items()
            if k not in ("TIERSTREAM_KAFKA_SSL_CERTFILE", "TIERSTREAM_KAFKA_SSL_KEYFILE")},
        "kafka plaintext client on a TLS listener": _without_security(base),
        "redis wrong password": {**{k: v for k, v in base.items() if k != "TIERSTREAM_REDIS_PASSWORD_FILE"},
                                 "TIERSTREAM_REDIS_PASSWORD": "not-the-password"},
        "redis unknown CA": {**base, "TIERSTREAM_REDIS_SSL_CAFILE": str(secured.certificates.other_ca)},  # type: ignore[union-attr]
    }[case]
    said = _refused(secured, "worker", env)
    assert expected in said, said[-2000:]
    if case.startswith("redis"):  # the API, which talks to Redis alone, stops the same way
        assert expected in _refused(secured, "api", env)


def test_a_command_whose_login_is_refused_says_why(secured):
    """A command's Kafka client only says "Unable to bootstrap": the
    command looks for the reason and names it."""
    env = {**os.environ, **secured.env("sasl_ssl"), "TIERSTREAM_KAFKA_SASL_PASSWORD": "not-the-password"}
    said = _refused(secured, "tail", env, args=("tierstream.tier-changes", "--idle", "1"))
    assert "refused the SASL login of user 'tierstream-app'" in said
    assert "Traceback" not in said
