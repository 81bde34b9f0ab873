"""`tierstream dev` end to end: starts everything, shows tiers and alerts
changing within a minute, stops cleanly and leaves no process behind."""

import json
import os
import re
import signal
import subprocess
import uuid
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.harness import BROKER

pytestmark = pytest.mark.integration


def our_processes(tag: str) -> set[tuple[int, str]]:
    """Processes started by the `tierstream dev` this test ran: every child
    inherits its environment, and the test put `tag` in it. (The other half
    of the suite runs its own `tierstream dev` meanwhile: its processes are
    not this test's.)"""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if f"TIERSTREAM_TEST_TAG={tag}".encode() in environ.split(b"\0"):
            found.add((int(proc.name), args))
    return found


@pytest.mark.broker_dependent('tierstream dev --broker kafka is a command users run')
def test_dev_shows_changes_and_alerts_and_cleans_up(tmp_path):
    tag = uuid.uuid4().hex
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev", "--duration", "45", "--users", "150", "--speed", "3",
         "--broker", BROKER],
        capture_output=True, text=True, timeout=180,
        # INFO, so that the log check below has lines to read
        env={**os.environ, "TIERSTREAM_LOG_LEVEL": "INFO", "TIERSTREAM_TEST_TAG": tag,
             "TIERSTREAM_DEV_STATE": str(tmp_path / "dev.json")},  # not the user's, nor the other half's
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "broker    127.0.0.1:" in out and "redis     redis://127.0.0.1:" in out and "api       http://" in out
    assert "dashboard http://127.0.0.1:" in out
    summary = next(line for line in out.splitlines() if "stopped:" in line)
    numbers = dict(
        (label.strip(), int(n)) for n, label in
        (part.strip().split(" ", 1) for part in summary.split("stopped:")[1].split(","))
    )
    assert numbers["events sent"] > 100
    assert numbers["tier changes"] > 0 and numbers["churn alerts"] > 0
    assert numbers["dead letters"] == 0
    # The live view's KPIs of the current and previous week, from the read API.
    assert "This week and last" in out and re.search(r"\d{4}-W\d{2}", out)
    # Not a terminal: a plain status line every ten seconds while it runs.
    assert len(re.findall(r"^\d\d:\d\d:\d\d  event time \d{4}-\d\d-\d\d  events sent \d+", out, re.M)) >= 3, out[-3000:]
    leftovers = our_processes(tag)
    assert leftovers == set(), leftovers
    # A healthy start is quiet, and every worker and API log line says when and how bad.
    logs = Path(re.search(r"^logs\s+(\S+)", out, re.M).group(1))
    for name in ("worker.log", "api.log"):
        lines = (logs / name).read_text().splitlines()
        assert lines, name
        # Ours ("2026-… INFO name: …") or Faust's once its worker runs ("[2026-…] [pid] [INFO] …"); a
        # record of several lines (Faust's recovery tables) goes on with table rows.
        stamped = re.compile(r"^\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]? (\[\d+\] )?\[?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]? ")
        assert [line for line in lines if not stamped.match(line) and not line.startswith(("|", "+"))] == [], name
        assert [line for line in lines if re.search(r"\bWARNING\b|\bERROR\b|\bCRITICAL\b", line)] == [], name


