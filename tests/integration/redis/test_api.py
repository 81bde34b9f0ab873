"""The read API over a real Redis and real sockets: JSON for every answer,
errors included; any user id the contract accepts is readable; 503, fast,
while Redis is away; and a fuzz that finds no 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import posixpath
import time
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp import web, web_protocol
from hypothesis import HealthCheck, example, given, settings, strategies as st
from redis.asyncio import Redis
from yarl import URL

from api import json_errors
from api.server import build_api, serve
from stream.connection import RedisAccess
from cli.embedded import redis_binary
from cli.processes import free_port, spawn, stop, wait_for_port
from store.membership import MembershipUpdate, MembershipWriter
from stream.contract import Rejection, parse_event
from tests.support.servers import serving, start_redis

PREFIX = "apitest:"


@pytest.fixture(scope="module")
async def api(tmp_path_factory):
    async with serving(tmp_path_factory, PREFIX) as (session, redis, _, port):
        yield session, MembershipWriter(redis, PREFIX), port


async def get(session, raw_path: str):
    async with session.get(URL(raw_path, encoded=True)) as resp:
        return resp.status, resp.content_type, await resp.read()


async def test_unknown_routes_wrong_methods_and_bad_limits_answer_json(api):
    session, _, _ = api
    for path, status in [("/nope", 404), ("/v1/segments/x/members?limit=%C2%B2", 400),
                         ("/v1/segments/x/members?limit=0", 400), ("/v1/segments/x/members?limit=-1", 400),
                         ("/v1/segments/nosuch/members", 404)]:
        code, ctype, body = await get(session, path)
        assert (code, ctype) == (status, "application/json"), path
        assert "error" in orjson.loads(body)
    async with session.post("/v1/segments") as resp:
        assert resp.status == 405 and "error" in await resp.json()


async def test_a_request_aiohttp_cannot_parse_still_gets_a_json_error(api):
    _, _, port = api
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/users/" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1].startswith(b"4") and b"application/json" in head
    assert "error" in orjson.loads(body)


def test_the_aiohttp_internals_json_errors_overrides_are_still_there():
    """The fence: if aiohttp renames or reshapes these, fail here, not in production."""
    params = list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    server_params = inspect.signature(json_errors.web_server.Server.__init__).parameters
    assert {"handler", "request_factory", "handler_cancellation", "loop"} <= set(server_params)


# What the contract accepts as a user id: 1-128 characters, no control characters.
user_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128)


@given(user_ids)
@example(".")
@example("..")
@example("a/b")
@example("{user}")
@example("50%")
@example("a b?c#d")
@example("../../healthz")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_every_user_id_the_contract_accepts_is_readable(api, user_id):
    session, writer, _ = api
    body = {"event_id": "e", "user_id": user_id, "type": "login", "ts": 1_700_000_000_000}
    accepted = parse_event(orjson.dumps(body), now_ms=2**62, max_bytes=1 << 20, max_future_ms=0)
    if isinstance(accepted, Rejection):
        return  # refused by the contract, with a reason: nothing to read back
    doc = orjson.dumps({"user_id": user_id})
    await writer.write([MembershipUpdate(user_id, 1, "low_value", "new", doc)], force=True)
    code, ctype, got = await get(session, "/v1/users/" + quote(user_id, safe=""))
    assert (code, ctype) == (200, "application/json"), user_id
    assert orjson.loads(got)["user_id"] == user_id


paths = st.lists(st.sampled_from(["v1", "users", "segments", "members", "healthz", "x", "..", ".", "%2F", "%00",
                                  "%ZZ", "tier:low_value", "{", "}", "%C2%B2", "~", "é"]), max_size=5)
queries = st.dictionaries(st.sampled_from(["limit", "cursor", "x"]),
                          st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=3)


@given(paths, queries)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_fuzzed_requests_never_get_a_5xx_and_always_get_json(api, segments, query):
    session, _, _ = api
    path = "/" + "/".join(segments)
    qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    code, ctype, body = await get(session, path + ("?" + qs if qs else ""))
    assert code < 500, (path, query, body)
    if code == 200 and ctype == "text/html":  # '/', '/..', '/.': the dashboard; all else, errors too, is JSON
        assert body.startswith(b"<!doctype html>") and posixpath.normpath(path) == "/", path
        return
    assert ctype == "application/json", (path, query, body)
    orjson.loads(body)


async def test_redis_unreachable_answers_503_json_within_about_a_second(tmp_path):
    proc, redis_port = start_redis(tmp_path)
    port = free_port()
    server = asyncio.create_task(serve(build_api(RedisAccess.plain(f"redis://127.0.0.1:{redis_port}/0"), PREFIX), "127.0.0.1", port))
    await asyncio.sleep(0.2)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            assert (await get(session, "/healthz"))[0] == 200
            stop(proc)
            for path in ("/healthz", "/v1/users/ann", "/v1/segments", "/v1/segments/tier:x/members"):
                started = time.monotonic()
                code, ctype, body = await get(session, path)
                assert (code, ctype) == (503, "application/json"), (path, body)
                assert "unreachable" in orjson.loads(body)["error"]
                assert time.monotonic() - started < 3, path
    finally:
        server.cancel()
        stop(proc)
