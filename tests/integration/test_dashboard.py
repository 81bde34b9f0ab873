"""The dashboard in a real browser (headless Chromium), against a real
broker, Redis, worker and API with a token: the page loads without console
errors, every chart shows the numbers the API returns, an event sent during
the test shows up in the live feed, and the user lookup works from the
keyboard."""

import asyncio
import time
import urllib.error
import urllib.request

import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from bench.workload import CHANNELS, cost_statements, history
from cli.processes import stop
from tests.support.browser import chromium, console_errors, wait_for
from tests.integration.harness import ERA_START_MS, Cluster, new_servers, produce, read_topic, wait_until

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
USERS = 300

# Everything the page shows, read in one go (one render).
SHOWN = """
const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
return {
  counts: Object.fromEntries(all('[data-count]', n => [n.dataset.segment, +n.dataset.count])),
  asOf: +document.getElementById('now-asof').dataset.asOf || null,
  area: Object.fromEntries(all('#membership-chart [data-series]', n => [n.dataset.series, n.dataset.values])),
  kpis: Object.fromEntries(all('#kpi-overall tr[data-kpi]', n => [n.dataset.kpi, n.querySelector('[data-value]').dataset.value])),
  members: Object.fromEntries(all('#kpi-segments tr[data-segment]', n => [n.dataset.segment, n.querySelector('[data-field=members]').dataset.value])),
  flowPeriod: document.getElementById('flow-period').value,
  flows: all('#flow-matrix td[data-users]', n => [n.dataset.from, n.dataset.to, +n.dataset.users]),
  cohorts: all('#cohort-heatmap tr[data-cohort]', n => [n.dataset.cohort, all('#cohort-heatmap tr[data-cohort="' + n.dataset.cohort + '"] td[data-rate]', c => c.dataset.rate)]),
  campaigns: Object.fromEntries(all('[data-campaign]', n => [n.dataset.campaign, {
    rates: all('[data-campaign="' + n.dataset.campaign + '"] tr[data-arm] td[data-rate]', c => c.dataset.rate),
    interval: (s => s ? [+s.dataset.lo, +s.dataset.hi] : null)(n.querySelector('[data-chart=interval]')),
  }])),
  acquisition: Object.fromEntries(all('#acq-table tr[data-channel]', n => [n.dataset.channel,
    [n.dataset.customers, n.dataset.cac, n.dataset.paybackDays]])),
  curves: Object.fromEntries(all('#acq-chart [data-series]', n => [n.dataset.series, n.dataset.values])),
};
"""


