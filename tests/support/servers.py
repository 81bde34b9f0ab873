"""Real servers for tests that need them: a Redis of its own on a free
port, and the read API serving it."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from redis.asyncio import Redis

from api.server import build_api, serve
from stream.connection import RedisAccess
from cli.embedded import redis_binary
from cli.processes import free_port, spawn, stop, wait_for_port


def start_redis(tmp_path, port=None):
    port = port or free_port()
    proc = spawn([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(tmp_path)])
    wait_for_port(port, proc, what="redis-server")
    return proc, port


@contextlib.asynccontextmanager
async def serving(tmp_path_factory, prefix: str, rules=None, token=None):
    """A real Redis and the API serving it on a free port: (session, redis, app, port)."""
    proc, redis_port = start_redis(tmp_path_factory.mktemp("redis"))
    port = free_port()
    app = build_api(RedisAccess.plain(f"redis://127.0.0.1:{redis_port}/0"), prefix, rules, token)
    server = asyncio.create_task(serve(app, "127.0.0.1", port))
    await _listening(port, server)
    redis = Redis.from_url(f"redis://127.0.0.1:{redis_port}/0")
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    try:
        yield session, redis, app, port
    finally:
        await session.close()
        await redis.aclose()
        server.cancel()
        stop(proc)


async def _listening(port: int, server: asyncio.Task, timeout: float = 10.0) -> None:
    """Until the API accepts connections (or its task died)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if server.done():
            server.result()  # raises what stopped it
            raise RuntimeError("the API stopped before it listened")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)
