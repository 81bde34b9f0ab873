"""The input event contract: what a producer may send to `tierstream.events`.

`parse_event` turns raw message bytes into a `UserEvent` or a `Rejection`
that says what was wrong. It never raises on bad input: a bad event is a
dead letter, not a crash. See docs/events.md for the contract in prose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from state.model import EventType, UserEvent

# The default lower bound on event time (TIERSTREAM_EARLIEST_EVENT): real
# shops replay history from the 1990s, so only the epoch itself is refused.
EARLIEST_MS = 0
# An integer ts below this is far more likely epoch *seconds* (any date up
# to the year 5138) than milliseconds before 1973-03-03: refused with that
# hint. Older history can be sent as ISO-8601.
SECONDS_GUARD_MS = 100_000_000_000
KNOWN_FIELDS = frozenset({"event_id", "user_id", "type", "ts", "amount", "order_id", "properties", "acquisition"})
MAX_PROPERTIES_BYTES = 4096
# Deeper nesting is no real producer's data, and orjson refuses to encode
# past 254 levels: the limit turns that into a reason instead of a crash.
MAX_PROPERTIES_DEPTH = 32
MONEY_TYPES = (EventType.ORDER, EventType.REFUND)

Identifier = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
ACQUISITION_FIELDS = frozenset({"channel", "campaign"})


def printable_name(value: str, what: str) -> str:
    if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what} must be printable, without blanks at either end")
    return value


class Acquisition(BaseModel):
    """Where the user came from, as the event (normally the signup) says.
    Channels are the operator's own words ("paid_search", "Partner X"): any
    value is data, not a reason to refuse, but bounded and printable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    campaign: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None

    @field_validator("channel", "campaign")
    @classmethod
    def _printable(cls, v: str | None, info: Any) -> str | None:
        return v if v is None else printable_name(v, info.field_name)


