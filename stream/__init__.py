"""Kafka side: the Faust app, topics, the event contract, codecs, settings."""
