"""The pure core: per-user state, rules, evaluation. No Kafka, no clock."""
