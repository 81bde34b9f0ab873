"""From aggregated cells to the figures operators read (pure).

Cells are what state.kpis books and store.metrics_store keeps in Redis: one
hash per period (`day:2024-01-05`, `week:2024-W01`, `month:2024-01`) and per
cohort (`c:first_seen:week:2024-W01`), each a map of named integers. This
module holds every formula of docs/metrics.md; the API, the `tierstream.metrics`
topic and the tests all compute through it.

`fold` applies one step's facts to in-memory cells the way the Redis script
does, for the offline computations (tests, benchmarks) that have no Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from state.calendar import Calendar, days_in, label, month_of_day
from state.kpis import Step

Cells = dict[str, dict[str, int]]
LATE = "late:"


def cell_targets(cell: str) -> tuple[list[str], str]:
    """The hash keys a fact cell updates, and the field."""
    key, _, name = cell.partition("|")
    if key.startswith("a:"):
        day, week, month = key[2:].split(",")
        return [f"day:{day}", f"week:{week}", f"month:{month}"], name
    if key.startswith("q:"):  # an acquisition day's cohorts (state.acquisition)
        week, month = key[2:].split(",")
        return [f"acq:week:{week}", f"acq:month:{month}"], name
    return [key], name


def fold(cells: Cells, step: Step) -> None:
    """Apply one step's facts (no dedup here: callers apply each step once)."""
    for facts, prefix in ((step.facts, ""), (step.late or {}, LATE)):
        for cell, value in facts.items():
            keys, name = cell_targets(cell)
            for key in keys:
                h = cells.setdefault(key, {})
                h[name] = h.get(name, 0) + value
                if prefix:
                    h[prefix + name] = h.get(prefix + name, 0) + value


def on_time(h: Mapping[str, int]) -> dict[str, int]:
    """A period's cells without the late corrections: what was known when
    it closed, which no later event can change."""
    out = {k: v for k, v in h.items() if not k.startswith(LATE)}
    for k, v in h.items():
        if k.startswith(LATE):
            out[k[len(LATE):]] = out.get(k[len(LATE):], 0) - v
    return out


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def _money(cents: int) -> float:
    return round(cents / 100, 2)


def period_key(grain: str, index: int) -> str:
    return f"{grain}:{label(grain, index)}"


def prefix_keys(grain: str, index: int, months_with_data: Iterable[str]) -> list[str]:
    """The hashes whose membership flows sum to the members at the end of
    the period: whole months before it, then its month's days up to its end."""
    last_day = days_in(grain, index)[-1]
    month = month_of_day(last_day)
    keys = [f"month:{m}" for m in months_with_data if m < label("month", month)]
    if grain == "month":
        keys.append(f"month:{label('month', month)}")
    else:
        first = days_in("month", month)[0]
        keys += [f"day:{label('day', d)}" for d in range(first, last_day + 1)]
    return keys


def _sum_prefix(cells: Mapping[str, Mapping[str, int]], keys: list[str], late_too: bool) -> dict[str, int]:
    """Members (`mem|t=<tier>`, `mem|s=<stage>`) and their summed LTV at the
    end of the last of `keys`: the flows into a segment minus those out."""
    out: dict[str, int] = {}
    for key in keys:
        h = cells.get(key) or {}
        h = h if late_too else on_time(h)
        for k, v in h.items():
            if k.startswith("ltv|"):
                out[k] = out.get(k, 0) + v
            elif k.startswith(("flow|", "sflow|")):
                kind = "t" if k[0] == "f" else "s"
                src, dst = k.split("|", 1)[1].split(">", 1)
                if src != "-":
                    out[f"mem|{kind}={src}"] = out.get(f"mem|{kind}={src}", 0) - v
                out[f"mem|{kind}={dst}"] = out.get(f"mem|{kind}={dst}", 0) + v
    return out


