"""The declarative rules: RFM thresholds, value tiers and lifecycle stages.

Rules live in one TOML file (see ``default_rules.toml``). A bad file must fail
at start-up with the line and the problem, never half-load: `load_rules`
raises `RulesError` with a message an operator can act on.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DAY_MS = 86_400_000


class RulesError(ValueError):
    """The rules file cannot be used; the message names the line and the fix."""


class _Strict(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)


Thresholds = Annotated[list[float], Field(min_length=4, max_length=4)]


class Window(_Strict):
    days: int = Field(365, gt=0, le=3650)
    bucket_days: int = Field(30, gt=0)

    @model_validator(mode="after")
    def _bucket_fits(self) -> Window:
        if self.bucket_days > self.days:
            raise ValueError(f"bucket_days ({self.bucket_days}) must not exceed days ({self.days})")
        return self

    @property
    def buckets(self) -> int:
        """How many buckets a window spans (rounded up)."""
        return -(-self.days // self.bucket_days)


class Dedup(_Strict):
    recent_event_ids: int = Field(16, ge=1, le=256)


class MetricsConfig(_Strict):
    """How the operator metrics cut time and define conversion (docs/metrics.md)."""

    # Days, ISO weeks and months are cut at local midnight in this zone.
    timezone: str = "UTC"
    # Signup -> first order and add_to_cart -> order count as converted
    # when the order comes within this many days.
    conversion_days: int = Field(7, ge=1, le=365)

    @model_validator(mode="after")
    def _known_zone(self) -> MetricsConfig:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name like 'Europe/Paris'") from exc
        return self


class Scores(_Strict):
    recency_days: Thresholds = [7, 30, 90, 180]
    frequency_orders: Thresholds = [10, 5, 3, 2]
    monetary: Thresholds = [2000, 1000, 500, 100]
    # Optional fourth score, E: logins, views and carts in the window, at
    # least these many for 5 / 4 / 3 / 2. Unset: no E score (rules may not use it).
    engagement_actions: Thresholds | None = None
    # Score these dimensions by the population's quantiles instead of the
    # fixed thresholds above (which then serve only until the first cut
    # points are known): any of "r", "f", "m" (state.quantiles, docs/scores.md).
    quantiles: list[Literal["r", "f", "m"]] = []
    # Population shares below the cuts for scores 2, 3, 4 and 5: quintiles.
    cut_points: Annotated[list[Annotated[float, Field(gt=0, lt=1)]], Field(min_length=4, max_length=4)] = [
        0.2, 0.4, 0.6, 0.8]
    # Equal figures get equal scores: a cut that falls among customers with
    # the same figure puts them all below it (so shares are not fifths when
    # most customers tie, e.g. one order each). true: split such a tie by a
    # stable hash of the user id, so that each score gets its share exactly
    # (identical customers may then score differently).
    split_ties: bool = False
    # Cut points are recomputed from the whole population every this many
    # days of event time (at UTC midnights) and apply from the next period on.
    cadence_days: int = Field(1, ge=1, le=31)
    # The churn model (MBG/NBD, state.churn_model): each buyer's P(alive)
    # and expected orders in the next `churn_horizon_days`, from parameters
    # fitted to the whole population every `churn_fit_days` of event time
    # (a multiple of cadence_days; they apply from the next period on).
    churn_model: bool = False
    churn_fit_days: int = Field(7, ge=1, le=365)
    churn_horizon_days: int = Field(90, ge=1, le=3650)

    @property
    def from_population(self) -> bool:
        """Whether the population's reports are needed (quantiles or the churn model)."""
        return bool(self.quantiles) or self.churn_model

    @model_validator(mode="after")
    def _monotonic(self) -> Scores:
        if self.cut_points != sorted(set(self.cut_points)):
            raise ValueError("cut_points must increase (shares below the cuts for scores 2, 3, 4, 5)")
        if self.churn_fit_days % self.cadence_days:
            raise ValueError("churn_fit_days must be a multiple of cadence_days (fits happen on cadence boundaries)")
        if len(set(self.quantiles)) != len(self.quantiles):
            raise ValueError("quantiles lists each of r, f, m at most once")
        if self.recency_days != sorted(self.recency_days):
            raise ValueError("recency_days must increase (score 5 is the most recent)")
        for name in ("frequency_orders", "monetary", "engagement_actions"):
            values = getattr(self, name)
            if values is not None and values != sorted(values, reverse=True):
                raise ValueError(f"{name} must decrease (score 5 needs the most)")
        return self


