"""The metrics endpoints over a real Redis: the Lua aggregation agrees with
the in-memory fold, applies each step once, and the API answers JSON with
clear 400s; /openapi.json documents every route the app serves."""

from __future__ import annotations

import orjson
import pytest

from state.calendar import Calendar, parse_label
from state.metrics_report import fold, kpi_row
from store.metrics_store import MetricsStore
from state.campaigns import load_campaigns
from state.rules import STAGES
from tests.support.servers import serving
from tests.support.engine import feed
from tests.support.metrics_example import ACQUISITION_COSTS, ACQUISITION_EXAMPLE, EXAMPLE
from tests.support.fixed_rules import fixed_rules

PREFIX = "mtest:"
RULES = fixed_rules()
CAMPAIGNS = load_campaigns(None, RULES.tier_names)


@pytest.fixture(scope="module")
async def api(tmp_path_factory):
    async with serving(tmp_path_factory, PREFIX, RULES.with_campaigns(CAMPAIGNS)) as (session, redis, app, _):
        store = MetricsStore(redis, PREFIX)
        await store.mark_from_start([0])  # as the aggregator does before applying a partition's facts
        yield session, store, app


async def get(session, path):
    async with session.get(path) as resp:
        assert resp.content_type == "application/json"
        return resp.status, orjson.loads(await resp.read())


