"""Deterministic synthetic events: ~150-byte JSON, spread over `users` users."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

DAY_MS = 86_400_000
START_MS = 1_577_836_800_000  # 2020-01-01: in the past, so the live clock accepts it
KINDS = ("view", "view", "login", "add_to_cart", "order", "order", "refund", "campaign_touch")


def events(n: int, users: int, seed: int = 1, span_days: int = 365) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs in event-time order."""
    rnd = random.Random(seed)
    step = span_days * DAY_MS / max(1, n)
    for i in range(n):
        # Every user appears at least once (when n >= users), the rest at random.
        u = (i * 7919) % users if i < users else rnd.randrange(users)
        user = f"user-{u:07d}"
        kind = rnd.choice(KINDS)
        body = {"event_id": f"ev-{seed}-{i:09d}", "user_id": user, "type": kind, "ts": START_MS + int(i * step)}
        if kind in ("order", "refund"):
            body["amount"] = round(rnd.uniform(5, 300 if kind == "order" else 40), 2)
        yield user.encode(), orjson.dumps(body)


def signups(n: int, prefix: str, ts_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """One new user per event: each produces exactly one tier change."""
    for i in range(n):
        user = f"{prefix}-{i:07d}"
        body = {"event_id": f"{prefix}-s{i}", "user_id": user, "type": "signup", "ts": ts_ms + i}
        yield user.encode(), orjson.dumps(body)


CHANNELS = ("paid_search", "social", "referral")


def history(users: int, events: int, days: int = 730, seed: int = 11, start_ms: int = START_MS,
            channels: tuple[str, ...] = ()) -> list[dict]:
    """A shop's history as event dicts, in no particular order: each user has
    a signup, then activity whose pace and spend depend on a persona, so that
    tiers, quiet spells, churn and comebacks all occur. With `channels`, most
    signups say which one brought the user (some with a campaign), some
    users say nothing, and a few say it only later (docs/events.md)."""
    rnd = random.Random(seed)
    # Its own generator: the history with channels is the one without, plus them.
    acq = random.Random(seed * 7 + 3)
    out: list[dict] = []
    per_user = max(1, events // users)
    for u in range(users):
        user = f"h-{u:06d}"
        joined = start_ms + rnd.randrange(days * DAY_MS // 2)
        spend = rnd.choice((25, 60, 150, 400))
        pace = rnd.choice((3, 10, 30, 90))  # mean days between visits
        t = joined
        signup: dict = {"event_id": f"{user}-0", "user_id": user, "type": "signup", "ts": t}
        out.append(signup)
        said_later = None
        if channels:
            draw = acq.random()
            said = {"channel": acq.choice(channels)}
            if acq.random() < 0.3:
                said["campaign"] = f"{said['channel']}-{acq.randrange(3)}"
            if draw < 0.8:
                signup["acquisition"] = said
            elif draw < 0.9:
                said_later = said  # on a later event: the user moves from unattributed to it
        for i in range(1, per_user):
            t += int(rnd.expovariate(1 / pace) * DAY_MS) + 1
            if t >= start_ms + days * DAY_MS:
                t = start_ms + days * DAY_MS - 1 - i  # pile up at the end rather than run past it
            kind = rnd.choices(KINDS + ("login",), (3, 3, 2, 2, 2, 2, 1, 1, 2))[0]
            body = {"event_id": f"{user}-{i}", "user_id": user, "type": kind, "ts": t}
            if kind in ("order", "refund"):
                body["amount"] = round(rnd.uniform(0.2, 2.0) * (spend if kind == "order" else spend / 4), 2)
            if said_later is not None and i == 1:
                body["acquisition"] = said_later
            out.append(body)
    rnd.shuffle(out)
    return out


def cost_statements(channels: tuple[str, ...], days: int, seed: int = 5, start_ms: int = START_MS) -> list[dict]:
    """What acquisition through each channel cost, in the order a finance
    team would send it: a statement per channel and month (one channel per
    ISO week instead), some restated later with a corrected amount, and the
    first months' corrections only at the end (late statements)."""
    from datetime import UTC, date, datetime, timedelta

    rnd = random.Random(seed)
    first = datetime.fromtimestamp(start_ms / 1000, UTC).date()
    last = first + timedelta(days=days - 1)
    out: list[dict] = []
    corrections: list[dict] = []
    for n, channel in enumerate(channels):
        scale = (4000, 1500, 300, 800)[n % 4]
        if n == 1:  # weekly statements
            d = first - timedelta(days=first.weekday())
            while d <= last:
                y, w, _ = d.isocalendar()
                out.append({"channel": channel, "period": f"{y}-W{w:02d}", "amount": round(scale / 4 * rnd.uniform(0.5, 1.5), 2)})
                d += timedelta(days=7)
            continue
        y, m = first.year, first.month
        while date(y, m, 1) <= last:
            statement = {"channel": channel, "period": f"{y}-{m:02d}", "amount": round(scale * rnd.uniform(0.5, 1.5), 2)}
            out.append(statement)
            if rnd.random() < 0.25:
                corrections.append({**statement, "amount": round(statement["amount"] * rnd.uniform(0.8, 1.2), 2)})
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    rnd.shuffle(out)
    return out + corrections
