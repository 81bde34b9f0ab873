"""`tierstream dev` end to end: starts everything, shows tiers and alerts
changing within a minute, stops cleanly and leaves no process behind."""

import re
import subprocess
import sys

import pytest

from tests.integration.harness import BROKER

pytestmark = pytest.mark.integration


def our_processes() -> set[tuple[int, str]]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return {
        (int(pid), args)
        for pid, _, args in (line.strip().partition(" ") for line in out.splitlines())
        if any(k in args for k in ("tansu", "redis-server", "cli.main", "kafka.Kafka"))
    }


def test_dev_shows_changes_and_alerts_and_cleans_up():
    before = our_processes()
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev", "--duration", "45", "--users", "150", "--speed", "3",
         "--broker", BROKER],
        capture_output=True, text=True, timeout=180,
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
    leftovers = our_processes() - before
    assert leftovers == set(), leftovers
