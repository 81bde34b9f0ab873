"""Campaigns on the real broker: a churn alert triggers the win-back
campaign, both arms reach tierstream.actions in the configured ratio, and
users who never send another event get their "not converted" outcome when
the window closes in event time; the API's results agree."""

import asyncio
import urllib.request

import orjson
import pytest

from cli.processes import stop
from tests.integration.harness import Cluster, new_servers, produce, read_topic, wait_until

pytestmark = pytest.mark.integration
USERS = 400


async def test_win_back_assigns_both_arms_and_closes_silent_windows(era):
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_CAMPAIGNS": "example", "TIERSTREAM_APP_ID": "campaigns"})
    try:
        cluster.start_worker()
        cluster.start_api()
        users = [f"u{i}" for i in range(USERS)]
        await produce(servers.broker, [era.event(u, "order", 0, 40.0) for u in users])
        # Only other users' activity moves time on: the 400 stay silent.
        await produce(servers.broker, era.clock_events(31))

        async def actions():
            found = [a for a in await read_topic(servers.broker, "tierstream.actions") if a["campaign"] == "win_back"]
            return found if len({a["user_id"] for a in found}) == USERS else None

        win = await wait_until(actions, timeout=90, what="a win-back assignment for every silent buyer")
        control = sum(a["arm"] == "control" for a in win)
        # Holdout 20% of 400: 80 expected, sd 8; a 4-sd band.
        assert 48 <= control <= 112 and USERS - control == sum(a["arm"] == "treatment" for a in win)
        assert all(a["trigger"] == "alert:at_risk" and a["ltv"] == 40.0 for a in win)
        assert not [o for o in await read_topic(servers.broker, "tierstream.campaign-outcomes")
                    if o["campaign"] == "win_back"]  # windows still open

        await produce(servers.broker, era.clock_events(62))  # 30-day windows closed; the 400 sent nothing

        async def outcomes():
            found = [o for o in await read_topic(servers.broker, "tierstream.campaign-outcomes")
                     if o["campaign"] == "win_back"]
            return found if len({o["action_id"] for o in found}) == USERS else None

        done = await wait_until(outcomes, timeout=90, what="an outcome for every win-back assignment")
        assert {o["action_id"] for o in done} == {a["action_id"] for a in win}
        assert not any(o["converted"] for o in done)

        def results():
            with urllib.request.urlopen(f"http://127.0.0.1:{cluster.api_port}/v1/campaigns/win_back") as r:
                return orjson.loads(r.read())

        async def settled():
            doc = await asyncio.to_thread(results)
            return doc if doc["treatment"]["assigned"] + doc["control"]["assigned"] == USERS else None

        doc = await wait_until(settled, timeout=60, what="the campaign results in the API")
        assert doc["control"]["assigned"] == control and doc["treatment"]["converted"] == 0
        assert doc["uplift"] == 0.0
        # The terminal views read the same API.
        api = f"http://127.0.0.1:{cluster.api_port}"
        shown = orjson.loads(cluster.cli("campaigns", "--format", "json", "--api", api))
        assert next(c for c in shown["campaigns"] if c["name"] == "win_back") == doc
        report = orjson.loads(cluster.cli("report", "--grain", "month", "--format", "json", "--api", api))
        months = {p["period"]: p for p in report["kpis"]["periods"]}
        assert sum(p["orders"] for p in months.values()) == USERS and report["cohorts"]["grain"] == "month"
        table = cluster.cli("report", "--grain", "week", "--api", api)
        assert "KPIs per week" in table and "Retention by first-seen week" in table
    finally:
        cluster.stop_worker()
        stop(cluster.api)
        servers.stop()
