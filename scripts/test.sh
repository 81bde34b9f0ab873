#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests, then the integration
# tests (real broker, real Redis, worker and API processes) on each broker:
# the embedded Tansu and Apache Kafka, the broker production runs.
#   TIERSTREAM_TEST_BROKER=tansu|kafka|both   (default: both)
# Without Java and Maven the Apache Kafka half cannot run: it is skipped,
# and the last line says so. Extra arguments go to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The dashboard's browser tests drive Debian's Chromium through its
# chromedriver (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing Debian's chromium and chromium-driver for the dashboard's browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
BROKERS="${TIERSTREAM_TEST_BROKER:-both}"
# --durations=10: every run ends with its ten slowest tests (docs/performance.md keeps the table).
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=10)
case "$BROKERS" in
  tansu|kafka|both) ;;
  *) echo "TIERSTREAM_TEST_BROKER must be tansu, kafka or both, not '$BROKERS'" >&2; exit 2 ;;
esac
kafka_missing=$(.venv/bin/python -c "from cli.apache_kafka import missing_tools; print(missing_tools() or '')")
if [ "$BROKERS" != "tansu" ] && [ -z "$kafka_missing" ]; then
  # Fetch the broker once, before any test waits on it.
  .venv/bin/python -c "from cli.apache_kafka import classpath; classpath()"
fi
if [ "$BROKERS" != "kafka" ]; then
  echo "== unit tests, and integration tests on Tansu (embedded)"
  TIERSTREAM_TEST_BROKER=tansu "${PYTEST[@]}" "$@"
fi
if [ "$BROKERS" != "tansu" ]; then
  if [ -n "$kafka_missing" ]; then
    echo "Apache Kafka half NOT run: $kafka_missing"
    [ "$BROKERS" = "kafka" ] && exit 1
    [ "${TIERSTREAM_REQUIRE_KAFKA:-}" = 1 ] && { echo "TIERSTREAM_REQUIRE_KAFKA=1 (.ci/run): failing" >&2; exit 1; }
    exit 0
  fi
  echo "== integration tests on Apache Kafka"
  # tests/integration/redis talks to no broker: it ran in the first half.
  TIERSTREAM_TEST_BROKER=kafka "${PYTEST[@]}" tests/integration --ignore=tests/integration/redis "$@"
fi
