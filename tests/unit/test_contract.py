import orjson
import pytest

from state.model import EventType, UserEvent
from stream.contract import Rejection, parse_event
from tests.factories import T0

NOW = T0 + 10 * 86_400_000


def parse(body, **kw):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_event(data, now_ms=NOW, max_bytes=kw.get("max_bytes", 16384), max_future_ms=86_400_000)


def base(**over):
    body = {"event_id": "e1", "user_id": "u1", "type": "order", "ts": "2026-01-02T03:04:05+02:00", "amount": "19.999"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def test_a_good_order_parses_to_cents_and_utc_millis():
    e = parse(base())
    assert isinstance(e, UserEvent)
    assert e.type is EventType.ORDER and e.amount_cents == 2000
    assert e.ts_ms == 1767315845000


def test_epoch_millis_are_accepted():
    e = parse(base(ts=T0, amount=5))
    assert e.ts_ms == T0 and e.amount_cents == 500


@pytest.mark.parametrize(
    ("body", "reason", "needle"),
    [
        (b"{not json", "invalid_json", ""),
        (b"[1,2]", "not_an_object", "list"),
        (base(type="teleport"), "unknown_type", "teleport"),
        (base(user_id=None), "invalid_event", "user_id"),
        (base(user_id=""), "invalid_event", "user_id"),
        (base(event_id=7), "invalid_event", "event_id"),
        (base(amount=-1), "invalid_event", "amount"),
        (base(amount=True), "invalid_event", "amount"),
        (base(amount=None), "invalid_event", "required for order"),
        (base(type="login"), "invalid_event", "only order and refund"),
        (base(ts="2026-01-02T03:04:05"), "invalid_event", "no UTC offset"),
        (base(ts="yesterday"), "invalid_event", "neither epoch"),
        (base(ts=1_700_000_000), "absurd_timestamp", "epoch seconds"),
        (base(ts=NOW + 2 * 86_400_000), "absurd_timestamp", "ahead"),
        (base(colour="red"), "invalid_event", "colour"),
        (base(properties={"x": "y" * 5000}), "invalid_event", "properties"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(body, reason, needle):
    r = parse(body)
    assert isinstance(r, Rejection)
    assert r.reason == reason
    assert needle in orjson.dumps(r.error).decode()


def test_oversized_messages_are_rejected_before_parsing():
    r = parse(base(properties={"x": "y" * 100}), max_bytes=50)
    assert isinstance(r, Rejection) and r.reason == "oversized"


def test_rejection_keeps_the_user_id_when_it_is_readable():
    r = parse(base(amount=-3))
    assert r.user_id == "u1"
