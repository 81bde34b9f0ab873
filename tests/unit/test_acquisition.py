"""LTV against CAC (docs/metrics.md, "Acquisition"): the live cells and the
report's formulas against an independent batch recount
(tests/support/metrics_batch.acquisition), on a shop history with channels,
refunds, late events that correct a customer's channel, and cost
statements restated late; plus the contract and the worked example."""

import random
from datetime import date

import orjson
import pytest

from bench import workload
from state import acquisition_report
from state.calendar import Calendar, label, parse_label
from state.metrics_report import fold
from stream import topics
from stream.contract import Rejection, parse_event
from stream.costs import parse_statement
from tests.support import metrics_batch
from tests.support.engine import feed
from tests.support.fixed_rules import fixed_rules
from tests.support.metrics_example import ACQUISITION_COSTS, ACQUISITION_EXAMPLE

DAY = 86_400_000
RULES = fixed_rules()


def _history_with_corrections(rnd: random.Random) -> tuple[list[dict], int]:
    """Two years, channels on most signups; for the users who say their
    channel only on their second event, a third event an hour later says
    another channel, and the second arrives 5 days late (the lateness is a
    day): the user is first booked under the third event's channel, then
    moved to the second's, the earliest (a correction)."""
    history = workload.history(users=3000, events=30_000, days=730, seed=8, channels=workload.CHANNELS)
    extra, late_ids = [], set()
    for b in history:
        if b.get("acquisition") and b["type"] != "signup":
            extra.append({"event_id": b["event_id"] + "-x", "user_id": b["user_id"], "type": "view",
                          "ts": b["ts"] + 3_600_000, "acquisition": {"channel": "affiliate"}})
            late_ids.add(b["event_id"])
    bodies = history + extra
    arrival = {b["event_id"]: b["ts"] + (5 * DAY if b["event_id"] in late_ids else 0) for b in bodies}
    bodies.sort(key=lambda b: (arrival[b["event_id"]], b["event_id"]))
    return bodies, len(late_ids)


@pytest.fixture(scope="module")
def shop():
    bodies, corrected = _history_with_corrections(random.Random(3))
    last = max(b["ts"] for b in bodies)
    clock = {"event_id": "clock", "user_id": "zz-clock", "type": "view", "ts": last + 2 * DAY}
    run, _ = feed(bodies + [clock], lateness=DAY)
    cells: dict = {}
    for steps in run.steps.values():
        for s in steps:
            fold(cells, s)
    statements = workload.cost_statements(workload.CHANNELS, days=730)
    spend = {}
    for s in statements:  # the aggregator's rule: the later statement of a key replaces the earlier
        parsed = parse_statement(orjson.dumps(s))
        spend[parsed.key] = parsed.cents
    changes = run.records(topics.TIER_CHANGES)
    # Every partition's watermark ends at the clock's time minus the lateness.
    observed_day = Calendar().day(last + DAY)
    return bodies, cells, statements, spend, changes, observed_day, corrected


