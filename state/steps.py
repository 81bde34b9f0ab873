"""One user's step: events and the passage of event time in, decisions out.

This is where business meaning lives (when is something a change, when is
an alert due); agents only move bytes. Everything is a function of the
state, the event and the watermarks passed in, so replays give the same ids
and payloads as the live run.

Event time, in short (docs/time.md has the whole story):
- The watermark W is the latest event time seen minus the allowed lateness
  (in live mode, wall-clock time also pushes it).
- An event at or after the previous watermark is held, and released when W
  passes it, in event-time order. Time-driven re-evaluations (a user going
  quiet) fire at their own due times, interleaved in the same order. So
  within the allowed lateness, arrival order changes nothing.
- An event older than the previous watermark is applied at once: figures
  are corrected, and whatever change follows is published at the current
  watermark, marked as a correction. What was published stays published.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from state import campaigns
from state.evaluate import Assessment, alive_at, evaluate, next_due, pass_r_crossing
from state.kpis import Ledger
from state.model import DAY_MS, EventType, UserEvent, UserState, apply, hold, is_duplicate, new_state, release
from state.rules import Rules

ALERT_LEVELS = ("at_risk", "churned")


# Decisions are not frozen dataclasses only for speed (frozen init is ~3x
# slower, and several are built per event); nothing mutates them.
@dataclass(slots=True)
class TierChange:
    change_id: str
    user_id: str
    from_tier: str | None
    to_tier: str
    from_stage: str | None
    to_stage: str
    assessment: Assessment
    correction: bool = False
    rules_version: str | None = None  # the configuration in force that decided it (state.config)
    # Why it was decided when it was, where not an event or time alone:
    # "rules_changed" (a roll-out re-assessed everyone, state.rollout).
    reason: str | None = None


@dataclass(slots=True)
class ChurnAlert:
    alert_id: str
    user_id: str
    level: str
    assessment: Assessment
    correction: bool = False
    rules_version: str | None = None
    reason: str | None = None  # as TierChange.reason


@dataclass(slots=True)
class CampaignAction:
    """A user assigned to a campaign's arm (downstream senders act on `treatment` only)."""

    action_id: str
    user_id: str
    campaign: str
    arm: str
    trigger: str  # e.g. "enter_tier:high_value", "alert:at_risk"
    at_ms: int
    window_end_ms: int
    assessment: Assessment


@dataclass(slots=True)
class CampaignOutcome:
    """An assignment's window closed: converted or not, and the revenue in it."""

    outcome_id: str
    action_id: str
    user_id: str
    campaign: str
    arm: str
    converted: bool
    revenue_cents: int
    assigned_ms: int
    at_ms: int  # the window's end


@dataclass(slots=True)
class UserParked:
    """A user whose due time would not move forward: advancing them again
    would evaluate the same moment for ever. They are parked (no due time:
    their next event wakes them) and the adapter dead-letters this with its
    reason, so one user's bad state never stops a partition or a tool."""

    user_id: str
    at_ms: int  # the due time that kept coming back
    reason: str


Decision = TierChange | ChurnAlert | CampaignAction | CampaignOutcome | UserParked


def _stable_id(*parts: object) -> str:
    text = "|".join(["" if p is None else str(p) for p in parts])  # a list: join on a generator builds one anyway
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def reassess(
    user_id: str, state: UserState, now_ms: int, rules: Rules, correction: bool = False, reason: str | None = None
) -> tuple[Assessment, list[Decision]]:
    """Evaluate at `now_ms`, record what changed and say what to publish.
    `reason`: why now (TierChange.reason), when it is not an event or time alone."""
    a = evaluate(state, now_ms, rules, user_id)
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
                correction=correction,
                rules_version=rules.version,
                reason=reason,
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
                    correction=correction,
                    rules_version=rules.version,
                    reason=reason,
                )
            )
        if a.tier != state.tier:
            state.tier, state.tier_since_ms = a.tier, now_ms
        if a.stage != state.stage:
            state.stage, state.stage_since_ms = a.stage, now_ms
        state.version += 1
    risk = _churn_risk(user_id, state, a, now_ms, rules, correction)
    if risk is not None:
        risk.reason = reason
        if not decisions:
            state.version += 1
        decisions.append(risk)
    if rules.campaigns or (state.camp and state.camp[2]):
        # Windows close even under rules without that campaign (a tool run
        # with other campaigns, a campaign since removed): an assignment made
        # is measured to its end, and its end is never left in the past as
        # the user's due time (that due time would fire again for ever).
        changed = bool(decisions)
        decisions += _campaign_step(user_id, state, now_ms, rules, decisions, a)
        if decisions and not changed:
            state.version += 1  # each step that decides something has its own version
    state.evaluated_ms = now_ms
    state.due_ms = next_due(state, now_ms, rules, a)
    window_end = campaigns.earliest_window_end(state.camp)
    if window_end is not None and (state.due_ms is None or window_end < state.due_ms):
        state.due_ms = window_end  # a campaign window closes: its outcome is due then
    if window_end is not None and window_end < state.r_until:
        state.r_until = window_end
    return a, decisions


