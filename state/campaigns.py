"""Campaigns: declared in one TOML file, triggered by tier changes and churn
alerts, with a deterministic holdout (control) arm.

A campaign names a trigger, who is eligible, the share held out, and the
goal that counts as a conversion. `assign` decides the arm from a hash of
campaign and user, so the same user lands in the same arm in every replay,
restart and worker count. Validation follows the rules file's: a bad file
stops start-up with the file, line and key.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import datetime
from importlib import resources
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from state.model import DAY_MS
from state.rules import STAGES, RulesError, _line_of


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transition(_Strict):
    from_: str = Field(alias="from")
    to: str


class Trigger(_Strict):
    """Exactly one of: entering a tier, entering a stage, a churn alert of a
    level, or a move from one tier to another."""

    enter_tier: str | None = None
    enter_stage: str | None = None
    alert: str | None = None  # at_risk | churned | churn_risk (rules' stages.churn_risk_p_alive)
    transition: Transition | None = None

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        given = [k for k in ("enter_tier", "enter_stage", "alert", "transition") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a trigger names exactly one of enter_tier, enter_stage, alert, transition; got {given}")
        if self.enter_stage is not None and self.enter_stage not in STAGES:
            raise ValueError(f"unknown stage {self.enter_stage!r}; stages are {', '.join(STAGES)}")
        if self.alert is not None and self.alert not in ("at_risk", "churned", "churn_risk"):
            raise ValueError(f"alert must be at_risk, churned or churn_risk, not {self.alert!r}")
        return self


class Eligibility(_Strict):
    ltv_min: float | None = None
    ltv_max: float | None = None
    # Not contacted (assigned to a treatment arm) by any campaign within
    # this many days: users are not flooded.
    not_contacted_days: float | None = Field(None, ge=0)
    # Only customers acquired through one of these channels (the earliest an
    # event said, docs/events.md); "" stands for customers no event placed.
    channels: list[str] | None = Field(None, min_length=1)


class Goal(_Strict):
    order_within_days: float = Field(gt=0, le=365)
    min_amount: float = Field(0, ge=0)


class Campaign(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    trigger: Trigger
    eligible: Eligibility = Eligibility()
    holdout: float = Field(0.1, ge=0, lt=1, description="share of eligible users held out as control")
    goal: Goal
    # A user is assigned to this campaign at most once per cooldown.
    cooldown_days: float = Field(90, ge=0)
    cost_per_contact: float | None = Field(None, ge=0)
    value_per_conversion: float | None = Field(None, ge=0)
    active_from: AwareDatetime | None = None
    active_to: AwareDatetime | None = None

    @property
    def window_ms(self) -> int:
        return int(self.goal.order_within_days * DAY_MS)

    def active_at(self, ms: int) -> bool:
        if self.active_from is not None and ms < _ms(self.active_from):
            return False
        return not (self.active_to is not None and ms >= _ms(self.active_to))


class Campaigns(_Strict):
    campaigns: list[Campaign] = []

    @model_validator(mode="after")
    def _unique(self) -> Campaigns:
        names = [c.name for c in self.campaigns]
        if len(set(names)) != len(names):
            raise ValueError(f"campaign names must be unique, got {names}")
        return self


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def arm_of(campaign: str, user_id: str, holdout: float) -> str:
    """`control` for a stable `holdout` share of users, else `treatment`:
    a hash of campaign and user, the same in every run and worker."""
    digest = hashlib.blake2b(f"{campaign}\x00{user_id}".encode(), digest_size=8).digest()
    return "control" if int.from_bytes(digest, "big") / 2**64 < holdout else "treatment"


def example_campaigns_text() -> str:
    return resources.files("state").joinpath("example_campaigns.toml").read_text()


def load_campaigns(path: str | Path | None, tiers: list[str]) -> list[Campaign]:
    """The campaigns of a file (`None`: the shipped example), checked
    against the rules' tiers."""
    if path is None:
        text, source = example_campaigns_text(), "example_campaigns.toml"
    else:
        try:
            text, source = Path(path).read_text(), str(path)
        except OSError as exc:
            raise RulesError(f"{path}: cannot read campaigns file ({exc.strerror}); check TIERSTREAM_CAMPAIGNS") from exc
    return parse_campaigns(text, source, tiers)


