"""The worked examples of docs/metrics.md, and the rules of the metric
facts that the batch comparison cannot isolate (idempotence, late events,
time zones)."""

from datetime import UTC, datetime

from state.calendar import Calendar, label, parse_label, week_of_day
from state.kpis import Ledger
from state.metrics_report import cohort_table, fold, kpi_row, on_time
from state.rules import STAGES
from tests.support.engine import feed
from tests.support.metrics_example import EXAMPLE, body, ms
from tests.support.fixed_rules import fixed_rules

RULES = fixed_rules()


def cells_of(bodies, lateness=0):
    p, _ = feed(bodies, lateness=lateness)
    cells = {}
    for steps in p.steps.values():
        for s in steps:
            fold(cells, s)
    return cells


def week(cells, text):
    months = sorted(k.split(":", 1)[1] for k in cells if k.startswith("month:"))
    return kpi_row("week", parse_label("week", text), cells, months, RULES.tier_names, list(STAGES), Calendar())


def test_the_worked_example_in_docs_metrics_md():
    cells = cells_of(EXAMPLE)
    w1, w2 = week(cells, "2024-W01"), week(cells, "2024-W02")
    assert {k: w1[k] for k in ("active_users", "new_users", "signups", "signup_conversion", "buyers", "orders",
                               "revenue", "aov", "repeat_buyers", "repurchase_rate", "first_orders", "cart_users",
                               "cart_conversion")} == {
        "active_users": 3, "new_users": 3, "signups": 2, "signup_conversion": 0.5, "buyers": 2, "orders": 2,
        "revenue": 50.0, "aov": 25.0, "repeat_buyers": 0, "repurchase_rate": 0.0, "first_orders": 2,
        "cart_users": 2, "cart_conversion": 0.5}
    assert {k: w2[k] for k in ("active_users", "buyers", "orders", "revenue", "aov", "repeat_buyers",
                               "repurchase_rate", "refunds")} == {
        "active_users": 1, "buyers": 1, "orders": 1, "revenue": 40.0, "aov": 50.0, "repeat_buyers": 1,
        "repurchase_rate": 1.0, "refunds": 10.0}
    # Tiers: each first event assigns low_value; a first order makes ann and
    # bob `potential`; cat stays low_value.
    assert w1["flows"] == [{"from": None, "to": "low_value", "users": 3},
                           {"from": "low_value", "to": "potential", "users": 2}]
    assert w1["tiers"]["potential"] == {"members": 2, "revenue": 50.0, "revenue_share": 1.0, "mean_ltv": 25.0,
                                        "orders": 2, "aov": 25.0}
    assert w1["tiers"]["low_value"]["members"] == 1 and w1["tiers"]["low_value"]["mean_ltv"] == 0.0
    assert w2["tiers"]["potential"]["members"] == 2 and w2["tiers"]["potential"]["mean_ltv"] == 45.0
    assert w2["stages"]["new"]["members"] == 3 and w2["customers_at_start"] == 3 and w2["churn_rate"] == 0.0
    [cohort] = cohort_table("first_seen", "week", [parse_label("week", "2024-W01")], cells, 2)
    assert cohort["size"] == 3 and cohort["active"] == [3, 1] and cohort["retention"] == [1.0, 0.333333]
    assert (cohort["d1"], cohort["d7"], cohort["d30"]) == (1.0, 0.333333, 0.0)
    [buyers] = cohort_table("first_order", "month", [parse_label("month", "2024-01")], cells, 1)
    assert buyers["size"] == 2 and buyers["active"] == [2]


def test_each_step_is_booked_once_whatever_the_batching():
    """Facts are tagged by the user's version: feeding the same events one
    by one or all at once, the set of (user, version) tags and the cells
    are the same, and no tag repeats."""
    runs = []
    for lateness in (0, 3 * 86_400_000):  # released one by one, or held and released in groups
        p, _ = feed(EXAMPLE, lateness=lateness)
        p.sweep(0, ms("2024-02-01T00:00"))
        runs.append(sorted((s.user_id, s.version, sorted(s.facts.items())) for steps in p.steps.values()
                           for s in steps))
    tags = [(u, v) for u, v, _ in runs[0]]
    assert len(tags) == len(set(tags)) > len(EXAMPLE)
    assert runs[0] == runs[1]