@pytest.mark.parametrize("grain", ["week", "month"])
def test_every_cohort_and_channel_figure_matches_a_batch_recount(shop, grain):
    bodies, cells, statements, spend, changes, observed_day, corrected = shop
    assert corrected > 200  # late earlier events did move customers between channels
    events = [b for b in bodies if b["user_id"] != "zz-clock"]
    through = date.fromordinal(date(1970, 1, 1).toordinal() + observed_day - 1)
    want = metrics_batch.acquisition(events, changes, statements, grain, through)
    keys = sorted({k.split(":", 2)[2] for k in cells if k.startswith(f"acq:{grain}:")}
                  | {c for c, _ in want})
    cohorts = sorted(parse_label(grain, k) for k in keys)
    rows = acquisition_report.by_cohort(grain, cohorts, cells, spend, RULES.tier_names, observed_day)
    got = {(r["cohort"], r["channel"]): r for r in rows}
    assert set(got) == set(want)
    paid_back = 0
    for key, w in want.items():
        g = got[key]
        for name in ("observed_days", "new_customers", "buyers", "spend", "cac", "revenue_to_date", "ltv",
                     "payback_days"):
            assert g[name] == w[name], (key, name, g[name], w[name])
        n = w["new_customers"]
        assert g["tiers"] == {t: (round(w["tier_members"].get(t, 0) / n, 4) if n else None)
                              for t in RULES.tier_names}, key
        paid_back += g["payback_days"] is not None
    # Not vacuous: channels with and without spend, paid back and not yet,
    # LTV at every horizon for the old cohorts, none for the young.
    assert {c for _, c in want} == {None, *workload.CHANNELS}
    # Every customer first booked under "affiliate" was moved to the earlier channel.
    moved = [v for k, h in cells.items() if k.startswith(f"acq:{grain}:") for f, v in h.items()
             if f == "n|affiliate"]
    assert len(moved) >= 10 and set(moved) == {0}
    assert paid_back > 5 and any(r["payback"] == "not yet" for r in rows)
    assert any(r["ltv"]["365"] is not None for r in rows) and any(r["ltv"]["30"] is None for r in rows)


def test_a_channel_over_its_cohorts_pools_them_and_its_payback_is_the_batch_one(shop):
    bodies, cells, statements, spend, changes, observed_day, _ = shop
    events = [b for b in bodies if b["user_id"] != "zz-clock"]
    through = date.fromordinal(date(1970, 1, 1).toordinal() + observed_day - 1)
    per_cohort = metrics_batch.acquisition(events, changes, statements, "month", through)
    cohorts = sorted({parse_label("month", c) for c, _ in per_cohort})
    rows = {r["channel"]: r for r in acquisition_report.by_channel("month", cohorts, cells, spend, RULES.tier_names,
                                                                  observed_day)}
    customers = {}
    for (cohort, channel), w in per_cohort.items():
        customers.setdefault(channel, []).append((cohort, w))
    for channel, cohorts_of in customers.items():
        r = rows[channel]
        assert r["new_customers"] == sum(w["new_customers"] for _, w in cohorts_of)
        assert r["spend"] == round(sum(round(w["spend"] * 100) for _, w in cohorts_of) / 100, 2)
        for h in metrics_batch.HORIZONS:
            old = [w for _, w in cohorts_of if w["observed_days"] >= h]
            n = sum(w["new_customers"] for w in old)
            revenue = sum(round(w["ltv"][str(h)] * 100 * w["new_customers"]) for w in old if w["ltv"][str(h)])
            if n:  # per-cohort LTVs are rounded to cents: the pooled one is within a cent per cohort
                assert abs(r["ltv"][str(h)] - revenue / n / 100) <= 0.01 * len(old), (channel, h)
            else:
                assert r["ltv"][str(h)] is None
    paid = rows["referral"]
    assert paid["payback"] == "paid back" and paid["curve"][0]["days"] == 7
    assert rows[None]["payback"] == "no spend" and rows[None]["cac"] is None


