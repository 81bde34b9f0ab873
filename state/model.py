"""The per-user record and `apply(state, event)`: pure, no I/O, no clock.

Space is bounded whatever a user does: orders are folded into time buckets
that fall out of the window, and duplicate detection keeps a fixed number of
recent event ids. Figures depend only on the set of events applied, not on
their arrival order, so a late event lands where it would have in order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

DAY_MS = 86_400_000


class EventType(StrEnum):
    SIGNUP = "signup"
    LOGIN = "login"
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    ORDER = "order"
    REFUND = "refund"
    CAMPAIGN_TOUCH = "campaign_touch"


# What the user does themselves. A refund or our own campaign touch says
# nothing about whether the user is still engaged.
ACTIVITY_TYPES = frozenset(
    {EventType.SIGNUP, EventType.LOGIN, EventType.VIEW, EventType.ADD_TO_CART, EventType.ORDER}
)
# What the engagement score counts: interaction short of buying.
ENGAGEMENT_TYPES = frozenset({EventType.LOGIN, EventType.VIEW, EventType.ADD_TO_CART})


@dataclass(slots=True, frozen=True)
class UserEvent:
    """A validated input event (see stream.contract for validation)."""

    event_id: str
    user_id: str
    type: EventType
    ts_ms: int
    # Money is kept in integer cents: sums over years must not drift.
    amount_cents: int = 0
    order_id: str | None = None
    # Where the user came from, when the event says (docs/events.md,
    # `acquisition`): the channel and an optional campaign of it.
    channel: str | None = None
    campaign: str | None = None


def event_fingerprint(event_id: str) -> int:
    """Stable 63-bit hash of an event id (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(slots=True)
class AcqMemory:
    """What a user contributed to their acquisition cells, as booked
    (state.acquisition; stored in their KpiMemory)."""

    channel: str
    bought: bool = False
    # [age in days, net cents] per age with money, sorted by age
    ages: list[list[int]] = field(default_factory=list)

    def to_list(self) -> list:
        return [self.channel, self.bought, self.ages]

    @classmethod
    def from_list(cls, v: list) -> AcqMemory:
        return cls(*v)


@dataclass(slots=True)
class KpiMemory:
    """What one user's operator metrics need to remember (state.kpis books
    them; stored in the user's state)."""

    born_ms: int  # first event applied: the first-seen cohort (fixed)
    signup_ms: int | None = None
    first_order_ms: int | None = None
    second_order_ms: int | None = None
    order_cohort_day: int | None = None  # day of the first order as first applied: its cohort (fixed)
    # (anchor, mask) pairs; a mask of 0 means nothing marked yet (a set mask
    # always has its anchor's bit), so any period index, even before 1970, works.
    marks: list[int] = field(default_factory=lambda: [0, 0] * 7)
    open_carts: list[list[int]] = field(default_factory=list)  # [day, first cart ts] not yet converted
    recent_orders: list[int] = field(default_factory=list)
    # The acquisition cells' memory (state.acquisition): users acquired
    # while metrics were on; None for users first seen before.
    acq: AcqMemory | None = None

    def to_list(self) -> list:
        out = [self.born_ms, self.signup_ms, self.first_order_ms, self.second_order_ms,
               self.order_cohort_day, self.marks, self.open_carts, self.recent_orders]
        if self.acq is not None:
            out.append(self.acq.to_list())
        return out

    @classmethod
    def from_list(cls, v: list) -> KpiMemory:
        # Eight fields in records written before acquisition cells existed.
        acq = AcqMemory.from_list(v[8]) if len(v) > 8 and v[8] is not None else None
        return cls(*v[:8], acq=acq)


@dataclass(slots=True)
class UserState:
    first_seen_ms: int
    last_seen_ms: int  # latest event time of any event: drives bucket eviction
    last_active_ms: int | None = None
    last_order_ms: int | None = None
    last_campaign_ms: int | None = None
    lifetime_orders: int = 0
    lifetime_revenue_cents: int = 0
    lifetime_refunds_cents: int = 0
    # bucket index -> [orders, net cents]; only buckets inside the window.
    buckets: dict[int, list[int]] = field(default_factory=dict)
    recent_ids: list[int] = field(default_factory=list)
    # Decisions already taken (and published) for this user.
    tier: str | None = None
    stage: str | None = None
    tier_since_ms: int | None = None
    stage_since_ms: int | None = None
    evaluated_ms: int | None = None
    due_ms: int | None = None
    # Bumped on every change; the Redis cache refuses anything older.
    version: int = 0
    # Source position of the last applied event, to drop redeliveries.
    src_partition: int = -1
    src_offset: int = -1
    # Events not yet released by the watermark, sorted by (ts, fingerprint):
    # [ts_ms, type, amount_cents, fingerprint]. Bounded by the user's events
    # within the allowed lateness.
    held: list[list] = field(default_factory=list)
    # bucket index -> logins, views and carts (ENGAGEMENT_TYPES) in that
    # bucket; only buckets inside the window, like `buckets`.
    activity: dict[int, int] = field(default_factory=dict)
    # What the operator metrics remember of this user (state.kpis); None
    # while metrics are off or before the user's first applied event.
    kpi: KpiMemory | None = None
    # Campaign assignments (state.campaigns): last contact, last assignment
    # per campaign, open conversion windows. None until a campaign triggers.
    camp: list | None = None
    # The first order's event time: the churn model's clock starts there
    # (state.churn_model). None before the first order, and in states
    # written before this field existed (the first time seen stands in).
    first_order_ms: int | None = None
    # Where the user came from: [channel, campaign or None, event time of
    # the event that said so]. The earliest such event wins, so a late
    # earlier one replaces it (a correction); None until an event says.
    acquisition: list | None = None
    # Kept in memory only (TRANSIENT_FIELDS: not in the changelog, not in
    # equality): the R scores the last evaluation found to keep the user's
    # tier, bit r for R = r (state.evaluate.next_due). The engine skips a
    # recency crossing at a period boundary that keeps the tier; a recovered
    # state knows none and is woken at every crossing, as before.
    r_same: int = field(default=0, compare=False, repr=False)
    # Until when r_same holds: the first moment after the last evaluation at
    # which anything but R may move the tier or stage (a threshold, a window
    # exit, a campaign window's end, a churn-model refit's wake). Before it,
    # a due time whose R keeps the tier passes without an evaluation
    # (state.evaluate.pass_r_crossing). 0: nothing known.
    r_until: int = field(default=0, compare=False, repr=False)

    @property
    def has_applied(self) -> bool:
        return self.last_seen_ms >= 0


TRANSIENT_FIELDS = ("r_same", "r_until")
NOT_SEEN = -1
NEVER = 1 << 62


def new_state() -> UserState:
    """A user nothing has been applied to yet (their events may be held)."""
    return UserState(first_seen_ms=NEVER, last_seen_ms=NOT_SEEN)


def is_duplicate(state: UserState | None, event: UserEvent) -> bool:
    if state is None:
        return False
    fingerprint = event_fingerprint(event.event_id)
    return fingerprint in state.recent_ids or any(h[3] == fingerprint for h in state.held)


def hold(state: UserState, event: UserEvent) -> None:
    """Keep an event until the watermark passes it (see engine.advance)."""
    entry = [event.ts_ms, event.type.value, event.amount_cents, event_fingerprint(event.event_id)]
    if event.channel is not None:  # only then: most events say nothing of it, and held lists are state
        entry += [event.channel, event.campaign]
    state.held.append(entry)
    state.held.sort(key=lambda h: (h[0], h[3]))  # a total order: replays release alike


def release(state: UserState) -> tuple[UserEvent, int]:
    """Take the earliest held event back as an event (its id is a fingerprint)."""
    ts, type_, cents, fingerprint, *acquisition = state.held.pop(0)
    channel, campaign = acquisition or (None, None)
    return UserEvent(event_id="", user_id="", type=EventType(type_), ts_ms=ts, amount_cents=cents,
                     channel=channel, campaign=campaign), fingerprint


def apply(
    state: UserState | None,
    event: UserEvent,
    *,
    bucket_days: int,
    window_buckets: int,
    recent_ids: int,
    fingerprint: int | None = None,
) -> UserState:
    """Fold one event into the user's figures. Duplicates must be dropped by
    the caller with `is_duplicate` first; apply itself always counts."""
    if state is None:
        state = new_state()
    ts = event.ts_ms
    state.first_seen_ms = min(state.first_seen_ms, ts)
    state.last_seen_ms = max(state.last_seen_ms, ts)
    if event.type in ACTIVITY_TYPES:
        state.last_active_ms = ts if state.last_active_ms is None else max(state.last_active_ms, ts)
    if event.type is EventType.CAMPAIGN_TOUCH:
        state.last_campaign_ms = ts if state.last_campaign_ms is None else max(state.last_campaign_ms, ts)
    if event.channel is not None:
        said = [event.channel, event.campaign, ts]
        known = state.acquisition
        # The earliest wins; at the same time the smaller value, so that the
        # answer does not depend on the order two such events arrived in.
        if known is None or (ts, event.channel, event.campaign or "") < (known[2], known[0], known[1] or ""):
            state.acquisition = said

    if event.type is EventType.ORDER:
        state.lifetime_orders += 1
        state.lifetime_revenue_cents += event.amount_cents
        state.last_order_ms = ts if state.last_order_ms is None else max(state.last_order_ms, ts)
        state.first_order_ms = ts if state.first_order_ms is None else min(state.first_order_ms, ts)
        _add_to_bucket(state, ts, 1, event.amount_cents, bucket_days)
    elif event.type is EventType.REFUND:
        state.lifetime_refunds_cents += event.amount_cents
        _add_to_bucket(state, ts, 0, -event.amount_cents, bucket_days)
    elif event.type in ENGAGEMENT_TYPES:
        index = bucket_of(ts, bucket_days)
        state.activity[index] = state.activity.get(index, 0) + 1

    _evict_old_buckets(state, bucket_days, window_buckets)
    state.recent_ids.append(fingerprint if fingerprint is not None else event_fingerprint(event.event_id))
    if len(state.recent_ids) > recent_ids:
        del state.recent_ids[: len(state.recent_ids) - recent_ids]
    state.version += 1
    return state


def bucket_of(ts_ms: int, bucket_days: int) -> int:
    return ts_ms // (bucket_days * DAY_MS)


def _add_to_bucket(state: UserState, ts: int, orders: int, cents: int, bucket_days: int) -> None:
    index = bucket_of(ts, bucket_days)
    bucket = state.buckets.get(index)
    if bucket is None:
        state.buckets[index] = [orders, cents]
    else:
        bucket[0] += orders
        bucket[1] += cents


def _evict_old_buckets(state: UserState, bucket_days: int, window_buckets: int) -> None:
    # Evict relative to the latest event time, which only grows: a bucket out
    # of the window now is out of every later window, so eviction is exact
    # whatever order events arrive in.
    oldest_kept = bucket_of(state.last_seen_ms, bucket_days) - window_buckets + 1
    for index in [i for i in state.buckets if i < oldest_kept]:
        del state.buckets[index]
    for index in [i for i in state.activity if i < oldest_kept]:
        del state.activity[index]
