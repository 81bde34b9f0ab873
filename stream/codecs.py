"""Byte encodings: the users' state, output records, DLQ records (pure;
the Faust codecs wrapping the state's are in stream.faust_ext.codecs).

orjson is used throughout: it is several times faster than the standard
json module on both ends, and strict about what it accepts.
"""

from __future__ import annotations

import base64
from dataclasses import fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from state.steps import CampaignAction, CampaignOutcome, ChurnAlert, TierChange
from state.evaluate import Assessment
from state.model import DAY_MS, TRANSIENT_FIELDS, KpiMemory, UserState

STATE_FORMAT = 1
_STATE_FIELDS = tuple(f.name for f in fields(UserState) if f.name not in TRANSIENT_FIELDS)


def encode_state(state: UserState) -> bytes:
    # A positional list, not a dict: no field names repeated per user.
    # Bucket keys become strings in JSON objects, so buckets go as a flat list.
    # Spelled out field by field (checked against the dataclass below): this
    # runs for every changelog record, and a getattr loop was twice as slow.
    s = state
    b = s.buckets
    flat = [x for index in sorted(b) for x in (index, *b[index])] if b else []
    a = s.activity
    activity = [x for index in sorted(a) for x in (index, a[index])] if a else []
    fields_ = (
        STATE_FORMAT, s.first_seen_ms, s.last_seen_ms, s.last_active_ms, s.last_order_ms, s.last_campaign_ms,
        s.lifetime_orders, s.lifetime_revenue_cents, s.lifetime_refunds_cents, flat, s.recent_ids,
        s.tier, s.stage, s.tier_since_ms, s.stage_since_ms, s.evaluated_ms, s.due_ms, s.version,
        s.src_partition, s.src_offset, s.held, activity, s.kpi.to_list() if s.kpi is not None else None,
        s.camp, s.first_order_ms,
    )
    # The last field goes only when known: most users' records stay as short
    # as before it existed (decode_state takes short records).
    return orjson.dumps(fields_ if s.acquisition is None else (*fields_, s.acquisition))


_ENCODED_ORDER = (
    "first_seen_ms", "last_seen_ms", "last_active_ms", "last_order_ms", "last_campaign_ms",
    "lifetime_orders", "lifetime_revenue_cents", "lifetime_refunds_cents", "buckets", "recent_ids",
    "tier", "stage", "tier_since_ms", "stage_since_ms", "evaluated_ms", "due_ms", "version",
    "src_partition", "src_offset", "held", "activity", "kpi", "camp", "first_order_ms",
    "acquisition",
)
assert _ENCODED_ORDER == _STATE_FIELDS, "encode_state is out of step with UserState's fields"


def decode_state(data: bytes) -> UserState:
    values = orjson.loads(data)
    if values[0] != STATE_FORMAT:
        raise ValueError(f"unknown state format {values[0]!r}; this worker reads format {STATE_FORMAT}")
    # Fields are only ever appended: a record written before `activity`
    # (or `kpi`, `camp`, `first_order_ms`, `acquisition`) existed is short of them, and
    # decodes with their defaults.
    if not len(_STATE_FIELDS) - 5 <= len(values) - 1 <= len(_STATE_FIELDS):
        raise ValueError(f"state record has {len(values) - 1} fields; this worker reads {len(_STATE_FIELDS)}")
    kwargs = dict(zip(_STATE_FIELDS, values[1:]))
    flat = kwargs["buckets"]
    kwargs["buckets"] = {flat[i]: [flat[i + 1], flat[i + 2]] for i in range(0, len(flat), 3)}
    flat = kwargs.get("activity", [])
    kwargs["activity"] = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    kpi = kwargs.get("kpi")
    kwargs["kpi"] = KpiMemory.from_list(kpi) if kpi is not None else None
    return UserState(**kwargs)


_EPOCH = datetime(1970, 1, 1)


