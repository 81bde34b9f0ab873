"""The producer the worker writes its records with."""

from __future__ import annotations

from typing import Any


def kafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's: the same connection, settings and
    shutdown flush, without Faust's per-record wrapper and signals."""
    return app.producer._ensure_producer()


def transactional_id(app: Any, topic: str, partition: int) -> str:
    """Faust's own naming (TransactionManager.transactional_id_format): the
    producer Faust opened for the input partition when it was assigned."""
    return f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"
