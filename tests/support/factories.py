"""Small builders shared by unit and integration tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from state.model import DAY_MS, EventType, UserEvent

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
_ids = itertools.count()


def ev(user: str, type_: str, day: float, amount: float = 0.0, event_id: str | None = None) -> UserEvent:
    return UserEvent(
        event_id=event_id or f"{user}-{next(_ids)}",
        user_id=user,
        type=EventType(type_),
        ts_ms=T0 + int(day * DAY_MS),
        amount_cents=round(amount * 100),
    )


def raw(user: str, type_: str, day: float, amount: float | None = None, event_id: str | None = None) -> dict:
    """An input event as a producer would send it (JSON-ready dict)."""
    body = {"event_id": event_id or f"{user}-{next(_ids)}", "user_id": user, "type": type_,
            "ts": T0 + int(day * DAY_MS)}
    if amount is not None:
        body["amount"] = amount
    return body
