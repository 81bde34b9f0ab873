"""The benchmark harness keeps working (a seconds-long run; no timing is asserted)."""

import json
import subprocess
import sys

import pytest

from tests.integration.harness import BROKER

# The benchmarks' broker-side figures are stated on Apache Kafka too, and
# the Kafka half has the time: it runs there when both halves run.
pytestmark = [pytest.mark.integration,
              pytest.mark.kafka_half("the harness on the broker production runs; the Tansu half is the longer")]


def test_bench_harness_smoke(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--events", "3000", "--users", "500", "--sections", "a,c,e", "--settle", "2",
         "--broker", BROKER, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in ("a_raw_consume_eps", "c_full_pipeline_eps", "c_decided_eps", "f_state_bytes_mean", "e_api_p99_ms"):
        assert results[key] > 0, key
    assert results["f_users"] == 500  # every user of the workload made it into the table
    assert "ratio_full_vs_raw_consume" in results
