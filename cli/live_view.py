"""The live terminal view of `tierstream dev` (rich: tables and live refresh
without hand-written terminal codes)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from store.membership import MembershipReader
from stream import topics
from stream.connection import KafkaAccess


@dataclass
class ViewState:
    header: str
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: {"tiers": {}, "stages": {}})
    changes: deque = field(default_factory=lambda: deque(maxlen=8))
    alerts: deque = field(default_factory=lambda: deque(maxlen=6))
    total_changes: int = 0
    total_alerts: int = 0
    total_dead_letters: int = 0
    events_sent: int = 0
    sim_time: str = ""
    kpis: list[dict] = field(default_factory=list)  # the last weeks, from the read API
    campaigns: list[dict] = field(default_factory=list)  # results, from the read API
    on_action: Any = None  # the demo's response to campaign assignments


async def follow_outputs(kafka: KafkaAccess, view: ViewState, stop: asyncio.Event) -> None:
    consumer = kafka.consumer(
        topics.TIER_CHANGES, topics.CHURN_ALERTS, topics.DEAD_LETTERS, topics.ACTIONS,
        group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    body = orjson.loads(r.value)
                    if tp.topic == topics.TIER_CHANGES:
                        view.total_changes += 1
                        view.changes.appendleft(body)
                    elif tp.topic == topics.ACTIONS:
                        if view.on_action is not None:
                            view.on_action(body)
                    elif tp.topic == topics.CHURN_ALERTS:
                        view.total_alerts += 1
                        view.alerts.appendleft(body)
                    else:
                        view.total_dead_letters += 1
    finally:
        await consumer.stop()


async def poll_counts(reader: MembershipReader, view: ViewState, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            view.counts = await reader.counts()
        except Exception:  # noqa: BLE001 (Redis not ready yet: keep the last counts)
            pass
        await asyncio.sleep(0.5)


async def poll_kpis(api: str, view: ViewState, stop: asyncio.Event) -> None:
    """The current and previous weeks' KPIs, from the read API."""
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.get(f"{api}/v1/metrics/kpis", params={"grain": "week"}) as resp:
                    if resp.status == 200:
                        view.kpis = (await resp.json())["periods"][-2:]
                async with http.get(f"{api}/v1/campaigns") as resp:
                    if resp.status == 200:
                        view.campaigns = (await resp.json())["campaigns"]
            except Exception:  # noqa: BLE001 (API not ready yet: keep the last figures)
                pass
            await asyncio.sleep(1)


def _kpi_table(periods: list[dict]) -> Table:
    table = Table(title="This week and last (event time; * still open)", expand=True)
    columns = (("active_users", "active"), ("new_users", "new"), ("buyers", "buyers"), ("orders", "orders"),
               ("revenue", "revenue"), ("aov", "AOV"), ("repurchase_rate", "repeat"), ("entered_churned", "churned"))
    table.add_column("week", no_wrap=True, min_width=10)
    for _, title in columns:
        table.add_column(title, justify="right")
    for p in reversed(periods):
        cells = []
        for key, _ in columns:
            v = p[key]
            cells.append("–" if v is None else f"{v:.0%}" if key == "repurchase_rate" else
                         f"{v:,.0f}" if isinstance(v, float) else f"{v:,}")
        table.add_row(p["period"] + ("" if p["closed"] else " *"), *cells)
    return table


def _campaign_table(campaigns: list[dict]) -> Table:
    table = Table(title="Campaigns (closed windows; treatment vs control)", expand=True)
    for col in ("campaign", "assigned t/c", "conv. t", "conv. c", "uplift [95% CI]", "p"):
        table.add_column(col, justify="left" if col == "campaign" else "right", no_wrap=col != "uplift [95% CI]",
                         min_width=19 if col == "campaign" else None)
    for c in campaigns:
        t, k = c["treatment"], c["control"]
        rate = lambda a: "–" if a["conversion_rate"] is None else f"{a['conversion_rate']:.1%}"  # noqa: E731
        ci = c["uplift_ci95"]
        uplift = "–" if c["uplift"] is None else f"{c['uplift']:+.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}]"
        table.add_row(c["name"], f"{c['assigned']['treatment']}/{c['assigned']['control']}", rate(t), rate(k), uplift,
                      "–" if c["p_value"] is None else f"{c['p_value']:.3f}")
    return table


def render(view: ViewState) -> Group:
    counts = Table(title="Members", expand=True)
    counts.add_column("tier")
    counts.add_column("users", justify="right")
    counts.add_column("stage")
    counts.add_column("users", justify="right")
    tiers = sorted(view.counts["tiers"].items(), key=lambda kv: -kv[1])
    stages = sorted(view.counts["stages"].items(), key=lambda kv: -kv[1])
    for i in range(max(len(tiers), len(stages))):
        t = tiers[i] if i < len(tiers) else ("", "")
        s = stages[i] if i < len(stages) else ("", "")
        counts.add_row(t[0], str(t[1]), s[0], str(s[1]))

    changes = Table(title=f"Latest tier changes ({view.total_changes})", expand=True)
    for col in ("at", "user", "tier", "stage", "R F M", "LTV"):
        changes.add_column(col)
    for c in view.changes:
        changes.add_row(
            c["at"][:10], c["user_id"],
            f"{c['from_tier'] or '-'} → {c['to_tier']}", f"{c['from_stage'] or '-'} → {c['to_stage']}",
            f"{c['rfm']['r']} {c['rfm']['f']} {c['rfm']['m']}", f"{c['ltv']:.2f}",
        )
    alerts = Table(title=f"Latest churn alerts ({view.total_alerts})", expand=True)
    for col in ("at", "user", "level", "days inactive", "tier", "LTV"):
        alerts.add_column(col)
    for a in view.alerts:
        style = "red" if a["level"] == "churned" else "yellow"
        alerts.add_row(a["at"][:10], a["user_id"], Text(a["level"], style=style), str(a["days_inactive"]),
                       a["tier"], f"{a['ltv']:.2f}")
    status = Text(
        f"event time {view.sim_time}   events sent {view.events_sent}   dead letters {view.total_dead_letters}"
        "   (Ctrl-C to stop)"
    )
    return Group(Panel(view.header, title="tierstream dev"), status, _kpi_table(view.kpis),
                 _campaign_table(view.campaigns), counts, changes, alerts)
