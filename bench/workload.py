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
        user = f"user-{rnd.randrange(users):07d}"
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
