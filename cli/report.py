"""`tierstream report`: the KPI table, the tier flows and the cohort triangle
in the terminal, from the read API (so it needs no Redis or worker access).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

KPI_COLUMNS = (
    ("period", "period"), ("active_users", "active"), ("new_users", "new"), ("buyers", "buyers"),
    ("orders", "orders"), ("revenue", "revenue"), ("aov", "AOV"), ("repurchase_rate", "repurchase"),
    ("signup_conversion", "signup→order"), ("cart_conversion", "cart→order"), ("entered_churned", "churned"),
    ("reactivated", "reactivated"), ("churn_rate", "churn rate"), ("late_events", "late"),
)


class ReportError(RuntimeError):
    """The API could not answer; the message says why."""


def fetch(api: str, path: str, **params: Any) -> dict[str, Any]:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    url = f"{api.rstrip('/')}{path}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise ReportError(f"{url}: {exc.code} {reason}") from None
    except urllib.error.URLError as exc:
        raise ReportError(f"{url}: {exc.reason}; is `tierstream api` running (TIERSTREAM_API_PORT)?") from None


RATIOS = {"repurchase_rate", "signup_conversion", "cart_conversion", "churn_rate", "revenue_share"}


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return "–"
    if key in RATIOS:
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def build(api: str, grain: str, start: str | None, end: str | None) -> dict[str, Any]:
    kpis = fetch(api, "/v1/metrics/kpis", grain=grain, **{"from": start, "to": end})
    last = kpis["periods"][-1]["period"] if kpis["periods"] else None
    flows = fetch(api, "/v1/metrics/flows", grain=grain, period=last) if last else None
    cohort_grain = "month" if grain == "month" else "week"
    cohorts = fetch(api, "/v1/metrics/cohorts", grain=cohort_grain, by="first_seen", periods=8)
    return {"kpis": kpis, "flows": flows, "cohorts": cohorts, "rules_version": rules_version(api)}


def rules_version(api: str) -> str | None:
    """The rules version in force, as the API serves it; None before a worker published one."""
    try:
        return fetch(api, "/v1/config")["version"]
    except ReportError:
        return None


def render(report: dict[str, Any], fmt: str, console: Console) -> None:
    kpis = report["kpis"]
    if fmt == "json":
        sys.stdout.write(json.dumps(report) + "\n")  # plain: for scripts and jq, never wrapped
        return
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([k for k, _ in KPI_COLUMNS])
        for row in kpis["periods"]:
            writer.writerow(["" if row[k] is None else row[k] for k, _ in KPI_COLUMNS])
        sys.stdout.write(out.getvalue())
        return
    table = Table(title=f"KPIs per {kpis['grain']} ({kpis['timezone']})", header_style="bold")
    for _, title in KPI_COLUMNS:
        table.add_column(title, justify="left" if title == "period" else "right")
    for row in kpis["periods"]:
        table.add_row(*(_cell(row[k], k) + ("" if row["closed"] or k != "period" else " *") for k, _ in KPI_COLUMNS))
    console.print(table)
    console.print("[dim]* still open: the watermark has not passed its end[/dim]")
    if report.get("rules_version"):
        console.print(f"[dim]rules version {report['rules_version']} in force[/dim]")
    if kpis["periods"]:
        last = kpis["periods"][-1]
        tiers = Table(title=f"Tiers at the end of {last['period']}", header_style="bold")
        for title in ("tier", "members", "revenue", "share", "mean LTV", "AOV"):
            tiers.add_column(title, justify="left" if title == "tier" else "right")
        for name, t in last["tiers"].items():
            tiers.add_row(name, _cell(t["members"]), _cell(t["revenue"]), _cell(t["revenue_share"], "revenue_share"),
                          _cell(t["mean_ltv"]), _cell(t["aov"]))
        console.print(tiers)
    flows = report["flows"]
    if flows and flows["matrix"]:
        targets = sorted({to for row in flows["matrix"].values() for to in row})
        matrix = Table(title=f"Tier flows in {flows['period']} (from ↓ to →)", header_style="bold")
        matrix.add_column("from")
        for to in targets:
            matrix.add_column(to, justify="right")
        for src in sorted(flows["matrix"]):
            matrix.add_row("(new)" if src == "-" else src, *(_cell(flows["matrix"][src].get(to, 0)) for to in targets))
        console.print(matrix)
    cohorts = report["cohorts"]
    if cohorts["cohorts"]:
        tri = Table(title=f"Retention by first-seen {cohorts['grain']}", header_style="bold")
        tri.add_column("cohort")
        tri.add_column("size", justify="right")
        width = max(len(c["retention"]) for c in cohorts["cohorts"])
        for k in range(width):
            tri.add_column(f"+{k}", justify="right")
        for c in cohorts["cohorts"]:
            cells = ["–" if r is None else f"{r:.0%}" for r in c["retention"]]
            tri.add_row(c["cohort"], _cell(c["size"]), *cells, *[""] * (width - len(cells)))
        console.print(tri)


def build_acquisition(api: str, grain: str, start: str | None, end: str | None) -> dict[str, Any]:
    period = {"from": start, "to": end}
    return {"channels": fetch(api, "/v1/metrics/acquisition", grain=grain, by="channel", **period),
            "cohorts": fetch(api, "/v1/metrics/acquisition", grain=grain, by="cohort", **period)}


ACQUISITION_COLUMNS = (("new_customers", "customers"), ("buyers", "buyers"), ("spend", "spend"), ("cac", "CAC"),
                       ("ltv_to_date", "LTV so far"), *((f"ltv.{h}", f"LTV {h}d") for h in (30, 90, 180, 365)),
                       ("ltv_cac.90", "LTV:CAC 90d"), ("ltv_cac.365", "LTV:CAC 365d"), ("payback", "payback"))


def _field(row: dict[str, Any], key: str) -> Any:
    if key == "payback":
        days = row["payback_days"]
        return (f"{days} day" + ("s" if days != 1 else "")) if days is not None else row["payback"]
    name, _, sub = key.partition(".")
    return row[name][sub] if sub else row[name]


def render_acquisition(report: dict[str, Any], fmt: str, console: Console) -> None:
    """LTV against CAC: one table per channel over the cohorts, one per cohort and channel."""
    if fmt == "json":
        sys.stdout.write(json.dumps(report) + "\n")
        return
    channels, cohorts = report["channels"], report["cohorts"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["cohort", "channel", *(k for k, _ in ACQUISITION_COLUMNS)])
        for row in cohorts["rows"]:
            writer.writerow([row["cohort"], row["channel"] or "",
                             *("" if (v := _field(row, k)) is None else v for k, _ in ACQUISITION_COLUMNS)])
        sys.stdout.write(out.getvalue())
        return
    span = f"{channels['cohorts'][0]} to {channels['cohorts'][-1]}" if channels["cohorts"] else "no cohorts yet"
    for title, doc, first in ((f"LTV against CAC per channel, {channels['grain']}ly cohorts {span}", channels, None),
                              (f"Per {cohorts['grain']} of acquisition", cohorts, "cohort")):
        table = Table(title=title, header_style="bold")
        if first:
            table.add_column(first)
        table.add_column("channel")
        for _, name in ACQUISITION_COLUMNS:
            table.add_column(name, justify="right")
        for row in doc["rows"]:
            cells = [_cell(_field(row, k)) if k.startswith(("ltv", "cac", "spend", "new", "buyers")) else
                     str(_field(row, k)) for k, _ in ACQUISITION_COLUMNS]
            table.add_row(*([row[first]] if first else []), row["channel"] or "(unattributed)", *cells)
        console.print(table)
    through = channels.get("observed_through")
    console.print(f"[dim]Observed through {through or '–'} (event time). LTV N d: net revenue per customer in their "
                  "first N days, over the cohorts observed that long (– until one is); payback: the first N at which "
                  "it reaches CAC (docs/metrics.md).[/dim]")


def render_campaigns(doc: dict[str, Any], fmt: str, console: Console) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    table = Table(title="Campaigns: treatment against the holdout (closed windows)", header_style="bold")
    for title in ("campaign", "trigger", "treatment n", "control n", "conv. t", "conv. c", "uplift", "95% CI",
                  "p", "incr. conv.", "incr. revenue", "cost", "ROI", "ROI at value/conv.", "n/arm still needed"):
        table.add_column(title, justify="left" if title in ("campaign", "trigger") else "right")
    for c in doc["campaigns"]:
        t, k = c["treatment"], c["control"]
        ci = c["uplift_ci95"]
        table.add_row(
            c["name"], c["trigger"], _cell(t["assigned"]), _cell(k["assigned"]),
            _pct(t["conversion_rate"]), _pct(k["conversion_rate"]), _pct(c["uplift"], signed=True),
            "–" if ci is None else f"[{ci[0]:+.1%}, {ci[1]:+.1%}]",
            "–" if c["p_value"] is None else f"{c['p_value']:.3f}",
            "–" if c["incremental_conversions"] is None else f"{c['incremental_conversions']:,.1f}",
            "–" if c["incremental_revenue"] is None else f"{c['incremental_revenue']:,.2f}",
            "–" if c.get("cost") is None else f"{c['cost']:,.2f}",
            _pct(c["roi"], signed=True), _pct(c.get("roi_at_value_per_conversion"), signed=True),
            _cell(c["sample_size_per_arm_needed"]),
        )
    console.print(table)
    console.print("[dim]Rates count assignments whose conversion window has closed; "
                  "senders act on `treatment` only. ROI = (incr. revenue - cost) / cost, measured; "
                  "ROI at value/conv. assumes each incremental conversion is worth the campaign's "
                  "value_per_conversion (docs/metrics.md).[/dim]")


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1%}" if signed else f"{value:.1%}"
