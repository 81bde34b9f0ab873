import orjson
import pytest

from state.model import EventType, UserEvent
from stream.contract import Rejection, parse_event
from tests.support.factories import T0

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


# -- fuzz: no input ever ends as processing_error ("a bug: please report it")

from hypothesis import HealthCheck, example, given, settings, strategies as st  # noqa: E402

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
field_values = {
    "event_id": st.one_of(st.text(max_size=140), json_values),
    "user_id": st.one_of(st.text(max_size=140), st.sampled_from([".", "..", "a/b", "{x}"]), json_values),
    "type": st.one_of(st.sampled_from([t.value for t in EventType]), json_values),
    "ts": st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=40), st.sampled_from(
        ["9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00", "2026-01-01T00:00:00", "2026-W01"]), json_values),
    "amount": st.one_of(st.decimals(allow_nan=True).map(str), st.floats(), json_values,
                        st.sampled_from(["1e999999999", "-0", "1E-999999", "NaN", "Infinity"])),
    "order_id": json_values,
    "properties": json_values,
}
bodies = st.fixed_dictionaries({}, optional={k: v for k, v in field_values.items()}) | json_values


def _deep(levels: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(levels):
        node["a"] = {}
        node = node["a"]
    return root


@given(st.one_of(bodies.map(orjson.dumps), st.binary(max_size=200)))
# orjson encodes at most 254 levels; the stdlib builds what a producer could send.
@example(__import__("json").dumps({"event_id": "e", "user_id": "u", "type": "login", "ts": T0,
                                   "properties": _deep(300)}).encode())
@example(orjson.dumps({"event_id": "e", "user_id": "u", "type": "order", "ts": T0, "amount": "1e999999999"}))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_input_is_ever_a_processing_error(payload):
    from tests.support.fakes import make, msg

    p, out = make()
    try:
        key = orjson.loads(payload).get("user_id", "").encode()
    except Exception:
        key = b"k"
    p.on_message(msg(payload, key=key if isinstance(key, bytes) else b"k"))
    reasons = [d["reason"] for d in out.dead_letters.records()]
    assert "processing_error" not in reasons, out.dead_letters.records()


def test_deeply_nested_properties_are_refused_with_a_reason():
    import json  # orjson will not even encode 300 levels

    r = parse(json.dumps(base(type="login", amount=None, properties=_deep(300))).encode())
    assert isinstance(r, Rejection) and r.reason == "invalid_event"
    assert "nest" in str(r.error)


def test_dot_segment_user_ids_are_refused_with_a_reason():
    for user_id in (".", ".."):
        r = parse(base(user_id=user_id))
        assert isinstance(r, Rejection) and "URL" in str(r.error)


def test_real_history_from_1995_with_extra_fields_is_accepted_and_the_extras_counted():
    """Issue #13: a 1990s purchase history whose orders carry a `quantity`."""
    dropped = []
    for ts in ("1995-03-04T10:00:00Z", 794_311_200_000):  # ISO and epoch ms, both 1995
        e = parse_event(orjson.dumps(base(ts=ts, quantity=3, channel="web")), now_ms=NOW, max_bytes=16384,
                        max_future_ms=86_400_000, on_unknown_fields=dropped.append)
        assert isinstance(e, UserEvent) and e.ts_ms == 794_311_200_000 and e.amount_cents == 2000
    assert dropped == [["quantity", "channel"], ["quantity", "channel"]]


def test_the_earliest_event_time_is_a_setting_and_the_seconds_guard_stays():
    body = orjson.dumps(base(ts="1995-03-04T10:00:00Z"))
    r = parse_event(body, now_ms=NOW, max_bytes=16384, max_future_ms=0, earliest_ms=946_684_800_000)
    assert isinstance(r, Rejection) and r.reason == "absurd_timestamp" and "TIERSTREAM_EARLIEST_EVENT" in r.error
    r = parse(base(ts=1_700_000_000))  # epoch seconds, 2023
    assert isinstance(r, Rejection) and "epoch seconds" in r.error


def test_kafka_urls_are_accepted_as_faust_users_write_them():
    import pytest
    from pydantic import ValidationError

    from stream.settings import Settings

    assert Settings(broker="kafka://a:9092, kafka://b:9093").broker == "a:9092,b:9093"
    assert Settings(broker="127.0.0.1:9092").broker == "127.0.0.1:9092"
    for bad in ("http://a:9092", "a", "kafka://a:port"):
        with pytest.raises(ValidationError):
            Settings(broker=bad)
    assert Settings(earliest_event="1990-01-01T00:00:00Z").earliest_event_ms == 631_152_000_000
