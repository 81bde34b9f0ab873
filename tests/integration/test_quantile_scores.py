"""Quantile scores on the real broker: two workers sharing the partitions
decide exactly what one process replaying the same history decides (the
same tier changes, ids and payloads, the cut points included); the history
starts in 1995 and carries a field the contract does not know, and nothing
is dead-lettered; the API serves the cut points in force. The churn model
is on too: each worker fits it from the same reports, so its figures in
the records match the one-process replay's."""

import asyncio
import csv
from datetime import UTC, datetime

import pytest

from cli.processes import stop
from cli.snapshot import snapshot_rows
from tests.integration.harness import Cluster, api_get, new_servers, produce, read_topic, two_workers, wait_until
from tests.support.quantile_shop import QUANTILE_RULES, kafka_partition, run_shop, small_ticket_shop, tier_changes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.broker_dependent("two workers share partitions through the broker's group coordinator; idle partitions are found from the broker's high-water marks")]
START_1995 = int(datetime(1995, 1, 1, tzinfo=UTC).timestamp() * 1000)


async def test_two_workers_decide_what_a_replay_decides(tmp_path):
    bodies = small_ticket_shop(users=1000, events=10_000, days=100, seed=11, start_ms=START_1995)
    for b in bodies:
        if b["type"] == "order":
            b["quantity"] = 2  # a field the contract does not know: dropped and counted, never dead-lettered
    reference, reference_outputs = run_shop(bodies)
    expected = tier_changes(reference_outputs)
    assert expected and not reference.engine.waiting

    rules = tmp_path / "rules.toml"
    rules.write_text(QUANTILE_RULES)
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_RULES": str(rules), "TIERSTREAM_APP_ID": "quantiles"})
    workers = []
    try:
        cluster.start_api()
        workers += await two_workers(cluster, "quantile")
        await produce(servers.broker, bodies)

        async def all_decided():
            found = tier_changes_on_topic(await read_topic(servers.broker, "tierstream.tier-changes"))
            return found if set(found) >= set(expected) else None

        try:
            found = await wait_until(all_decided, timeout=240, what="every tier change the replay made")
        except AssertionError:
            got = tier_changes_on_topic(await read_topic(servers.broker, "tierstream.tier-changes"))
            missing = sorted((c["at_ms"], c["user_id"]) for k, c in expected.items() if k not in got)
            print("missing", len(missing), missing[:5], "extra", len(set(got) - set(expected)),
                  "last expected", max(c["at_ms"] for c in expected.values()))
            raise
        assert found == expected  # ids and payloads, the cut points each decision used included
        assert await read_topic(servers.broker, "tierstream.events.dlq") == []
        assert any(c["thresholds"] is not None for c in found.values())
        # The churn model, fitted in each worker from the same reports: the
        # same P(alive) in their records as in the one-process replay.
        assert sum(c.get("churn", {}).get("p_alive") is not None for c in found.values()) > 100

        async def thresholds():
            status, doc = await asyncio.to_thread(api_get, cluster.api_port, "/v1/scores/thresholds")
            return doc if status == 200 and doc["latest"] == reference.engine.book.latest().summary() else None

        doc = await wait_until(thresholds, timeout=60, what="the API to serve the latest cut points")
        assert doc["quantiles"] == ["r", "f", "m"] and doc["latest"]["customers"]["m"] > 500
        assert doc["latest"]["churn_model"]["customers"] > 500 and doc["churn_model"] is True

        # A user's figures through the API carry the churn model's too.
        buyer = next(c["user_id"] for c in found.values() if c.get("churn", {}).get("p_alive") is not None)
        status, user = await asyncio.to_thread(api_get, cluster.api_port, f"/v1/users/{buyer}")
        assert status == 200 and 0 < user["churn"]["p_alive"] < 1 and user["churn"]["horizon_days"] == 90

        # `tierstream snapshot` reads the population topic and scores as the
        # workers did: the one-process replay's membership and churn figures.
        as_of = max(b["ts"] for b in bodies)
        out = tmp_path / "snapshot.csv"
        cluster.cli("snapshot", "--as-of", str(as_of), "--out", str(out), "--wait", "120", timeout=200)
        with out.open() as f:
            rows = list(csv.DictReader(f))
        want = [{k: "" if v is None else str(v) for k, v in r.items()}
                for r in snapshot_rows(dict(reference.store), as_of, reference.rules)]
        assert rows == want and sum(r["p_alive"] != "" for r in rows) > 100
    finally:
        for w in workers:
            stop(w, timeout=30)
        stop(cluster.api)
        servers.stop()


async def test_partitions_without_events_follow_the_others_on_the_real_broker(tmp_path):
    # Quantile scores and the churn model, the replay clock, and every customer on
    # one partition of four: the three idle ones must follow its event
    # time, else no cut point would ever settle and nothing past the first
    # day would be decided.
    bodies = [b for b in small_ticket_shop(users=600, events=6000, days=60, seed=5)
              if kafka_partition(b["user_id"], 4) == 0]
    reference, reference_outputs = run_shop(bodies, partitions=4)
    expected = tier_changes(reference_outputs)
    assert expected and not reference.engine.waiting and reference.engine.book.latest() is not None

    rules = tmp_path / "rules.toml"
    rules.write_text(QUANTILE_RULES)
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_RULES": str(rules), "TIERSTREAM_APP_ID": "idle",
                                          "TIERSTREAM_IDLE_PARTITION_SECONDS": "2"})
    try:
        cluster.start_api()
        cluster.start_worker()
        await produce(servers.broker, bodies)

        async def all_decided():
            found = tier_changes_on_topic(await read_topic(servers.broker, "tierstream.tier-changes"))
            return found if set(found) >= set(expected) else None

        found = await wait_until(all_decided, timeout=240, what="every tier change the replay made")
        assert found == expected
        assert "follows the other partitions' event time" in (servers.workdir / "worker-1.log").read_text()

        async def thresholds():
            status, doc = await asyncio.to_thread(api_get, cluster.api_port, "/v1/scores/thresholds")
            return doc if status == 200 and doc["latest"] == reference.engine.book.latest().summary() else None

        await wait_until(thresholds, timeout=60, what="the API to serve the latest cut points")
    finally:
        cluster.stop_worker()
        stop(cluster.api)
        servers.stop()


def tier_changes_on_topic(records):
    return {r["change_id"]: r for r in records}