def test_a_late_order_corrects_its_own_period_and_shows_as_a_correction():
    lateness = 86_400_000
    events = [body(1, "ann", "order", "2024-01-02T10:00", 30),
              body(2, "clock", "view", "2024-01-20T00:00"),
              body(3, "ann", "order", "2024-01-03T10:00", 70)]  # 17 days late
    cells = cells_of(events, lateness)
    day = cells["day:2024-01-03"]
    assert day["orders"] == 1 and day["order_cents"] == 7000
    assert on_time(day).get("orders", 0) == 0  # what the closed period said
    assert day["late:late"] == 1
    assert week(cells, "2024-W01")["late_events"] == 1
    # The second order makes ann a repeat buyer of the day and the week she
    # bought it in, not of 2024-01-02 (one order by its end).
    assert cells["day:2024-01-03"]["repeat"] == 1 and cells["week:2024-W01"]["repeat"] == 1
    assert cells["day:2024-01-02"].get("repeat", 0) == 0


def test_periods_follow_the_configured_time_zone():
    tokyo = Calendar("Asia/Tokyo")
    # 2024-01-07T16:00Z is Monday 01:00 in Tokyo: already the next ISO week.
    d = tokyo.day(ms("2024-01-07T16:00"))
    assert label("day", d) == "2024-01-08" and label("week", week_of_day(d)) == "2024-W02"
    assert Calendar().day(ms("2024-01-07T16:00")) == parse_label("day", "2024-01-07")
    assert tokyo.start_ms("day", d) == ms("2024-01-07T15:00")
    led = Ledger(tokyo)
    assert led.calendar.end_ms("month", parse_label("month", "2024-01")) == ms("2024-01-31T15:00")


def test_history_before_1970_counts_like_any_other():
    """Period indices are negative before 1970 (TIERSTREAM_EARLIEST_EVENT
    allows such history): distinct counts must still work."""
    from state.steps import on_event
    from state.model import EventType, UserEvent

    ledger = Ledger(Calendar())
    state = None
    for i, (day, kind) in enumerate([("1969-03-01", "signup"), ("1969-03-01", "login"), ("1969-03-02", "order")]):
        ev = UserEvent(f"x{i}", "old", EventType(kind), ms(day + "T10:00") + i, 1000 if kind == "order" else 0)
        state = on_event(state, ev, ev.ts_ms, ev.ts_ms, RULES, ledger).state
    cells = {}
    for s in ledger.drain():
        fold(cells, s)
    assert cells["day:1969-03-01"]["active"] == 1 and cells["day:1969-03-02"]["active"] == 1
    assert cells["week:1969-W09"]["active"] == 1 and cells["month:1969-03"]["buyers"] == 1


def test_facts_go_out_in_records_kafka_accepts_and_the_watermark_only_with_the_last(monkeypatch):
    """Kafka refuses records over 1 MB: a big chunk's facts are split, and
    only the last record of a partition carries its watermark."""
    import orjson

    from agents import routing
    from agents.metrics_aggregator import decode_facts
    from stream import topics
    from tests.support.factories import raw
    from tests.support.fakes import make, msg

    monkeypatch.setattr(routing, "FACTS_RECORD_BYTES", 4096)
    p, _ = make()
    for i in range(300):
        p.on_message(msg(raw(f"s{i}", "order", i / 100, amount=10), partition=0))
    steps = sum(len(e.facts or []) for e in p.engine.engines.values())
    outputs, _ = p.drain()
    records = [r for r in outputs if r.topic == topics.METRIC_FACTS and r.partition == 0]
    assert len(records) > 10 and all(len(r.value) <= 4096 for r in records)
    decoded = [decode_facts(r.value) for r in records]
    assert sum(len(s) for _, _, s in decoded) == steps
    assert [wm for _, wm, _ in decoded[:-1]] == [-1] * (len(decoded) - 1)
    assert decoded[-1][1] == p.engine.engine(0).swept_to
    assert orjson.loads(records[-1].value)["p"] == 0
