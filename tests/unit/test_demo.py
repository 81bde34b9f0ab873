"""The demo keeps being a shop: over 1,200 simulated days (10 minutes at the
default pace) shoppers keep signing up every few days, every persona keeps
ordering, and the shop's size stays steady rather than running dry or
growing without bound. Pure: a hand-driven clock, no broker."""

from collections import Counter

from cli.demo import DAY_MS, DemoGenerator


class StepClock:
    def __init__(self) -> None:
        self.t = 1_500_000_000_000

    def now_ms(self) -> int:
        return self.t


def test_the_demo_keeps_signing_up_ordering_and_stays_about_its_size():
    clock = StepClock()
    demo = DemoGenerator(users=200, clock=clock, arrivals_per_day=2.0)
    signups_by_month, orders_by_month, active_by_month = Counter(), Counter(), {}
    for step in range(1200 * 4):  # quarter days, as the live loop's many small calls
        clock.t += DAY_MS // 4
        month = step // (30 * 4)
        for e in demo.due_events():
            if e["type"] == "signup":
                signups_by_month[month] += 1
            if e["type"] == "order":
                orders_by_month[month] += 1
            active_by_month.setdefault(month, set()).add(e["user_id"])
    months = range(1, 40)
    # Every month of the 40: new signups (about 60 expected) and orders.
    assert all(signups_by_month[m] >= 30 for m in months), signups_by_month
    assert all(orders_by_month[m] >= 50 for m in months), orders_by_month
    # Steady: the last months' active shoppers are within a factor of the early ones'.
    early = sum(len(active_by_month[m]) for m in range(2, 6)) / 4
    late = sum(len(active_by_month[m]) for m in range(35, 39)) / 4
    assert 0.5 * early < late < 2.5 * early, (early, late)
    # Every persona still visits at the end.
    last = {demo.persona_of(u) for m in range(35, 40) for u in active_by_month[m]}
    assert last == {"loyal", "bargain", "one_time", "drifting", "newcomer"}


def test_the_demo_channels_tell_a_story_of_cost_and_quality():
    """Paid search costs the most per customer and brings the least back;
    referrals cost the least and bring the most: what the acquisition panel
    must show on `tierstream dev` (its cost statements are what arrivals cost)."""
    clock = StepClock()
    demo = DemoGenerator(users=200, clock=clock, arrivals_per_day=4.0)
    channel_of, revenue, spend = {}, Counter(), Counter()
    for _ in range(400 * 4):
        clock.t += DAY_MS // 4
        for e in demo.due_events():
            if e["type"] == "signup":
                channel_of[e["user_id"]] = e["acquisition"]["channel"]
            elif e["type"] in ("order", "refund") and e["user_id"] in channel_of:
                revenue[channel_of[e["user_id"]]] += e["amount"] * (1 if e["type"] == "order" else -1)
        for s in demo.due_costs():
            assert set(s) == {"channel", "period", "amount"} and len(s["period"]) == 10  # a day
            spend[s["channel"]] += s["amount"]
    customers = Counter(channel_of.values())
    assert set(customers) == {"paid_search", "social", "referral"} and min(customers.values()) > 200
    cac = {c: spend[c] / customers[c] for c in customers}
    ltv_cac = {c: revenue[c] / spend[c] for c in customers}
    assert cac["paid_search"] > cac["social"] > cac["referral"]
    assert ltv_cac["referral"] > ltv_cac["social"] > ltv_cac["paid_search"], ltv_cac