@contextmanager
def running_dev(state_file, env, *args):
    """`tierstream dev ARGS` in the background, once its state file says it
    is up; stopped with Ctrl-C (SIGINT) after. Yields its state (addresses)."""
    dev = subprocess.Popen([sys.executable, "-m", "cli.main", "dev", "--broker", BROKER, *args],
                           env={**env, "TIERSTREAM_DEV_STATE": str(state_file)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not state_file.exists():
            assert dev.poll() is None and time.monotonic() < deadline, "tierstream dev did not start"
            time.sleep(0.5)
        yield json.loads(state_file.read_text())
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()


def _without_addresses(extra: dict[str, str]) -> dict[str, str]:
    """A second shell: no TIERSTREAM_* address of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTREAM_") or k == "TIERSTREAM_TEST_BROKER"}
    return {**env, **extra}


def test_snapshot_after_dev_returns_and_agrees_with_the_workers_and_tools_find_dev(tmp_path):
    """Issue #21's hang, driven as a user met it: `tierstream dev --no-demo`
    with the replay clock (its worker runs the example campaigns), a history
    replayed into it, then `tierstream snapshot --wait` from another shell
    whose environment names no campaigns (and no address: the CLI finds dev
    through its state file). The snapshot returns, and agrees user by user
    with what the API serves; `report` and `campaigns` work with no flags."""
    import urllib.request

    from bench import workload
    from tests.integration.crash import _partition_of

    state_file = tmp_path / "dev.json"
    shell = _without_addresses({"TIERSTREAM_DEV_STATE": str(state_file)})
    bodies = sorted(workload.history(users=200, events=2000, days=90, seed=5), key=lambda b: (b["ts"], b["event_id"]))
    end = bodies[-1]["ts"]
    closers = {}
    for n in range(1000):  # every partition's watermark ends at `end`
        closers.setdefault(_partition_of(f"closer-{n}"), f"closer-{n}")
    bodies += [{"event_id": f"close-{u}", "user_id": u, "type": "login", "ts": end} for u in closers.values()]
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    with running_dev(state_file, {**shell, "TIERSTREAM_CLOCK": "replay"}, "--no-demo", "--duration", "400") as dev:
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"
        api = f"http://127.0.0.1:{dev['api_port']}"

        def tool(*args, timeout=400):
            run = subprocess.run([sys.executable, "-m", "cli.main", *args], env=shell, capture_output=True,
                                 text=True, timeout=timeout)
            assert run.returncode == 0, (args, run.stderr[-3000:])
            return run

        tool("replay", str(history), "--no-progress")
        out = tmp_path / "s.jsonl"
        snap = tool("snapshot", "--as-of", str(end), "--out", str(out), "--wait", "300")
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) >= 190 and "rules version" in snap.stdout

        def api_doc(user):
            with urllib.request.urlopen(f"{api}/v1/users/{user}", timeout=10) as r:
                return json.loads(r.read())

        # The API trails the worker by a Redis flush: wait until it holds still.
        deadline = time.monotonic() + 60
        while True:
            served = {r["user_id"]: (api_doc(r["user_id"])["tier"], api_doc(r["user_id"])["stage"]) for r in rows}
            differing = {u: (served[u], (r["tier"], r["stage"])) for r in rows
                         for u in [r["user_id"]] if served[u] != (r["tier"], r["stage"])}
            if not differing or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert differing == {}, list(differing.items())[:5]
        # The CLI finds dev's API with no --api and no TIERSTREAM_API_PORT.
        assert "KPIs per" in tool("report").stdout
        assert "win_back" in tool("campaigns").stdout
    assert not state_file.exists(), "dev leaves no state file behind"


def test_the_demo_still_fills_every_panel_after_ten_minutes_worth_of_shop(tmp_path):
    """The demo at ten times its default pace for a minute: as much simulated
    time (1,200 days) as ten minutes of `./scripts/dev.sh`. At the end the
    dashboard, in a real browser, has data in every panel, and the figures
    are of the shop's late days (it once ran dry within minutes)."""
    from tests.support.browser import chromium, console_errors, wait_for

    state_file = tmp_path / "dev.json"
    env = _without_addresses({})
    speed, seconds = 20.0, 60.0
    with running_dev(state_file, env, "--speed", str(speed), "--duration", "400") as dev:
        started = time.monotonic()
        demo_start_ms = time.time() * 1000 - 10 * 365 * 86_400_000  # cli.demo.DemoClock starts ten years back
        url = f"http://127.0.0.1:{dev['api_port']}/"
        time.sleep(seconds)
        with chromium() as browser:
            browser.get(url)
            # The figures have reached the shop's late days (the worker may trail the generator).
            simulated_days = (time.monotonic() - started) * speed
            as_of = wait_for(browser, "+document.getElementById('now-asof').dataset.asOf", 120, "the figures")
            reached_days = (as_of - demo_start_ms) / 86_400_000
            assert reached_days > 0.6 * simulated_days, (reached_days, simulated_days)
            first = wait_for(browser, "document.querySelector('#cohort-heatmap tr[data-cohort]')"
                                      " && document.querySelector('#cohort-heatmap tr[data-cohort]').dataset.cohort",
                             120, "a cohort")
            panels = {
                "members now": "document.querySelectorAll('#tier-counts [data-count]').length",
                "members over time": "document.querySelectorAll('#membership-chart [data-series]').length",
                "KPIs": "document.querySelectorAll('#kpi-overall tr[data-kpi]').length",
                "per segment": "document.querySelectorAll('#kpi-segments tr[data-segment]').length",
                "flows": "[...document.querySelectorAll('#flow-matrix td[data-users]')].some(n => +n.dataset.users > 0)",
                "cohorts": "document.querySelectorAll('#cohort-heatmap tr[data-cohort]').length",
                "campaigns": "document.querySelectorAll('[data-campaign] tr[data-arm]').length",
                "acquisition": "document.querySelectorAll('#acq-table tr[data-channel]').length >= 3"
                               " && document.querySelectorAll('#acq-chart [data-series]').length >= 3",
                "live feed": "document.querySelectorAll('#feed li').length",
            }
            for name, script in panels.items():
                wait_for(browser, script, 60, f"the {name} panel to have data")
            # Every tier and the new stage are populated at the end, not only early on.
            counts = browser.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('[data-count]')]"
                ".map(n => [n.dataset.segment, +n.dataset.count]));")
            assert all(counts.get(f"tiers:{t}", 0) > 0 for t in ("high_value", "potential", "mid_value", "low_value")), counts
            assert counts.get("stages:new", 0) > 0 and counts.get("stages:active", 0) > 0, counts
            # The newest cohorts have members: signups go on.
            sizes = browser.execute_script(
                "return [...document.querySelectorAll('#cohort-heatmap tr[data-cohort] td:nth-child(2)')]"
                ".map(n => +n.textContent.replace(/,/g, ''));")
            assert sizes and all(n > 0 for n in sizes[-4:]), sizes
            assert console_errors(browser) == []
            print(f"simulated {simulated_days:.0f} days, figures reached day {reached_days:.0f}; first cohort shown "
                  f"{first}; {counts}")