def kpi_row(
    grain: str,
    index: int,
    cells: Mapping[str, Mapping[str, int]],
    months_with_data: Iterable[str],
    tiers: list[str],
    stages: list[str],
    calendar: Calendar,
    closed_until_ms: int | None = None,
    corrected: bool = True,
    settle_ms: int = 0,
) -> dict[str, Any]:
    """Every KPI of one period. `corrected=False` leaves late corrections
    out (what a closed period's record says); the API serves them in.
    `settle_ms`: how long after its end a period's figures can still move on
    time (conversions are booked to the signup's or cart's day when the
    order comes, up to the conversion window later)."""
    key = period_key(grain, index)
    raw = cells.get(key) or {}
    h = dict(raw) if corrected else on_time(raw)
    g = h.get
    months = sorted(months_with_data)
    end = _sum_prefix(cells, prefix_keys(grain, index, months), corrected)
    start = _sum_prefix(cells, prefix_keys(grain, index - 1, months), corrected)
    revenue = g("order_cents", 0) - g("refund_cents", 0)
    entered: dict[str, int] = {}
    for k, v in h.items():
        if k.startswith("sflow|"):
            dst = k.split(">", 1)[1]
            entered[dst] = entered.get(dst, 0) + v
    customers_at_start = sum(start.get(f"mem|s={s}", 0) for s in stages if s != "churned")

    def segment(kind: str, name: str) -> dict[str, Any]:
        members = end.get(f"mem|{kind}={name}", 0)
        seg_revenue = g(f"order_cents|{kind}={name}", 0) - g(f"refund_cents|{kind}={name}", 0)
        return {
            "members": members,
            "revenue": _money(seg_revenue),
            # Of the order value, not of net revenue: refunds booked to other
            # tiers made one tier's share of a small net total exceed 100%.
            "revenue_share": _ratio(g(f"order_cents|{kind}={name}", 0), g("order_cents", 0)),
            "mean_ltv": _money(round(end.get(f"ltv|{kind}={name}", 0) / members)) if members else None,
            "orders": g(f"orders|{kind}={name}", 0),
            "aov": _money(round(g(f"order_cents|{kind}={name}", 0) / g(f"orders|{kind}={name}")))
            if g(f"orders|{kind}={name}") else None,
        }

    flows = sorted(
        ({"from": None if a == "-" else a, "to": b, "users": v}
         for k, v in h.items() if k.startswith("flow|") and v
         for a, b in [k[5:].split(">", 1)]),
        key=lambda f: (f["from"] or "", f["to"]),
    )
    end_ms = calendar.end_ms(grain, index)
    return {
        "period": label(grain, index),
        "start": calendar.start_ms(grain, index),
        "end": end_ms,
        "closed": closed_until_ms is not None and end_ms + settle_ms <= closed_until_ms,
        "active_users": g("active", 0),
        "new_users": g("new", 0),
        "buyers": g("buyers", 0),
        "orders": g("orders", 0),
        "revenue": _money(revenue),
        "gross_order_value": _money(g("order_cents", 0)),
        "refunds": _money(g("refund_cents", 0)),
        "aov": _money(round(g("order_cents", 0) / g("orders"))) if g("orders") else None,
        "repeat_buyers": g("repeat", 0),
        "repurchase_rate": _ratio(g("repeat", 0), g("buyers", 0)),
        "signups": g("signups", 0),
        "signup_conversion": _ratio(g("signup_conv", 0), g("signups", 0)),
        "first_orders": g("first_orders", 0),
        "cart_users": g("cart_users", 0),
        "cart_conversion": _ratio(g("cart_conv", 0), g("cart_users", 0)),
        "entered_at_risk": entered.get("at_risk", 0),
        "entered_churned": entered.get("churned", 0),
        "reactivated": entered.get("reactivated", 0),
        "customers_at_start": customers_at_start,
        "churn_rate": _ratio(entered.get("churned", 0), customers_at_start),
        "late_events": raw.get(LATE + "late", 0),
        "tiers": {t: segment("t", t) for t in tiers},
        "stages": {s: segment("s", s) for s in stages},
        "flows": flows,
    }


def cohort_table(
    by: str, grain: str, cohorts: list[int], cells: Mapping[str, Mapping[str, int]], periods: int,
    latest: int | None = None,
) -> list[dict[str, Any]]:
    """Retention triangle: for each cohort, the share of it active in each
    of the `periods` periods from its own (period 0) on; periods after
    `latest` have not happened yet (null)."""
    size_cell = "new" if by == "first_seen" else "first_orders"
    out = []
    for c in cohorts:
        size = (cells.get(period_key(grain, c)) or {}).get(size_cell, 0)
        active_by = cells.get(f"c:{by}:{grain}:{label(grain, c)}") or {}
        ks = [k for k in range(periods) if latest is None or c + k <= latest]
        active = [active_by.get(label(grain, c + k), 0) for k in ks]
        row: dict[str, Any] = {
            "cohort": label(grain, c),
            "size": size,
            "active": active,
            "retention": [_ratio(a, size) for a in active],
        }
        if by == "first_seen":
            h = cells.get(period_key(grain, c)) or {}
            row.update({f"d{n}": _ratio(h.get(f"ret{n}", 0), size) for n in (1, 7, 30)})
            row.update({f"d{n}_users": h.get(f"ret{n}", 0) for n in (1, 7, 30)})
        out.append(row)
    return out
