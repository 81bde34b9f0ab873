"""The OpenAPI document of the read API, generated from api.models.

Each route is declared once here with its query model and its answer
model; `build_api` registers the handlers from the same table, and a test
checks that every route the app serves is documented."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import models as m

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    path: str  # OpenAPI form: {user_id}
    summary: str
    answer: type[BaseModel]
    query: type[BaseModel] | None = None
    path_params: tuple[str, ...] = ()
    content_type: str = "application/json"


ROUTES = (
    Route("/v1/users/{user_id}", "A user's tier, stage, scores and figures", m.UserDoc, path_params=("user_id",)),
    Route("/v1/segments", "Member counts of every tier and stage", m.SegmentsResponse),
    Route("/v1/segments/{name}/members", "A page of a tier's or stage's member ids (cursor paging)",
          m.MembersResponse, path_params=("name",)),
    Route("/v1/metrics/kpis", "KPIs per period, overall or for one tier or stage", m.KpisResponse, m.KpisQuery),
    Route("/v1/metrics/flows", "Transitions between tiers in one period", m.FlowsResponse, m.FlowsQuery),
    Route("/v1/metrics/cohorts", "Retention of first-seen or first-order cohorts", m.CohortsResponse,
          m.CohortsQuery),
    Route("/v1/metrics/acquisition", "LTV against CAC per acquisition channel or cohort, with payback",
          m.AcquisitionResponse, m.AcquisitionQuery),
    Route("/v1/campaigns", "Every configured campaign's arms, uplift and interval", m.CampaignsResponse),
    Route("/v1/campaigns/{name}", "One campaign's results", m.CampaignResults, path_params=("name",)),
    Route("/v1/changes/{user_id}", "A user's latest tier changes and churn alerts (the dashboard's user lookup)",
          m.UserChanges, path_params=("user_id",)),
    Route("/v1/feed", "Live feed of tier changes and churn alerts as they are published (server-sent events)",
          m.FeedEvent, content_type="text/event-stream"),
    Route("/v1/scores/thresholds", "The score thresholds in force: fixed, or the population's latest quantile "
          "cut points", m.ThresholdsDoc),
    Route("/v1/config", "The configuration in force: the rules and campaigns every worker runs, with their "
          "version (404 until a worker has published one)", m.ConfigDoc),
    Route("/v1/config/history", "Every version put in force, newest first: when, by whom, what it changed",
          m.ConfigHistory),
    Route("/v1/rules/previews", "Rules previews saved by `tierstream rules preview --save`, newest first",
          m.PreviewList),
    Route("/v1/rules/previews/{version}", "One saved rules preview: counts now and under the new version, the "
          "flow matrix, the campaigns the moves would trigger (404 if none was saved)", m.PreviewDoc,
          path_params=("version",)),
    Route("/healthz", "Redis reachable, and how far each partition's decisions trail the events it has read", m.Health),
)


def _parameters(route: Route) -> list[dict[str, Any]]:
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in route.path_params]
    if route.path == "/v1/segments/{name}/members":
        params += [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        ]
    if route.query is not None:
        schema = route.query.model_json_schema(by_alias=True, ref_template=REF)
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            description = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                param["description"] = description
            params.append(param)
    return params


def openapi_document() -> dict[str, Any]:
    answers = [r.answer for r in ROUTES] + [m.ErrorDoc]
    _, defs = models_json_schema([(a, "serialization") for a in answers], ref_template=REF, by_alias=True)
    paths: dict[str, Any] = {}
    for r in ROUTES:
        paths[r.path] = {"get": {
            "summary": r.summary,
            "parameters": _parameters(r),
            "responses": {
                "200": {"description": "OK", "content": {r.content_type: {"schema": {"$ref": REF.format(model=r.answer.__name__)}}}},
                "4XX": {"description": "Bad request or not found",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorDoc")}}}},
                "503": {"description": "Redis unreachable",
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorDoc")}}}},
            },
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tierstream read API", "version": "1",
                 "description": "Segment membership and operator metrics, served from Redis."},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }
