"""An independent batch computation of the operator metrics, for tests.

Written from the definitions in docs/metrics.md, in plain Python over the
whole event history and the published tier-change records, without the
metrics code (no state.kpis, state.calendar or state.metrics_report): if
the incremental figures and these agree for every period, both read the
definitions the same way.

Tiers and stages come from the tier-change records (what tierstream
published), because deciding them is the rules engine's job, tested
elsewhere; everything else comes from the events.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAY = 86_400_000
ACTIVITY = {"signup", "login", "view", "add_to_cart", "order"}


def _cents(amount: Any) -> int:
    return round(float(amount) * 100) if amount is not None else 0


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def period_of(grain: str, d: date) -> str:
    if grain == "day":
        return d.isoformat()
    if grain == "week":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    return f"{d.year}-{d.month:02d}"


def period_start(grain: str, label: str) -> date:
    if grain == "day":
        return date.fromisoformat(label)
    if grain == "week":
        y, w = label.split("-W")
        return date.fromisocalendar(int(y), int(w), 1)
    y, m = label.split("-")
    return date(int(y), int(m), 1)


def period_end_ms(grain: str, label: str) -> int:
    start = period_start(grain, label)
    if grain == "day":
        end = start + timedelta(days=1)
    elif grain == "week":
        end = start + timedelta(days=7)
    else:
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000)


def next_period(grain: str, label: str, k: int = 1) -> str:
    start = period_start(grain, label)
    if grain == "week":
        return period_of("week", start + timedelta(days=7 * k))
    months = start.year * 12 + start.month - 1 + k
    return f"{months // 12}-{months % 12 + 1:02d}"


def compute(events: list[dict], changes: list[dict], tiers: list[str], stages: list[str],
            conversion_days: int = 7) -> dict[str, Any]:
    """{"kpis": {(grain, period): row}, "cohorts": {(by, grain, cohort): {"size", "active": {period: n}}},
    "retention": {(grain, period): {"new", "ret1", "ret7", "ret30"}}}"""
    conv = conversion_days * DAY
    by_user: dict[str, list[dict]] = defaultdict(list)
    seen_ids = set()
    for e in events:
        if (e["user_id"], e["event_id"]) in seen_ids:
            continue
        seen_ids.add((e["user_id"], e["event_id"]))
        by_user[e["user_id"]].append(e)
    timeline: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # user -> (at, tier, stage)
    for c in changes:
        timeline[c["user_id"]].append((c["at_ms"], c["to_tier"], c["to_stage"]))
    for t in timeline.values():
        t.sort(key=lambda x: x[0])

    times = {u: [x[0] for x in t] for u, t in timeline.items()}

    def segment_at(user: str, ms: int) -> tuple[str | None, str | None]:
        """Tier and stage after every change at or before `ms`."""
        t = timeline.get(user, [])
        i = bisect_right(times.get(user, []), ms)
        return (t[i - 1][1], t[i - 1][2]) if i else (None, None)

    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    sets: dict[tuple[str, str, str], set] = defaultdict(set)
    cohorts: dict[tuple[str, str, str], dict] = defaultdict(lambda: {"size": 0, "active": defaultdict(int)})
    grains = ("day", "week", "month")

    def add(ms_or_day: int | date, field: str, value: int = 1) -> None:
        d = ms_or_day if isinstance(ms_or_day, date) else day_of(ms_or_day)
        for g in grains:
            rows[(g, period_of(g, d))][field] += value

    for user, evs in by_user.items():
        evs.sort(key=lambda e: (e["ts"], e["event_id"]))
        born = evs[0]["ts"]
        add(born, "new_users")
        orders = [e for e in evs if e["type"] == "order"]
        signups = [e for e in evs if e["type"] == "signup"]
        active_days = {day_of(e["ts"]) for e in evs if e["type"] in ACTIVITY}
        for d in active_days:
            for g in grains:
                sets[(g, period_of(g, d), "active")].add(user)
        born_day = day_of(born)
        for n in (1, 7, 30):
            if born_day + timedelta(days=n) in active_days:
                add(born_day, f"ret{n}")
        for g in ("week", "month"):
            cohort = period_of(g, born_day)
            cohorts[("first_seen", g, cohort)]["size"] += 1
            for p in {period_of(g, d) for d in active_days}:
                if p >= cohort:
                    cohorts[("first_seen", g, cohort)]["active"][p] += 1
        if signups:
            s = signups[0]["ts"]
            add(s, "signups")
            if orders and 0 <= orders[0]["ts"] - s <= conv:
                add(s, "signup_conv")
        if orders:
            first, second = orders[0]["ts"], (orders[1]["ts"] if len(orders) > 1 else None)
            add(first, "first_orders")
            for g in ("week", "month"):
                cohort = period_of(g, day_of(first))
                cohorts[("first_order", g, cohort)]["size"] += 1
                for p in {period_of(g, d) for d in active_days}:
                    if p >= cohort:
                        cohorts[("first_order", g, cohort)]["active"][p] += 1
            for o in orders:
                for g in grains:
                    p = period_of(g, day_of(o["ts"]))
                    sets[(g, p, "buyers")].add(user)
                    if second is not None and second < period_end_ms(g, p):
                        sets[(g, p, "repeat_buyers")].add(user)
        for e in evs:
            tier, stage = segment_at(user, e["ts"])
            if e["type"] == "order":
                cents = _cents(e.get("amount"))
                add(e["ts"], "orders")
                add(e["ts"], "order_cents", cents)
                add(e["ts"], f"orders|t={tier}")
                add(e["ts"], f"order_cents|t={tier}", cents)
                add(e["ts"], f"orders|s={stage}")
                add(e["ts"], f"order_cents|s={stage}", cents)
            elif e["type"] == "refund":
                cents = _cents(e.get("amount"))
                add(e["ts"], "refund_cents", cents)
                add(e["ts"], f"refund_cents|t={tier}", cents)
                add(e["ts"], f"refund_cents|s={stage}", cents)
        # Cart-days: the day's first cart converts with an order within the window.
        first_cart: dict[date, int] = {}
        for e in evs:
            if e["type"] == "add_to_cart":
                first_cart.setdefault(day_of(e["ts"]), e["ts"])
        for d, c in first_cart.items():
            add(d, "cart_users")
            if any(c <= o["ts"] <= c + conv for o in orders):
                add(d, "cart_conv")

    for (g, p, name), users in sets.items():
        rows[(g, p)][name] = len(users)

    # Tier and stage transitions, members and lifetime value at period ends.
    for c in changes:
        if c["from_tier"] != c["to_tier"]:
            add(c["at_ms"], f"flow|{c['from_tier'] or '-'}>{c['to_tier']}")
        if c["from_stage"] != c["to_stage"]:
            add(c["at_ms"], f"enter|s={c['to_stage']}")
    # One sweep through time per grain: apply changes and money in time
    # order, and read the members (and their lifetime value) at each end.
    items = [(c["at_ms"], 0, c["user_id"], c["to_tier"], c["to_stage"]) for c in changes]
    items += [(e["ts"], 1, u, None, _cents(e.get("amount")) * (1 if e["type"] == "order" else -1))
              for u, evs in by_user.items() for e in evs if e["type"] in ("order", "refund")]
    items.sort(key=lambda x: (x[0], x[1]))

    def snapshots(ends: list[int]) -> dict[int, dict[str, int]]:
        current: dict[str, list] = {}  # user -> [tier, stage, ltv]
        totals: dict[str, int] = defaultdict(int)
        out, i = {}, 0
        for end in sorted(set(ends)):
            while i < len(items) and items[i][0] < end:
                _, kind, user, tier, x = items[i]
                cur = current.setdefault(user, [None, None, 0])
                if cur[0] is not None:
                    totals[f"mem|t={cur[0]}"] -= 1
                    totals[f"mem|s={cur[1]}"] -= 1
                    totals[f"ltv|t={cur[0]}"] -= cur[2]
                    totals[f"ltv|s={cur[1]}"] -= cur[2]
                if kind == 0:
                    cur[0], cur[1] = tier, x
                else:
                    cur[2] += x
                if cur[0] is not None:
                    totals[f"mem|t={cur[0]}"] += 1
                    totals[f"mem|s={cur[1]}"] += 1
                    totals[f"ltv|t={cur[0]}"] += cur[2]
                    totals[f"ltv|s={cur[1]}"] += cur[2]
                i += 1
            out[end] = dict(totals)
        return out

    def start_ms(g: str, p: str) -> int:
        return int(datetime.combine(period_start(g, p), datetime.min.time(), UTC).timestamp() * 1000)

    snaps = snapshots([period_end_ms(g, p) for g, p in rows] + [start_ms(g, p) for g, p in rows])
    result_rows = {}
    for (g, p), r in rows.items():
        start = snaps[start_ms(g, p)]
        r = dict(r)
        r["members_end"] = snaps[period_end_ms(g, p)]
        r["customers_at_start"] = sum(start.get(f"mem|s={s}", 0) for s in stages if s != "churned")
        result_rows[(g, p)] = r
    return {"kpis": result_rows, "cohorts": cohorts}


def ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def money(cents: int) -> float:
    return round(cents / 100, 2)


def expected_row(r: dict[str, Any], tiers: list[str], stages: list[str]) -> dict[str, Any]:
    """The API's fields for one period, from the batch counts."""
    g = r.get
    revenue = g("order_cents", 0) - g("refund_cents", 0)
    end = r["members_end"]

    def segment(kind: str, name: str) -> dict[str, Any]:
        members = end.get(f"mem|{kind}={name}", 0)
        rev = g(f"order_cents|{kind}={name}", 0) - g(f"refund_cents|{kind}={name}", 0)
        orders = g(f"orders|{kind}={name}", 0)
        return {
            "members": members,
            "revenue": money(rev),
            "revenue_share": ratio(g(f"order_cents|{kind}={name}", 0), g("order_cents", 0)),
            "mean_ltv": money(round(end.get(f"ltv|{kind}={name}", 0) / members)) if members else None,
            "orders": orders,
            "aov": money(round(g(f"order_cents|{kind}={name}", 0) / orders)) if orders else None,
        }

    return {
        "active_users": g("active", 0),
        "new_users": g("new_users", 0),
        "buyers": g("buyers", 0),
        "orders": g("orders", 0),
        "revenue": money(revenue),
        "refunds": money(g("refund_cents", 0)),
        "aov": money(round(g("order_cents", 0) / g("orders"))) if g("orders") else None,
        "repeat_buyers": g("repeat_buyers", 0),
        "repurchase_rate": ratio(g("repeat_buyers", 0), g("buyers", 0)),
        "signups": g("signups", 0),
        "signup_conversion": ratio(g("signup_conv", 0), g("signups", 0)),
        "first_orders": g("first_orders", 0),
        "cart_users": g("cart_users", 0),
        "cart_conversion": ratio(g("cart_conv", 0), g("cart_users", 0)),
        "entered_at_risk": g("enter|s=at_risk", 0),
        "entered_churned": g("enter|s=churned", 0),
        "reactivated": g("enter|s=reactivated", 0),
        "customers_at_start": r["customers_at_start"],
        "churn_rate": ratio(g("enter|s=churned", 0), r["customers_at_start"]),
        "tiers": {t: segment("t", t) for t in tiers},
        "stages": {s: segment("s", s) for s in stages},
        "flows": sorted(
            ({"from": None if a == "-" else a, "to": b, "users": v}
             for k, v in r.items() if k.startswith("flow|") for a, b in [k[5:].split(">", 1)]),
            key=lambda f: (f["from"] or "", f["to"])),
    }


# -- acquisition: LTV against CAC (docs/metrics.md, "Acquisition") ----------

HORIZONS = (30, 90, 180, 365)
AGE_CAP = 730


def _days(grain: str, period: str) -> list[date]:
    start = period_start(grain, period)
    end = datetime.fromtimestamp(period_end_ms(grain, period) / 1000, UTC).date()
    return [start + timedelta(days=i) for i in range((end - start).days)]


def acquisition(events: list[dict], changes: list[dict], statements: list[dict], grain: str,
                observed_through: date) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(cohort, channel) -> the figures of one row of
    `GET /v1/metrics/acquisition?by=cohort`, from the whole history, the
    published tier changes and the cost statements in the order sent, by
    brute force: each customer's money by age, every N from 1 on.
    `observed_through`: the last complete day of event time."""
    by_user: dict[str, list[dict]] = defaultdict(list)
    seen = set()
    for e in events:
        if (e["user_id"], e["event_id"]) not in seen:
            seen.add((e["user_id"], e["event_id"]))
            by_user[e["user_id"]].append(e)
    final_tier: dict[str, str] = {}
    for c in sorted(changes, key=lambda c: c["at_ms"]):  # stable: equal times keep the published order
        final_tier[c["user_id"]] = c["to_tier"]
    groups: dict[tuple[str, str | None], dict[str, Any]] = defaultdict(
        lambda: {"customers": [], "spend": 0})
    for user, evs in by_user.items():
        born = day_of(min(e["ts"] for e in evs))
        placed = sorted((e["ts"], e["acquisition"]["channel"], e["acquisition"].get("campaign") or "")
                        for e in evs if e.get("acquisition"))
        channel = placed[0][1] if placed else None
        cents_at: dict[int, int] = defaultdict(int)
        for e in evs:
            if e["type"] in ("order", "refund"):
                age = min(AGE_CAP, max(0, (day_of(e["ts"]) - born).days))
                cents_at[age] += _cents(e["amount"]) * (1 if e["type"] == "order" else -1)
        groups[(period_of(grain, born), channel)]["customers"].append({
            "bought": any(e["type"] == "order" for e in evs), "money": cents_at, "tier": final_tier.get(user)})
    in_force: dict[tuple[str, str], int] = {}
    for s in statements:
        in_force[(s["channel"], s["period"])] = _cents(s["amount"])
    for (channel, period), cents in in_force.items():
        g = "day" if len(period) == 10 else "week" if "W" in period else "month"
        days = _days(g, period)
        share, odd = divmod(cents, len(days))
        for i, d in enumerate(days):
            groups[(period_of(grain, d), channel)]["spend"] += share + (1 if i < odd else 0)
    out = {}
    for (cohort, channel), g in groups.items():
        customers = g["customers"]
        n, spend = len(customers), g["spend"]
        last_day = _days(grain, cohort)[-1]
        observed = max(0, (observed_through - last_day).days + 1)

        def revenue(first_days: int) -> int:
            return sum(c for cust in customers for age, c in cust["money"].items() if age < first_days)

        payback = None
        if spend and n:
            for days in range(1, min(observed, AGE_CAP) + 1):
                if revenue(days) >= spend:
                    payback = days
                    break
        out[(cohort, channel)] = {
            "observed_days": observed,
            "new_customers": n,
            "buyers": sum(c["bought"] for c in customers),
            "spend": money(spend),
            "cac": money(round(spend / n)) if n and spend else None,
            "revenue_to_date": money(sum(sum(c["money"].values()) for c in customers)),
            "ltv": {str(h): (money(round(revenue(h) / n)) if n and observed >= h else None) for h in HORIZONS},
            "payback_days": payback,
            "tier_members": {t: sum(1 for c in customers if c["tier"] == t) for t in {c["tier"] for c in customers}
                             if t is not None},
        }
    return out