def parse_campaigns(text: str, source: str, tiers: list[str]) -> list[Campaign]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    try:
        parsed = Campaigns.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        line = _line_of(text, err["loc"])
        where = f"line {line}: " if line else ""
        raise RulesError(f"{source}: {where}{loc}: {err['msg']}") from None
    for c in parsed.campaigns:
        named = [t for t in (c.trigger.enter_tier, c.trigger.transition and c.trigger.transition.from_,
                             c.trigger.transition and c.trigger.transition.to) if t]
        unknown = [t for t in named if t not in tiers]
        if unknown:
            raise RulesError(f"{source}: campaign {c.name!r}: unknown tier(s) {unknown}; tiers are {', '.join(tiers)}")
    return parsed.campaigns


# -- a user's campaigns (pure; called by state.steps) -----------------------

# Per user (UserState.camp): [last_contact_ms, {campaign: last_assigned_ms},
# open assignments: [[campaign, arm, trigger_ms, window_end_ms, revenue_cents,
# converted (0/1), action_id], ...]]. Bounded by the campaigns configured.
OPEN_CAMPAIGN, OPEN_ARM, OPEN_AT, OPEN_END, OPEN_REVENUE, OPEN_CONVERTED, OPEN_ACTION = range(7)


def new_memory() -> list:
    return [None, {}, []]


def earliest_window_end(camp: list | None) -> int | None:
    if not camp or not camp[2]:
        return None
    return min(o[OPEN_END] for o in camp[2])


def credit_order(camp: list | None, ts_ms: int, amount_cents: int, campaigns: dict[str, Campaign]) -> None:
    """An order counts for every open assignment whose window holds it."""
    if not camp:
        return
    for o in camp[2]:
        if o[OPEN_AT] <= ts_ms <= o[OPEN_END]:
            o[OPEN_REVENUE] += amount_cents
            c = campaigns.get(o[OPEN_CAMPAIGN])
            if amount_cents >= round((c.goal.min_amount if c else 0) * 100):
                o[OPEN_CONVERTED] = 1


def close_windows(camp: list | None, now_ms: int) -> list[list]:
    """The assignments whose window has closed by `now_ms`, removed."""
    if not camp or not camp[2]:
        return []
    closed = [o for o in camp[2] if o[OPEN_END] <= now_ms]
    if closed:
        camp[2] = [o for o in camp[2] if o[OPEN_END] > now_ms]
    return closed


def triggered(campaign: Campaign, from_tier: str | None, to_tier: str | None, from_stage: str | None,
              to_stage: str | None, alert: str | None) -> bool:
    t = campaign.trigger
    if t.enter_tier is not None:
        return to_tier == t.enter_tier and from_tier != t.enter_tier
    if t.enter_stage is not None:
        return to_stage == t.enter_stage and from_stage != t.enter_stage
    if t.alert is not None:
        return alert == t.alert
    assert t.transition is not None
    return from_tier == t.transition.from_ and to_tier == t.transition.to


def eligible(campaign: Campaign, camp: list, now_ms: int, ltv_cents: int, channel: str = "") -> bool:
    if not campaign.active_at(now_ms):
        return False
    e = campaign.eligible
    if e.channels is not None and channel not in e.channels:
        return False
    if e.ltv_min is not None and ltv_cents < round(e.ltv_min * 100):
        return False
    if e.ltv_max is not None and ltv_cents > round(e.ltv_max * 100):
        return False
    if e.not_contacted_days is not None and camp[0] is not None and now_ms - camp[0] < e.not_contacted_days * DAY_MS:
        return False
    last = camp[1].get(campaign.name)
    return last is None or now_ms - last >= campaign.cooldown_days * DAY_MS
