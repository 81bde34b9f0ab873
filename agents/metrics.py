"""Prometheus metrics of the worker (prometheus-client: the standard, tiny, no daemon)."""

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter("tierstream_events_accepted_total", "Input events applied to user state")
EVENTS_DUPLICATE = Counter("tierstream_events_duplicate_total", "Events dropped: event_id already applied")
EVENTS_REDELIVERED = Counter("tierstream_events_redelivered_total", "Messages at or before the last applied offset")
EVENTS_REKEYED = Counter("tierstream_events_rekeyed_total", "Events whose message key was not their user_id")
UNKNOWN_FIELDS_DROPPED = Counter(
    "tierstream_unknown_fields_dropped_total", "Top-level input fields the contract does not know, dropped (event kept)"
)
DEAD_LETTERS = Counter("tierstream_dead_letters_total", "Input messages sent to the DLQ", ["reason"])
TIER_CHANGES = Counter("tierstream_tier_changes_total", "Tier or stage changes published")
CHURN_ALERTS = Counter("tierstream_churn_alerts_total", "Churn alerts published", ["level"])
REDIS_WRITES = Counter("tierstream_redis_writes_total", "User membership records written to Redis")
REDIS_ERRORS = Counter("tierstream_redis_errors_total", "Failed Redis flushes (retried)")
CUTS_SETTLED = Counter("tierstream_quantile_cuts_settled_total",
                       "Cadence boundaries whose population cut points this worker settled (quantile scores)")
PARTITIONS_FOLLOWED = Counter("tierstream_idle_partitions_followed_total",
                              "Times an idle partition was moved on to the others' latest boundary (replay clock)")
FEED_DROPPED = Counter("tierstream_feed_dropped_total",
                       "Published changes and alerts left out of the dashboard's live feed (Redis down too long)")
REDIS_HEALED = Counter("tierstream_redis_healed_total", "Users rewritten in Redis because it disagreed with their state")
REDIS_REPOPULATIONS = Counter("tierstream_redis_repopulations_total", "Times Redis was found without a partition's marker")
REDIS_PENDING = Gauge("tierstream_redis_pending", "Membership updates waiting for Redis")
REDIS_FLUSH_SECONDS = Histogram("tierstream_redis_flush_seconds", "Time to write one batch to Redis")
DECISIONS_BEHIND = Gauge(
    "tierstream_decisions_behind_seconds",
    "Event time by which a partition's final decisions trail the latest event it has read (waiting at a period's "
    "end for quantile cut points, deferred events); 0 when every event read is decided on", ["partition"])
DUE_INDEX_SIZE = Gauge("tierstream_due_index_entries", "Entries in the inactivity due index")
RECOVERED_USERS = Gauge("tierstream_recovered_users", "Users of the owned partitions found in the table at the last rebalance")
PUBLISH_ERRORS = Counter("tierstream_publish_errors_total", "Output or changelog records Kafka did not accept")

# Bound children: .labels() costs a dict lookup and a lock per call on the hot path.
CAMPAIGN_ACTIONS = Counter("tierstream_campaign_actions_total", "Campaign assignments published (both arms)")
CAMPAIGN_OUTCOMES = Counter("tierstream_campaign_outcomes_total", "Campaign outcomes published (windows closed)")
METRIC_STEPS_APPLIED = Counter("tierstream_metric_steps_applied_total",
                               "Steps whose facts the aggregator handed to Redis (each counts once there)")
METRIC_AGGREGATION_ERRORS = Counter("tierstream_metric_aggregation_errors_total",
                                    "Aggregator rounds that failed and were retried (Redis away, rebalance)")
ALERT_COUNTERS = {level: CHURN_ALERTS.labels(level) for level in ("at_risk", "churned", "churn_risk")}


class Tally:
    """Counts gathered on the hot path and added to the Prometheus counters
    once per batch: a counter's inc() takes a lock (~1 µs), and the pipeline
    counts several things per event."""

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}

    def add(self, counter: Any, n: int = 1) -> None:
        self._counts[counter] = self._counts.get(counter, 0) + n

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for counter, n in counts.items():
            counter.inc(n)
