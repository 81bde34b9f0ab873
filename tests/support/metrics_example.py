"""docs/metrics.md's worked example, as events."""

from datetime import UTC, datetime


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def body(i: int, user: str, kind: str, at: str, amount: float | None = None) -> dict:
    b = {"event_id": f"e{i}", "user_id": user, "type": kind, "ts": ms(at)}
    return b | ({"amount": amount} if amount is not None else {})


# docs/metrics.md, "A worked example": three users over two weeks.
EXAMPLE = [
    body(1, "ann", "signup", "2024-01-01T09:00"),
    body(2, "ann", "order", "2024-01-02T10:00", 30),
    body(3, "bob", "view", "2024-01-02T12:00"),
    body(4, "bob", "add_to_cart", "2024-01-03T08:00"),
    body(5, "cat", "signup", "2024-01-03T09:00"),
    body(6, "cat", "add_to_cart", "2024-01-04T09:00"),
    body(7, "bob", "order", "2024-01-05T08:00", 20),
    body(8, "ann", "login", "2024-01-08T09:00"),
    body(9, "ann", "order", "2024-01-09T09:00", 50),
    body(10, "ann", "refund", "2024-01-10T09:00", 10),
]


def _acquired(i: int, user: str, kind: str, day: int, amount: float | None = None,
              channel: str | None = None) -> dict:
    b = {"event_id": f"e{i}", "user_id": user, "type": kind, "ts": f"2024-01-{day:02d}T10:00:00Z"}
    b |= {"amount": amount} if amount is not None else {}
    return b | ({"acquisition": {"channel": channel}} if channel else {})


# docs/metrics.md, "A worked example of LTV against CAC": two customers of
# `social` and one unattributed, acquired in January 2024; a clock event
# puts the watermark (a day's lateness) at 2024-04-29 12:00.
ACQUISITION_EXAMPLE = [
    _acquired(1, "ann", "signup", 1, channel="social"), _acquired(2, "ann", "order", 3, 50),
    _acquired(3, "bob", "signup", 10, channel="social"), _acquired(4, "cat", "signup", 12),
    _acquired(5, "ann", "order", 20, 30), _acquired(6, "ann", "refund", 25, 10), _acquired(7, "bob", "order", 30, 40),
    {"event_id": "clock", "user_id": "zz", "type": "view", "ts": "2024-04-30T12:00:00Z"},
]
# What social cost in January: first stated as 60, then restated as 80.
ACQUISITION_COSTS = [{"channel": "social", "period": "2024-01", "amount": 60},
                     {"channel": "social", "period": "2024-01", "amount": 80}]
