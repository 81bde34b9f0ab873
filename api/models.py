"""Typed models of the read API: the query parameters each endpoint takes
and the documents it answers. The OpenAPI document (api.openapi) is
generated from these, and the metrics handlers validate queries with them,
so the documentation cannot drift from what the API accepts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Grain = Literal["day", "week", "month"]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KpisQuery(_Query):
    grain: Grain = Field("day", description="Period length: day, ISO week or month (in the rules' metrics time zone)")
    from_: str | None = Field(None, alias="from", description="First period: a date (YYYY-MM-DD) or a label "
                              "(2024-W05, 2024-03); default: the last 30 periods")
    to: str | None = Field(None, description="Last period, included; default: the latest period with data")
    tier: str | None = Field(None, description="Only this tier's figures")
    stage: str | None = Field(None, description="Only this lifecycle stage's figures")


class FlowsQuery(_Query):
    grain: Grain = "week"
    period: str | None = Field(None, description="A date or label; default: the latest period")


class CohortsQuery(_Query):
    grain: Literal["week", "month"] = "week"
    by: Literal["first_seen", "first_order"] = Field(
        "first_seen", description="first_seen: cohort of a user's first event; first_order: of their first order")
    periods: int = Field(12, ge=1, le=104, description="How many cohorts, and periods after each, to show")


class SegmentFigures(BaseModel):
    members: int = Field(description="Members at the end of the period")
    revenue: float = Field(description="Orders minus refunds booked to the segment in the period")
    revenue_share: float | None = Field(description="The segment's share of the period's order value: its orders' "
                                        "amounts / every order's amount in the period (before refunds, so shares "
                                        "lie in [0, 1] and add up to 1 over a kind's segments; docs/metrics.md)")
    mean_ltv: float | None = Field(description="Mean lifetime value (net) of the members at the period's end")
    orders: int
    aov: float | None = Field(description="Order value / orders of the segment in the period")


class Flow(BaseModel):
    from_: str | None = Field(alias="from", description="Tier before; null for a first assignment")
    to: str
    users: int = Field(description="Transitions in the period (a user moving twice counts twice)")


class KpiRow(BaseModel):
    period: str
    start: int = Field(description="Start, epoch ms")
    end: int = Field(description="End (exclusive), epoch ms")
    closed: bool = Field(description="Every partition's watermark passed the end plus the conversion window: "
                         "only late events change it now")
    active_users: int
    new_users: int
    buyers: int
    orders: int
    revenue: float = Field(description="Order value minus refunds, by the events' time")
    gross_order_value: float
    refunds: float
    aov: float | None
    repeat_buyers: int
    repurchase_rate: float | None
    signups: int
    signup_conversion: float | None
    first_orders: int
    cart_users: int = Field(description="User-days with an add_to_cart")
    cart_conversion: float | None
    entered_at_risk: int
    entered_churned: int
    reactivated: int
    customers_at_start: int = Field(description="Users in any stage but churned at the period's start")
    churn_rate: float | None
    late_events: int = Field(description="Events beyond the allowed lateness that corrected this period")
    tiers: dict[str, SegmentFigures]
    stages: dict[str, SegmentFigures]
    flows: list[Flow]


class SegmentRow(SegmentFigures):
    period: str
    start: int
    end: int
    closed: bool


class KpisResponse(BaseModel):
    grain: Grain
    timezone: str
    tier: str | None = None
    stage: str | None = None
    as_of_ms: int | None = Field(None, description="The event time the figures are counted up to (the furthest "
                                 "partition's watermark); the open period's members are the members at this time. "
                                 "Null before any event")
    periods: list[KpiRow] | list[SegmentRow]


class FlowsResponse(BaseModel):
    grain: Grain
    period: str
    timezone: str
    flows: list[Flow]
    matrix: dict[str, dict[str, int]] = Field(description="from -> to -> users; '-' is a first assignment")


class CohortRow(BaseModel):
    cohort: str
    size: int
    active: list[int] = Field(description="Cohort members active in each period from the cohort's own on")
    retention: list[float | None]
    d1: float | None = Field(None, description="first_seen only: share active exactly 1 day after the first event")
    d7: float | None = None
    d30: float | None = None
    d1_users: int | None = None
    d7_users: int | None = None
    d30_users: int | None = None


class CohortsResponse(BaseModel):
    grain: Literal["week", "month"]
    by: Literal["first_seen", "first_order"]
    timezone: str
    cohorts: list[CohortRow]


class AcquisitionQuery(_Query):
    grain: Literal["week", "month"] = Field("month", description="Acquisition cohorts: week or month of the "
                                            "customer's first event (the rules' metrics time zone)")
    by: Literal["channel", "cohort"] = Field(
        "channel", description="channel: one row per channel over the cohorts asked for, with its payback curve; "
        "cohort: one row per cohort and channel")
    from_: str | None = Field(None, alias="from", description="First cohort: a date or a label (2024-W05, "
                              "2024-03); default: 12 months (26 weeks) back from `to`")
    to: str | None = Field(None, description="Last cohort, included; default: the latest period with data")


class CurvePoint(BaseModel):
    days: int = Field(description="Days after acquisition (the first N days, acquisition day included)")
    ltv: float = Field(description="Net revenue per customer in those days, over the cohorts observed that long")
    cac: float | None = Field(description="Spend per customer of those same cohorts")
    ltv_cac: float | None = Field(description="ltv / cac")


class AcquisitionRow(BaseModel):
    cohort: str | None = Field(None, description="by=cohort: the acquisition week or month")
    channel: str | None = Field(description="The acquisition channel; null: customers no event placed")
    observed_days: int | None = Field(None, description="by=cohort: days after acquisition every customer of the "
                                      "cohort has been followed (event time)")
    new_customers: int = Field(description="Customers acquired: users whose first event falls in the cohort")
    buyers: int = Field(description="Of them, customers who have ordered")
    spend: float = Field(description="Cost statements of the channel over the cohorts' days")
    cac: float | None = Field(description="spend / new_customers; null without spend")
    cost_per_buyer: float | None = Field(description="spend / buyers")
    revenue_to_date: float = Field(description="Net revenue (orders - refunds) of these customers so far")
    ltv_to_date: float | None = Field(description="revenue_to_date / new_customers")
    ltv: dict[str, float | None] = Field(description="Realised LTV: net revenue per customer in their first N "
                                         "days (N = 30, 90, 180, 365), over the cohorts observed that long; null "
                                         "until one is")
    ltv_cac: dict[str, float | None] = Field(description="ltv[N] / cac over the same cohorts")
    payback_days: int | None = Field(description="The first N at which the customers' net revenue in their first "
                                     "N days reaches what they cost; null: not yet (or no spend)")
    payback: Literal["paid back", "not yet", "no spend"]
    tiers: dict[str, float | None] = Field(description="Share of these customers in each tier now")
    curve: list[CurvePoint] | None = Field(None, description="by=channel: LTV and LTV:CAC every 7 days")


class AcquisitionResponse(BaseModel):
    grain: Literal["week", "month"]
    by: Literal["channel", "cohort"]
    timezone: str
    cohorts: list[str] = Field(description="The cohorts the rows cover")
    observed_through: str | None = Field(description="The last complete day of event time (the metrics' "
                                         "watermark); null before any event")
    as_of_ms: int | None
    rows: list[AcquisitionRow]


class ErrorDoc(BaseModel):
    error: str


class SegmentsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")


class MembersResponse(BaseModel):
    segment: str
    members: list[str]
    next_cursor: str | None


class UserDoc(BaseModel):
    model_config = ConfigDict(extra="allow")
    user_id: str
    tier: str
    stage: str
    version: int
    churn: dict | None = Field(None, description="With the churn model, once fitted: p_alive (the probability "
                               "the customer is still active), expected_orders in the next horizon_days; "
                               "null figures for a user who never ordered")
    acquisition: dict | None = Field(None, description="Where the user came from, once an event said: channel "
                                     "and campaign (docs/events.md); absent while unknown")


class UserChange(BaseModel):
    kind: Literal["tier_change", "churn_alert"]
    id: str = Field(description="change_id or alert_id, as published")
    at_ms: int = Field(description="Event time the change became true, epoch ms")
    from_tier: str | None = None
    to_tier: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    level: str | None = Field(None, description="Churn alerts: at_risk, churned or churn_risk")


class UserChanges(BaseModel):
    user_id: str
    changes: list[UserChange] = Field(description="Newest first; TIERSTREAM_USER_HISTORY of them at most")


class FeedEvent(BaseModel):
    """One server-sent event of GET /v1/feed: `event:` is tier_change or
    churn_alert, `id:` the feed entry (send it back as Last-Event-ID to
    resume), `data:` the record exactly as published on its topic."""
    model_config = ConfigDict(extra="allow")
    user_id: str
    at_ms: int


class ThresholdsDoc(BaseModel):
    quantiles: list[str] = Field(description="Dimensions scored by the population's quantiles (r, f, m)")
    cut_points: list[float] = Field(description="Population shares below the cuts for scores 2, 3, 4, 5")
    cadence_days: int = Field(description="Cut points are recomputed every this many days of event time")
    churn_model: bool = Field(description="Whether the churn model (MBG/NBD) gives each buyer P(alive)")
    churn_fit_days: int = Field(description="The churn model is fitted every this many days of event time")
    churn_horizon_days: int = Field(description="The window of the expected orders, in days")
    fixed: dict[str, list[float]] = Field(description="The rules' fixed thresholds (used until cut points exist)")
    latest: dict | None = Field(description="The latest cut points: as_of_ms (the population's boundary), "
                                "in_force_ms, customers per dimension, recency_days limits, frequency_orders "
                                "and monetary cuts as [bin or amount, share of that bin below the cut]; "
                                "with the churn model, churn_model: its latest fit (as_of_ms, customers, "
                                "r, alpha, a, b; time unit: day)")


class PartitionProgress(BaseModel):
    behind_seconds: float = Field(description="Event time by which the partition's final decisions trail the "
                                  "latest event it has read (0: all decided)")
    reported_at: str = Field(description="When its worker last reported (ISO-8601); a worker reports every second")


class Health(BaseModel):
    status: Literal["ok"]
    decisions_behind_seconds: float | None = Field(
        description="The largest of the partitions' behind_seconds; null before any worker has reported")
    partitions: dict[str, PartitionProgress]


class ArmFigures(BaseModel):
    assigned: int = Field(description="Assignments whose conversion window has closed")
    converted: int
    conversion_rate: float | None
    revenue: float = Field(description="Revenue in the closed windows")
    revenue_per_user: float | None


class CampaignResults(BaseModel):
    name: str
    trigger: str
    holdout: float
    goal: dict[str, float]
    assigned: dict[str, int] = Field(description="All assignments per arm")
    open: dict[str, int] = Field(description="Assignments whose window is still open, per arm")
    treatment: ArmFigures
    control: ArmFigures
    uplift: float | None = Field(description="Treatment minus control conversion rate")
    uplift_ci95: list[float] | None = Field(description="Newcombe hybrid score interval")
    relative_uplift: float | None
    relative_uplift_ci95: list[float] | None = Field(description="Katz log interval of the rate ratio, minus 1")
    p_value: float | None = Field(description="Two-sided pooled two-proportion z-test")
    incremental_conversions: float | None
    revenue_per_user_uplift: float | None
    revenue_per_user_uplift_ci95: list[float] | None = Field(description="Welch interval")
    incremental_revenue: float | None
    cost: float | None = Field(description="cost_per_contact × treatment users assigned; null without a cost")
    roi: float | None = Field(description="Measured return on investment: (incremental_revenue - cost) / cost, "
                              "where incremental_revenue = revenue_per_user_uplift × treatment users (order revenue "
                              "in the goal window, treatment minus control per user); null without a cost "
                              "(docs/metrics.md, Campaigns)")
    value_per_conversion: float | None = Field(description="The campaign's configured value of one conversion")
    roi_at_value_per_conversion: float | None = Field(
        description="Return if each incremental conversion were worth value_per_conversion: "
                    "(incremental_conversions × value_per_conversion - cost) / cost; an assumption, not a "
                    "measurement; null without both figures")
    sample_size_per_arm_needed: int | None = Field(description="More users per arm to detect `min_effect`")
    min_effect: float


class CampaignsResponse(BaseModel):
    campaigns: list[CampaignResults]


class RolloutOutcome(BaseModel):
    asked_for_ms: int | None = Field(description="The event time asked for (`tierstream rules apply --at`); null: "
                                     "as soon as every partition could")
    status: Literal["open", "in_force", "refused"] = Field(
        description="open: some partition has not reported yet; in_force: every worker switched at "
                    "in_force_from_ms; refused: see reason")
    in_force_from_ms: int | None = Field(description="The event time every partition switched at")
    reason: str | None = Field(None, description="Why it was refused")


class ConfigVersion(BaseModel):
    version: str
    published_by: str = Field(description="Who put it in force, as stated (`tierstream config publish --by`, or "
                              "the first worker)")
    published_at_ms: int = Field(description="When (wall clock, epoch ms)")
    rules_source: str
    campaigns_source: str | None
    changes: list[str] = Field(description="What it changed from the version before it, key by key "
                               "(`scores.recency_days: [7, 30, 90, 180] -> [7, 30, 60, 120]`, `tiers.vip: added`); "
                               "empty for the first")
    rollout: RolloutOutcome | None = Field(None, description="A live roll-out (`tierstream rules apply`): what "
                                           "became of it; absent for a version published with the workers stopped")


class ConfigHistory(BaseModel):
    versions: list[ConfigVersion] = Field(description="Newest first; the first is the version in force")


class ConfigDoc(BaseModel):
    version: str = Field(description="Content hash of the rules and campaigns texts (state.config); every tier "
                                     "change and churn alert carries the version that decided it as rules_version")
    published_by: str = Field(description="Who put it in force, as stated (a worker, or `tierstream config publish --by`)")
    published_at_ms: int = Field(description="When it was published (wall clock, epoch ms)")
    rules_source: str = Field(description="The file the rules were read from")
    campaigns_source: str | None = Field(description="The file the campaigns were read from; null without campaigns")
    rules: str = Field(description="The rules file's text (TOML)")
    campaigns: str | None = Field(description="The campaigns file's text (TOML); null without campaigns")


class PreviewSummary(BaseModel):
    new_version: str = Field(description="The version previewed (a content hash, as `rules_version`)")
    old_version: str | None = Field(description="The version in force it was compared with")
    at_ms: int = Field(description="The event time every user was evaluated at, under both")
    users: int
    tier_moves: int = Field(description="Users whose tier the new version would change")
    stage_moves: int
    saved_by: str = Field(description="Who ran it (`--save NAME`)")
    saved_at_ms: int = Field(description="When it was saved (wall clock, epoch ms)")
    rules_source: str | None = Field(description="The rules file previewed")


class PreviewList(BaseModel):
    previews: list[PreviewSummary] = Field(description="Newest first, the latest 20")


class Count(BaseModel):
    old: int = Field(description="Members under the version in force")
    new: int = Field(description="Members under the version previewed")


class PreviewFlow(BaseModel):
    from_: str = Field(alias="from", description="The tier under the version in force")
    to: str = Field(description="The tier under the version previewed")
    users: int


class CampaignPreview(BaseModel):
    triggered: int = Field(description="Users whose move would meet the campaign's trigger")
    eligible: int = Field(description="Of those, eligible now")


class PreviewDoc(PreviewSummary):
    tiers: dict[str, Count]
    stages: dict[str, Count]
    flows: list[PreviewFlow] = Field(description="Every (tier now, tier under the new version) pair with its users")
    matrix: dict[str, dict[str, int]] = Field(description="The flows as a matrix: tier now -> new tier -> users")
    campaigns: dict[str, CampaignPreview]
    seconds: dict[str, float] = Field(description="How long the command took to read the states and in all")