def _churn_risk(user_id: str, state: UserState, a: Assessment, now_ms: int, rules: Rules,
                correction: bool) -> ChurnAlert | None:
    """A `churn_risk` alert when a silent buyer's P(alive) first falls below
    the rules' limit in a quiet spell (named by its last order): below now,
    and at or above it everywhere from the last order to the last
    evaluation. Compared before rounding, each figure under the fit in
    force at its time: a refit that moves a buyer below the limit raises it
    too, and one that lifts them back above it does not make a second."""
    limit = rules.stages.churn_risk_p_alive
    last_order = state.last_order_ms
    if limit is None or not a.p_alive_exact < limit or last_order is None:
        return None
    since = last_order if state.evaluated_ms is None else max(state.evaluated_ms, last_order)
    if since >= now_ms:
        return None  # no time has passed in this spell
    # P(alive) falls between refits: its lowest points up to `since` are
    # at `since` and just before each cadence boundary (a fit comes into
    # force only on one). Checked only for a buyer below the limit now.
    cadence = rules.cadence_ms
    lows = [since, *range((last_order // cadence + 1) * cadence - 1, since, cadence)]
    if any(alive_at(state, t, rules) < limit for t in lows):
        return None  # below already earlier in this spell: alerted then, or it began below
    return ChurnAlert(_stable_id(user_id, "churn_risk", last_order), user_id, "churn_risk", a, correction,
                      rules.version)


def _campaign_step(user_id: str, state: UserState, now_ms: int, rules: Rules, decisions: list[Decision],
                   a: Assessment) -> list[Decision]:
    """Close the windows that ended by now, then assign the campaigns this
    step's tier changes and alerts trigger."""
    out: list[Decision] = []
    for o in campaigns.close_windows(state.camp, now_ms):
        name, arm, at, end, revenue, converted, action_id = o
        out.append(CampaignOutcome(_stable_id("outcome", action_id), action_id, user_id, name, arm, bool(converted),
                                   revenue, at, end))
    for d in decisions:
        if isinstance(d, TierChange):
            moved = (d.from_tier, d.to_tier, d.from_stage, d.to_stage, None)
        elif isinstance(d, ChurnAlert):
            moved = (None, None, None, None, d.level)
        else:
            continue
        for c in rules.campaigns:
            if not campaigns.triggered(c, *moved):
                continue
            if state.camp is None:
                state.camp = campaigns.new_memory()
            channel = state.acquisition[0] if state.acquisition is not None else ""
            if not campaigns.eligible(c, state.camp, now_ms, a.ltv_cents, channel):
                continue
            arm = campaigns.arm_of(c.name, user_id, c.holdout)
            action_id = _stable_id("action", c.name, user_id, now_ms)
            end = now_ms + c.window_ms
            state.camp[1][c.name] = now_ms
            if arm == "treatment":
                state.camp[0] = now_ms
            state.camp[2].append([c.name, arm, now_ms, end, 0, 0, action_id])
            trigger = next(f"{k}:{v}" for k, v in c.trigger.model_dump(by_alias=True).items() if v is not None)
            out.append(CampaignAction(action_id, user_id, c.name, arm, trigger.replace("'", ""), now_ms, end, a))
    return out


def implausibly_old(state: UserState | None, ts_ms: int, watermark_ms: int, max_age_ms: int) -> str | None:
    """Why an event is too old to believe, or None. An event far behind the
    partition's watermark that would also move a known user's first-seen
    time back by as much is a producer bug (an unset clock, a 1970 stamp),
    not late history: applied, it would re-date the customer's cohort and
    every figure that counts from first seen. A history replayed in order
    never trips it (the watermark trails the events), nor does a new user's
    own backfill far behind the others (they have no first event to move)."""
    if max_age_ms <= 0 or ts_ms >= watermark_ms - max_age_ms:
        return None
    if state is None or not state.has_applied and not state.held:
        return None
    first = min(state.first_seen_ms, state.held[0][0]) if state.held else state.first_seen_ms
    if ts_ms >= first - max_age_ms:
        return None
    days = max_age_ms // DAY_MS
    return (f"ts {ts_ms} is more than {days} days before both the partition's watermark ({watermark_ms}) and the "
            f"user's first event ({first}): an unset clock or seconds sent as milliseconds? "
            "(TIERSTREAM_MAX_EVENT_AGE_DAYS; 0 accepts it)")


def _apply(state: UserState, event: UserEvent, rules: Rules, fingerprint: int | None = None) -> UserState:
    if state.camp and event.type is EventType.ORDER:
        campaigns.credit_order(state.camp, event.ts_ms, event.amount_cents, rules.campaigns_by_name)
    return apply(
        state,
        event,
        bucket_days=rules.window.bucket_days,
        window_buckets=rules.window.buckets,
        recent_ids=rules.dedup.recent_event_ids,
        fingerprint=fingerprint,
    )


def wake_at(state: UserState) -> int | None:
    """When this user next needs attention: a held event to release or a
    time-driven re-evaluation, whichever comes first."""
    held = state.held[0][0] if state.held else None
    if held is None:
        return state.due_ms
    return held if state.due_ms is None else min(held, state.due_ms)


def advance(
    user_id: str, state: UserState, until_ms: int, rules: Rules, ledger: Ledger | None = None
) -> tuple[Assessment | None, list[Decision]]:
    """Bring the user to event time `until_ms`: release held events with
    ts <= until and fire re-evaluations due by then, all in event-time
    order (a due time strictly before an event's fires first). Evaluations
    happen only at those times, never at `until` itself, so how far and how
    often a user is advanced does not change what is decided. Each of those
    steps is booked in `ledger` (the operator metrics) when one is given.

    Every pass makes progress: it releases a held event, or fires a due time
    and leaves the next one strictly later. A state that would not (a bug, or
    rules that cannot close what the state holds open) is parked: its due
    time is dropped and a `UserParked` decision says why."""
    decisions: list[Decision] = []
    latest: Assessment | None = None
    while True:
        held_ts = state.held[0][0] if state.held else None
        due = state.due_ms if state.has_applied else None
        if due is not None and due <= until_ms and (held_ts is None or due < held_ts):
            if pass_r_crossing(state, due, rules):
                continue  # only R moved, and not the tier: nothing to evaluate
            snapshot = ledger.before(state) if ledger is not None else None
            latest, found = reassess(user_id, state, due, rules)
            if snapshot is not None and found:  # a due time changes figures only through a decision
                ledger.record(user_id, state, snapshot, None, due, decisions=found)
            if state.due_ms is not None and state.due_ms <= due:
                found.append(UserParked(user_id, due, f"user {user_id!r}: evaluated at {due} ms, the next due time "
                                                      f"{state.due_ms} ms did not move forward; parked until "
                                                      "their next event"))
                state.due_ms = None
        elif held_ts is not None and held_ts <= until_ms:
            snapshot = ledger.before(state) if ledger is not None else None
            event, fingerprint = release(state)
            _apply(state, event, rules, fingerprint)
            at = max(event.ts_ms, state.evaluated_ms or 0)
            latest, found = reassess(user_id, state, at, rules)
            if ledger is not None:
                ledger.record(user_id, state, snapshot, event, at, decisions=found)
        else:
            return latest, decisions
        decisions.extend(found)


@dataclass(slots=True)
class StepResult:
    state: UserState
    decisions: list[Decision]
    accepted: bool  # False: a duplicate event id, nothing changed
    assessment: Assessment | None  # the latest evaluation, if there was one


def on_event(
    state: UserState | None, event: UserEvent, watermark_before: int, watermark: int, rules: Rules,
    ledger: Ledger | None = None,
) -> StepResult:
    """Take one validated event. `watermark_before` is the watermark before
    this event was seen, `watermark` the one after."""
    if is_duplicate(state, event):
        assert state is not None
        return StepResult(state, [], accepted=False, assessment=None)
    if state is None:
        state = new_state()
    if event.ts_ms >= watermark_before or not state.has_applied:
        # On time (or the user's very first event): wait for the watermark.
        hold(state, event)
        assessment, decisions = advance(event.user_id, state, watermark, rules, ledger)
        return StepResult(state, decisions, accepted=True, assessment=assessment)
    # Late beyond the allowed lateness: correct the figures now.
    assessment, decisions = advance(event.user_id, state, watermark, rules, ledger)
    before = ledger.before(state) if ledger is not None else None
    _apply(state, event, rules)
    now = max(watermark, state.evaluated_ms or 0)
    assessment, found = reassess(event.user_id, state, now, rules, correction=True)
    if ledger is not None:
        ledger.record(event.user_id, state, before, event, now, late=True, decisions=found)
    decisions.extend(found)
    return StepResult(state, decisions, accepted=True, assessment=assessment)


def catch_up(user_id: str, state: UserState, until_ms: int, rules: Rules) -> tuple[Assessment | None, list[Decision]]:
    """Everything due strictly before `until_ms` (kept for callers that think
    in "before this instant")."""
    return advance(user_id, state, until_ms - 1, rules)
