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


def history(users: int, events: int, days: int = 730, seed: int = 11, start_ms: int = START_MS) -> list[dict]:
    """A shop's history as event dicts, in no particular order: each user has
    a signup, then activity whose pace and spend depend on a persona, so that
    tiers, quiet spells, churn and comebacks all occur."""
    rnd = random.Random(seed)
    out: list[dict] = []
    per_user = max(1, events // users)
    for u in range(users):
        user = f"h-{u:06d}"
        joined = start_ms + rnd.randrange(days * DAY_MS // 2)
        spend = rnd.choice((25, 60, 150, 400))
        pace = rnd.choice((3, 10, 30, 90))  # mean days between visits
        t = joined
        out.append({"event_id": f"{user}-0", "user_id": user, "type": "signup", "ts": t})
        for i in range(1, per_user):
            t += int(rnd.expovariate(1 / pace) * DAY_MS) + 1
            if t >= start_ms + days * DAY_MS:
                t = start_ms + days * DAY_MS - 1 - i  # pile up at the end rather than run past it
            kind = rnd.choices(KINDS + ("login",), (3, 3, 2, 2, 2, 2, 1, 1, 2))[0]
            body = {"event_id": f"{user}-{i}", "user_id": user, "type": kind, "ts": t}
            if kind in ("order", "refund"):
                body["amount"] = round(rnd.uniform(0.2, 2.0) * (spend if kind == "order" else spend / 4), 2)
            out.append(body)
    rnd.shuffle(out)
    return out