class InputEvent(BaseModel):
    # Unknown top-level fields are taken out before validation (parse_event):
    # producers add fields all the time, and that must not cost the event.
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    user_id: Identifier
    type: EventType
    ts: StrictInt | StrictStr
    amount: Decimal | None = None
    order_id: Identifier | None = None
    properties: dict[str, Any] | None = None
    acquisition: Acquisition | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount_is_number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float, str, type(None))):
            raise ValueError("amount must be a number or a decimal string")
        return v

    @field_validator("amount")
    @classmethod
    def _amount_non_negative(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and (not v.is_finite() or v < 0):
            raise ValueError("amount must be a finite decimal >= 0 (send refunds as type 'refund')")
        if v is not None and v > Decimal("1e12"):
            raise ValueError("amount is absurdly large (> 1e12)")
        return v

    @field_validator("user_id")
    @classmethod
    def _user_id_addressable(cls, v: str) -> str:
        # URL paths drop dot segments before any server sees them, so these
        # two ids could never be read back through GET /v1/users/{id}.
        if v in (".", ".."):
            raise ValueError("user_id may not be '.' or '..' (a URL cannot address it)")
        return v

    @field_validator("properties")
    @classmethod
    def _properties_small(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if _depth(v) > MAX_PROPERTIES_DEPTH:
            raise ValueError(f"properties may nest at most {MAX_PROPERTIES_DEPTH} levels deep")
        if len(orjson.dumps(v)) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"properties must serialise to at most {MAX_PROPERTIES_BYTES} bytes")
        return v


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion (the input may be
    far deeper than Python's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


@dataclass(slots=True, frozen=True)
class Rejection:
    reason: str  # short, stable, countable: invalid_json, invalid_event, ...
    error: Any  # the details a producer needs to fix it
    user_id: str | None = None


def json_object(payload: bytes, max_bytes: int, what: str) -> dict | Rejection:
    """The payload as a JSON object, or why it is not one (shared by every
    input contract: events, cost statements)."""
    if len(payload) > max_bytes:
        return Rejection("oversized", f"{what} is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc))
    if not isinstance(raw, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    return raw


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Each field a producer must fix, and what is wrong with it."""
    return [{"field": ".".join(str(p) for p in e["loc"]) or None, "error": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)]


def parse_ts(value: int | str) -> int:
    if isinstance(value, int):
        return value
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"ts {value!r} is neither epoch milliseconds nor ISO-8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"ts {value!r} has no UTC offset; add 'Z' or '+hh:mm'")
    return int(parsed.timestamp() * 1000)


def parse_event(
    payload: bytes,
    *,
    now_ms: int,
    max_bytes: int,
    max_future_ms: int,
    earliest_ms: int = EARLIEST_MS,
    on_unknown_fields: Callable[[list[str]], None] | None = None,
) -> UserEvent | Rejection:
    """`on_unknown_fields` hears the names of top-level fields the contract
    does not know; they are dropped (nothing downstream would read them)."""
    raw = json_object(payload, max_bytes, "event")
    if isinstance(raw, Rejection):
        return raw
    user_id = raw.get("user_id") if isinstance(raw.get("user_id"), str) else None
    if "type" in raw and isinstance(raw["type"], str) and raw["type"] not in EventType._value2member_map_:
        known = ", ".join(t.value for t in EventType)
        return Rejection("unknown_type", f"type {raw['type']!r} is not one of: {known}", user_id)
    unknown = [k for k in raw if k not in KNOWN_FIELDS]
    if unknown:
        raw = {k: v for k, v in raw.items() if k in KNOWN_FIELDS}
    acquisition = raw.get("acquisition")
    if isinstance(acquisition, dict) and not acquisition.keys() <= ACQUISITION_FIELDS:
        # UTM-style extras (medium, source, ...) are dropped like unknown
        # top-level fields: they must not cost the user their signup.
        unknown += [f"acquisition.{k}" for k in acquisition if k not in ACQUISITION_FIELDS]
        raw = {**raw, "acquisition": {k: v for k, v in acquisition.items() if k in ACQUISITION_FIELDS}}
    if unknown:
        if on_unknown_fields is not None:
            on_unknown_fields(unknown)
    try:
        event = InputEvent.model_validate(raw)
    except ValidationError as exc:
        return Rejection("invalid_event", field_errors(exc), user_id)
    try:
        ts_ms = parse_ts(event.ts)
    except ValueError as exc:
        return Rejection("invalid_event", [{"field": "ts", "error": str(exc)}], user_id)
    if isinstance(event.ts, int) and 0 <= ts_ms < SECONDS_GUARD_MS:
        return Rejection("absurd_timestamp", f"ts {ts_ms} looks like epoch seconds: send milliseconds "
                         "(or ISO-8601 for events before 1973-03-03)", user_id)
    if ts_ms < earliest_ms:
        earliest = datetime.fromtimestamp(earliest_ms / 1000, UTC).isoformat()
        return Rejection("absurd_timestamp", f"ts {ts_ms} is before {earliest} (TIERSTREAM_EARLIEST_EVENT)", user_id)
    if ts_ms > now_ms + max_future_ms:
        return Rejection(
            "absurd_timestamp",
            f"ts {ts_ms} is more than {max_future_ms // 1000}s ahead of this worker's clock ({now_ms})",
            user_id,
        )
    if event.type in MONEY_TYPES:
        if event.amount is None:
            return Rejection("invalid_event", [{"field": "amount", "error": f"required for {event.type}"}], user_id)
        cents = int((event.amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    else:
        if event.amount is not None or event.order_id is not None:
            field = "amount" if event.amount is not None else "order_id"
            return Rejection(
                "invalid_event", [{"field": field, "error": f"only order and refund events carry {field}"}], user_id
            )
        cents = 0
    return UserEvent(
        event_id=event.event_id,
        user_id=event.user_id,
        type=event.type,
        ts_ms=ts_ms,
        amount_cents=cents,
        order_id=event.order_id,
        channel=event.acquisition.channel if event.acquisition is not None else None,
        campaign=event.acquisition.campaign if event.acquisition is not None else None,
    )


__all__ = ["Acquisition", "InputEvent", "Rejection", "parse_event", "parse_ts"]