@lru_cache(maxsize=1 << 12)
def _day_prefix(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")


@lru_cache(maxsize=1 << 16)  # since-times repeat in every record of a user
def iso(ms: int | None) -> str | None:
    """Epoch ms -> '2026-01-01T10:00:00.123Z'. The date part is cached per
    day and the time of day is plain arithmetic: this runs for every
    published record, and datetime arithmetic was a third of its cost."""
    if ms is None:
        return None
    day, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def money(cents: int) -> float:
    # cents / 100 is already the double nearest to the 2-decimal amount
    # (what round(x, 2) would return).
    return cents / 100


def figures(a: Assessment) -> dict[str, Any]:
    """The scores and figures that explain a decision, in operator's words."""
    return {
        "recency_days": a.recency_days,
        "days_inactive": a.days_inactive,
        "frequency": a.frequency,
        "monetary": money(a.monetary_cents),
        "rfm": {"r": a.r, "f": a.f, "m": a.m},
        "engagement": {"score": a.e, "actions": a.actions} if a.e is not None else None,
        "lifetime_orders": a.lifetime_orders,
        "ltv": money(a.ltv_cents),
        "aov": money(a.aov_cents),
        # With the churn model, once fitted (None for a customer who never ordered).
        **({"churn": {"p_alive": a.p_alive, "expected_orders": a.expected_orders,
                      "horizon_days": a.cuts.churn.horizon_days}}
           if a.cuts is not None and a.cuts.churn is not None else {}),
    }


def acquisition(a: Assessment) -> dict[str, Any]:
    """`{"acquisition": {"channel", "campaign"}}` when the user's is known,
    else nothing: records of users no event placed stay as they were."""
    known = a.acquisition
    return {"acquisition": {"channel": known[0], "campaign": known[1]}} if known is not None else {}


def tier_change_record(c: TierChange) -> dict[str, Any]:
    a = c.assessment
    return {
        "change_id": c.change_id,
        "user_id": c.user_id,
        "from_tier": c.from_tier,
        "to_tier": c.to_tier,
        "from_stage": c.from_stage,
        "to_stage": c.to_stage,
        "at": iso(a.at_ms),
        "at_ms": a.at_ms,
        "correction": c.correction,
        **figures(a),
        # Quantile scores: the population's cut points this decision used.
        "thresholds": a.cuts.summary() if a.cuts is not None else None,
        "rules_version": c.rules_version,
        **({"reason": c.reason} if c.reason is not None else {}),
        **acquisition(a),
    }


def churn_alert_record(alert: ChurnAlert) -> dict[str, Any]:
    a = alert.assessment
    return {
        "alert_id": alert.alert_id,
        "user_id": alert.user_id,
        "level": alert.level,
        "days_inactive": a.days_inactive,
        "tier": a.tier,
        "ltv": money(a.ltv_cents),
        "at": iso(a.at_ms),
        "at_ms": a.at_ms,
        "correction": alert.correction,
        # With the churn model, once fitted: what a churn_risk alert is about.
        **({"churn": figures(a)["churn"]} if a.cuts is not None and a.cuts.churn is not None else {}),
        "rules_version": alert.rules_version,
        **({"reason": alert.reason} if alert.reason is not None else {}),
        **acquisition(a),
    }


def action_record(a: CampaignAction) -> dict[str, Any]:
    """What a downstream sender needs: act on `treatment` only."""
    s = a.assessment
    return {
        "action_id": a.action_id,
        "user_id": a.user_id,
        "campaign": a.campaign,
        "arm": a.arm,
        "trigger": a.trigger,
        "at": iso(a.at_ms),
        "at_ms": a.at_ms,
        "window_end": iso(a.window_end_ms),
        "tier": s.tier,
        "stage": s.stage,
        "ltv": money(s.ltv_cents),
        "days_inactive": s.days_inactive,
        "lifetime_orders": s.lifetime_orders,
        **acquisition(s),
    }


def outcome_record(o: CampaignOutcome) -> dict[str, Any]:
    return {
        "outcome_id": o.outcome_id,
        "action_id": o.action_id,
        "user_id": o.user_id,
        "campaign": o.campaign,
        "arm": o.arm,
        "converted": o.converted,
        "revenue": money(o.revenue_cents),
        "assigned_at": iso(o.assigned_ms),
        "at": iso(o.at_ms),
        "at_ms": o.at_ms,
    }


def user_record(user_id: str, state: UserState, a: Assessment) -> dict[str, Any]:
    """What the read API serves for one user (stored in Redis as is)."""
    return {
        "user_id": user_id,
        "tier": a.tier,
        "stage": a.stage,
        "tier_since": iso(state.tier_since_ms),
        "stage_since": iso(state.stage_since_ms),
        "evaluated_at": iso(a.at_ms),
        "first_seen": iso(state.first_seen_ms),
        "last_active": iso(state.last_active_ms),
        "last_order": iso(state.last_order_ms),
        "version": state.version,
        **figures(a),
        **acquisition(a),
    }


def dead_letter_record(
    *, reason: str, error: Any, topic: str, partition: int, offset: int,
    key: bytes | None, payload: bytes | None, max_payload: int,
) -> bytes:
    """The original bytes travel as text when they are UTF-8, else base64;
    past `max_payload` they are cut and flagged, never dropped unannounced."""
    payload = payload or b""
    truncated = len(payload) > max_payload
    kept = payload[:max_payload]
    record: dict[str, Any] = {
        "reason": reason,
        "error": error,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": _as_text(key) if key is not None else None,
        "payload_size": len(payload),
        "payload_truncated": truncated,
    }
    try:
        record["payload"] = kept.decode()
    except UnicodeDecodeError:
        record["payload_b64"] = base64.b64encode(kept).decode()
    return orjson.dumps(record)


def _as_text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()
