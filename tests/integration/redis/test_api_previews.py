"""Saved rules previews over a real Redis: `tierstream rules preview --save`
keeps the preview the command computed (state.preview), and the API serves
it as the command printed it; the latest 20 are kept, newest first; an
unknown version is a JSON 404."""

from __future__ import annotations

import orjson
import pytest

from api.models import PreviewDoc, PreviewList
from state.config import ConfigDocument
from state.preview import preview
from store.previews import KEEP, PreviewStore
from tests.support.engine import EngineRun
from tests.support.factories import raw
from tests.support.fixed_rules import fixed_rules
from tests.support.servers import serving

PREFIX = "previewtest:"


@pytest.fixture(scope="module")
async def api(tmp_path_factory):
    async with serving(tmp_path_factory, PREFIX) as (session, redis, app, _):
        yield session, PreviewStore(redis, PREFIX)


async def get(session, path):
    async with session.get(path) as resp:
        assert resp.content_type == "application/json"
        return resp.status, orjson.loads(await resp.read())


async def test_a_saved_preview_is_served_as_computed_and_the_latest_twenty_are_kept(api):
    session, store = api
    old = fixed_rules()
    run = EngineRun(old)
    for i in range(40):
        run.event(raw(f"u{i}", "order", i % 10, amount=20 + 30 * i))
    run.event(raw("clock", "login", 120))  # orders 110-120 days back: dormant after 90 days, not 180
    from state.rules import fixed_threshold_rules_text

    new = ConfigDocument(fixed_threshold_rules_text().replace("days_since_order_min = 180",
                                                             "days_since_order_min = 90"), None).rules()
    doc = preview(run.users.items(), max(s.last_seen_ms for s in run.users.values()), old, new).doc(old, new)
    assert doc["tier_moves"] > 0
    doc["seconds"] = {"read": 0.1, "total": 0.2}
    for n in range(KEEP + 2):  # older ones, then the one above, newest
        await store.save({**doc, "new_version": f"v{n:02d}", "saved_by": "test", "saved_at_ms": n,
                          "rules_source": "old.toml"})
    await store.save({**doc, "saved_by": "ana", "saved_at_ms": 1000, "rules_source": "new.toml"})
    status, listed = await get(session, "/v1/rules/previews")
    assert status == 200 and PreviewList.model_validate(listed)
    versions = [p["new_version"] for p in listed["previews"]]
    assert versions[0] == new.version and len(versions) == KEEP and "v00" not in versions and "v02" not in versions
    assert listed["previews"][0]["saved_by"] == "ana" and listed["previews"][0]["tier_moves"] == doc["tier_moves"]
    status, served = await get(session, f"/v1/rules/previews/{new.version}")
    assert status == 200 and served == {**doc, "saved_by": "ana", "saved_at_ms": 1000, "rules_source": "new.toml"}
    assert PreviewDoc.model_validate(served)
    status, err = await get(session, "/v1/rules/previews/nope")
    assert status == 404 and "--save" in err["error"]
