"""Consumer settings Faust does not expose.

Faust builds its aiokafka consumer with fetch_max_wait_ms=1500 hard-coded.
A broker that answers a fetch only when that wait runs out, as Tansu does,
then adds up to 1.5 s to every event's latency (measured: p50 1.1 s at
2k events/s). Apache Kafka answers as soon as data arrives, where a shorter
wait costs only a few more empty fetches when idle.

The consumer thread of one app (stream.faust_ext.batching makes its
consumer build this one) sets the wait on the aiokafka consumer it creates;
nothing process-wide changes.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


class TunedConsumerThread(AIOKafkaConsumerThread):
    #: set per app by stream.faust_ext.batching.batching_consumer_class; None: Faust's
    fetch_max_wait_ms: int | None = None

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if self.fetch_max_wait_ms is not None:
            consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read by aiokafka when the fetcher starts
        return consumer