def test_the_worked_example_in_docs_metrics_md():
    """(docs/metrics.md, "Acquisition": a worked example.) Two customers of
    `social` acquired in January 2024, one unattributed; social cost 60 in
    January (one statement for the month, then restated as 80)."""
    bodies = ACQUISITION_EXAMPLE
    run, _ = feed(bodies, lateness=DAY)
    cells: dict = {}
    for steps in run.steps.values():
        for s in steps:
            fold(cells, s)
    spend = {}
    for s in ACQUISITION_COSTS:
        parsed = parse_statement(orjson.dumps(s))
        spend[parsed.key] = parsed.cents
    jan = parse_label("month", "2024-01")
    observed = Calendar().day(parse_event(orjson.dumps({**bodies[-1], "ts": "2024-04-29T12:00:00Z"}), now_ms=1 << 62,
                                          max_bytes=9999, max_future_ms=0).ts_ms)
    [social] = [r for r in acquisition_report.by_cohort("month", [jan], cells, spend, RULES.tier_names, observed)
                if r["channel"] == "social"]
    # Observed through 2024-04-28: a customer acquired on January 31st has
    # had 89 days (Jan 31 to Apr 28), so LTV at 30 days is known, at 90 not yet.
    assert social["observed_days"] == 89
    assert (social["new_customers"], social["buyers"], social["spend"], social["cac"]) == (2, 2, 80.0, 40.0)
    # First 30 days: ann 50 + 30 - 10 (Jan 3, 20, 25), bob 40 (Jan 30 is his 21st day) = 110, per customer 55
    assert social["ltv"] == {"30": 55.0, "90": None, "180": None, "365": None}
    assert social["ltv_cac"]["30"] == 1.375
    # The 80 spent is reached by ann's orders on her 3rd and 20th days: 50 + 30 in the first 20 days
    # (ages 2 and 19); in the first 19 days, 50.
    assert social["payback_days"] == 20 and social["payback"] == "paid back"
    unattributed = [r for r in acquisition_report.by_cohort("month", [jan], cells, spend, RULES.tier_names, observed)
                    if r["channel"] is None][0]
    assert (unattributed["new_customers"], unattributed["spend"], unattributed["payback"]) == (1, 0.0, "no spend")
    assert label("month", jan) == social["cohort"] == "2024-01"


def test_the_contract_takes_a_channel_as_data_and_refuses_what_is_not_one():
    def parse(acq):
        return parse_event(orjson.dumps({"event_id": "e", "user_id": "u", "type": "signup", "ts": 1_700_000_000_000,
                                         "acquisition": acq}), now_ms=1 << 62, max_bytes=9999, max_future_ms=0,
                           on_unknown_fields=dropped.extend)

    dropped: list[str] = []
    ok = parse({"channel": "Partner X | EU", "campaign": "spring-24", "medium": "cpc"})
    assert (ok.channel, ok.campaign) == ("Partner X | EU", "spring-24") and dropped == ["acquisition.medium"]
    for bad, field in (({"campaign": "x"}, "acquisition.channel"), ({"channel": ""}, "acquisition.channel"),
                       ({"channel": "x" * 65}, "acquisition.channel"), ({"channel": " padded"}, "acquisition.channel"),
                       ({"channel": "a\nb"}, "acquisition.channel"), ("paid", "acquisition"),
                       ({"channel": "x", "campaign": "y" * 129}, "acquisition.campaign")):
        refused = parse(bad)
        assert isinstance(refused, Rejection) and refused.error[0]["field"] == field, (bad, refused)


def test_a_cost_statement_is_checked_and_keyed_by_channel_and_period():
    ok = parse_statement(b'{"channel": "social", "period": "2024-W10", "amount": "1250.505"}')
    assert (ok.key, ok.cents, ok.grain) == ("2024-W10|social", 125051, "week")
    for payload, reason in ((b"{", "invalid_json"), (b"[1]", "not_an_object"),
                            (b'{"channel": "s", "period": "2024-13", "amount": 1}', "invalid_cost"),
                            (b'{"channel": "s", "period": "2024-03", "amount": -1}', "invalid_cost"),
                            (b'{"channel": "s", "period": "2024-03"}', "invalid_cost"),
                            (b'{"channel": "s", "period": "2024-03", "amount": 1, "x": 2}', "invalid_cost")):
        refused = parse_statement(payload)
        assert isinstance(refused, Rejection) and refused.reason == reason, payload
    # A month spread over its days: the odd cents to the first days, summing to the statement.
    days = acquisition_report.daily("2024-02", 100)
    assert len(days) == 29 and sum(days.values()) == 100 and days[min(days)] == 4 and days[max(days)] == 3


