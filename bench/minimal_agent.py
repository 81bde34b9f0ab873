"""The baseline: a minimal Faust agent keeping a per-user sum in a
changelog-backed table (what issue #4 calls the minimal stateful agent).

Run as: python -m bench.minimal_agent  (BENCH_BROKER, BENCH_TOPIC, BENCH_METRICS_PORT)
"""

import logging
import os

import faust
import orjson
from prometheus_client import Counter, start_http_server

PROCESSED = Counter("bench_minimal_processed_total", "events processed")

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-minimal"),
    broker=f"kafka://{os.environ['BENCH_BROKER']}",
    store="memory://",
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    broker_session_timeout=6,
    broker_heartbeat_interval=1.2,
    producer_linger=0.01,
    web_enabled=False,
    table_standby_replicas=0,
)
topic = app.topic(os.environ["BENCH_TOPIC"], key_serializer="raw", value_serializer="raw")
totals = app.Table("totals", default=int, partitions=int(os.environ.get("BENCH_PARTITIONS", "8")))


@app.agent(topic)
async def sum_per_user(stream):
    async for event in stream.events():
        body = orjson.loads(event.value)
        totals[body["user_id"]] += 1
        PROCESSED.inc()


if __name__ == "__main__":
    for name in ("aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(logging.WARNING)
    start_http_server(int(os.environ["BENCH_METRICS_PORT"]), addr="127.0.0.1")
    faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()