def api(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def num(text: str) -> float | None:
    return None if text == "" else float(text)


def expected(port: int) -> dict:
    """What the page should show, from the API."""
    answer = api(port, "/v1/metrics/kpis?grain=day")[1]
    kpis = answer["periods"]
    # The tables show the last period the stream has moved past (the page's shownPeriod).
    latest = kpis[-2] if len(kpis) > 1 and not kpis[-1]["closed"] else kpis[-1]
    flows = api(port, f"/v1/metrics/flows?grain=day&period={latest['period']}")[1]
    tiers = list(latest["tiers"])
    cohorts = api(port, "/v1/metrics/cohorts?grain=week&by=first_seen&periods=12")[1]["cohorts"]
    campaigns = api(port, "/v1/campaigns")[1]["campaigns"]
    channels = api(port, "/v1/metrics/acquisition?grain=month&by=channel")[1]["rows"]
    return {
        # "Members now": the same read's latest period, members at its end (the as-of time).
        "counts": {f"{k}:{n}": f["members"] for k in ("tiers", "stages") for n, f in kpis[-1][k].items()
                   if any(g["members"] for g in kpis[-1][k].values())},
        "asOf": answer["as_of_ms"],
        "area": {t: ",".join(str(r["tiers"][t]["members"]) for r in kpis) for t in tiers},  # every period
        "kpis": {k: latest[k] for k in ("active_users", "new_users", "buyers", "orders", "revenue", "aov",
                                        "repurchase_rate", "churn_rate", "reactivated")},
        "members": {t: latest["tiers"][t]["members"] for t in tiers},
        "flowPeriod": latest["period"],
        "flows": sorted([f, t, (flows["matrix"].get(f) or {}).get(t, 0)] for f in ["-", *tiers] for t in tiers),
        "cohorts": [[c["cohort"], c["retention"]] for c in cohorts if c["size"]],
        "campaigns": {c["name"]: {"rates": [c["treatment"]["conversion_rate"], c["control"]["conversion_rate"]],
                                  "interval": c["uplift_ci95"]} for c in campaigns},
        "acquisition": {r["channel"] or "(unattributed)": [r["new_customers"], r["cac"], r["payback_days"]]
                        for r in channels},
        "curves": {r["channel"]: ",".join(f"{p['days']}:{js(p['ltv_cac'])}" for p in r["curve"] if p["ltv_cac"] is not None)
                   for r in channels if r["channel"] and any(p["ltv_cac"] is not None for p in r["curve"])},
    }


def js(x: float) -> str:
    """A number as JavaScript writes it in a string (2.0 is "2")."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def as_shown(page: dict) -> dict:
    """The page's strings as numbers, in the shape of `expected`."""
    return {
        "counts": page["counts"],
        "asOf": page["asOf"],
        "area": page["area"],
        "kpis": {k: num(page["kpis"][k]) for k in ("active_users", "new_users", "buyers", "orders", "revenue",
                                                    "aov", "repurchase_rate", "churn_rate", "reactivated")},
        "members": {t: num(v) for t, v in page["members"].items()},
        "flowPeriod": page["flowPeriod"],
        "flows": sorted(page["flows"]),
        "cohorts": [[c, [num(r) for r in rates]] for c, rates in page["cohorts"]],
        "campaigns": {name: {"rates": [num(r) for r in c["rates"]], "interval": c["interval"]}
                      for name, c in page["campaigns"].items()},
        "acquisition": {ch: [int(n), num(cac), None if days == "" else int(days)]
                        for ch, (n, cac, days) in page["acquisition"].items()},
        "curves": page["curves"],
    }


@pytest.fixture(scope="module")
def dashboard_cluster():
    servers = new_servers()
    cluster = Cluster(servers, extra_env={"TIERSTREAM_CAMPAIGNS": "example", "TIERSTREAM_APP_ID": "dashboard",
                                          "TIERSTREAM_API_TOKEN": TOKEN})
    try:
        cluster.start_worker()
        cluster.start_api()
        yield cluster
    finally:
        cluster.stop_worker()
        stop(cluster.api)
        servers.stop()


async def test_the_dashboard_shows_what_the_api_says_live(dashboard_cluster):
    cluster, port = dashboard_cluster, dashboard_cluster.api_port
    events = sorted(history(users=USERS, events=USERS * 12, days=120, seed=3, start_ms=ERA_START_MS,
                            channels=CHANNELS), key=lambda e: e["ts"])
    statements = cost_statements(CHANNELS, days=120, start_ms=ERA_START_MS)
    await produce(cluster.servers.broker, statements, key=lambda s: f"{s['period']}|{s['channel']}".encode(),
                  topic="tierstream.costs")
    await produce(cluster.servers.broker, events)
    last_ts = events[-1]["ts"]

    async def settled():
        s, segments = await asyncio.to_thread(api, port, "/v1/segments")
        s2, kpis = await asyncio.to_thread(api, port, "/v1/metrics/kpis?grain=day")
        done = s == 200 and sum(segments["tiers"].values()) == USERS and kpis["periods"] \
            and kpis["periods"][-1]["end"] > last_ts
        return done or None

    await wait_until(settled, timeout=120, what="the history in Redis and the metrics")
    assert api(port, "/v1/segments", token=None)[0] == 401  # the token is required...

    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{port}/?access_token={TOKEN}")  # ...and the page passes it on
        wait_for(browser, "document.body.dataset.loaded === 'true'", what="the first render")
        for attempt in range(5):  # the page refreshes every 5 s: compare one render with one set of answers
            want = await asyncio.to_thread(expected, port)
            shown = as_shown(browser.execute_script(SHOWN))
            if shown == want:
                break
            await asyncio.sleep(2)
        assert shown == want
        assert len(want["area"]) == 5
        assert want["cohorts"] and any(c["interval"] for c in want["campaigns"].values()), \
            "the history should give cohorts and at least one campaign with an interval"
        assert set(want["acquisition"]) == {"(unattributed)", *CHANNELS} and len(want["curves"]) == 3
        assert any(days is not None for _, _, days in want["acquisition"].values())  # a channel paid back

        # Live feed: a new user's first tier, sent now, appears on the open page.
        user = "dash-live-user"
        sent = time.monotonic()
        await produce(cluster.servers.broker, [{"event_id": "dash-live-1", "user_id": user, "type": "order",
                                                "amount": 80.0, "ts": last_ts + 1000}])
        await asyncio.to_thread(wait_for, browser, f"document.querySelector('#feed li[data-user=\"{user}\"]')",
                                30, "the live feed to show the new user's tier change")
        print(f"event sent -> shown in the live feed: {time.monotonic() - sent:.2f} s")
        shown_id = browser.execute_script(f"return document.querySelector('#feed li[data-user=\"{user}\"]').dataset.id")
        changes = [c for c in await read_topic(cluster.servers.broker, "tierstream.tier-changes")
                   if c["user_id"] == user]
        assert [c["change_id"] for c in changes] == [shown_id]

        # User lookup, from the keyboard: type the id, press Enter.
        box = browser.find_element(By.ID, "lookup-id")
        box.send_keys(user, Keys.ENTER)
        await asyncio.to_thread(wait_for, browser, "document.querySelector('#lookup-result dl[data-user]')", 10,
                                "the user lookup")
        doc = api(port, f"/v1/users/{user}")[1]
        fields = dict(browser.execute_script(
            "return [...document.querySelectorAll('#lookup-result dd')].map(n => [n.dataset.field, n.textContent]);"))
        assert fields["tier"].startswith(doc["tier"] + " since") and fields["stage"].startswith(doc["stage"])
        assert fields["LTV"] == "80.00"
        # Readable times: relative to the data's as-of time, then absolute in the rules' time zone, labelled.
        import re
        assert re.fullmatch(r"(just now|\d+ (hours|days) ago|in \d+ (hours|days)) · \d{4}-\d\d-\d\d \d\d:\d\d UTC",
                            fields["first seen"]), fields["first seen"]
        assert "churn model" in fields  # P(alive) and expected orders, or why there are none
        ids = browser.execute_script("return [...document.querySelectorAll('#lookup-result .changes li')].map(n => n.dataset.id);")
        assert ids == [shown_id]

        # An unknown user: the API's message, shown as an alert.
        box.clear()
        box.send_keys("nobody-at-all", Keys.ENTER)
        message = await asyncio.to_thread(wait_for, browser, "document.querySelector('#lookup-result [role=alert]')"
                                          " && document.querySelector('#lookup-result [role=alert]').textContent",
                                          10, "the lookup's error")
        assert "unknown user 'nobody-at-all'" in message
        errors = [e for e in console_errors(browser) if "nobody-at-all" not in e["message"]]  # the 404 we asked for
        assert errors == []