async def test_redis_cells_agree_with_the_fold_and_each_step_counts_once(api):
    session, store, _ = api
    p, _ = feed(EXAMPLE, lateness=0)
    steps = p.steps[0]
    await store.set_partitions(1)
    await store.apply(0, p.swept_to(0), steps)
    first = await get(session, "/v1/metrics/kpis?grain=week&from=2024-01-01&to=2024-01-14")
    # Redelivered (the aggregator restarted) and re-derived (the worker did):
    # the same tags are skipped.
    await store.apply(0, p.swept_to(0), steps)
    await store.apply(0, p.swept_to(0), steps[len(steps) // 2:])
    assert await get(session, "/v1/metrics/kpis?grain=week&from=2024-01-01&to=2024-01-14") == first
    cells = {}
    for s in steps:
        fold(cells, s)
    months = ["2024-01"]
    want = [kpi_row("week", parse_label("week", w), cells, months, RULES.tier_names, list(STAGES), Calendar(),
                    closed_until_ms=p.swept_to(0), settle_ms=7 * 86_400_000) for w in ("2024-W01", "2024-W02")]
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
    ("acquisition?grain=day", "grain"),
    ("acquisition?by=campaign", "by"),
    ("acquisition?grain=month&from=2024-05&to=2024-01", "after"),
    ("acquisition?grain=week&from=2000-01-01&to=2024-01-01", "at most"),
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
    assert served - {"/openapi.json", "/metrics", "/", "/static/{name}"} == set(doc["paths"])
    kpis = doc["paths"]["/v1/metrics/kpis"]["get"]
    assert {p["name"] for p in kpis["parameters"]} == {"grain", "from", "to", "tier", "stage"}
    assert "KpiRow" in doc["components"]["schemas"] and "SegmentFigures" in doc["components"]["schemas"]


async def test_prometheus_gauges_give_current_membership(api):
    session, _, _ = api
    async with session.get("/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200 and "# TYPE tierstream_segment_members gauge" in text


async def test_campaign_results_come_from_the_outcomes(api):
    session, store, _ = api
    from tests.support.factories import raw
    from tests.support.engine import with_campaigns

    p = with_campaigns()
    for i in range(300):
        p.event(raw(f"c{i}", "order", 0, amount=50))
    for i in range(0, 300, 3):  # a third come back within the window
        p.event(raw(f"c{i}", "order", 40, amount=20))
    p.event(raw("clock", "view", 80))
    await store.apply(0, -1, p.steps[0])
    status, body = await get(session, "/v1/campaigns")
    [win] = [c for c in body["campaigns"] if c["name"] == "win_back"]
    assert status == 200 and win["treatment"]["assigned"] + win["control"]["assigned"] == 300
    assert win["open"] == {"treatment": 0, "control": 0}
    t, c = win["treatment"], win["control"]
    assert t["converted"] + c["converted"] == 100
    assert win["uplift"] == t["conversion_rate"] - c["conversion_rate"]
    lo, hi = win["uplift_ci95"]
    assert lo <= win["uplift"] <= hi and 0 <= win["p_value"] <= 1
    assert (await get(session, "/v1/campaigns/win_back"))[1] == win
    status, err = await get(session, "/v1/campaigns/nope")
    assert status == 404 and "win_back" in err["error"]


def test_openapi_and_docs_define_roi_and_revenue_share_alike():
    """One definition each (docs/metrics.md), used by the OpenAPI text: ROI
    from the measured incremental revenue, the value-per-conversion figure
    apart, revenue share of the order value."""
    from pathlib import Path

    from api.openapi import openapi_document

    schemas = openapi_document()["components"]["schemas"]
    campaign = schemas["CampaignResults"]["properties"]
    docs = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    assert "(incremental_revenue - cost) / cost" in campaign["roi"]["description"]
    assert "**(`incremental_revenue` − `cost`) / `cost`**" in docs
    assert "an assumption" in campaign["roi_at_value_per_conversion"]["description"] and "an assumption" in docs
    assert "cost_per_contact × treatment users" in campaign["cost"]["description"]
    share = schemas["SegmentFigures"]["properties"]["revenue_share"]["description"]
    assert "order value" in share and "before refunds" in share
    assert "**`revenue_share` = the segment's order amounts in P / every order's amount" in docs


async def test_healthz_says_how_far_each_partitions_decisions_trail(tmp_path_factory):
    from api.models import Health
    from store.membership import MembershipWriter

    async with serving(tmp_path_factory, "htest:") as (session, redis, _, _):
        status, body = await get(session, "/healthz")
        assert status == 200 and body == {"status": "ok", "decisions_behind_seconds": None, "partitions": {}}
        await MembershipWriter(redis, "htest:").write_progress({0: 0, 1: 86_400_000}, 1_700_000_000_000)
        status, body = await get(session, "/healthz")
        Health.model_validate(body)
        assert status == 200 and body["decisions_behind_seconds"] == 86400.0
        assert body["partitions"] == {
            "0": {"behind_seconds": 0.0, "reported_at": "2023-11-14T22:13:20+00:00"},
            "1": {"behind_seconds": 86400.0, "reported_at": "2023-11-14T22:13:20+00:00"}}


async def test_acquisition_over_redis_is_the_worked_example(tmp_path_factory):
    """docs/metrics.md's worked example of LTV against CAC through the real
    path: the steps' facts by the Lua script, the cost statements by theirs
    (a restatement replaces, an older one redelivered does not undo it),
    the figures by the API."""
    from stream.costs import parse_statement

    p, _ = feed(ACQUISITION_EXAMPLE, lateness=86_400_000)
    async with serving(tmp_path_factory, "acq:", RULES) as (session, redis, _app, _):
        store = MetricsStore(redis, "acq:")
        await store.mark_from_start([0])
        await store.set_partitions(1)
        await store.apply(0, p.swept_to(0), p.steps[0])
        first, second = (parse_statement(orjson.dumps(c)) for c in ACQUISITION_COSTS)
        await store.apply_costs([(first.key, 0, first.cents), (second.key, 1, second.cents)])
        await store.apply_costs([(first.key, 0, first.cents)])  # redelivered: older than what is in force
        status, doc = await get(session, "/v1/metrics/acquisition?grain=month&by=cohort&from=2024-01&to=2024-01")
        assert status == 200, doc
        social = next(r for r in doc["rows"] if r["channel"] == "social")
        assert doc["observed_through"] == "2024-04-28"
        assert (social["new_customers"], social["spend"], social["cac"], social["ltv"]["30"],
                social["payback_days"]) == (2, 80.0, 40.0, 55.0, 20)
        status, by_channel = await get(session, "/v1/metrics/acquisition?grain=month&by=channel&from=2024-01&to=2024-01")
        assert status == 200 and {r["channel"] for r in by_channel["rows"]} == {"social", None}
