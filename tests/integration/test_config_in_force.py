"""One configuration in force, everywhere (docs/config.md): a worker whose
rules differ from the version in force refuses to start and says how to
roll a change out; the snapshot, the cache rebuild, the API and the report
all use and name the same version, whatever their own shell says; and the
documented roll-out (stop, publish, start) puts a new version in force."""

import subprocess
import sys
import time

import orjson
import pytest

from cli.processes import stop
from state.rules import fixed_threshold_rules_text
from tests.integration.harness import Cluster, api_get, new_servers, produce, read_topic, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.broker_dependent('the config topic is read to its end and compacted on Kafka')]

DAY_MS = 86_400_000
START = 1_262_304_000_000  # 2010-01-01


@pytest.fixture(scope="module")
def cluster():
    servers = new_servers()
    c = Cluster(servers, extra_env={"TIERSTREAM_APP_ID": "config", "TIERSTREAM_CAMPAIGNS": "example"})
    try:
        c.start_api()
        c.start_worker()
        yield c
    finally:
        if c.worker is not None:
            c.stop_worker()
        stop(c.api)
        servers.stop()


def _run(cluster, *args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env={**cluster.env, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _version_in_force(cluster) -> str:
    return orjson.loads(cluster.cli("config", "show", "--json"))["version"]


async def test_one_version_in_force_refusal_tools_and_roll_out(cluster, tmp_path):
    await produce(cluster.servers.broker, [
        {"event_id": f"e{i}", "user_id": f"u{i % 7}", "type": "order", "ts": START + i * DAY_MS, "amount": 30 + i}
        for i in range(40)])
    await wait_until(lambda: read_topic(cluster.servers.broker, "tierstream.tier-changes"), timeout=120,
                     what="the first tier changes")
    first = _version_in_force(cluster)  # the worker published it before it took any event
    changes = await read_topic(cluster.servers.broker, "tierstream.tier-changes")
    assert {c["rules_version"] for c in changes} == {first}

    # A second worker with other rules refuses, names both versions and the way out.
    other = tmp_path / "other-rules.toml"
    other.write_text(fixed_threshold_rules_text().replace("at_risk_days = 30", "at_risk_days = 45", 1))
    started = time.monotonic()
    refused = _run(cluster, "worker", env={"TIERSTREAM_RULES": str(other)}, timeout=90)
    assert refused.returncode != 0, refused.stdout[-2000:]
    assert first in refused.stderr and "tierstream config publish" in refused.stderr, refused.stderr[-3000:]
    assert time.monotonic() - started < 60  # refused at start, not after joining the group
    assert _version_in_force(cluster) == first

    # Every tool evaluates with the version in force, even from a shell whose
    # files differ (here: other rules and no campaigns), and names it.
    shell = {"TIERSTREAM_RULES": str(other), "TIERSTREAM_CAMPAIGNS": ""}
    snap = _run(cluster, "snapshot", "--as-of", str(START + 60 * DAY_MS), "--out", str(tmp_path / "s.jsonl"),
                "--wait", "120", env=shell)
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert f"rules version {first}" in snap.stdout and f"using rules version {first}" in snap.stderr
    rebuilt = _run(cluster, "rebuild-cache", env=shell)
    assert rebuilt.returncode == 0 and f"rules version {first}" in rebuilt.stdout, rebuilt.stderr[-2000:]
    status, doc = await wait_until(lambda: _ok(api_get(cluster.api_port, "/v1/config")), what="GET /v1/config")
    assert doc["version"] == first and "win_back" in doc["campaigns"]
    report = _run(cluster, "report", "--api", f"http://127.0.0.1:{cluster.api_port}", env=shell)
    assert report.returncode == 0 and f"rules version {first} in force" in report.stdout, report.stderr[-2000:]
    _, campaigns = api_get(cluster.api_port, "/v1/campaigns")
    assert {c["name"] for c in campaigns["campaigns"]} >= {"win_back"}  # the workers' campaigns, not the shell's

    # A preview of the other rules: every user under both versions at once,
    # the version in force being what the workers decided; nothing published.
    before = len(await read_topic(cluster.servers.broker, "tierstream.tier-changes"))
    previewed = _run(cluster, "rules", "preview", str(other), "--format", "json", "--save", "ana", env=shell)
    assert previewed.returncode == 0, previewed.stderr[-2000:]
    doc = orjson.loads(previewed.stdout)
    # Saved, the API serves it as the command printed it.
    _, saved = api_get(cluster.api_port, f"/v1/rules/previews/{doc['new_version']}")
    assert {k: v for k, v in saved.items() if k not in ("saved_by", "saved_at_ms", "rules_source")} == doc
    assert saved["saved_by"] == "ana"
    _, segments = api_get(cluster.api_port, "/v1/segments")
    assert doc["old_version"] == first and doc["new_version"] != first and doc["users"] == 7
    assert {t: c["old"] for t, c in doc["tiers"].items() if c["old"]} == \
           {t: n for t, n in segments["tiers"].items() if n}
    assert sum(c["new"] for c in doc["stages"].values()) == 7
    assert len(await read_topic(cluster.servers.broker, "tierstream.tier-changes")) == before

    # The documented roll-out: stop every worker, publish, start with the new files.
    cluster.stop_worker()
    published = _run(cluster, "config", "publish", "--by", "test", env={"TIERSTREAM_RULES": str(other)})
    assert published.returncode == 0, published.stderr[-2000:]
    second = _version_in_force(cluster)
    assert second != first and f"rules version {second} in force (was {first})" in published.stdout
    cluster.extra_env["TIERSTREAM_RULES"] = str(other)
    cluster.start_worker()
    await wait_until(lambda: _ok_version(api_get(cluster.api_port, "/v1/config"), second), timeout=120,
                     what="the API to serve the new version")
    await produce(cluster.servers.broker, [
        {"event_id": "late-comer", "user_id": "fresh", "type": "order", "ts": START + 50 * DAY_MS, "amount": 99}])

    async def fresh_change():
        return [c for c in await read_topic(cluster.servers.broker, "tierstream.tier-changes")
                if c["user_id"] == "fresh"]

    [change] = await wait_until(fresh_change, timeout=120, what="a change under the new version")
    assert change["rules_version"] == second
    shown = cluster.cli("config", "show")
    assert f"rules version {second} in force" in shown and "published by test" in shown
    # The audit: both versions, newest first, who, and what changed.
    _, history = await wait_until(lambda: _ok(api_get(cluster.api_port, "/v1/config/history")),
                                  what="GET /v1/config/history")
    assert [v["version"] for v in history["versions"]] == [second, first]
    assert history["versions"][0]["published_by"] == "test"
    assert history["versions"][0]["changes"] == ["stages.at_risk_days: 30 -> 45"]
    assert history["versions"][1]["changes"] == []  # the first version: nothing to compare with
    assert orjson.loads(cluster.cli("config", "history", "--json")) == history


async def _ok(answer):
    return answer if answer[0] == 200 else None


async def _ok_version(answer, version):
    return answer[0] == 200 and answer[1]["version"] == version