def test_tiers_and_campaigns_may_test_the_channel():
    """A tier for referred customers only, and a campaign eligible only for
    paid search's: each holds for its channel's customers and no other."""
    from state.campaigns import Campaign
    from state.rules import parse_rules, fixed_threshold_rules_text

    text = fixed_threshold_rules_text().replace('[[tiers]]\nname = "dormant"',
                                                '[[tiers]]\nname = "referred"\nchannels = ["referral"]\n\n'
                                                '[[tiers]]\nname = "dormant"', 1)
    rules = parse_rules(text)
    welcome = Campaign.model_validate({"name": "welcome", "trigger": {"enter_tier": "low_value"}, "holdout": 0,
                                       "goal": {"order_within_days": 7}, "eligible": {"channels": ["paid_search"]}})
    rules = rules.with_campaigns([welcome])
    bodies = [{"event_id": f"s{u}", "user_id": u, "type": "signup", "ts": 1_700_000_000_000 + i,
               **({"acquisition": {"channel": ch}} if ch else {})}
              for i, (u, ch) in enumerate((("ann", "referral"), ("bob", "paid_search"), ("cat", None)))]
    bodies.append({"event_id": "clock", "user_id": "zz", "type": "view", "ts": 1_700_000_000_000 + 3 * DAY})
    run, _ = feed(bodies, lateness=DAY, rules=rules)
    tiers = {r["user_id"]: r["to_tier"] for r in run.records(topics.TIER_CHANGES) if r["user_id"] != "zz"}
    assert tiers == {"ann": "referred", "bob": "low_value", "cat": "low_value"}
    assigned = {r["user_id"] for r in run.records(topics.ACTIONS)}
    assert assigned == {"bob"}
    assert [r["acquisition"] for r in run.records(topics.ACTIONS)] == [{"channel": "paid_search", "campaign": None}]


def test_a_free_first_order_makes_a_buyer_and_no_revenue():
    """An order of 0 (a free sample, a 100% coupon) is an order: the
    customer is a buyer, with nothing booked as revenue."""
    bodies = [{"event_id": "s", "user_id": "ann", "type": "signup", "ts": 1_700_000_000_000,
               "acquisition": {"channel": "social"}},
              {"event_id": "o", "user_id": "ann", "type": "order", "ts": 1_700_000_000_000 + 3600_000, "amount": 0},
              {"event_id": "clock", "user_id": "zz", "type": "view", "ts": 1_700_000_000_000 + 3 * DAY}]
    run, _ = feed(bodies, lateness=DAY)
    cells: dict = {}
    for steps in run.steps.values():
        for s in steps:
            fold(cells, s)
    [month] = [h for k, h in cells.items() if k.startswith("acq:month:")]
    assert (month["n|social"], month["b|social"]) == (1, 1)
    assert not [f for f, v in month.items() if f.startswith("r") and v]


def test_a_costs_file_with_a_bad_line_sends_nothing_and_names_the_line(tmp_path):
    from cli.io import read_cost_file

    good = tmp_path / "good.csv"
    good.write_text("channel,period,amount\nsocial,2024-03,1250.50\nreferral,2024-W10,80\nsocial,2024-03,1300\n")
    assert [(s.key, s.cents) for s in read_cost_file(good)] == [
        ("2024-03|social", 125050), ("2024-W10|referral", 8000), ("2024-03|social", 130000)]  # in order: the last wins
    bad = tmp_path / "bad.csv"
    bad.write_text("channel,period,amount\nsocial,2024-03,1250.50\nsocial,March,12\n,2024-04,3\n")
    with pytest.raises(ValueError) as refused:
        read_cost_file(bad)
    assert "nothing sent" in str(refused.value) and "line 3" in str(refused.value) and "line 4" in str(refused.value)
    headless = tmp_path / "headless.csv"
    headless.write_text("social,2024-03,1250.50\n")
    with pytest.raises(ValueError, match="header lacks"):
        read_cost_file(headless)