Score = Annotated[int, Field(ge=1, le=5)]
Days = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(gt=0, lt=1)]


class Conditions(_Strict):
    """One group of conditions, all of which must hold."""

    r_min: Score | None = None
    r_max: Score | None = None
    f_min: Score | None = None
    f_max: Score | None = None
    m_min: Score | None = None
    m_max: Score | None = None
    e_min: Score | None = None  # engagement: needs scores.engagement_actions
    e_max: Score | None = None
    rfm_sum_min: Annotated[int, Field(ge=3, le=15)] | None = None
    rfm_sum_max: Annotated[int, Field(ge=3, le=15)] | None = None
    orders_min: Count | None = None
    orders_max: Count | None = None
    lifetime_orders_min: Count | None = None
    lifetime_orders_max: Count | None = None
    days_since_order_min: Days | None = None
    days_since_order_max: Days | None = None
    ltv_min: float | None = None
    ltv_max: float | None = None
    # The churn model's P(alive) (needs scores.churn_model): a customer
    # without one (no order yet, or before the first fit) meets neither.
    p_alive_min: Probability | None = None
    p_alive_max: Probability | None = None
    # The customer's acquisition channel is one of these (the earliest an
    # event said); "" stands for customers no event placed.
    channels: list[Annotated[str, Field(max_length=64)]] | None = Field(None, min_length=1)

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in Conditions.model_fields)


class TierRule(Conditions):
    """A tier: its conditions inline (one group, all must hold), or several
    groups in `any_of`, of which one must hold. "Low value = M <= 2, or
    (R <= 2 and F <= 2)" is
    `any_of = [{ m_max = 2 }, { r_max = 2, f_max = 2 }]`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    any_of: list[Conditions] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_way_of_saying_it(self) -> TierRule:
        if self.any_of is not None:
            if not self.is_empty:
                raise ValueError("a tier with any_of lists all its conditions inside any_of, none beside it")
            if any(group.is_empty for group in self.any_of):
                raise ValueError("an any_of group without conditions would match everyone; drop any_of instead")
        return self

    @property
    def groups(self) -> list[Conditions]:
        """The condition groups; the tier matches if any one holds."""
        return self.any_of if self.any_of is not None else [self]

    @property
    def is_catch_all(self) -> bool:
        return self.any_of is None and self.is_empty


class Stages(_Strict):
    new_days: Days = 30
    at_risk_days: Days = 30
    churned_days: Days = 60
    reactivated_days: Days = 30
    # A `churn_risk` alert when a silent buyer's P(alive) falls below this
    # (needs scores.churn_model); unset: no such alert.
    churn_risk_p_alive: Probability | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Stages:
        if not 0 < self.at_risk_days < self.churned_days:
            raise ValueError("need 0 < at_risk_days < churned_days")
        return self


class Rules(_Strict):
    window: Window = Window()
    dedup: Dedup = Dedup()
    scores: Scores = Scores()
    tiers: list[TierRule] = Field(min_length=1)
    stages: Stages = Stages()
    metrics: MetricsConfig = MetricsConfig()
    # Campaigns come from their own file (state.campaigns, TIERSTREAM_CAMPAIGNS)
    # and are attached with `with_campaigns`; a rules file cannot set them.
    campaigns: tuple[Any, ...] = Field((), exclude=True)
    # With quantile scores: the cut points all workers agree on
    # (state.quantiles.ThresholdBook), attached by the worker with
    # `with_thresholds`; None scores with the fixed thresholds only.
    thresholds: Any = Field(None, exclude=True)
    # The version of the configuration in force these rules come from
    # (state.config: a content hash of the rules and campaigns texts), carried
    # by every decision; None for rules not read as such a document.
    version: str | None = Field(None, exclude=True)

    def with_version(self, version: str) -> Rules:
        return self.model_copy(update={"version": version})

    def with_campaigns(self, campaigns: list[Any]) -> Rules:
        return self.model_copy(update={"campaigns": tuple(campaigns)})

    def with_thresholds(self, book: Any) -> Rules:
        return self.model_copy(update={"thresholds": book})

    @property
    def cadence_ms(self) -> int:
        return self.scores.cadence_days * DAY_MS

    @property
    def campaigns_by_name(self) -> dict[str, Any]:
        return {c.name: c for c in self.campaigns}

    @model_validator(mode="after")
    def _tiers_cover_everyone(self) -> Rules:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        clash = set(names) & set(STAGES)
        if clash:
            raise ValueError(f"tier name(s) {sorted(clash)} are also a lifecycle stage; segments need distinct names")
        if not self.tiers[-1].is_catch_all:
            raise ValueError("the last tier must have no conditions, so that every user gets a tier")
        if self.scores.engagement_actions is None and self.uses_engagement:
            raise ValueError("a tier tests e_min or e_max, but scores.engagement_actions is not set")
        if not self.scores.churn_model and self.p_alive_limits:
            raise ValueError("a tier tests p_alive_min or p_alive_max, or stages.churn_risk_p_alive is set, "
                             "but scores.churn_model is not true")
        return self

    @property
    def p_alive_limits(self) -> tuple[float, ...]:
        """Every P(alive) a tier condition or the churn_risk alert compares
        with, sorted: the moments a buyer's P(alive) falls through them are
        wake-ups (state.evaluate)."""
        return tuple(sorted({v for t in self.tiers for g in t.groups
                             for v in (g.p_alive_min, g.p_alive_max) if v is not None}
                            | ({self.stages.churn_risk_p_alive} if self.stages.churn_risk_p_alive else set())))

    @property
    def uses_engagement(self) -> bool:
        return any(g.e_min is not None or g.e_max is not None for t in self.tiers for g in t.groups)

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]


STAGES = ("new", "active", "at_risk", "churned", "reactivated")


def default_rules_text() -> str:
    return resources.files("state").joinpath("default_rules.toml").read_text()


def fixed_threshold_rules_text() -> str:
    """The shipped defaults scoring R, F and M by the fixed thresholds alone,
    without the churn model. The engine's benchmarks and its mechanics tests
    (event time, crashes, metrics) run these, so that their figures are
    stated in thresholds that do not move with the population's."""
    text = default_rules_text()
    for line, fixed in (('quantiles = ["r", "f", "m"]', "quantiles = []"), ("churn_model = true", "churn_model = false")):
        assert text.count("\n" + line + "\n") == 1, line
        text = text.replace("\n" + line + "\n", "\n" + fixed + "\n")
    return text


