"""A rules roll-out on a running cluster (state.rollout): two workers share
the partitions, half a history is in, `tierstream rules apply --at`
proposes a new version, and the rest of the history follows. Every
partition switches at that event time, every user is re-assessed there
once, and the records (ids and payloads) are those of one process
replaying the whole history with the same roll-out: the run without
faults the crash tests compare with too. A roll-out asked for a time the
partitions have passed is refused, and changes nothing."""

import re
import subprocess
import sys

import orjson
import pytest

from cli.processes import stop
from state.config import ConfigDocument
from state.model import DAY_MS
from tests.integration.harness import Cluster, api_get, new_servers, produce, read_topic, two_workers, wait_until
from stream.settings import Settings
from tests.support.quantile_shop import (
    QUANTILE_RULES, Rollout, kafka_partition, run_shop, small_ticket_shop, tier_changes,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.kafka_half("two workers sharing partitions through the group coordinator of the broker "
                                     "production runs (test_quantile_scores does it on both); the Tansu half is "
                                     "the longer")]

# "Dormant after 45 days without an order, not 180": the change operators make.
NEW_RULES = QUANTILE_RULES.replace('name = "dormant"\ndays_since_order_min = 180',
                                   'name = "dormant"\ndays_since_order_min = 45')


def _cli(cluster, *args):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=cluster.env, capture_output=True,
                          text=True, timeout=200)


