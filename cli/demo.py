"""Demo event generator: simulated shoppers on an accelerated event-time clock.

Personas follow behaviours an operator will recognise: loyal big spenders,
bargain hunters, one-time buyers, users drifting away, and newcomers who
keep arriving. Time runs `speed` simulated days per real second, so tier
changes and churn alerts show within a minute.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import orjson

from stream import topics
from stream.connection import KafkaAccess

DAY_MS = 86_400_000
# The demo's known truth for campaigns: a user the win-back campaign
# assigns comes back with an order within 30 days with this probability, on
# top of whatever their persona does. The offer raises it from 10% to 15%,
# so the uplift the dashboard measures has a true value to be compared with.
RESPONSE = {"win_back": {"control": 0.10, "treatment": 0.15}}
RESPONSE_DAYS = 30
PERSONAS = ("loyal", "bargain", "one_time", "drifting", "newcomer")
# Three acquisition channels with the known truth an LTV-against-CAC panel
# should find: their share of arrivals, what a customer costs through them
# (the daily cost statements the demo sends), and the personas they bring.
# Paid search is dear and brings one-time and bargain buyers; referrals are
# cheap and bring loyal customers; social sits between, with many drifters.
CHANNELS = {
    "paid_search": {"share": 0.45, "cost": 650.0, "weights": (0.08, 0.30, 0.35, 0.17, 0.10)},
    "social": {"share": 0.35, "cost": 220.0, "weights": (0.12, 0.25, 0.13, 0.35, 0.15)},
    "referral": {"share": 0.20, "cost": 60.0, "weights": (0.35, 0.15, 0.10, 0.15, 0.25)},
}
# Mean simulated days a shopper of the persona keeps coming (exponential);
# one-time buyers and drifting users end by their own rules. With arrivals
# every day this keeps the shop's size, and the load on the worker, steady.
LIFETIME_DAYS = {"loyal": 300.0, "bargain": 150.0, "newcomer": 120.0}


@dataclass
class Shopper:
    user_id: str
    persona: str
    joined_ms: int
    orders: int = 0
    channel: str = "paid_search"
    # Drifting users wait longer and longer between visits, then stop.
    gap_days: float = 2.0
    silent: bool = False
    leaves_ms: int | None = None  # after this a shopper stops coming (customers churn in every shop)


@dataclass
class DemoClock:
    """Simulated event time: starts in the past, runs `speed` days per second,
    and never overtakes the real present (the worker rejects future events)."""

    speed: float
    start_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 10 * 365 * DAY_MS)
    started: float = field(default_factory=time.monotonic)

    def now_ms(self) -> int:
        simulated = self.start_ms + int((time.monotonic() - self.started) * self.speed * DAY_MS)
        return min(simulated, int(time.time() * 1000))


class DemoGenerator:
    """`users` shoppers at the start, then `arrivals_per_day` new ones every
    simulated day for as long as it runs: a shop whose customers only age
    would, within minutes, have no newcomer, no `potential` tier, no new
    cohort and nobody for the first-repeat campaign."""

    def __init__(self, users: int, clock: DemoClock, seed: int = 42, arrivals_per_day: float = 5.0) -> None:
        self.rnd = random.Random(seed)
        self.clock = clock
        self.users = users
        self.arrivals_per_day = arrivals_per_day
        self._arrivals_from: int | None = None  # simulated time up to which arrivals were made
        self._arrival_debt = 0.0  # fractional arrivals carried to the next call
        self.sent = 0
        self._next_user = 0
        self._seq = 0
        self._queue: list[tuple[int, int, Shopper]] = []
        self._responses: list[tuple[int, int, dict]] = []  # (ts, seq, event): orders campaigns caused
        self._by_id: dict[str, Shopper] = {}
        self.responded: dict[tuple[str, str], int] = {}  # (campaign, arm) -> users who came back
        # Channels are drawn apart from everything else a shopper does.
        self._channel_rnd = random.Random(seed + 1)
        self._joined: dict[tuple[int, str], int] = {}  # (UTC day, channel) -> shoppers who joined then
        self._costed_to = -1  # UTC days before this one have had their cost statements

    def persona_of(self, user_id: str) -> str:
        """The simulated shopper's persona (what the demo knows and the worker must find out)."""
        return self._by_id[user_id].persona

    def _join(self, at_ms: int) -> Shopper:
        names = list(CHANNELS)
        channel = self._channel_rnd.choices(names, [CHANNELS[c]["share"] for c in names])[0]
        persona = self.rnd.choices(PERSONAS, CHANNELS[channel]["weights"])[0]
        shopper = Shopper(f"user-{self._next_user:05d}", persona, at_ms, channel=channel)
        day = at_ms // DAY_MS
        self._joined[(day, channel)] = self._joined.get((day, channel), 0) + 1
        if persona in LIFETIME_DAYS:
            shopper.leaves_ms = at_ms + int(self.rnd.expovariate(1 / LIFETIME_DAYS[persona]) * DAY_MS)
        self._by_id[shopper.user_id] = shopper
        self._next_user += 1
        self._schedule(shopper, at_ms)
        return shopper

    def _schedule(self, shopper: Shopper, at_ms: int) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, shopper))

    def _event(self, shopper: Shopper, type_: str, ts: int, amount: float | None = None) -> dict:
        self._seq += 1
        body = {"event_id": f"demo-{self._seq}", "user_id": shopper.user_id, "type": type_, "ts": ts}
        if amount is not None:
            body["amount"] = round(amount, 2)
            body["order_id"] = f"o-{self._seq}"
        return body

    def due_events(self) -> list[dict]:
        """Everything the simulated shoppers do up to the clock's now."""
        now = self.clock.now_ms()
        if self._arrivals_from is None:
            # The shop exists already: its shoppers joined over the last three weeks.
            for _ in range(self.users):
                self._join(now - self.rnd.randint(0, 20) * DAY_MS)
            self._arrivals_from = now
        elif now > self._arrivals_from:
            # Steady arrivals, spread over the simulated time since the last call.
            self._arrival_debt += (now - self._arrivals_from) / DAY_MS * self.arrivals_per_day
            while self._arrival_debt >= 1:
                self._arrival_debt -= 1
                self._join(self.rnd.randint(self._arrivals_from + 1, now))
            self._arrivals_from = now
        out: list[dict] = []
        while self._queue and self._queue[0][0] <= now:
            at, _, shopper = heapq.heappop(self._queue)
            out.extend(self._act(shopper, at))
        while self._responses and self._responses[0][0] <= now:
            out.append(heapq.heappop(self._responses)[2])
        self.sent += len(out)
        return out

    def due_costs(self) -> list[dict]:
        """Cost statements (tierstream.costs) for each whole UTC day since
        the last call: per channel, what its arrivals of the day cost, with
        some noise, as an ad platform's daily report would say."""
        today = self.clock.now_ms() // DAY_MS
        days = sorted({d for d, _ in self._joined if self._costed_to <= d < today})
        out = []
        for day in days:
            for channel, truth in CHANNELS.items():
                joined = self._joined.pop((day, channel), 0)
                if joined:
                    amount = round(joined * truth["cost"] * self._channel_rnd.uniform(0.8, 1.2), 2)
                    out.append({"channel": channel, "period": _utc_day(day), "amount": amount})
        self._costed_to = max(self._costed_to, today)
        return out

    def treat(self, action: dict) -> None:
        """A campaign assigned a user (from tierstream.actions): with the
        arm's probability, the user orders within the window."""
        rates = RESPONSE.get(action["campaign"])
        shopper = self._by_id.get(action["user_id"])
        if rates is None or shopper is None or self.rnd.random() >= rates[action["arm"]]:
            return
        key = (action["campaign"], action["arm"])
        self.responded[key] = self.responded.get(key, 0) + 1
        at = action["at_ms"] + int(self.rnd.uniform(1, RESPONSE_DAYS - 1) * DAY_MS)
        shopper.silent, shopper.gap_days = False, 3.0
        heapq.heappush(self._responses, (at, self._seq, self._event(shopper, "order", at, self.rnd.uniform(20, 120))))

    def _act(self, s: Shopper, at: int) -> list[dict]:
        r = self.rnd
        events: list[dict] = []
        if s.leaves_ms is not None and at >= s.leaves_ms and not s.silent:
            return events  # gone: no more visits (a campaign's response may still bring an order)
        if s.orders == 0 and s.joined_ms == at and not s.silent:
            signup = self._event(s, "signup", at)
            signup["acquisition"] = {"channel": s.channel}
            events.append(signup)
        events.append(self._event(s, r.choice(["login", "view", "view"]), at + 1))
        if s.persona == "loyal":
            if r.random() < 0.6:
                events.append(self._event(s, "order", at + 2, r.uniform(150, 600)))
                s.orders += 1
            next_days = r.uniform(1, 6)
        elif s.persona == "bargain":
            events.append(self._event(s, "add_to_cart", at + 2))
            if r.random() < 0.35:
                events.append(self._event(s, "order", at + 3, r.uniform(8, 45)))
                s.orders += 1
                if r.random() < 0.15:
                    events.append(self._event(s, "refund", at + DAY_MS, r.uniform(5, 8)))
            next_days = r.uniform(2, 9)
        elif s.persona == "one_time":
            if s.orders == 0:
                events.append(self._event(s, "order", at + 2, r.uniform(40, 250)))
                s.orders += 1
                next_days = r.uniform(5, 15)
            else:
                return events if r.random() < 0.5 else []  # a last look, then gone
        elif s.persona == "drifting":
            if r.random() < 0.4:
                events.append(self._event(s, "order", at + 2, r.uniform(30, 200)))
                s.orders += 1
            s.gap_days *= r.uniform(1.4, 2.2)
            if s.silent:
                # A win-back touch reached them; some come back.
                events = [self._event(s, "campaign_touch", at)]
                if r.random() < 0.4:
                    s.silent, s.gap_days = False, 3.0
                    events.append(self._event(s, "login", at + DAY_MS // 2))
                    events.append(self._event(s, "order", at + DAY_MS, r.uniform(20, 120)))
                    s.orders += 1
                else:
                    return events
            elif s.gap_days > 45:
                s.silent = True  # gone quiet: a win-back flow will try in two months
                next_days = r.uniform(65, 90)
                self._schedule(s, at + int(next_days * DAY_MS))
                return events
            next_days = s.gap_days
        else:  # newcomer: browses, may become a promising first buyer
            if r.random() < 0.3:
                events.append(self._event(s, "order", at + 2, r.uniform(60, 300)))
                s.orders += 1
            next_days = r.uniform(1, 8) if s.orders < 2 else r.uniform(5, 30)
        self._schedule(s, at + int(next_days * DAY_MS))
        return events


def _utc_day(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


async def run_demo(
    kafka: KafkaAccess, generator: DemoGenerator, stop: asyncio.Event, on_batch: Callable[[int], None] | None = None
) -> None:
    producer = kafka.producer(linger_ms=5)
    await producer.start()
    try:
        while not stop.is_set():
            batch = generator.due_events()
            for body in batch:
                await producer.send(topics.EVENTS, orjson.dumps(body), key=body["user_id"].encode())
            for statement in generator.due_costs():
                key = f"{statement['period']}|{statement['channel']}".encode()
                await producer.send(topics.COSTS, orjson.dumps(statement), key=key)
            if on_batch:
                on_batch(len(batch))
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.1)
            except TimeoutError:
                pass
    finally:
        await producer.stop()
