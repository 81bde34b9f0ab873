"""Every topic name in one place: the external contract (see README)."""

EVENTS = "tierstream.events"
TIER_CHANGES = "tierstream.tier-changes"
CHURN_ALERTS = "tierstream.churn-alerts"
DEAD_LETTERS = "tierstream.events.dlq"
# Closed periods' figures and late corrections (docs/metrics.md), for BI tools.
METRICS = "tierstream.metrics"
# Internal: each step's metric facts, from the worker to the metrics
# aggregator; partitioned like the events (the user's partition).
METRIC_FACTS = "tierstream.metric-facts"

# Campaign assignments (treatment and control) and their outcomes.
ACTIONS = "tierstream.actions"
CAMPAIGN_OUTCOMES = "tierstream.campaign-outcomes"

# Internal: each partition's population histograms at every cadence
# boundary, from which every worker computes the same cut points
# (state.quantiles), and its reports on rules roll-outs (state.rollout);
# keyed by partition.
POPULATION = "tierstream.population"


def population_partition(source: int, partitions: int) -> int:
    """Where a partition's population reports land (its number as the key,
    the producer's default partitioner): each partition's reports are in
    order there, and only there."""
    from aiokafka.partitioner import DefaultPartitioner

    return DefaultPartitioner()(str(source).encode(), list(range(partitions)), list(range(partitions)))

# The configuration in force (state.config): the rules and campaigns every
# worker and tool evaluates with, one versioned document per record; one
# partition, the latest record in force, the earlier ones its history.
CONFIG = "tierstream.config"

# What acquiring customers cost: one statement per channel and period
# (stream.costs), read by the metrics aggregator; one partition, so that
# the statements' order is the topic's.
COSTS = "tierstream.costs"

OUTPUTS = (TIER_CHANGES, CHURN_ALERTS, DEAD_LETTERS, METRICS, METRIC_FACTS, ACTIONS, CAMPAIGN_OUTCOMES, POPULATION)

# The users table's changelog is internal: Faust names it
# "<app_id>-users-changelog".
USERS_TABLE = "users"
