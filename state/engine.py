"""One user's step: events and the passage of time in, decisions out.

This is where business meaning lives (when is something a change, when is
an alert due); agents only move bytes. Everything is a function of the
state, the event and the event-time `now` passed in, so replays give the
same ids and payloads as the live run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from state.evaluate import Assessment, evaluate, next_due
from state.model import UserEvent, UserState, apply, is_duplicate
from state.rules import Rules

ALERT_LEVELS = ("at_risk", "churned")


@dataclass(slots=True, frozen=True)
class TierChange:
    change_id: str
    user_id: str
    from_tier: str | None
    to_tier: str
    from_stage: str | None
    to_stage: str
    assessment: Assessment


@dataclass(slots=True, frozen=True)
class ChurnAlert:
    alert_id: str
    user_id: str
    level: str
    assessment: Assessment


Decision = TierChange | ChurnAlert


def _stable_id(*parts: object) -> str:
    text = "|".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def reassess(user_id: str, state: UserState, now_ms: int, rules: Rules) -> tuple[Assessment, list[Decision]]:
    """Evaluate at `now_ms`, record what changed and say what to publish."""
    a = evaluate(state, now_ms, rules)
    decisions: list[Decision] = []
    if a.tier != state.tier or a.stage != state.stage:
        decisions.append(
            TierChange(
                change_id=_stable_id(user_id, now_ms, state.tier, a.tier, state.stage, a.stage),
                user_id=user_id,
                from_tier=state.tier,
                to_tier=a.tier,
                from_stage=state.stage,
                to_stage=a.stage,
                assessment=a,
            )
        )
        if a.stage != state.stage and a.stage in ALERT_LEVELS:
            # One alert per level per quiet spell: the spell is named by the
            # last activity it started from.
            anchor = state.last_active_ms if state.last_active_ms is not None else state.first_seen_ms
            decisions.append(
                ChurnAlert(
                    alert_id=_stable_id(user_id, a.stage, anchor),
                    user_id=user_id,
                    level=a.stage,
                    assessment=a,
                )
            )
        if a.tier != state.tier:
            state.tier, state.tier_since_ms = a.tier, now_ms
        if a.stage != state.stage:
            state.stage, state.stage_since_ms = a.stage, now_ms
        state.version += 1
    state.evaluated_ms = now_ms
    state.due_ms = next_due(state, now_ms, rules)
    return a, decisions


def catch_up(
    user_id: str, state: UserState, until_ms: int, rules: Rules
) -> tuple[Assessment | None, list[Decision]]:
    """Fire every time-driven re-evaluation due strictly before `until_ms`,
    each at its own due time, so a change lands when it happened in event
    time and not when a sweep or the next event noticed it."""
    decisions: list[Decision] = []
    latest: Assessment | None = None
    while state.due_ms is not None and state.due_ms < until_ms:
        latest, found = reassess(user_id, state, state.due_ms, rules)
        decisions.extend(found)
    return latest, decisions


@dataclass(slots=True)
class StepResult:
    state: UserState
    decisions: list[Decision]
    accepted: bool  # False: a duplicate event id, nothing changed
    assessment: Assessment | None  # the latest evaluation, None for a duplicate


def on_event(state: UserState | None, event: UserEvent, now_ms: int, rules: Rules) -> StepResult:
    """Apply one validated event at stream time `now_ms` (>= the event's own
    time for in-order events; later for late ones)."""
    if is_duplicate(state, event):
        assert state is not None
        return StepResult(state, [], accepted=False, assessment=None)
    decisions: list[Decision] = []
    if state is not None:
        decisions.extend(catch_up(event.user_id, state, event.ts_ms, rules)[1])
    state = apply(
        state,
        event,
        bucket_days=rules.window.bucket_days,
        window_buckets=rules.window.buckets,
        recent_ids=rules.dedup.recent_event_ids,
    )
    now = max(now_ms, event.ts_ms, state.evaluated_ms or 0)
    assessment, found = reassess(event.user_id, state, now, rules)
    decisions.extend(found)
    return StepResult(state, decisions, accepted=True, assessment=assessment)
