"""The metrics endpoints over a real Redis: the Lua aggregation agrees with
the in-memory fold, applies each step once, and the API answers JSON with
clear 400s; /openapi.json documents every route the app serves."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from api.server import build_api, serve
from cli.embedded import free_port, stop
from state.calendar import Calendar, parse_label
from state.metrics_report import fold, kpi_row
from state.metrics_store import MetricsStore
from state.rules import STAGES, load_rules
from tests.unit.test_api import start_redis
from tests.unit.test_event_time import feed
from tests.unit.test_kpis import EXAMPLE

PREFIX = "mtest:"
RULES = load_rules()


@pytest.fixture(scope="module")
async def api(tmp_path_factory):
    proc, redis_port = start_redis(tmp_path_factory.mktemp("redis"))
    port = free_port()
    app = build_api(f"redis://127.0.0.1:{redis_port}/0", PREFIX)
    server = asyncio.create_task(serve(app, "127.0.0.1", port))
    await asyncio.sleep(0.2)
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    try:
        yield session, MetricsStore(redis, PREFIX), app
    finally:
        await session.close()
        await redis.aclose()
        server.cancel()
        stop(proc)


async def get(session, path):
    async with session.get(path) as resp:
        assert resp.content_type == "application/json"
        return resp.status, orjson.loads(await resp.read())


async def test_redis_cells_agree_with_the_fold_and_each_step_counts_once(api):
    session, store, _ = api
    p, _ = feed(EXAMPLE, lateness=0)
    steps = p.facts[0]
    await store.set_partitions(1)
    await store.apply(0, p.swept_to[0], steps)
    first = await get(session, "/v1/metrics/kpis?grain=week&from=2024-01-01&to=2024-01-14")
    # Redelivered (the aggregator restarted) and re-derived (the worker did):
    # the same tags are skipped.
    await store.apply(0, p.swept_to[0], steps)
    await store.apply(0, p.swept_to[0], steps[len(steps) // 2:])
    assert await get(session, "/v1/metrics/kpis?grain=week&from=2024-01-01&to=2024-01-14") == first
    cells = {}
    for s in steps:
        fold(cells, s)
    months = ["2024-01"]
    want = [kpi_row("week", parse_label("week", w), cells, months, RULES.tier_names, list(STAGES), Calendar(),
                    closed_until_ms=p.swept_to[0], settle_ms=7 * 86_400_000) for w in ("2024-W01", "2024-W02")]
    assert first[0] == 200 and orjson.loads(orjson.dumps(want)) == first[1]["periods"]
    assert first[1]["periods"][0]["period"] == "2024-W01" and first[1]["periods"][0]["orders"] == 2
    status, tier = await get(session, "/v1/metrics/kpis?grain=week&from=2024-W01&to=2024-W02&tier=potential")
    assert status == 200 and [r["members"] for r in tier["periods"]] == [2, 2]
    status, flows = await get(session, "/v1/metrics/flows?grain=week&period=2024-W01")
    assert flows["matrix"] == {"-": {"low_value": 3}, "low_value": {"potential": 2}}
    status, cohorts = await get(session, "/v1/metrics/cohorts?grain=week&periods=2")
    assert status == 200 and cohorts["cohorts"][0]["cohort"] == "2024-W01"
    assert cohorts["cohorts"][0]["active"] == [3, 1]


@pytest.mark.parametrize("query, says", [
    ("kpis?grain=year", "grain"),
    ("kpis?grain=week&from=2024-13-01", "from="),
    ("kpis?grain=month&from=2024-05&to=2024-01", "after"),
    ("kpis?grain=day&from=2020-01-01&to=2024-01-01", "at most"),
    ("kpis?tier=gold", "unknown tier"),
    ("kpis?stage=sleeping", "unknown stage"),
    ("kpis?tier=potential&stage=new", "not both"),
    ("kpis?colour=red", "colour"),
    ("kpis?grain=day&grain=week", "once"),
    ("flows?grain=week&period=W5", "period="),
    ("cohorts?periods=0", "periods"),
    ("cohorts?by=last_seen", "by"),
])
async def test_bad_parameters_answer_400_naming_them(api, query, says):
    session, _, _ = api
    status, body = await get(session, f"/v1/metrics/{query}")
    assert status == 400 and says in body["error"]


async def test_openapi_documents_every_route_the_app_serves(api):
    session, _, app = api
    status, doc = await get(session, "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    served = {r.resource.canonical.replace(":.+", "") for r in app.router.routes() if r.method == "GET"}
    assert served - {"/openapi.json", "/metrics"} == set(doc["paths"])
    kpis = doc["paths"]["/v1/metrics/kpis"]["get"]
    assert {p["name"] for p in kpis["parameters"]} == {"grain", "from", "to", "tier", "stage"}
    assert "KpiRow" in doc["components"]["schemas"] and "SegmentFigures" in doc["components"]["schemas"]


async def test_prometheus_gauges_give_current_membership(api):
    session, _, _ = api
    async with session.get("/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200 and "# TYPE tierstream_segment_members gauge" in text
