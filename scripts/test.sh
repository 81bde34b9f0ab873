#!/usr/bin/env bash
# Set up, then run the whole test suite: unit tests, then integration tests
# against the embedded broker and a real Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