def rollout_case():
    """A history, the part produced before the roll-out, the rest, and the
    switch. It ends with a login on every partition, an allowed lateness and
    a day after its last event: each partition then reaches the end on its
    own events, and the workers run without idle partitions following the
    others (TIERSTREAM_IDLE_PARTITION_SECONDS), which would make their
    decisions depend on the pause between the two parts (the replay clock's
    rule, docs/scores.md)."""
    bodies = small_ticket_shop(users=800, events=8000, days=100, seed=13)
    first, last = min(b["ts"] for b in bodies), max(b["ts"] for b in bodies)
    closers: dict[int, str] = {}
    for n in range(1000):
        closers.setdefault(kafka_partition(f"closer-{n}", 4), f"closer-{n}")
    end = last + Settings().allowed_lateness_ms + DAY_MS
    bodies += [{"event_id": f"close-{u}", "user_id": u, "type": "login", "ts": end} for _, u in sorted(closers.items())]
    at = (first // DAY_MS + 60) * DAY_MS  # a cadence boundary, 60 days in
    early = [b for b in bodies if b["ts"] < at - 10 * DAY_MS]
    return bodies, early, bodies[len(early):], at


async def test_a_roll_out_on_two_workers_decides_what_a_replay_with_it_decides(tmp_path):
    assert NEW_RULES != QUANTILE_RULES
    new = ConfigDocument(NEW_RULES, None).rules()
    bodies, early, late, at = rollout_case()
    reference, outputs = run_shop(bodies, rollout=Rollout(step=0, rules=new, at_ms=at))
    expected = tier_changes(outputs)
    moved = {k: c for k, c in expected.items() if c.get("reason") == "rules_changed"}
    assert moved and {c["at_ms"] for c in moved.values()} == {at}
    assert len({c["user_id"] for c in moved.values()}) == len(moved)  # each user re-assessed once

    rules = tmp_path / "rules.toml"
    rules.write_text(QUANTILE_RULES)
    new_file = tmp_path / "new-rules.toml"
    new_file.write_text(NEW_RULES)
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_RULES": str(rules), "TIERSTREAM_APP_ID": "rollout",
                                          "TIERSTREAM_IDLE_PARTITION_SECONDS": "3600"})
    workers = []
    try:
        cluster.start_api()
        workers += await two_workers(cluster, "rollout")
        await produce(servers.broker, early)
        before = {k: c for k, c in expected.items() if c["at_ms"] < at - 12 * DAY_MS}

        async def first_half_decided():
            found = {c["change_id"] for c in await read_topic(servers.broker, "tierstream.tier-changes")}
            return found >= set(before) or None

        await wait_until(first_half_decided, timeout=180, what="the first half's tier changes")

        # Asked for a time behind what the partitions decided: refused, nothing changes.
        behind = (min(b["ts"] for b in bodies) // DAY_MS + 5) * DAY_MS
        refused = _cli(cluster, "rules", "apply", str(new_file), "--by", "test", "--at", str(behind))
        assert refused.returncode != 0 and "refused" in refused.stderr, refused.stderr
        applied = _cli(cluster, "rules", "apply", str(new_file), "--by", "ana", "--at", str(at))
        assert applied.returncode == 0, applied.stderr
        print(applied.stdout)
        assert "in force from event time" in applied.stdout and str(at) in applied.stdout

        await produce(servers.broker, late)

        async def all_decided():
            found = {c["change_id"]: c for c in await read_topic(servers.broker, "tierstream.tier-changes")}
            return found if set(found) >= set(expected) else None

        try:
            found = await wait_until(all_decided, timeout=240, what="every tier change the replay made")
        except AssertionError:
            got = {c["change_id"]: c for c in await read_topic(servers.broker, "tierstream.tier-changes")}
            missing = sorted((c["at_ms"], c["user_id"], c.get("reason")) for k, c in expected.items() if k not in got)
            extra = sorted((c["at_ms"], c["user_id"], c.get("reason")) for k, c in got.items() if k not in expected)
            print("missing", len(missing), missing[:5], "extra", len(extra), extra[:5], "switch at", at)
            for n in (1, 2):
                print((servers.workdir / f"rollout-worker-{n}.log").read_text()[-3000:])
            raise
        assert found == expected  # ids and payloads: the same switch, at the same event time, everywhere
        assert {c["rules_version"] for c in found.values() if c["at_ms"] >= at} == {new.version}
        assert new.version not in {c["rules_version"] for c in found.values() if c["at_ms"] < at}
        assert await read_topic(servers.broker, "tierstream.events.dlq") == []
        logs = "".join((servers.workdir / f"rollout-worker-{n}.log").read_text() for n in (1, 2))
        assert len(re.findall(rf"rules version {new.version} in force from {at}; re-assessing", logs)) == 4

        # The audit: both proposals, who made them, and what became of each.
        history = orjson.loads(cluster.cli("config", "history", "--json"))["versions"]
        assert [v["rollout"]["status"] for v in history[:2]] == ["in_force", "refused"]
        assert history[0]["published_by"] == "ana" and history[0]["rollout"]["in_force_from_ms"] == at
        assert any("days_since_order_min: 180 -> 45" in c for c in history[0]["changes"])

        async def api_history():
            status, doc = api_get(cluster.api_port, "/v1/config/history")
            return doc if status == 200 and doc["versions"][0].get("rollout", {}).get("status") == "in_force" \
                else None

        await wait_until(api_history, timeout=60, what="the API to serve the roll-out in the history")
        status, doc = api_get(cluster.api_port, "/v1/config")
        assert status == 200 and doc["version"] == new.version

        # With no worker running, a proposal is never answered; withdrawn, it is refused and holds no one.
        assert "no roll-out is open" in _cli(cluster, "rules", "withdraw", "--by", "bo").stderr
        for w in workers:
            stop(w, timeout=30)
        third = tmp_path / "third.toml"
        third.write_text(NEW_RULES.replace("days_since_order_min = 45", "days_since_order_min = 90"))
        unanswered = _cli(cluster, "rules", "apply", str(third), "--by", "cy", "--wait", "3")
        assert unanswered.returncode != 0 and "not every partition answered" in unanswered.stderr
        busy = _cli(cluster, "rules", "apply", str(third), "--by", "cy", "--wait", "3")
        assert busy.returncode != 0 and "has not settled yet" in busy.stderr
        withdrawn = _cli(cluster, "rules", "withdraw", "--by", "bo")
        assert withdrawn.returncode == 0 and "withdrawn by bo" in withdrawn.stdout, withdrawn.stderr
        history = orjson.loads(cluster.cli("config", "history", "--json"))["versions"]
        assert history[0]["rollout"]["status"] == "refused" and "withdrawn by bo" in history[0]["rollout"]["reason"]
    finally:
        for w in workers:
            stop(w, timeout=30)
        stop(cluster.api)
        servers.stop()
