#!/usr/bin/env bash
# Create .venv with Python 3.11 and install tierstream with its test extras.
# Idempotent: a second run only re-checks the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet -e '.[test]'
# Fail here, not in the middle of a test, if the embedded servers are missing.
.venv/bin/python -c "from cli.embedded import broker_binary, redis_binary; import os; \
b, r = broker_binary(), redis_binary(); assert os.access(b, os.X_OK) and os.access(r, os.X_OK), (b, r)"
