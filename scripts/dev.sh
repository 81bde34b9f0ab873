#!/usr/bin/env bash
# Set up, then run tierstream on the embedded default (broker + Redis + worker
# + API + demo generator, with a live view). Extra arguments go to `tierstream dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/tierstream dev "$@"
