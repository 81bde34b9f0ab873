"""Faust agents: thin adapters between Kafka and the pure core in state/."""
