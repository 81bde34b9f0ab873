"""Read API handlers for the operator metrics (docs/metrics.md).

Every figure is computed from Redis cells by state.metrics_report; these
handlers only validate the query (api.models) and pick the periods."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.config import rules_in_force
from api.models import AcquisitionQuery, CohortsQuery, FlowsQuery, KpisQuery
from state.calendar import Calendar, label, parse_label
from state import acquisition_report
from store.metrics_store import MetricsStore
from state.model import DAY_MS
from state.rules import STAGES
from state.uplift import Arm, summarize

STORE = web.AppKey("metrics_store", MetricsStore)
MAX_PERIODS = 1000  # per request: bounds the Redis reads of one answer
DEFAULT_PERIODS = 30
DEFAULT_COHORTS = {"week": 26, "month": 12}  # acquisition cohorts: about half a year, a year
MAX_COHORTS = 260  # five years of weeks: bounds the Redis reads of one answer


class BadQuery(ValueError):
    """The query cannot be answered; the message says what to change."""


def _json(body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _query(model: type[BaseModel], request: web.Request) -> Any:
    params = dict(request.query)
    if len(params) != len(request.query):
        raise BadQuery("each query parameter may be given once")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "query"
        raise BadQuery(f"{where}: {first['msg']}") from None


def _period(grain: str, text: str, name: str) -> int:
    try:
        return parse_label(grain, text)
    except ValueError:
        examples = {"day": "2024-03-05", "week": "2024-W10 or a date", "month": "2024-03 or a date"}[grain]
        raise BadQuery(f"{name}={text!r} is not a {grain} (e.g. {examples})") from None


async def _latest(request: web.Request, grain: str, latest: int | None = None) -> int | None:
    latest = await request.app[STORE].latest_ms() if latest is None else latest
    if latest is None:
        return None
    return Calendar((await rules_in_force(request)).metrics.timezone).periods(latest)[("day", "week", "month").index(grain)]


async def get_kpis(request: web.Request) -> web.Response:
    q: KpisQuery = _query(KpisQuery, request)
    rules = await rules_in_force(request)
    if q.tier is not None and q.tier not in rules.tier_names:
        raise BadQuery(f"unknown tier {q.tier!r}; tiers are {', '.join(rules.tier_names)}")
    if q.stage is not None and q.stage not in STAGES:
        raise BadQuery(f"unknown stage {q.stage!r}; stages are {', '.join(STAGES)}")
    if q.tier is not None and q.stage is not None:
        raise BadQuery("give tier or stage, not both")
    tz = rules.metrics.timezone
    # One read of the watermark serves the whole answer (and the page's "as of").
    as_of = await request.app[STORE].latest_ms()
    start = _period(q.grain, q.from_, "from") if q.from_ else None
    to = _period(q.grain, q.to, "to") if q.to else await _latest(request, q.grain, as_of)
    if to is None:
        return _json({"grain": q.grain, "timezone": tz, "tier": q.tier, "stage": q.stage, "as_of_ms": as_of,
                      "periods": []})
    if start is None:
        start = to - DEFAULT_PERIODS + 1
    if start > to:
        raise BadQuery(f"from ({q.from_}) is after to ({q.to or 'the latest period'})")
    if to - start + 1 > MAX_PERIODS:
        raise BadQuery(f"at most {MAX_PERIODS} periods per request; narrow from/to or use a longer grain")
    rows = await request.app[STORE].kpis(q.grain, range(start, to + 1), rules.tier_names, list(STAGES),
                                         Calendar(tz), settle_ms=rules.metrics.conversion_days * DAY_MS)
    if q.tier or q.stage:
        kind, name = ("tiers", q.tier) if q.tier else ("stages", q.stage)
        rows = [{"period": r["period"], "start": r["start"], "end": r["end"], "closed": r["closed"], **r[kind][name]}
                for r in rows]
    return _json({"grain": q.grain, "timezone": tz, "tier": q.tier, "stage": q.stage, "as_of_ms": as_of,
                  "periods": rows})


async def get_flows(request: web.Request) -> web.Response:
    q: FlowsQuery = _query(FlowsQuery, request)
    rules = await rules_in_force(request)
    index = _period(q.grain, q.period, "period") if q.period else await _latest(request, q.grain)
    if index is None:
        raise web.HTTPNotFound(text="no metrics yet: no event has been processed")
    [row] = await request.app[STORE].kpis(q.grain, [index], rules.tier_names, list(STAGES),
                                          Calendar(rules.metrics.timezone))
    matrix: dict[str, dict[str, int]] = {}
    for f in row["flows"]:
        matrix.setdefault(f["from"] or "-", {})[f["to"]] = f["users"]
    return _json({"grain": q.grain, "period": row["period"], "timezone": rules.metrics.timezone,
                  "flows": row["flows"], "matrix": matrix})


async def get_cohorts(request: web.Request) -> web.Response:
    q: CohortsQuery = _query(CohortsQuery, request)
    latest = await _latest(request, q.grain)
    cohorts = [] if latest is None else list(range(latest - q.periods + 1, latest + 1))
    rows = await request.app[STORE].cohorts(q.by, q.grain, cohorts, q.periods, latest)
    return _json({"grain": q.grain, "by": q.by, "timezone": (await rules_in_force(request)).metrics.timezone, "cohorts": rows})


async def get_acquisition(request: web.Request) -> web.Response:
    q: AcquisitionQuery = _query(AcquisitionQuery, request)
    rules = await rules_in_force(request)
    store = request.app[STORE]
    calendar = Calendar(rules.metrics.timezone)
    as_of = await store.latest_ms()
    closed = await store.closed_until()
    body: dict[str, Any] = {"grain": q.grain, "by": q.by, "timezone": rules.metrics.timezone, "as_of_ms": as_of,
                            "cohorts": [], "observed_through": None, "rows": []}
    to = _period(q.grain, q.to, "to") if q.to else await _latest(request, q.grain, as_of)
    if to is None:
        return _json(body)
    start = _period(q.grain, q.from_, "from") if q.from_ else to - (DEFAULT_COHORTS[q.grain] - 1)
    if start > to:
        raise BadQuery(f"from ({q.from_}) is after to ({q.to or 'the latest cohort'})")
    if to - start + 1 > MAX_COHORTS:
        raise BadQuery(f"at most {MAX_COHORTS} cohorts per request; narrow from/to or use months")
    cohorts = list(range(start, to + 1))
    cells = await store.hashes(f"acq:{q.grain}:{label(q.grain, c)}" for c in cohorts)
    observed = calendar.day(closed) if closed is not None else None
    compute = acquisition_report.by_channel if q.by == "channel" else acquisition_report.by_cohort
    body.update(cohorts=[label(q.grain, c) for c in cohorts],
                observed_through=None if observed is None else label("day", observed - 1),
                rows=compute(q.grain, cohorts, cells, await store.spend(), rules.tier_names, observed))
    return _json(body)


def _campaign_doc(campaign: Any, cells: dict[str, int]) -> dict[str, Any]:
    def arm(name: str) -> Arm:
        return Arm(cells.get(f"closed:{name}", 0), cells.get(f"converted:{name}", 0),
                   cells.get(f"revenue:{name}", 0) / 100, cells.get(f"revenue_sq:{name}", 0) / 10_000)

    # Rates are over assignments whose window has closed: an open window
    # may still convert.
    results = summarize(arm("treatment"), arm("control"), campaign.cost_per_contact, campaign.value_per_conversion)
    return {
        "name": campaign.name,
        "trigger": next(f"{k}:{v}" for k, v in campaign.trigger.model_dump(by_alias=True).items() if v is not None),
        "holdout": campaign.holdout,
        "goal": campaign.goal.model_dump(),
        "assigned": {a: cells.get(f"assigned:{a}", 0) for a in ("treatment", "control")},
        "open": {a: cells.get(f"assigned:{a}", 0) - cells.get(f"closed:{a}", 0) for a in ("treatment", "control")},
        **results,
    }


async def get_campaigns(request: web.Request) -> web.Response:
    rules = await rules_in_force(request)
    found = await request.app[STORE].hashes(f"campaign:{c.name}" for c in rules.campaigns)
    return _json({"campaigns": [_campaign_doc(c, found.get(f"campaign:{c.name}", {})) for c in rules.campaigns]})


async def get_campaign(request: web.Request) -> web.Response:
    rules = await rules_in_force(request)
    name = request.match_info["name"]
    campaign = rules.campaigns_by_name.get(name)
    if campaign is None:
        known = ", ".join(rules.campaigns_by_name) or "none configured (TIERSTREAM_CAMPAIGNS)"
        raise web.HTTPNotFound(text=f"unknown campaign {name!r}; campaigns: {known}")
    found = await request.app[STORE].hashes([f"campaign:{name}"])
    return _json(_campaign_doc(campaign, found.get(f"campaign:{name}", {})))
