import os

import pytest
from redis.asyncio import Redis

from tests.integration.harness import BROKER, ERA_START_MS, Cluster, new_servers, produce, wait_until


def pytest_collection_modifyitems(config, items):
    """The Apache Kafka half runs the tests whose behaviour depends on the
    broker (marked `broker_dependent`, each with why); the rest prove
    properties of tierstream's own code, which the Tansu half proves once."""
    if BROKER != "kafka":
        # A `kafka_half` test runs once, on Apache Kafka, when the Kafka
        # half runs alongside (scripts/test.sh says so); here otherwise.
        if os.environ.get("TIERSTREAM_KAFKA_HALF_RUNS") == "1":
            there = pytest.mark.skip(reason="runs in the Apache Kafka half (marked kafka_half)")
            for item in items:
                if item.get_closest_marker("kafka_half"):
                    item.add_marker(there)
        return
    once = pytest.mark.skip(reason="not broker-dependent: runs in the Tansu half (docs/performance.md, The test suite)")
    for item in items:
        if (item.get_closest_marker("integration") and not item.get_closest_marker("broker_dependent")
                and not item.get_closest_marker("kafka_half")):
            item.add_marker(once)


@pytest.fixture(scope="session")
def cluster():
    servers = new_servers()
    c = Cluster(servers)
    try:
        c.start_api()
        c.start_worker()
        yield c
    finally:
        c.stop_worker()
        from cli.processes import stop

        stop(c.api)
        servers.stop()


@pytest.fixture(scope="session")
async def redis(cluster):
    client = Redis.from_url(cluster.servers.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def ready(cluster, redis):
    """The worker has joined the group and processes events end to end."""
    await produce(cluster.servers.broker, [{"event_id": "probe-1", "user_id": "probe", "type": "signup",
                                            "ts": ERA_START_MS}])
    await wait_until(lambda: redis.hget("tierstream:user:probe", "doc"), timeout=90, what="the worker to start")
    return cluster


_eras = iter(range(1, 10_000))


@pytest.fixture
def era(request):
    from tests.integration.harness import Era

    return Era(next(_eras), prefix=request.node.name.replace("_", "")[:24])