def fixed_threshold_rules() -> Rules:
    rules = parse_rules(fixed_threshold_rules_text(), "the default rules with fixed thresholds")
    assert not rules.scores.from_population
    return rules


def population_rules_text() -> str:
    """The rules that score against the shop's own population: quantile R,
    F and M, and the churn model. These are the shipped defaults; tests,
    benches and the crash audit name them so, whatever the defaults become."""
    text = default_rules_text()
    assert '\nquantiles = ["r", "f", "m"]\n' in text and "\nchurn_model = true\n" in text
    return text


def load_rules(path: str | Path | None = None) -> Rules:
    """Load and validate a rules file; `None` loads the shipped defaults."""
    if path is None:
        return parse_rules(default_rules_text(), "default_rules.toml")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules file ({exc.strerror}); check TIERSTREAM_RULES") from exc
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        raise RulesError(f"{source}: not valid TOML: {exc}") from exc
    try:
        if "campaigns" in raw:
            raise RulesError(f"{source}: campaigns go in their own file (TIERSTREAM_CAMPAIGNS), not in the rules")
        if "version" in raw:
            raise RulesError(f"{source}: 'version' is not a rules key: the version is a hash of the texts "
                             "(tierstream config show)")
        return Rules.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(text, loc)
            where = ".".join(str(p) for p in loc) or "(top level)"
            at = f"line {line}" if line else "file"
            problems.append(f"{source}: {at}: {where}: {err['msg']}")
        raise RulesError("invalid rules:\n  " + "\n  ".join(problems)) from exc


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=")


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of the TOML key a validation error points at."""
    table: list[str | int] = []
    counts: dict[str, int] = {}
    table_line: dict[tuple, int] = {}
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2)
            if header.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                table = [*name.split("."), index]
            else:
                table = list(name.split("."))
            table_line[tuple(table)] = number
            continue
        key = _KEY.match(line)
        if key and tuple([*table, key.group(1)]) == loc[: len(table) + 1]:
            best = number
    if best is not None:
        return best
    # The error is about a whole table (a model check), or a missing key.
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in table_line:
            return table_line[loc[:depth]]
    return None
