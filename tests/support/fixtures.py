"""Fixtures every test module may use (registered in tests/conftest.py)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from cli.processes import stop
from tests.support.servers import start_redis


@pytest.fixture
async def own_redis(tmp_path):
    """A client of a Redis server of the test's own, on a free port."""
    proc, port = start_redis(tmp_path)
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        yield client
    finally:
        await client.aclose()
        stop(proc)
